"""Procedural heads: identities, the field, sphere-traced renders and their ground truth, the mesh."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from triplanenet.eg3d.camera import camera_label, mirror_label, validate_label
from triplanenet.eg3d.rays import generate_rays, split_label
from triplanenet.errors import CameraError, ConfigError
from triplanenet.synth import (
    FIELDS,
    LANDMARK_NAMES,
    PARAM_DIM,
    RAY_END,
    RAY_START,
    HeadParams,
    head_landmarks,
    head_mesh,
    project_points,
    render_heads,
    sample_cameras,
    sdf_points,
    value_noise,
)
from triplanenet.synth import render as synth_render

RES = 96  # small renders keep the suite fast; still ~2.7 mm per pixel at the face


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Rendering is hundreds of small element-wise ops per step: one thread is faster and steadier on shared CPUs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _frontal_and_yaws(*yaws: float) -> torch.Tensor:
    return camera_label(torch.tensor((0.0, *yaws)), 0.0)


@pytest.fixture(scope="module")
def symmetric_head() -> HeadParams:
    return HeadParams.from_seed(7).symmetric()


@pytest.fixture(scope="module")
def views(symmetric_head: HeadParams) -> tuple[torch.Tensor, synth_render.SynthSample]:
    """One symmetric identity seen from the front and from yaw ±0.5."""
    cameras = _frontal_and_yaws(-0.5, 0.5)
    return cameras, render_heads(symmetric_head, cameras, RES)


# ------------------------------------------------------------------------------------------------------------
# Identities


def test_identities_come_from_seeds_and_stay_in_range() -> None:
    a = HeadParams.from_seed(3, 5)
    b = HeadParams.from_seed(3, 5)
    c = HeadParams.from_seed(4, 5)
    assert a.vector.shape == (5, PARAM_DIM)
    assert torch.equal(a.vector, b.vector) and not torch.equal(a.vector, c.vector)
    for field in FIELDS:
        value = getattr(a, field.name)
        assert value.shape == ((5,) if field.size == 1 else (5, 3))
        assert bool((value >= field.low - 1e-6).all() and (value <= field.high + 1e-6).all()), field.name
    assert bool((a.parting.abs() >= 0.4).all())  # every sampled identity has a side parting
    assert torch.equal(a.texture_seed, a.texture_seed.round())


def test_params_replace_index_and_errors() -> None:
    heads = HeadParams.from_seed(0, 3)
    changed = heads.replace(nose_width=1.2, skin_color=(0.5, 0.4, 0.3))
    assert torch.allclose(changed.nose_width, torch.full((3,), 1.2))
    assert torch.allclose(changed.skin_color, torch.tensor([0.5, 0.4, 0.3]).expand(3, 3))
    assert torch.equal(changed.eye_size, heads.eye_size)  # untouched fields are kept
    assert len(heads[1]) == 1 and torch.equal(heads[1].vector, heads.vector[1:2])
    assert torch.equal(heads[torch.tensor([2, 0])].vector, heads.vector[[2, 0]])
    sym = heads.symmetric()
    assert bool((sym.parting == 0).all() and (sym.asymmetry == 0).all())
    with pytest.raises(ConfigError, match="shape"):
        HeadParams(torch.zeros(2, PARAM_DIM + 1))
    with pytest.raises(ConfigError, match="unknown head parameter"):
        heads.replace(beard=1.0)
    with pytest.raises(ConfigError, match="NaN"):
        HeadParams(torch.full((1, PARAM_DIM), math.nan))
    with pytest.raises(AttributeError):
        _ = heads.no_such_field


# ------------------------------------------------------------------------------------------------------------
# The field


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), x=st.floats(0.0, 0.45), y=st.floats(-0.45, 0.45), z=st.floats(-0.45, 0.45))
def test_symmetric_field_is_exactly_mirror_symmetric(seed: int, x: float, y: float, z: float) -> None:
    head = HeadParams.from_seed(seed).symmetric()
    points = torch.tensor([[x, y, z], [-x, y, z]])
    values = sdf_points(head, points)
    assert values[0, 0] == values[0, 1]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(-(2**20), 2**20), scale=st.floats(0.5, 400.0))
def test_value_noise_is_deterministic_and_bounded(seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(0)
    p = (torch.rand(3, 500, generator=g) - 0.5) * scale
    s = torch.tensor(seed)
    a = value_noise(p[0], p[1], p[2], s)
    assert torch.equal(a, value_noise(p[0], p[1], p[2], s))
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.equal(a, value_noise(p[0], p[1], p[2], s + 1))


def test_every_head_fits_in_the_tracing_bound() -> None:
    """Extreme identities (parameters at the ends of their ranges) stay inside the bounding volume the tracer uses,
    so it can never cut a head off: the field is positive all over the bound's surface."""
    g = torch.Generator().manual_seed(1)
    n = 12
    corners = torch.rand(n, PARAM_DIM, generator=g) < 0.5
    low = torch.cat([torch.full((f.size,), f.low) for f in FIELDS])
    high = torch.cat([torch.full((f.size,), f.high) for f in FIELDS])
    heads = HeadParams(torch.where(corners, high, low)).replace(
        parting=torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    )
    # Points on the ellipsoid (outside the neck cylinder) and on the neck cylinder (outside the ellipsoid).
    u = torch.rand(6000, 3, generator=g)
    theta, phi = 2 * math.pi * u[:, 0], torch.acos(1 - 2 * u[:, 1])
    unit = torch.stack((torch.sin(phi) * torch.cos(theta), torch.cos(phi), torch.sin(phi) * torch.sin(theta)), -1)
    ellipsoid = torch.tensor(synth_render.BOUND_CENTRE) + unit * torch.tensor(synth_render.BOUND_RADII)
    axis_z, radius, top = synth_render.NECK_BOUND
    cyl_y = -0.49 + (top + 0.49) * u[:, 2]
    cylinder = torch.stack((radius * torch.cos(theta), cyl_y, axis_z + radius * torch.sin(theta)), -1)
    in_cylinder = (ellipsoid[:, 1] < top) & (ellipsoid[:, 0] ** 2 + (ellipsoid[:, 2] - axis_z) ** 2 < radius**2)
    in_ellipsoid = (
        ((cylinder - torch.tensor(synth_render.BOUND_CENTRE)) / torch.tensor(synth_render.BOUND_RADII)) ** 2
    ).sum(-1) < 1
    points = torch.cat((ellipsoid[~in_cylinder], cylinder[~in_ellipsoid]))
    inside_box = (points.abs() <= 0.49).all(dim=-1)
    values = sdf_points(heads, points[inside_box])
    assert float(values.min()) > 0.0


