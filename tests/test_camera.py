"""EG3D camera labels: parity with the official sampler (fixtures), conventions, properties, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_parity, load_fixture
from triplanenet.eg3d.camera import (
    FFHQ_FOCAL,
    FFHQ_PIVOT,
    FFHQ_RADIUS,
    MIRROR_SIGNS,
    camera_label,
    find_label_problem,
    fov_to_focal,
    intrinsics_matrix,
    label_from_matrices,
    label_to_yaw_pitch,
    lookat_cam2world,
    mirror_label,
    novel_view_labels,
    orbit_labels,
    orbit_position,
    split_label,
    validate_label,
)
from triplanenet.errors import CameraError

# The fixture cameras come from the official LookAtPoseSampler in float32; we perform the same float32
# operations, so parity is (near) bit-exact. 1e-6 leaves room for other CPUs / math libraries.
PARITY_ATOL = 1e-6

yaws = st.floats(-3.0, 3.0, allow_nan=False)
pitches = st.floats(-1.5, 1.5, allow_nan=False)
radii = st.floats(0.5, 10.0, allow_nan=False)
pivots = st.tuples(*[st.floats(-0.3, 0.3, allow_nan=False)] * 3)


@pytest.fixture(scope="module")
def eg3d_fixture() -> dict:
    return load_fixture("eg3d_ffhq512_seed1.pt")


def _rotation(c: torch.Tensor) -> torch.Tensor:
    return split_label(c)[0][..., :3, :3]


def _position(c: torch.Tensor) -> torch.Tensor:
    return split_label(c)[0][..., :3, 3]


# ------------------------------------------------------------------------------------------------------------
# Fixture parity (official EG3D / TriPlaneNet code, float32 CPU)


def test_frontal_camera_matches_fixture(eg3d_fixture: dict) -> None:
    got = camera_label(0.0, 0.0)
    assert got.shape == (1, 25) and got.dtype == torch.float32
    assert_parity("cam_frontal", got[0], eg3d_fixture["cam_frontal"], atol=PARITY_ATOL, rtol=0)


def test_yaw_pitch_camera_matches_fixture(eg3d_fixture: dict) -> None:
    got = camera_label(0.5, -0.2)[0]
    assert_parity("cam_yaw05_pitchm02", got, eg3d_fixture["cam_yaw05_pitchm02"], atol=PARITY_ATOL, rtol=0)


def test_batched_labels_match_fixture(eg3d_fixture: dict) -> None:
    got = camera_label(torch.tensor([0.0, 0.5]), torch.tensor([0.0, -0.2]))
    assert_parity("c", got, eg3d_fixture["c"], atol=PARITY_ATOL, rtol=0)


def test_mirror_matches_fixture(eg3d_fixture: dict) -> None:
    assert_parity("c_mirrored", mirror_label(eg3d_fixture["c"]), eg3d_fixture["c_mirrored"], atol=0, rtol=0)


def test_novel_views_match_fixture(eg3d_fixture: dict) -> None:
    c = eg3d_fixture["c"]
    yaw_list = eg3d_fixture["novel_view_yaws"]
    got = novel_view_labels(c, yaw_list)
    assert got.shape == (3, 2, 25)
    for b in range(2):  # the pose does not depend on the input camera, only its intrinsics are kept
        assert_parity("novel_view_c", got[:, b], eg3d_fixture["novel_view_c"], atol=PARITY_ATOL, rtol=0)
    single = novel_view_labels(c[0], [-0.8, 0.0, 0.8])
    assert_parity("novel_view_c", single, eg3d_fixture["novel_view_c"], atol=PARITY_ATOL, rtol=0)


def test_yaw_sign_convention_from_fixture(eg3d_fixture: dict) -> None:
    """+yaw puts the camera at world +x, −pitch above the face (the fixture tensors are the truth)."""
    pos = _position(eg3d_fixture["c"][1])
    assert pos[0] > 1.0 and pos[1] > 0.3  # yaw +0.5, pitch −0.2
    nv = _position(eg3d_fixture["novel_view_c"])
    assert nv[0, 0] < -1.0 and nv[2, 0] > 1.0  # yaws −0.8 and +0.8
    yaw, pitch = label_to_yaw_pitch(eg3d_fixture["c"])
    torch.testing.assert_close(yaw, torch.tensor([0.0, 0.5]), atol=1e-6, rtol=0)
    torch.testing.assert_close(pitch, torch.tensor([0.0, -0.2]), atol=1e-6, rtol=0)


def test_fixture_labels_validate(eg3d_fixture: dict) -> None:
    for key in ("c", "c_mirrored", "novel_view_c"):
        out = validate_label(eg3d_fixture[key])
        assert out.shape == eg3d_fixture[key].shape


# ------------------------------------------------------------------------------------------------------------
# Conventions and documented numbers


def test_frontal_pose_is_opencv_looking_down_minus_z() -> None:
    e, k = split_label(camera_label())
    expected = torch.tensor([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]])
    torch.testing.assert_close(e[0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(k[0], intrinsics_matrix(FFHQ_FOCAL, (0.5, 0.5)), atol=0, rtol=0)


def test_reference_positions() -> None:
    # §3.2: yaw +0.3 → (0.798, 0, 2.579); v = π/2 + 0.2 → y = −0.344.
    torch.testing.assert_close(orbit_position(0.3, 0.0)[0], torch.tensor([0.798, 0.0, 2.579]), atol=1e-3, rtol=0)
    assert orbit_position(0.0, 0.2)[0, 1].item() == pytest.approx(-0.3438, abs=1e-4)
    # pitch is linear in height: y = −r·pitch/(π/2)
    assert orbit_position(0.0, -0.7, 2.0)[0, 1].item() == pytest.approx(2.0 * 0.7 / (math.pi / 2), abs=1e-5)


def test_pitch_clamp_keeps_camera_finite() -> None:
    for pitch in (-5.0, 5.0):
        c = camera_label(0.0, pitch)
        assert torch.isfinite(c).all()
        validate_label(c)
        assert abs(_position(c)[0, 1].item()) == pytest.approx(FFHQ_RADIUS, abs=1e-3)


def test_orbit_labels_follow_eg3d_video_path() -> None:
    n = 8
    exact = orbit_labels(n, pi=math.pi)
    t = torch.arange(n, dtype=torch.float64) / n
    expected = camera_label(0.35 * torch.sin(2 * math.pi * t), -0.05 + 0.25 * torch.cos(2 * math.pi * t))
    torch.testing.assert_close(exact, expected, atol=1e-6, rtol=0)
    official = orbit_labels(n)  # 3.14 in place of π, like gen_videos.py
    assert official.shape == (n, 25)
    assert (official - exact).abs().max().item() < 5e-3
    yaw, pitch = label_to_yaw_pitch(official)
    assert yaw[0].item() == pytest.approx(3.14 / 2 - math.pi / 2, abs=1e-5)
    assert pitch[0].item() == pytest.approx(3.14 / 2 - math.pi / 2 + 0.2, abs=1e-5)
    with pytest.raises(CameraError, match="n_frames"):
        orbit_labels(0)


def test_intrinsics_and_fov() -> None:
    k = intrinsics_matrix()
    assert k.shape == (3, 3)
    torch.testing.assert_close(k, torch.tensor([[FFHQ_FOCAL, 0, 0.5], [0, FFHQ_FOCAL, 0.5], [0, 0, 1.0]]))
    kb = intrinsics_matrix(torch.tensor([1.0, 2.0]), (0.4, 0.6))
    assert kb.shape == (2, 3, 3) and kb[1, 1, 1].item() == 2.0 and kb[0, 1, 2].item() == pytest.approx(0.6)
    assert fov_to_focal(18.837) == pytest.approx(4.2634, abs=1e-4)
    with pytest.raises(CameraError, match="field of view"):
        fov_to_focal(0.0)


def test_lookat_matches_camera_label() -> None:
    c = camera_label(0.4, 0.1)
    e = lookat_cam2world(_position(c), torch.tensor(FFHQ_PIVOT))
    torch.testing.assert_close(e[0], split_label(c)[0][0], atol=1e-6, rtol=0)


def test_label_from_matrices_roundtrip() -> None:
    c = camera_label(torch.tensor([0.1, -0.2]), 0.05, focal=3.0, principal=(0.45, 0.55))
    e, k = split_label(c)
    torch.testing.assert_close(label_from_matrices(e, k), c, atol=0, rtol=0)
    with pytest.raises(CameraError, match="4×4"):
        label_from_matrices(torch.zeros(3, 3), k)


def test_broadcast_and_errors() -> None:
    assert camera_label(torch.tensor([0.0, 0.1, 0.2]), 0.0).shape == (3, 25)
    assert camera_label(0.1, torch.linspace(-0.2, 0.2, 4)).shape == (4, 25)
    with pytest.raises(CameraError, match="yaw has 3 values and pitch 2"):
        camera_label(torch.zeros(3), torch.zeros(2))
    with pytest.raises(CameraError, match="pivot"):
        camera_label(0.0, 0.0, pivot=(0.0, 0.0))


def test_camera_label_is_differentiable() -> None:
    yaw = torch.tensor([0.0], requires_grad=True)
    pitch = torch.tensor([0.0], requires_grad=True)
    c = camera_label(yaw, pitch, radius=2.0, pivot=(0.0, 0.0, 0.0))
    c[0, 3].backward()  # x = r·sin(yaw) at pitch 0 → dx/dyaw = r
    assert yaw.grad is not None and yaw.grad.item() == pytest.approx(2.0, abs=1e-5)
    radius = torch.tensor([2.7], requires_grad=True)
    camera_label(0.3, -0.1, radius=radius)[0, 11].backward()
    assert radius.grad is not None and torch.isfinite(radius.grad).all()


def test_mirror_is_world_x_reflection() -> None:
    c = camera_label(torch.tensor([0.3, -0.6]), torch.tensor([0.1, -0.2]), pivot=(0.05, 0.0, 0.2))
    s = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    e = split_label(c)[0]
    torch.testing.assert_close(split_label(mirror_label(c))[0], s @ e @ s, atol=0, rtol=0)
    assert MIRROR_SIGNS[16:].eq(1).all()
    with pytest.raises(CameraError, match="25 numbers"):
        mirror_label(torch.zeros(24))


def test_novel_view_keeps_input_intrinsics() -> None:
    c = camera_label(0.7, 0.3, focal=3.5, principal=(0.48, 0.52))
    nv = novel_view_labels(c, 0.25)
    assert nv.shape == (1, 25)
    torch.testing.assert_close(nv[:, 16:], c[:, 16:], atol=0, rtol=0)
    torch.testing.assert_close(nv[:, :16], camera_label(0.25, 0.0)[:, :16], atol=0, rtol=0)
    tilted = novel_view_labels(c, [0.0], pitch=-0.2, radius=3.0, pivot=(0.0, 0.0, 0.0))
    assert tilted.shape == (1, 1, 25)
    assert _position(tilted)[0, 0].norm().item() == pytest.approx(3.0, abs=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=60, deadline=None)
@given(yaws, pitches, radii, pivots)
def test_camera_label_is_rigid_and_looks_at_pivot(
    yaw: float, pitch: float, radius: float, pivot: tuple[float, float, float]
) -> None:
    c = camera_label(yaw, pitch, radius=radius, pivot=pivot)
    r = _rotation(c)[0].double()
    torch.testing.assert_close(r.T @ r, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.linalg.det(r).item() == pytest.approx(1.0, abs=1e-5)
    pos = _position(c)[0].double()
    # the camera is on the sphere around the world origin (not around the pivot) ...
    assert pos.norm().item() == pytest.approx(radius, rel=1e-5)
    # ... and its principal ray (third column) passes through the pivot, in front of the camera
    to_pivot = torch.tensor(pivot, dtype=torch.float64) - pos
    forward = r[:, 2]
    assert torch.dot(forward, to_pivot).item() > 0
    assert torch.linalg.cross(forward, to_pivot).norm().item() < 1e-5 * max(1.0, radius)
    # camera x axis stays horizontal (no roll)
    assert abs(r[1, 0].item()) < 1e-6
    validate_label(c)
    assert find_label_problem(c) is None


@settings(max_examples=60, deadline=None)
@given(yaws, pitches, radii)
def test_position_on_sphere_when_pivot_is_origin(yaw: float, pitch: float, radius: float) -> None:
    c = camera_label(yaw, pitch, radius=radius, pivot=(0.0, 0.0, 0.0))
    pos = _position(c)[0]
    assert pos.norm().item() == pytest.approx(radius, rel=1e-5)
    torch.testing.assert_close(_rotation(c)[0][:, 2], -pos / pos.norm(), atol=1e-5, rtol=0)


@settings(max_examples=60, deadline=None)
@given(yaws, pitches, radii, pivots)
def test_label_to_yaw_pitch_inverts_camera_label(
    yaw: float, pitch: float, radius: float, pivot: tuple[float, float, float]
) -> None:
    got_yaw, got_pitch = label_to_yaw_pitch(camera_label(yaw, pitch, radius=radius, pivot=pivot)[0])
    # compare yaw on the circle
    assert math.remainder(got_yaw.item() - yaw, 2 * math.pi) == pytest.approx(0.0, abs=1e-4)
    assert got_pitch.item() == pytest.approx(pitch, abs=1e-5)


@settings(max_examples=60, deadline=None)
@given(yaws, pitches, radii, pivots)
def test_mirror_twice_is_identity_and_negates_yaw(
    yaw: float, pitch: float, radius: float, pivot: tuple[float, float, float]
) -> None:
    c = camera_label(yaw, pitch, radius=radius, pivot=pivot)
    m = mirror_label(c)
    assert torch.equal(mirror_label(m), c)
    y0, p0 = label_to_yaw_pitch(c)
    y1, p1 = label_to_yaw_pitch(m)
    assert math.remainder(y1.item() + y0.item(), 2 * math.pi) == pytest.approx(0.0, abs=1e-5)
    assert p1.item() == pytest.approx(p0.item(), abs=1e-6)
    validate_label(m)  # a mirrored camera is still a proper rotation
    # mirroring a look-at camera with a pivot on the symmetry plane equals the camera at −yaw
    if pivot[0] == 0.0:
        torch.testing.assert_close(m, camera_label(-yaw, pitch, radius=radius, pivot=pivot), atol=2e-5, rtol=0)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=4),
    st.floats(1.0, 8.0),
    st.tuples(st.floats(0.3, 0.7), st.floats(0.3, 0.7)),
)
def test_novel_view_zero_offset_is_frontal(input_yaws: list[float], focal: float, pp: tuple) -> None:
    c = camera_label(torch.tensor(input_yaws), 0.1, focal=focal, principal=pp)
    nv = novel_view_labels(c, 0.0)
    expected = torch.cat([camera_label(0.0, 0.0)[:, :16].expand(len(input_yaws), 16), c[:, 16:]], dim=1)
    assert torch.equal(nv, expected)


# ------------------------------------------------------------------------------------------------------------
# validate_label: accepted inputs


def test_validate_label_accepts_lists_numpy_and_tensors() -> None:
    c = camera_label(0.2, -0.1)[0]
    for value in (c, c.double(), c.numpy(), c.tolist(), [c.tolist(), c.tolist()]):
        out = validate_label(value)
        assert out.dtype == torch.float32 and out.dim() == 2 and out.shape[1] == 25
        torch.testing.assert_close(out[0], c)
    assert validate_label(c).shape == (1, 25)


def test_validate_label_keeps_gradients() -> None:
    c = camera_label(0.2, -0.1).requires_grad_(True)
    out = validate_label(c)
    out.sum().backward()
    assert c.grad is not None


# ------------------------------------------------------------------------------------------------------------
# validate_label: bad cameras (one-line messages that name the problem)


def _bad(value: object, match: str, **kwargs: object) -> str:
    with pytest.raises(CameraError, match=match) as info:
        validate_label(value, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def _good() -> torch.Tensor:
    return camera_label(0.3, -0.1)[0].clone()


@pytest.mark.parametrize("n", [0, 16, 24, 26])
def test_wrong_length(n: int) -> None:
    _bad(torch.zeros(n), f"{n} numbers per camera, expected 25")


def test_wrong_rank_and_types() -> None:
    _bad(torch.zeros(2, 3, 25), r"shape \(2, 3, 25\)")
    _bad(torch.zeros(0, 25), "empty")
    _bad(["a"] * 25, "only numbers")
    _bad([[1.0] * 25, [1.0] * 24], "ragged")
    _bad(torch.zeros(25, dtype=torch.bool), "real numbers")


@pytest.mark.parametrize("index", [0, 3, 11, 16, 24])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf(index: int, value: float) -> None:
    c = _good()
    c[index] = value
    _bad(c, f"NaN/inf at index {index}")


def test_non_rotation_matrix() -> None:
    c = _good()
    c[:3] *= 2.0  # scaled first row
    msg = _bad(c, "not orthonormal")
    assert "rigid" in msg
    c = _good()
    c[1] += 0.01  # shear beyond the 1e-3 tolerance
    _bad(c, "not orthonormal")
    c = _good()
    c[1] += 1e-5  # float noise inside the tolerance is accepted
    validate_label(c)


def test_reflection_det_minus_one() -> None:
    e, k = split_label(_good())
    e = e.clone()
    e[:3, 0] *= -1  # left-handed axes: orthonormal but det −1
    msg = _bad(label_from_matrices(e, k), "det -1.000")
    assert "reflection" in msg


def test_bottom_row_and_intrinsics_structure() -> None:
    c = _good()
    c[15] = 2.0
    _bad(c, "bottom row")
    c = _good()
    c[12] = 0.5
    _bad(c, "bottom row")
    c = _good()
    c[24] = 0.0
    _bad(c, "intrinsics must be")
    c = _good()
    c[19] = 0.1  # K[1,0]
    _bad(c, "intrinsics must be")


@pytest.mark.parametrize("focal", [0.0, -4.2647])
def test_non_positive_focal(focal: float) -> None:
    c = _good()
    c[16] = focal
    _bad(c, "focal length must be positive")
    c = _good()
    c[20] = focal
    _bad(c, "focal length must be positive")


def test_pixel_intrinsics_are_rejected() -> None:
    c = _good()
    c[16], c[18], c[20], c[21] = 2985.29, 256.0, 2985.29, 256.0
    _bad(c, "looks like pixels")


def test_opengl_pose_is_rejected_unless_disabled() -> None:
    e, k = split_label(_good())
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    opengl = label_from_matrices(e @ flip, k)
    _bad(opengl, "looks away from the origin")
    validate_label(opengl, check_facing=False)


def test_batch_error_names_row_and_prefix() -> None:
    c = camera_label(torch.tensor([0.0, 0.1, 0.2]), 0.0)
    c[2, 0] = float("nan")
    msg = _bad(c, r"cams\[2\]", what="cams")
    assert msg.startswith("cams[2]: ")
    problem = find_label_problem(c)
    assert problem is not None and problem[0] == 2


def test_validate_numpy_float32_roundtrip() -> None:
    c = camera_label(torch.tensor([0.1, 0.2]), 0.0).numpy().astype(np.float32)
    out = validate_label(c)
    assert torch.equal(out, torch.from_numpy(c))
