"""Density grids and marching-cubes meshes, on an analytic density field with a known surface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.shapes import density_grid, extract_mesh, grid_coordinates
from triplanenet.io.mesh import Mesh, read_ply_counts, write_obj, write_ply


class SphereField(torch.nn.Module):
    """Stands in for a generator: σ = 100·(r0 − |p − centre|), colour = position-dependent."""

    def __init__(self, radius: float = 0.3, centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        super().__init__()
        self.config = GeneratorConfig.tiny()
        self.radius = radius
        self.centre = torch.tensor(centre)

    def decode(self, planes: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distance = (coords - self.centre).norm(dim=-1, keepdim=True)
        sigma = 100.0 * (self.radius - distance)
        rgb = (coords + 0.5).clamp(0, 1)
        return rgb, sigma

    def density(self, planes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return self.decode(planes, coords)[1]


def test_grid_coordinates_span_the_cube() -> None:
    coords = grid_coordinates(5, 1.0)
    assert coords.shape == (125, 3)
    assert coords.min().item() == -0.5 and coords.max().item() == 0.5
    assert torch.equal(coords[1], torch.tensor([-0.5, -0.5, -0.25]))  # z varies fastest


def test_sphere_mesh_is_closed_and_at_the_right_radius() -> None:
    field = SphereField(radius=0.3)
    mesh = extract_mesh(field, torch.zeros(1), resolution=48, level=10.0)
    assert mesh.is_watertight()
    radii = np.linalg.norm(mesh.vertices, axis=1)
    # σ = 10 at r = 0.3 − 0.1 = 0.2; marching cubes is accurate to a fraction of a voxel (1/47).
    assert abs(radii.mean() - 0.2) < 0.01 and radii.std() < 0.01
    assert mesh.colors is not None and mesh.colors.dtype == np.uint8 and mesh.colors.shape == mesh.vertices.shape
    # Faces are counter-clockwise seen from outside: the signed volume is positive (4/3·π·0.2³ ≈ 0.0335).
    v = mesh.vertices[mesh.faces]
    volume = np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6
    assert abs(volume - 4 / 3 * np.pi * 0.2**3) < 0.003


def test_surface_cut_by_the_cube_is_still_closed() -> None:
    field = SphereField(radius=0.5, centre=(0.0, -0.45, 0.0))  # pokes out of the bottom face of the cube
    mesh = extract_mesh(field, torch.zeros(1), resolution=32, level=10.0, with_colors=False)
    assert mesh.is_watertight()
    assert mesh.vertices[:, 1].min() >= -0.5 - 1e-6


def test_level_outside_the_field_falls_back_with_a_warning() -> None:
    field = SphereField(radius=0.3)
    with pytest.warns(UserWarning, match="does not cross level"):
        mesh = extract_mesh(field, torch.zeros(1), resolution=24, level=1e6, with_colors=False)
    assert len(mesh.faces) > 0


def test_density_grid_needs_a_single_sample() -> None:
    with pytest.raises(ValueError, match="single sample"):
        density_grid(SphereField(), torch.zeros(2), resolution=8)


def test_ply_and_obj_writers(tmp_path: Path) -> None:
    mesh = Mesh(
        vertices=np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32),
        faces=np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]),
        colors=np.full((4, 3), 200, dtype=np.uint8),
    )
    assert mesh.is_watertight()
    write_ply(tmp_path / "t.ply", mesh)
    assert read_ply_counts(tmp_path / "t.ply") == (4, 4)
    data = (tmp_path / "t.ply").read_bytes()
    header_end = data.index(b"end_header\n") + len(b"end_header\n")
    assert len(data) - header_end == 4 * (12 + 3) + 4 * (1 + 12)
    write_obj(tmp_path / "t.obj", mesh)
    lines = (tmp_path / "t.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in lines) == 4
    assert "f 1 3 2" in lines
    assert not Mesh(mesh.vertices, mesh.faces[:3]).is_watertight()
