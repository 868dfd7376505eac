"""Geometry out of a tri-plane generator: density grids and marching-cubes meshes.

EG3D extracts shapes by querying raw density σ on a regular grid spanning the tri-plane cube and running marching
cubes at σ = 10. We do the same, but return the mesh in world units (the cube is ``[-box/2, box/2]^3``) and pad the
grid with empty space so the surface is closed where it meets the cube border.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from triplanenet.mesh import Mesh

OFFICIAL_LEVEL = 10.0


def grid_coordinates(resolution: int, box_warp: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N³, 3) world points of an N×N×N grid over the tri-plane cube, x slowest, z fastest."""
    axis = torch.linspace(-box_warp / 2, box_warp / 2, resolution, device=device)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3)


@torch.no_grad()
def density_grid(
    generator: torch.nn.Module,
    planes: torch.Tensor,
    resolution: int = 128,
    chunk: int = 2**18,
) -> torch.Tensor:
    """Raw density σ on an N³ grid for one set of tri-planes (1, 3, C, R, R). Returns (N, N, N) indexed [x, y, z]."""
    if planes.shape[0] != 1:
        raise ValueError("density_grid takes the tri-planes of a single sample")
    box_warp = float(generator.config.rendering.box_warp)
    coords = grid_coordinates(resolution, box_warp, device=planes.device)
    values = [
        generator.density(planes, coords[None, start : start + chunk])[0, :, 0]
        for start in range(0, len(coords), chunk)
    ]
    return torch.cat(values).reshape(resolution, resolution, resolution).float().cpu()


def marching_cubes_mesh(grid: np.ndarray, level: float, box_warp: float) -> Mesh:
    """Closed iso-surface of ``grid`` (indexed [x, y, z], higher = inside) at ``level``, in world units."""
    from skimage import measure

    resolution = grid.shape[0]
    floor = min(float(grid.min()), level) - 1.0
    padded = np.pad(grid, 1, mode="constant", constant_values=floor)
    vertices, faces, _, _ = measure.marching_cubes(padded, level=level, gradient_direction="ascent")
    spacing = box_warp / (resolution - 1)
    # Caps closing the surface at the cube border fall inside the padding voxel: snap them onto the border.
    vertices = np.clip((vertices - 1.0) * spacing - box_warp / 2, -box_warp / 2, box_warp / 2)
    return Mesh(vertices=vertices.astype(np.float32), faces=faces.astype(np.int64))


@torch.no_grad()
def vertex_colors(
    generator: torch.nn.Module, planes: torch.Tensor, vertices: np.ndarray, chunk: int = 2**18
) -> np.ndarray:
    """(V, 3) uint8 colours: the decoder's first three feature channels at each vertex."""
    points = torch.from_numpy(vertices).to(planes.device, torch.float32)
    colours = []
    for start in range(0, len(points), chunk):
        rgb, _ = generator.decode(planes, points[None, start : start + chunk])
        colours.append(rgb[0, :, :3])
    rgb_all = torch.cat(colours) if colours else torch.zeros(0, 3)
    return (rgb_all.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def extract_mesh(
    generator: torch.nn.Module,
    planes: torch.Tensor,
    resolution: int = 128,
    level: float | None = OFFICIAL_LEVEL,
    with_colors: bool = True,
) -> Mesh:
    """Mesh of one sample's tri-planes (1, 3, C, R, R) by marching cubes on σ.

    Args:
        resolution: grid side N (EG3D uses 512 for figures; 128 is a quick preview).
        level: iso-level of raw σ; EG3D uses 10. ``None`` picks the 90th percentile of σ, which gives a surface
            even for untrained weights. When the requested level is not crossed by the field, the same fallback is
            used with a warning.
    """
    grid = density_grid(generator, planes, resolution).numpy()
    lo, hi = float(grid.min()), float(grid.max())
    if level is None or not lo < level < hi:
        fallback = float(np.percentile(grid, 90))
        if level is not None:
            warnings.warn(
                f"density range [{lo:.3g}, {hi:.3g}] does not cross level {level:g}; using {fallback:.3g} "
                "(90th percentile) instead",
                stacklevel=2,
            )
        level = fallback
    mesh = marching_cubes_mesh(grid, level, float(generator.config.rendering.box_warp))
    if with_colors:
        mesh.colors = vertex_colors(generator, planes, mesh.vertices)
    return mesh
