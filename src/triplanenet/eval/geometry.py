"""Geometric evaluation (TriPlaneNet supplement, Sec. E and Table 2): average distance (AD) between a reference head
mesh and a predicted one, after aligning them by five facial landmarks.

Protocol implemented by :func:`average_distance`:

1. The predicted mesh is aligned to the reference by the 5 landmarks (eyes, nose tip, mouth corners; order of
   :data:`triplanenet.synth.render.LANDMARK_NAMES`) with :func:`umeyama` — rigid (rotation + translation) by
   default, as in the paper; ``with_scale=True`` gives a similarity alignment.
2. The face region is an ellipsoid built from the **reference** landmarks only (so it is the same for every method),
   see :func:`face_ellipsoid`.
3. Reference surface points inside the ellipsoid (the reference vertices, plus area-uniform surface samples when the
   mesh is coarse) are matched to the closest point of the predicted **surface** (exact point-to-triangle distance,
   evaluated on candidate triangles found by a nearest-neighbour search over dense surface samples, see
   :func:`point_to_mesh_distance`).
4. AD = mean distance / inter-ocular distance of the reference (distance between the two eye landmarks).

All arrays are float64 numpy or torch tensors in world units; meshes are :class:`triplanenet.io.mesh.Mesh`.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from triplanenet.errors import ConfigError, InputImageError
from triplanenet.mesh import Mesh

LEFT_EYE, RIGHT_EYE, NOSE, MOUTH_LEFT, MOUTH_RIGHT = range(5)


# ----------------------------------------------------------------------------------------------------------------
# Alignment


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (or rigid) transform mapping ``src`` onto ``dst`` (Umeyama 1991).

    Finds ``s, R, t`` minimising ``Σ ||dst_i − (s R src_i + t)||²`` with ``R`` a proper rotation (det +1).

    Args:
        src, dst: (N, D) corresponding points, N >= D (at least 3 non-collinear points in 3D).
        with_scale: estimate the scale ``s``; otherwise ``s = 1`` (rigid alignment).

    Returns:
        ``(s, R (D, D), t (D,))``; apply with :func:`apply_transform`.

    Raises:
        ConfigError: shapes differ, too few points, or the points are degenerate (all equal).
    """
    a = np.asarray(src, dtype=np.float64)
    b = np.asarray(dst, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] < 2:
        raise ConfigError(f"umeyama needs two (N, D) point sets of equal shape, got {a.shape} and {b.shape}")
    dim = a.shape[1]
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    ca, cb = a - mean_a, b - mean_b
    var_a = float((ca**2).sum() / len(a))
    if var_a <= 1e-20:
        raise ConfigError("umeyama: the source points all coincide; landmarks must be distinct")
    cov = cb.T @ ca / len(a)
    u, sing, vt = np.linalg.svd(cov)
    fix = np.eye(dim)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[-1, -1] = -1.0
    rotation = u @ fix @ vt
    scale = float(np.trace(np.diag(sing) @ fix) / var_a) if with_scale else 1.0
    translation = mean_b - scale * rotation @ mean_a
    return scale, rotation, translation