# ------------------------------------------------------------------------------------------------------------
# Renders


def test_render_shapes_ranges_and_determinism(views: tuple[torch.Tensor, synth_render.SynthSample]) -> None:
    cameras, sample = views
    b = cameras.shape[0]
    assert sample.image.shape == (b, 3, RES, RES) and sample.depth.shape == (b, 1, RES, RES)
    assert sample.mask.shape == (b, 1, RES, RES)
    assert sample.landmarks_2d.shape == (b, 5, 2) and sample.landmarks_3d.shape == (b, 5, 3)
    assert float(sample.image.min()) >= -1.0 and float(sample.image.max()) <= 1.0
    assert set(sample.mask.unique().tolist()) == {0.0, 1.0}
    fg = sample.mask.bool()
    assert 0.3 < fg.float().mean() < 0.8  # the head fills the frame like an FFHQ crop, without touching every edge
    assert float(sample.depth[fg].min()) >= RAY_START and float(sample.depth[fg].max()) <= RAY_END
    assert bool((sample.depth[~fg] == RAY_END).all())
    assert bool((sample.image.permute(0, 2, 3, 1)[~fg[:, 0]] == -1.0).all())  # black background
    again = render_heads(sample.params, cameras, RES)
    for name in ("image", "depth", "mask", "landmarks_2d", "landmarks_3d", "landmarks_visible"):
        assert torch.equal(getattr(again, name), getattr(sample, name)), name
    # Alone or in a batch: the same picture (up to last-bit differences of vectorised maths).
    alone = render_heads(sample.params[:1], cameras[:1], RES)
    assert float((alone.image[0] - sample.image[0]).abs().max()) < 1e-3
    assert torch.equal(alone.mask[0], sample.mask[0])


