"""Triangle meshes: PLY/OBJ writers (atomic), a PLY header reader, and the :class:`Mesh` container."""

from __future__ import annotations

import os

import numpy as np

from triplanenet.io.atomic import atomic_path
from triplanenet.mesh import Mesh  # the container lives below io (model code uses it); importable from here too

__all__ = ["Mesh", "read_ply_counts", "write_obj", "write_ply"]


def write_ply(path: str | os.PathLike[str], mesh: Mesh) -> None:
    """Binary little-endian PLY with optional per-vertex RGB."""
    vertices = np.asarray(mesh.vertices, dtype="<f4")
    faces = np.asarray(mesh.faces, dtype="<i4")
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}"]
    header += ["property float x", "property float y", "property float z"]
    if mesh.colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        vertex_dtype = np.dtype([("p", "<f4", 3), ("c", "u1", 3)])
        vertex_data = np.empty(len(vertices), dtype=vertex_dtype)
        vertex_data["p"] = vertices
        vertex_data["c"] = np.asarray(mesh.colors, dtype=np.uint8)
    else:
        vertex_data = vertices
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    face_data = np.empty(len(faces), dtype=np.dtype([("n", "u1"), ("i", "<i4", 3)]))
    face_data["n"] = 3
    face_data["i"] = faces
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        handle.write(vertex_data.tobytes())
        handle.write(face_data.tobytes())


def write_obj(path: str | os.PathLike[str], mesh: Mesh) -> None:
    """Wavefront OBJ; vertex colours (if any) as the common ``v x y z r g b`` extension (floats in [0, 1])."""
    lines = []
    if mesh.colors is not None:
        colors = np.asarray(mesh.colors, dtype=np.float32) / 255.0
        for (x, y, z), (r, g, b) in zip(mesh.vertices, colors, strict=True):
            lines.append(f"v {x:.6f} {y:.6f} {z:.6f} {r:.4f} {g:.4f} {b:.4f}")
    else:
        lines.extend(f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices)
    lines.extend(f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def read_ply_counts(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(vertex count, face count) from a PLY header; used by tests and sanity checks."""
    vertices = faces = 0
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.decode("ascii", errors="replace").strip()
            if line.startswith("element vertex"):
                vertices = int(line.split()[-1])
            elif line.startswith("element face"):
                faces = int(line.split()[-1])
            elif line == "end_header":
                break
    return vertices, faces