def apply_transform(points: np.ndarray, scale: float, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """``s R p + t`` for (N, D) points."""
    return scale * np.asarray(points, dtype=np.float64) @ rotation.T + translation


# ----------------------------------------------------------------------------------------------------------------
# Face region


@dataclass(frozen=True)
class FaceEllipsoid:
    """An ellipsoid ``{p : Σ_k ((p − centre)·axes_k / radii_k)² <= 1}`` (axes are the rows of ``axes``)."""

    centre: np.ndarray  # (3,)
    axes: np.ndarray  # (3, 3) orthonormal rows: face right, face up, face forward (out of the face)
    radii: np.ndarray  # (3,)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: the points lie inside (or on) the ellipsoid."""
        local = (np.asarray(points, dtype=np.float64) - self.centre) @ self.axes.T / self.radii
        return (local**2).sum(axis=1) <= 1.0


def inter_ocular_distance(landmarks: np.ndarray) -> float:
    """Distance between the two eye landmarks of (5, 3) landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return float(np.linalg.norm(lm[RIGHT_EYE] - lm[LEFT_EYE]))


def face_ellipsoid(
    landmarks: np.ndarray, radii: tuple[float, float, float] = (1.2, 1.6, 1.0), back: float = 0.5
) -> FaceEllipsoid:
    """The face region from 5 (reference) landmarks, sized in inter-ocular distances (IOD).

    Frame: ``x`` = unit vector from the left to the right eye; ``y`` = from the mouth-corner midpoint to the eye
    midpoint, made orthogonal to ``x``; ``z = x × y``, flipped if needed so that it points from the landmarks'
    centroid towards the nose tip (out of the face). Centre = midpoint of the eye and mouth midpoints, moved
    ``back`` IOD along ``−z`` (into the head). Semi-axes = ``radii`` × IOD along (x, y, z). The defaults cover the
    face from the brows to the chin and the cheeks up to about the ears' front, and extend one IOD deep.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (5, 3):
        raise ConfigError(f"face_ellipsoid needs (5, 3) landmarks, got {lm.shape}")
    iod = inter_ocular_distance(lm)
    if iod <= 0:
        raise ConfigError("the two eye landmarks coincide; cannot size the face region")
    eyes = (lm[LEFT_EYE] + lm[RIGHT_EYE]) / 2
    mouth = (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) / 2
    x = (lm[RIGHT_EYE] - lm[LEFT_EYE]) / iod
    y = eyes - mouth
    y = y - (y @ x) * x
    norm = np.linalg.norm(y)
    if norm < 1e-12:
        raise ConfigError("the landmarks are degenerate (mouth on the eye line); cannot orient the face region")
    y = y / norm
    z = np.cross(x, y)
    if (lm[NOSE] - lm.mean(axis=0)) @ z < 0:
        z = -z
    centre = (eyes + mouth) / 2 - back * iod * z
    return FaceEllipsoid(centre=centre, axes=np.stack([x, y, z]), radii=np.asarray(radii, dtype=np.float64) * iod)


# ----------------------------------------------------------------------------------------------------------------
# Point-to-surface distance


def sample_surface(mesh: Mesh, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` area-uniform points on the mesh (fixed seed). Returns (points (count, 3), triangle index (count,))."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) == 0:
        raise ConfigError("the mesh has no faces")
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    total = area.sum()
    rng = np.random.default_rng(seed)
    probabilities = area / total if total > 0 else None
    index = rng.choice(len(faces), size=count, p=probabilities)
    r1, r2 = rng.random(count), rng.random(count)
    root = np.sqrt(r1)
    w0, w1, w2 = 1 - root, root * (1 - r2), root * r2
    t = tri[index]
    return w0[:, None] * t[:, 0] + w1[:, None] * t[:, 1] + w2[:, None] * t[:, 2], index


def point_triangle_distance(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean distance from points (N, 3) to triangles (N, 3)×3 (one triangle per point), shape (N,).

    Closest point by the Voronoi regions of the triangle (vertices, edges, face), as in Ericson, *Real-Time Collision
    Detection*, 5.1.5; degenerate triangles fall back to their edges.
    """
    ab, ac, ap = b - a, c - a, points - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = points - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = points - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    eps = 1e-30
    # Face region (default), barycentric (u, v, w) = (va, vb, vc) / sum.
    denom = (va + vb + vc).clamp_min(eps)
    closest = a + ab * (vb / denom)[:, None] + ac * (vc / denom)[:, None]

    def pick(condition: torch.Tensor, point: torch.Tensor) -> None:
        nonlocal closest
        closest = torch.where(condition[:, None], point, closest)

    # Edges (checked before vertices so that vertex regions, which are more specific, win).
    t_bc = ((d4 - d3) / ((d4 - d3) + (d5 - d6)).clamp_min(eps)).clamp(0, 1)
    pick((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), b + (c - b) * t_bc[:, None])
    t_ac = (d2 / (d2 - d6).clamp_min(eps)).clamp(0, 1)
    pick((vb <= 0) & (d2 >= 0) & (d6 <= 0), a + ac * t_ac[:, None])
    t_ab = (d1 / (d1 - d3).clamp_min(eps)).clamp(0, 1)
    pick((vc <= 0) & (d1 >= 0) & (d3 <= 0), a + ab * t_ab[:, None])
    pick((d6 >= 0) & (d5 <= d6), c)
    pick((d3 >= 0) & (d4 <= d3), b)
    pick((d1 <= 0) & (d2 <= 0), a)
    return torch.linalg.vector_norm(points - closest, dim=-1)


def point_to_mesh_distance(
    points: np.ndarray,
    mesh: Mesh,
    samples: int = 200_000,
    candidates: int = 16,
    chunk: int = 4096,
    seed: int = 0,
) -> np.ndarray:
    """Distance (N,) from each point to the closest point of the mesh surface.

    The surface is densely sampled (``samples`` area-uniform points plus every vertex, each tagged with its triangle);
    the ``candidates`` nearest samples of each query nominate triangles (a k-d tree from SciPy, which scikit-image
    already requires; ``torch.cdist`` in chunks when SciPy is missing), and the exact point-to-triangle distance to
    those triangles is taken. The result is never larger than the sampled
    nearest-neighbour distance and is exact whenever the closest triangle is among the candidates (always, in
    practice, for the dense sampling used here).
    """
    query = torch.as_tensor(np.asarray(points, dtype=np.float64))
    if len(query) == 0:
        return np.zeros(0)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    surface, triangle = sample_surface(mesh, samples, seed)
    # Every vertex also nominates one triangle that uses it.
    vertex_triangle = np.zeros(len(vertices), dtype=np.int64)
    vertex_triangle[faces[:, 0]] = np.arange(len(faces))
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    surface = np.concatenate([surface, vertices[used]])
    triangle = np.concatenate([triangle, vertex_triangle[used]])
    tri_index = torch.as_tensor(triangle)
    corners = torch.as_tensor(vertices[faces])  # (F, 3, 3) float64
    k = min(candidates, len(surface))
    nearest_all = _nearest_samples(query.numpy(), surface, k)
    out = []
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk]
        nearest = nearest_all[start : start + chunk]  # (n, k)
        tris = corners[tri_index[nearest].reshape(-1)]  # (n·k, 3, 3)
        qq = q[:, None, :].expand(-1, k, 3).reshape(-1, 3)
        dist = point_triangle_distance(qq, tris[:, 0], tris[:, 1], tris[:, 2]).reshape(-1, k)
        out.append(dist.min(dim=1).values)
    return torch.cat(out).numpy()


def _nearest_samples(query: np.ndarray, cloud: np.ndarray, k: int) -> torch.Tensor:
    """(N, k) indices of the k nearest cloud points of each query point."""
    try:
        from scipy.spatial import cKDTree
    except ImportError:  # pragma: no cover - scipy comes with scikit-image
        cloud_t = torch.as_tensor(cloud, dtype=torch.float32)
        rows = max(1, 20_000_000 // max(len(cloud), 1))
        parts = [
            torch.cdist(torch.as_tensor(query[s : s + rows], dtype=torch.float32), cloud_t)
            .topk(k, dim=1, largest=False)
            .indices
            for s in range(0, len(query), rows)
        ]
        return torch.cat(parts)
    _, index = cKDTree(cloud).query(query, k=k)
    return torch.as_tensor(np.asarray(index, dtype=np.int64).reshape(len(query), k))


# ----------------------------------------------------------------------------------------------------------------
# Average distance


@dataclass
class GeometryResult:
    """Outcome of :func:`average_distance` (distances are fractions of the reference inter-ocular distance)."""

    ad: float
    """Mean point-to-surface distance inside the face region / IOD."""
    median: float
    """Median of the same distances / IOD."""
    points: int
    """Number of reference points inside the face region."""
    inter_ocular: float
    """Reference inter-ocular distance (world units)."""
    landmark_rmse: float
    """RMS residual of the landmark alignment / IOD."""
    scale: float
    """Scale of the alignment (1 for a rigid one)."""


def average_distance(
    reference_mesh: Mesh,
    reference_landmarks: np.ndarray,
    predicted_mesh: Mesh,
    predicted_landmarks: np.ndarray,
    with_scale: bool = False,
    region: FaceEllipsoid | None = None,
    direction: str = "reference_to_predicted",
    min_reference_points: int = 20_000,
    samples: int = 200_000,
    seed: int = 0,
) -> GeometryResult:
    """AD of ``predicted_mesh`` against ``reference_mesh`` (Table 2 of the TriPlaneNet supplement).

    Args:
        reference_landmarks, predicted_landmarks: (5, 3) landmarks on each mesh (eyes, nose tip, mouth corners).
        with_scale: similarity instead of rigid alignment.
        region: face ellipsoid in the reference frame; default :func:`face_ellipsoid` of the reference landmarks.
        direction: ``reference_to_predicted`` (reference points inside the region → predicted surface; default, as
            the issue specifies), ``predicted_to_reference`` (aligned predicted points inside the region → reference
            surface, as the supplement's Fig. 4 colours them) or ``symmetric`` (mean of both).
        min_reference_points: the region's points are the mesh vertices, topped up with area-uniform surface
            samples to at least this many points over the whole mesh, so coarse meshes are not under-sampled.

    Raises:
        ConfigError: bad landmarks, an unknown direction, or no surface inside the face region.
    """
    if direction not in ("reference_to_predicted", "predicted_to_reference", "symmetric"):
        raise ConfigError(
            f"unknown AD direction {direction!r}; use reference_to_predicted, predicted_to_reference or symmetric"
        )
    ref_lm = np.asarray(reference_landmarks, dtype=np.float64)
    pred_lm = np.asarray(predicted_landmarks, dtype=np.float64)
    if ref_lm.shape != (5, 3) or pred_lm.shape != (5, 3):
        raise ConfigError(f"landmarks must be (5, 3), got {ref_lm.shape} and {pred_lm.shape}")
    if not (np.isfinite(ref_lm).all() and np.isfinite(pred_lm).all()):
        raise ConfigError("landmarks contain NaN or infinite values")
    scale, rotation, translation = umeyama(pred_lm, ref_lm, with_scale=with_scale)
    aligned = Mesh(
        vertices=apply_transform(predicted_mesh.vertices, scale, rotation, translation),
        faces=np.asarray(predicted_mesh.faces),
    )
    residual = ref_lm - apply_transform(pred_lm, scale, rotation, translation)
    iod = inter_ocular_distance(ref_lm)
    region = region or face_ellipsoid(ref_lm)

    def one_way(source: Mesh, target: Mesh) -> np.ndarray:
        points = np.asarray(source.vertices, dtype=np.float64)
        extra = max(0, min_reference_points - len(points))
        if extra:
            points = np.concatenate([points, sample_surface(source, extra, seed + 1)[0]])
        inside = points[region.contains(points)]
        if len(inside) == 0:
            raise ConfigError("no surface inside the face region; check the landmarks and the mesh units")
        return point_to_mesh_distance(inside, target, samples=samples, seed=seed)

    if direction == "reference_to_predicted":
        distances = one_way(reference_mesh, aligned)
        mean_distance = distances.mean()
    elif direction == "predicted_to_reference":
        distances = one_way(aligned, reference_mesh)
        mean_distance = distances.mean()
    else:  # symmetric: the mean of the two one-way means (not of the pooled points)
        forward, backward = one_way(reference_mesh, aligned), one_way(aligned, reference_mesh)
        distances = np.concatenate([forward, backward])
        mean_distance = (forward.mean() + backward.mean()) / 2
    return GeometryResult(
        ad=float(mean_distance / iod),
        median=float(np.median(distances) / iod),
        points=len(distances),
        inter_ocular=iod,
        landmark_rmse=float(np.sqrt((residual**2).sum(axis=1).mean()) / iod),
        scale=scale,
    )


# ----------------------------------------------------------------------------------------------------------------
# Landmarks on our prediction


def unproject_pixels(
    pixels: torch.Tensor, depth: torch.Tensor, camera: torch.Tensor, image_resolution: int
) -> torch.Tensor:
    """3D points of image pixels using a rendered depth map (distance along each unit ray, EG3D's ``image_depth``).

    Args:
        pixels: (N, 2) ``(x, y)`` pixel coordinates in an ``image_resolution``² image (pixel centres at ``j + 0.5``,
            the convention of :func:`triplanenet.synth.render.project_points`).
        depth: (1, h, w) or (h, w) depth map at the same camera (any resolution; sampled bilinearly at the same
            normalised position).
        camera: (25,) or (1, 25) EG3D label.

    Returns:
        (N, 3) world points ``origin + depth · direction`` (float32).
    """
    from triplanenet.eg3d.camera import split_label

    label = torch.as_tensor(camera, dtype=torch.float32).reshape(1, 25)
    cam2world, intrinsics = split_label(label)
    uv = torch.as_tensor(pixels, dtype=torch.float32).reshape(-1, 2) / float(image_resolution)
    u, v = uv[:, 0], uv[:, 1]
    fx, fy = intrinsics[0, 0, 0], intrinsics[0, 1, 1]
    cx, cy, skew = intrinsics[0, 0, 2], intrinsics[0, 1, 2], intrinsics[0, 0, 1]
    x_cam = (u - cx + cy * skew / fy - skew * v / fy) / fx
    y_cam = (v - cy) / fy
    cam_points = torch.stack([x_cam, y_cam, torch.ones_like(u)], dim=1)
    rotation, centre = cam2world[0, :3, :3], cam2world[0, :3, 3]
    directions = F.normalize(cam_points @ rotation.T, dim=1)
    grid = (uv * 2 - 1)[None, None]  # (1, 1, N, 2) in grid_sample's (x, y) order
    d = depth.float().reshape(1, 1, *depth.shape[-2:])
    sampled = F.grid_sample(d, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0, 0]
    return centre + sampled[:, None] * directions


# ----------------------------------------------------------------------------------------------------------------
# Reference meshes from files


def _read_obj(path: Path) -> Mesh:
    vertices: list[list[float]] = []
    faces: list[list[int]] = []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v" and len(parts) >= 4:
            vertices.append([float(p) for p in parts[1:4]])
        elif parts[0] == "f" and len(parts) >= 4:
            index = [int(p.split("/")[0]) for p in parts[1:]]
            index = [i - 1 if i > 0 else len(vertices) + i for i in index]
            faces.extend([index[0], index[j], index[j + 1]] for j in range(1, len(index) - 1))
    return Mesh(
        vertices=np.asarray(vertices, dtype=np.float32).reshape(-1, 3),
        faces=np.asarray(faces, dtype=np.int64).reshape(-1, 3),
    )


_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def _read_ply(path: Path) -> Mesh:
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ConfigError(f"{path}: not a PLY file")
    body_start = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii", errors="replace").splitlines()
    fmt = header[1].split()[1] if len(header) > 1 and header[1].startswith("format") else ""
    elements: list[tuple[str, int, list[tuple[str, ...]]]] = []
    for line in header:
        parts = line.split()
        if parts[:1] == ["element"]:
            elements.append((parts[1], int(parts[2]), []))
        elif parts[:1] == ["property"] and elements:
            elements[-1][2].append(tuple(parts[1:]))
    if fmt == "ascii":
        tokens = data[body_start:].split()
        position = 0
        vertices = np.zeros((0, 3))
        faces: list[list[int]] = []
        for name, count, props in elements:
            for _ in range(count):
                values: dict[str, float] = {}
                for prop in props:
                    if prop[0] == "list":
                        n = int(tokens[position])
                        index = [int(t) for t in tokens[position + 1 : position + 1 + n]]
                        position += 1 + n
                        if name == "face":
                            faces.extend([index[0], index[j], index[j + 1]] for j in range(1, n - 1))
                    else:
                        values[prop[1]] = float(tokens[position])
                        position += 1
                if name == "vertex":
                    vertices = np.concatenate([vertices, [[values["x"], values["y"], values["z"]]]])
        return Mesh(vertices=vertices.astype(np.float32), faces=np.asarray(faces, dtype=np.int64).reshape(-1, 3))
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise ConfigError(f"{path}: unsupported PLY format {fmt!r}")
    order = "<" if fmt == "binary_little_endian" else ">"
    offset = body_start
    vertices_out = np.zeros((0, 3), dtype=np.float32)
    faces_out = np.zeros((0, 3), dtype=np.int64)
    for name, count, props in elements:
        if all(p[0] != "list" for p in props):
            dtype = np.dtype([(p[1], order + _PLY_TYPES[p[0]]) for p in props])
            table = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            offset += dtype.itemsize * count
            if name == "vertex":
                vertices_out = np.stack([table["x"], table["y"], table["z"]], axis=1).astype(np.float32)
            continue
        rows: list[list[int]] = []
        for _ in range(count):
            for prop in props:
                if prop[0] == "list":
                    count_type, item_type = _PLY_TYPES[prop[1]], _PLY_TYPES[prop[2]]
                    n = int(np.frombuffer(data, order + count_type, 1, offset)[0])
                    offset += np.dtype(count_type).itemsize
                    index = np.frombuffer(data, order + item_type, n, offset).astype(np.int64)
                    offset += np.dtype(item_type).itemsize * n
                    if name == "face":
                        rows.extend([int(index[0]), int(index[j]), int(index[j + 1])] for j in range(1, n - 1))
                else:
                    offset += np.dtype(_PLY_TYPES[prop[0]]).itemsize
        if name == "face":
            faces_out = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    return Mesh(vertices=vertices_out, faces=faces_out)


def read_mesh(path: str | os.PathLike[str]) -> Mesh:
    """Read a reference mesh from ``.obj`` or ``.ply`` (ASCII or binary; polygons are fanned into triangles).

    Raises:
        InputImageError: the file is missing.
        ConfigError: unsupported or malformed file, or a mesh without faces.
    """
    file = Path(path)
    if not file.is_file():
        raise InputImageError(f"reference mesh {file} not found; pass an existing .ply or .obj file")
    try:
        mesh = _read_obj(file) if file.suffix.lower() == ".obj" else _read_ply(file)
    except (ValueError, KeyError, IndexError, struct.error) as exc:
        raise ConfigError(f"{file}: cannot read the mesh ({exc}); write it as .obj or .ply") from None
    if len(mesh.faces) == 0 or not math.isfinite(float(np.abs(mesh.vertices).sum())):
        raise ConfigError(f"{file}: the mesh has no faces or non-finite vertices")
    return mesh