def test_background_options_and_broadcasting() -> None:
    head = HeadParams.default()
    sample = render_heads(head, camera_label(0.3, 0.0), 32, background=(0.0, 0.5, -0.5), background_depth=0.0)
    bg = ~sample.mask[0, 0].bool()
    assert torch.equal(sample.image[0, :, bg][:, 0], torch.tensor([0.0, 0.5, -0.5]))
    assert bool((sample.depth[0, 0][bg] == 0.0).all())
    two = render_heads(head, camera_label(torch.tensor([0.3, 0.3]), 0.0), 32)  # one identity for both cameras
    assert torch.equal(two.mask[0], two.mask[1]) and torch.allclose(two.image[0], two.image[1], atol=1e-4)


def test_framing_matches_an_ffhq_crop(views: tuple[torch.Tensor, synth_render.SynthSample]) -> None:
    _, sample = views
    eyes = sample.landmarks_2d[0, :2] / RES
    mouth = sample.landmarks_2d[0, 3:].mean(0) / RES
    spacing = float(eyes[1, 0] - eyes[0, 0])
    assert 0.22 < spacing < 0.30  # FFHQ: eyes about a quarter of the image apart
    assert 0.40 < float(eyes[:, 1].mean()) < 0.52 and 0.66 < float(mouth[1]) < 0.78
    columns = sample.mask[0, 0].any(dim=0).nonzero()
    width = float(columns.max() - columns.min() + 1) / RES
    assert 0.5 < width < 0.85  # head and hair span the middle of the image


def test_landmarks_lie_on_visible_features(views: tuple[torch.Tensor, synth_render.SynthSample]) -> None:
    cameras, sample = views
    assert len(LANDMARK_NAMES) == 5
    _, distance = project_points(sample.landmarks_3d, cameras, RES)
    # Frontal: the nose tip is the landmark closest to the camera; every landmark is visible.
    assert int(distance[0].argmin()) == LANDMARK_NAMES.index("nose_tip")
    assert bool(sample.landmarks_visible.all())
    # Eyes and mouth corners are mirror images for a symmetric head; image-left comes first (world -x).
    lm = sample.landmarks_3d[0]
    for left, right in ((0, 1), (3, 4)):
        assert lm[left, 0] < 0 < lm[right, 0]
        assert torch.allclose(lm[left] * torch.tensor([-1.0, 1.0, 1.0]), lm[right], atol=1e-5)
    assert abs(float(lm[2, 0])) < 1e-6
    # Pixels under the landmarks: on the head, at the landmark's depth (not occluded), and pupils are dark.
    cam2world, intrinsics = split_label(cameras)
    _, dirs = generate_rays(cam2world, intrinsics, RES)
    centre = cam2world[:, :3, 3]
    luminance = sample.image.mean(dim=1)
    for b in range(cameras.shape[0]):
        face = luminance[b][sample.mask[b, 0].bool()]
        for k in range(5):
            col, row = (int(v) for v in sample.landmarks_2d[b, k].floor().tolist())
            assert sample.mask[b, 0, row, col] == 1.0
            # Unproject the pixel with the rendered depth: it lands within a few pixels of the 3D landmark.
            point = centre[b] + sample.depth[b, 0, row, col] * dirs[b, row * RES + col]
            assert float((point - sample.landmarks_3d[b, k]).norm()) < 0.012, (b, k)
        for k in (0, 1):  # pupil and iris: darker than the skin around (a catch-light may sit on the pupil)
            col, row = (int(v) for v in sample.landmarks_2d[b, k].floor().tolist())
            assert float(luminance[b, row - 1 : row + 2, col - 1 : col + 2].min()) < float(face.median()) - 0.2
    # The same 3D landmarks whatever the view (they are properties of the identity).
    assert torch.equal(sample.landmarks_3d[0], sample.landmarks_3d[1])
    assert torch.allclose(sample.landmarks_3d[0], head_landmarks(sample.params[:1])[0])


def test_profile_view_hides_the_far_eye() -> None:
    sample = render_heads(HeadParams.default(), camera_label(1.4, 0.0), 48)
    visible = dict(zip(LANDMARK_NAMES, sample.landmarks_visible[0].tolist(), strict=True))
    assert visible["right_eye"] and visible["nose_tip"] and not visible["left_eye"]


def test_mirror_camera_gives_the_flipped_image(symmetric_head: HeadParams) -> None:
    camera = camera_label(0.35, -0.1)
    cameras = torch.cat((camera, mirror_label(camera)))
    sym = render_heads(symmetric_head, cameras, RES)
    flipped = sym.image[1].flip(-1)
    assert float((sym.mask[0] != sym.mask[1].flip(-1)).float().mean()) < 0.003
    assert float((sym.image[0] - flipped).abs().mean()) < 0.01
    assert float((sym.depth[0] - sym.depth[1].flip(-1)).abs().median()) < 1e-4
    # The flipped landmarks: x -> R - x, and image-left/right swap.
    lm = sym.landmarks_2d[1][[1, 0, 2, 4, 3]]
    expected = torch.stack((RES - lm[:, 0], lm[:, 1]), dim=-1)
    assert torch.allclose(sym.landmarks_2d[0], expected, atol=1e-3)
    # With the side parting and the unmirrored texture back on, the flip no longer matches.
    parted = HeadParams(symmetric_head.vector).replace(parting=1.0, asymmetry=1.0)
    asym = render_heads(parted, cameras, RES)
    assert float((asym.image[0] - asym.image[1].flip(-1)).abs().mean()) > 0.02


def test_render_errors() -> None:
    head = HeadParams.default()
    with pytest.raises(CameraError):
        render_heads(head, torch.zeros(1, 24), 16)
    with pytest.raises(ConfigError, match="identities"):
        render_heads(HeadParams.default(3), camera_label(torch.zeros(2), 0.0), 16)
    with pytest.raises(ConfigError, match="resolution"):
        render_heads(head, camera_label(0.0, 0.0), 0)
    with pytest.raises(ConfigError, match="background"):
        render_heads(head, camera_label(0.0, 0.0), 16, background=(0.0, 0.0))


def test_sample_cameras_are_valid_ffhq_poses() -> None:
    cams = sample_cameras(torch.Generator().manual_seed(0), 64)
    validate_label(cams)
    centres = cams[:, [3, 7, 11]]
    assert torch.allclose(centres.norm(dim=-1), torch.full((64,), 2.7), atol=1e-4)
    assert torch.allclose(cams[:, 16:], camera_label(0.0, 0.0)[:, 16:].expand(64, 9))
    assert torch.equal(cams, sample_cameras(torch.Generator().manual_seed(0), 64))


# ------------------------------------------------------------------------------------------------------------
# Mesh


def test_mesh_is_watertight_and_matches_the_rendered_depth(
    symmetric_head: HeadParams, views: tuple[torch.Tensor, synth_render.SynthSample]
) -> None:
    n = 64
    mesh = head_mesh(symmetric_head, resolution=n)
    voxel = 1.0 / (n - 1)
    assert mesh.is_watertight()
    assert mesh.colors is not None and mesh.colors.shape == mesh.vertices.shape
    assert np.abs(mesh.vertices).max() <= 0.5
    # Outward orientation: positive signed volume.
    v = mesh.vertices.astype(np.float64)
    f = mesh.faces
    volume = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0
    assert volume > 0.0
    # Surface points from the renders lie on the field's zero level and on the mesh (within a voxel).
    cameras, sample = views
    cam2world, intrinsics = split_label(cameras)
    origins, dirs = generate_rays(cam2world, intrinsics, RES)
    g = torch.Generator().manual_seed(0)
    fg = sample.mask.reshape(cameras.shape[0], -1).bool()
    points = []
    for b in range(cameras.shape[0]):
        rows = fg[b].nonzero().squeeze(1)
        pick = rows[torch.randperm(len(rows), generator=g)[:100]]
        points.append(origins[b, pick] + sample.depth.reshape(cameras.shape[0], -1)[b, pick, None] * dirs[b, pick])
    surface = torch.cat(points)
    on_level = sdf_points(symmetric_head, surface).abs()
    assert float(on_level.max()) < 0.5 * voxel and float(on_level.median()) < 0.02 * voxel
    nearest = torch.cdist(surface.double(), torch.from_numpy(v)).min(dim=1).values
    assert float(nearest.max()) < voxel


def test_mesh_rejects_batches() -> None:
    with pytest.raises(ConfigError, match="one identity"):
        head_mesh(HeadParams.default(2), resolution=16)
