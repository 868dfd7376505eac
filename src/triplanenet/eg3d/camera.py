"""EG3D cameras: the 25-number label, look-at poses, novel views, video orbits, mirroring, validation.

The label
---------
A camera is a float32 vector of 25 numbers, ``[cam2world (4×4 row-major) | intrinsics (3×3 row-major)]``.

* ``cam2world`` is an OpenCV-style camera-to-world matrix: its columns are the camera's +x (image right),
  +y (image down) and +z (viewing direction) axes in world coordinates, its last column is the camera
  centre. The world is y-up; the face looks along world +z and sits near the origin.
* ``intrinsics`` are normalised by the image size: ``[[fx/W, s, cx/W], [0, fy/H, cy/H], [0, 0, 1]]``.
  FFHQ uses ``fx = fy = 4.2647`` and a centred principal point ``(0.5, 0.5)``.

Yaw / pitch convention (checked against tensors produced by the official code)
------------------------------------------------------------------------------
:func:`camera_label` reproduces EG3D's ``LookAtPoseSampler.sample(π/2 + yaw, π/2 + pitch, pivot, radius)``:

* ``yaw > 0`` moves the camera towards world **+x** (yaw 0.5 puts it at x = +1.284, yaw −0.8 at
  x = −1.937). World +x is the frontal camera's own right (the frontal camera is ``diag(1, −1, −1)`` at
  ``(0, 0, 2.7)``), so a positive yaw shows more of the subject's left cheek and the face appears turned
  towards the image's left. The fixture notes saying "the camera moves to −x for positive yaw" contradict
  the fixture tensors; the tensors (and this module) are right.
* ``pitch < 0`` lifts the camera (pitch −0.2 → y = +0.344, looking down at the face); ``pitch > 0``
  lowers it.
* The camera sits on a sphere of the given radius around the world **origin** and looks at the pivot:
  for the FFHQ pivot ``(0, 0, 0.2)`` the principal ray passes through the pivot, but the camera is not
  at distance ``radius`` from it. The polar angle is ``φ = arccos(1 − 2v/π)`` with ``v = π/2 + pitch``
  clamped to ``[1e-5, π − 1e-5]``, so the camera height is exactly ``y = −radius·pitch/(π/2)`` (pitch
  is linear in height, not in angle).

Every function here is batched, works on any device, and is differentiable in its tensor inputs (the
validators excepted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from triplanenet.errors import CameraError

__all__ = [
    "FFHQ_FOCAL",
    "FFHQ_PIVOT",
    "FFHQ_RADIUS",
    "LABEL_DIM",
    "MIRROR_SIGNS",
    "camera_label",
    "find_label_problem",
    "fov_to_focal",
    "intrinsics_matrix",
    "label_from_matrices",
    "label_to_yaw_pitch",
    "lookat_cam2world",
    "mirror_label",
    "novel_view_labels",
    "orbit_labels",
    "orbit_position",
    "split_label",
    "validate_label",
]

FFHQ_FOCAL: float = 4.2647
"""Normalised focal length of the FFHQ cameras (= 2985.29 px / 700 px crop)."""
FFHQ_RADIUS: float = 2.7
"""Distance of the FFHQ cameras from the world origin."""
FFHQ_PIVOT: tuple[float, float, float] = (0.0, 0.0, 0.2)
"""Point the FFHQ look-at cameras aim at (``rendering_kwargs['avg_camera_pivot']``)."""
LABEL_DIM: int = 25

_V_EPS = 1e-5  # EG3D clamps the polar parameter v to [1e-5, π − 1e-5].


# Multiplying a label by this vector mirrors it across the world x = 0 plane (EG3D ``flip_yaw``): entries
# (0,1), (0,2), (1,0), (2,0) and (0,3) of cam2world change sign, the intrinsics stay.
def _mirror_signs(device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(25,) ±1: −1 at the cam2world entries (0,1), (0,2), (0,3), (1,0), (2,0) of a row-major label.

    Built on ``device`` with in-place fills only, so no host data is copied (safe inside CUDA-graph capture)."""
    signs = torch.ones(LABEL_DIM, device=device, dtype=dtype)
    signs[1:5].fill_(-1.0)  # (0,1), (0,2), (0,3) and (1,0)
    signs[8:9].fill_(-1.0)  # (2,0)
    return signs


MIRROR_SIGNS: torch.Tensor = _mirror_signs()

ScalarOrTensor = float | int | torch.Tensor
Vec3 = Sequence[float] | torch.Tensor


# ------------------------------------------------------------------------------------------------------------
# Small helpers


def _normalize(v: torch.Tensor) -> torch.Tensor:
    """``v / |v|`` along the last axis (no epsilon, like EG3D)."""
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def _as_float64(x: ScalarOrTensor | Sequence[float], device: torch.device | None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device if device is not None else x.device, dtype=torch.float64)
    return torch.as_tensor(x, dtype=torch.float64, device=device)


def _common_device(*values: Any) -> torch.device | None:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value.device
    return None


def _vec3(value: Vec3, batch: int, device: torch.device | None, name: str) -> torch.Tensor:
    """A (3,) or (B,3) point as a float32 (B,3) tensor."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[-1] != 3:
        raise CameraError(f"{name} must have shape (3,) or (B, 3), got {tuple(t.shape)}; pass an (x, y, z) point")
    return t.expand(batch, 3) if t.shape[0] == 1 else t


# ------------------------------------------------------------------------------------------------------------
# Extrinsics


def lookat_cam2world(position: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Camera-to-world matrices of cameras at ``position`` looking at ``target`` (EG3D construction, no roll).

    Args:
        position: (B, 3) camera centres in world coordinates.
        target: (B, 3) or (3,) points the cameras look at.

    Returns:
        (B, 4, 4) OpenCV cam2world matrices: columns ``right, down, forward, position`` (world y up).
        Built like EG3D: ``forward = n(target − position)``, ``right = −n((0,1,0) × forward)``,
        ``down = n(forward × right)`` (``n`` normalises). NaN when the camera looks straight along world y.
    """
    position = torch.as_tensor(position)
    target = torch.as_tensor(target, dtype=position.dtype, device=position.device)
    return _cam2world_from_forward(_normalize(target - position), position)


def _cam2world_from_forward(forward: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    # EG3D normalises the forward vector a second time here; doing the same keeps the float32 bits equal.
    forward = _normalize(forward)
    world_up = torch.zeros_like(forward)
    world_up[..., 1] = 1.0
    right = -_normalize(torch.linalg.cross(world_up, forward, dim=-1))
    down = _normalize(torch.linalg.cross(forward, right, dim=-1))
    rotation = torch.stack((right, down, forward), dim=-1)  # (B, 3, 3), axes as columns
    top = torch.cat((rotation, origin.unsqueeze(-1)), dim=-1)  # (B, 3, 4)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat((top, bottom), dim=-2)


def _orbit_position_hv(h: torch.Tensor, v: torch.Tensor, radius: ScalarOrTensor) -> torch.Tensor:
    """Camera centres for EG3D's raw sampler angles (float32 h, v of shape (B,)) → (B, 3)."""
    v = torch.clamp(v, _V_EPS, math.pi - _V_EPS)
    v = v / math.pi
    phi = torch.arccos(1 - 2 * v)
    if isinstance(radius, torch.Tensor):
        radius = radius.to(dtype=torch.float32, device=h.device)
    x = radius * torch.sin(phi) * torch.cos(math.pi - h)
    z = radius * torch.sin(phi) * torch.sin(math.pi - h)
    y = radius * torch.cos(phi)
    return torch.stack((x, y, z), dim=-1)


def _batched_angles(
    h: ScalarOrTensor, v: ScalarOrTensor, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadcast two float64 angles (any shape) to flat float32 (B,) tensors, like EG3D's float32 h, v."""
    h64 = _as_float64(h, device).reshape(-1)
    v64 = _as_float64(v, device).reshape(-1)
    try:
        h64, v64 = torch.broadcast_tensors(h64, v64)
    except RuntimeError as exc:
        raise CameraError(
            f"yaw has {h64.numel()} values and pitch {v64.numel()}; pass equal lengths or a scalar for one of them"
        ) from exc
    return h64.to(torch.float32), v64.to(torch.float32)


def orbit_position(yaw: ScalarOrTensor, pitch: ScalarOrTensor, radius: ScalarOrTensor = FFHQ_RADIUS) -> torch.Tensor:
    """Camera centre for a yaw/pitch on EG3D's orbit sphere (centred at the world origin).

    Args:
        yaw: radians, scalar or tensor; > 0 moves the camera towards world +x.
        pitch: radians, scalar or tensor (broadcast against yaw); < 0 lifts the camera (world +y).
        radius: sphere radius, scalar or (B,) tensor.

    Returns:
        (B, 3) float32 positions, B = number of broadcast yaw/pitch values (1 for scalars).
    """
    device = _common_device(yaw, pitch, radius)
    h, v = _batched_angles(_as_float64(yaw, device) + math.pi / 2, _as_float64(pitch, device) + math.pi / 2, device)
    return _orbit_position_hv(h, v, radius)


def _intrinsics_rows(
    focal: ScalarOrTensor, principal: Vec3 | Sequence[float], batch: int, device: torch.device | None
) -> torch.Tensor:
    return intrinsics_matrix(focal, principal, device=device).reshape(-1, 9).expand(batch, 9)


def _look_at_label(
    h: ScalarOrTensor,
    v: ScalarOrTensor,
    radius: ScalarOrTensor,
    pivot: Vec3,
    focal: ScalarOrTensor,
    principal: Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    device = _common_device(h, v, radius, pivot, focal, principal)
    h32, v32 = _batched_angles(h, v, device)
    batch = h32.shape[0]
    position = _orbit_position_hv(h32, v32, radius)
    target = _vec3(pivot, batch, position.device, "pivot")
    cam2world = lookat_cam2world(position, target)
    intr = _intrinsics_rows(focal, principal, batch, position.device)
    if intr.shape[0] != batch:
        raise CameraError(f"focal has {intr.shape[0]} values for {batch} cameras; pass a scalar or one per camera")
    return torch.cat((cam2world.reshape(batch, 16), intr), dim=-1)


def camera_label(
    yaw: ScalarOrTensor = 0.0,
    pitch: ScalarOrTensor = 0.0,
    radius: ScalarOrTensor = FFHQ_RADIUS,
    pivot: Vec3 = FFHQ_PIVOT,
    focal: ScalarOrTensor = FFHQ_FOCAL,
    principal: Sequence[float] | torch.Tensor = (0.5, 0.5),
) -> torch.Tensor:
    """EG3D label of a look-at camera: ``LookAtPoseSampler.sample(π/2+yaw, π/2+pitch, pivot, radius)``.

    Args:
        yaw: radians, scalar or tensor of any shape (flattened); > 0 moves the camera towards world +x.
        pitch: radians, scalar or tensor, broadcast against yaw; < 0 lifts the camera. ``π/2 + pitch`` is
            clamped to ``[1e-5, π − 1e-5]``.
        radius: distance of the camera from the world origin (scalar or (B,) tensor).
        pivot: (3,) or (B, 3) point the camera looks at.
        focal: normalised focal length ``fx = fy`` (scalar or (B,) tensor).
        principal: normalised principal point ``(cx, cy)``.

    Returns:
        (B, 25) float32 labels, B = number of broadcast yaw/pitch values (1 when both are scalars).
    """
    device = _common_device(yaw, pitch)
    h = _as_float64(yaw, device) + math.pi / 2
    v = _as_float64(pitch, device) + math.pi / 2
    return _look_at_label(h, v, radius, pivot, focal, principal)


# ------------------------------------------------------------------------------------------------------------
# Intrinsics


def intrinsics_matrix(
    focal: ScalarOrTensor = FFHQ_FOCAL,
    principal: Sequence[float] | torch.Tensor = (0.5, 0.5),
    device: torch.device | None = None,
) -> torch.Tensor:
    """Normalised 3×3 intrinsics ``[[f, 0, cx], [0, f, cy], [0, 0, 1]]``.

    Args:
        focal: scalar, or (B,) tensor for a batch. ``fx = fy = focal``; both in units of the image size.
        principal: ``(cx, cy)`` in units of the image size (0.5 = centre), or a (B, 2) tensor.

    Returns:
        (3, 3) float32 for a scalar focal and a single principal point, else (B, 3, 3).
    """
    device = device if device is not None else _common_device(focal, principal)
    f = torch.as_tensor(focal, dtype=torch.float32, device=device)
    pp = torch.as_tensor(principal, dtype=torch.float32, device=device)
    if pp.shape[-1:] != (2,) or pp.dim() > 2:
        raise CameraError(f"principal point must be (cx, cy) or (B, 2), got shape {tuple(pp.shape)}")
    batched = f.dim() > 0 or pp.dim() == 2
    f = f.reshape(-1)
    pp = pp.reshape(-1, 2)
    n = max(f.shape[0], pp.shape[0])
    if f.shape[0] not in (1, n) or pp.shape[0] not in (1, n):
        raise CameraError(f"focal has {f.shape[0]} values and principal {pp.shape[0]}; pass equal batch sizes")
    f = f.expand(n)
    pp = pp.expand(n, 2)
    zero = torch.zeros_like(f)
    one = torch.ones_like(f)
    k = torch.stack((f, zero, pp[:, 0], zero, f, pp[:, 1], zero, zero, one), dim=-1).reshape(n, 3, 3)
    return k if batched else k[0]


def fov_to_focal(fov_deg: float) -> float:
    """Normalised focal length for a field of view in degrees, exactly as EG3D's ``FOV_to_intrinsics``.

    EG3D uses the constants 3.14159 (for π) and 1.414 (for √2): ``f = 1 / (tan(fov·3.14159/360)·1.414)``.
    The default ``--fov-deg 18.837`` of ``gen_samples.py`` gives 4.2634 (the FFHQ cameras use 4.2647).
    """
    if not math.isfinite(fov_deg) or not 0.0 < fov_deg < 180.0:
        raise CameraError(f"field of view {fov_deg!r} deg is outside (0, 180); pass the full angle in degrees")
    return float(1.0 / (math.tan(fov_deg * 3.14159 / 360.0) * 1.414))


# ------------------------------------------------------------------------------------------------------------
# Labels <-> matrices, mirroring, views


def split_label(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cam2world (…, 4, 4), intrinsics (…, 3, 3))`` views of (…, 25) labels."""
    return c[..., :16].reshape(*c.shape[:-1], 4, 4), c[..., 16:].reshape(*c.shape[:-1], 3, 3)


def label_from_matrices(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(…, 25) labels from (…, 4, 4) cam2world and (…, 3, 3) normalised intrinsics (broadcast)."""
    cam2world = torch.as_tensor(cam2world, dtype=torch.float32)
    intrinsics = torch.as_tensor(intrinsics, dtype=torch.float32, device=cam2world.device)
    if cam2world.shape[-2:] != (4, 4) or intrinsics.shape[-2:] != (3, 3):
        raise CameraError(
            f"cam2world must be 4×4 and intrinsics 3×3, got {tuple(cam2world.shape)} and {tuple(intrinsics.shape)}"
        )
    flat_e = cam2world.reshape(*cam2world.shape[:-2], 16)
    flat_k = intrinsics.reshape(*intrinsics.shape[:-2], 9)
    batch = torch.broadcast_shapes(flat_e.shape[:-1], flat_k.shape[:-1])
    return torch.cat((flat_e.expand(*batch, 16), flat_k.expand(*batch, 9)), dim=-1)


def mirror_label(c: torch.Tensor) -> torch.Tensor:
    """Mirror labels across the world x = 0 plane (EG3D ``flip_yaw``); matches a horizontally flipped image.

    Negates cam2world entries (0,1), (0,2), (1,0), (2,0), (0,3), i.e. ``S·M·S`` with
    ``S = diag(−1, 1, 1, 1)``; intrinsics unchanged. Works on (25,) or (…, 25), and
    ``mirror_label(mirror_label(c)) == c`` exactly.
    """
    c = torch.as_tensor(c)
    if c.shape[-1:] != (LABEL_DIM,):
        raise CameraError(f"camera labels must end in 25 numbers, got shape {tuple(c.shape)}")
    return c * _mirror_signs(c.device, c.dtype)


def novel_view_labels(
    c: torch.Tensor,
    yaw_offsets: ScalarOrTensor | Sequence[float],
    pitch: ScalarOrTensor = 0.0,
    radius: ScalarOrTensor | None = None,
    pivot: Vec3 | None = None,
) -> torch.Tensor:
    """Novel-view labels as TriPlaneNet's ``inference.py``: look-at pose at ``yaw``, input intrinsics kept.

    The pose does **not** depend on the input camera: each novel camera is
    ``LookAtPoseSampler.sample(π/2 + yaw, π/2 + pitch, pivot, radius)`` (pitch 0 in TriPlaneNet), and only
    the first 16 numbers of ``c`` are replaced, so each input keeps its own intrinsics.

    Args:
        c: (B, 25) or (25,) input labels.
        yaw_offsets: radians; a scalar or a sequence/1-D tensor of N yaws (> 0 moves the camera to world +x).
        pitch: radians (0 = level, < 0 looks down from above).
        radius: orbit radius, default :data:`FFHQ_RADIUS`.
        pivot: look-at point, default :data:`FFHQ_PIVOT`.

    Returns:
        (B, 25) for a scalar yaw, (N, B, 25) for N yaws (iterate to get one batch per view); float32.
    """
    c = torch.as_tensor(c, dtype=torch.float32)
    squeeze_batch = c.dim() == 1
    c2 = c.reshape(1, -1) if squeeze_batch else c
    if c2.dim() != 2 or c2.shape[-1] != LABEL_DIM:
        raise CameraError(f"camera labels must have shape (25,) or (B, 25), got {tuple(c.shape)}")
    yaws = _as_float64(yaw_offsets, c2.device)
    scalar = yaws.dim() == 0
    yaws = yaws.reshape(-1)
    poses = camera_label(
        yaws,
        _as_float64(pitch, c2.device).expand(yaws.shape[0]),
        radius=FFHQ_RADIUS if radius is None else radius,
        pivot=FFHQ_PIVOT if pivot is None else pivot,
    )[:, :16]  # (N, 16)
    n, b = poses.shape[0], c2.shape[0]
    out = torch.cat((poses[:, None, :].expand(n, b, 16), c2[None, :, 16:].expand(n, b, 9)), dim=-1)
    if squeeze_batch:
        out = out[:, 0]
    return out[0] if scalar else out


def orbit_labels(
    n_frames: int,
    yaw_range: float = 0.35,
    pitch_range: float = 0.25,
    pitch_offset: float = -0.05,
    radius: float = FFHQ_RADIUS,
    pivot: Vec3 = FFHQ_PIVOT,
    focal: float = FFHQ_FOCAL,
    pi: float = 3.14,
) -> torch.Tensor:
    """Camera path of EG3D's ``gen_videos.py`` / TriPlaneNet's ``gen_interp_video`` (one loop of frames).

    Frame ``k`` (``t = k / n_frames``) uses ``LookAtPoseSampler.sample(pi/2 + yaw_range·sin(2·pi·t),
    pi/2 + pitch_offset + pitch_range·cos(2·pi·t), pivot, radius)``: the camera swings left/right while
    bobbing and starts at yaw 0 with pitch ``pitch_offset + pitch_range`` (below the face). The official
    scripts write 3.14 for π, so the default ``pi=3.14`` reproduces their poses; pass ``math.pi`` for a
    closed, exactly centred orbit.

    Returns:
        (n_frames, 25) float32 labels with intrinsics ``[[focal, 0, .5], [0, focal, .5], [0, 0, 1]]``.
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise CameraError(f"n_frames must be a positive integer, got {n_frames!r}")
    frame = torch.arange(n_frames, dtype=torch.float64)
    angle = 2 * pi * frame / n_frames
    h = pi / 2 + yaw_range * torch.sin(angle)
    v = pi / 2 + pitch_offset + pitch_range * torch.cos(angle)
    return _look_at_label(h, v, radius, pivot, focal, (0.5, 0.5))


def label_to_yaw_pitch(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Yaw and pitch (radians) of labels, the inverse of :func:`camera_label` for its look-at cameras.

    Computed from the camera centre ``t`` only: ``yaw = atan2(t_x, t_z)``, ``pitch = −(π/2)·t_y/|t|``
    (exact inverse of EG3D's ``φ = arccos(1 − 2v/π)``; the clamp limits pitch to ±(π/2 − 1e-5)). For other
    cameras (e.g. real-photo poses) this is the camera's direction seen from the world origin. Accepts
    (25,) or (B, 25).

    Returns:
        ``(yaw, pitch)`` float tensors of shape (B,) (or scalars for a (25,) input).
    """
    c = torch.as_tensor(c)
    if c.shape[-1:] != (LABEL_DIM,):
        raise CameraError(f"camera labels must end in 25 numbers, got shape {tuple(c.shape)}")
    x, y, z = c[..., 3], c[..., 7], c[..., 11]
    r = torch.sqrt(x * x + y * y + z * z)
    yaw = torch.atan2(x, z)
    pitch = -(math.pi / 2) * y / r
    return yaw, pitch


# ------------------------------------------------------------------------------------------------------------
# Validation

ORTHONORMAL_TOL: float = 1e-3
"""Largest allowed ``|RᵀR − I|`` entry for the rotation part of cam2world."""
_EXACT_TOL = 1e-5


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def validate_label(c: Any, what: str = "camera label", check_facing: bool = True) -> torch.Tensor:
    """Check EG3D labels and return them as a (B, 25) float32 tensor.

    Args:
        c: (25,) or (B, 25) numbers (tensor, numpy array or nested lists).
        what: how to name the label in error messages (e.g. ``"dataset.json: 'img.png'"``); rows of a batch
            are named ``what[i]``.
        check_facing: also reject cameras whose viewing axis points away from the world origin (the usual
            sign of an OpenGL/Blender pose, whose camera looks along −z).

    Returns:
        (B, 25) float32; a tensor input keeps its device (and its autograd graph).

    Raises:
        CameraError: wrong shape or length, non-numbers, NaN/inf, a cam2world rotation that is not
            orthonormal (tolerance :data:`ORTHONORMAL_TOL`) or is a reflection (det −1), bottom row not
            (0, 0, 0, 1), intrinsics not ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``, focal ≤ 0, principal
            point in pixels, camera facing away (see ``check_facing``).
    """
    t = _to_tensor(c, what)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[-1] != LABEL_DIM:
        shape = tuple(t.shape)
        if len(shape) <= 2:
            raise CameraError(
                f"{what} has {shape[-1]} numbers per camera, expected 25 (16 cam2world row-major + 9 intrinsics)"
            )
        raise CameraError(f"{what} has shape {shape}, expected (25,) or (B, 25)")
    if t.shape[0] == 0:
        raise CameraError(f"{what} is empty; give at least one 25-number camera label")
    problem = find_label_problem(t, check_facing=check_facing)
    if problem is not None:
        row, message = problem
        name = f"{what}[{row}]" if t.shape[0] > 1 else what
        raise CameraError(f"{name}: {message}")
    return t.to(torch.float32)


def _to_tensor(c: Any, what: str) -> torch.Tensor:
    if isinstance(c, torch.Tensor):
        t = c
    else:
        try:
            arr = np.asarray(c)
        except (ValueError, TypeError) as exc:  # ragged nested lists
            raise CameraError(f"{what} is not a flat list of 25 numbers (ragged or nested)") from exc
        if arr.dtype == object or arr.dtype.kind not in "iuf":
            raise CameraError(f"{what} must contain only numbers (got {arr.dtype} values)")
        t = torch.from_numpy(arr.astype(np.float64))
    if t.is_complex() or t.dtype == torch.bool:
        raise CameraError(f"{what} must hold real numbers, got a {t.dtype} tensor")
    return t


def find_label_problem(c: torch.Tensor, check_facing: bool = True) -> tuple[int, str] | None:
    """First problem found in (B, 25) labels, as ``(row, message)``, or ``None`` when all rows are valid.

    Vectorised (fast for dataset-sized batches). The checks run in this order, each over all rows: NaN/inf,
    cam2world bottom row, orthonormal rotation, det +1, facing the origin (optional), intrinsics structure,
    positive focal, principal point in normalised units. Messages have no prefix (see validate_label).
    """
    t = c.detach().to(device="cpu", dtype=torch.float64).reshape(-1, LABEL_DIM)
    finite = torch.isfinite(t)
    bad = (~finite.all(dim=1)).nonzero()
    if bad.numel():
        i = int(bad[0])
        k = int((~finite[i]).nonzero()[0])
        return i, f"NaN/inf at index {k} (of 0..24); recompute or re-export the camera"
    e = t[:, :16].reshape(-1, 4, 4)
    k = t[:, 16:].reshape(-1, 3, 3)

    def first(mask: torch.Tensor) -> int | None:
        idx = mask.nonzero()
        return int(idx[0]) if idx.numel() else None

    bottom_ref = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    if (i := first((e[:, 3] - bottom_ref).abs().amax(dim=1) > _EXACT_TOL)) is not None:
        return i, (
            f"cam2world bottom row is {_fmt(e[i, 3].tolist())}, expected (0, 0, 0, 1); "
            "the label must start with a row-major 4×4 camera-to-world matrix"
        )
    rot = e[:, :3, :3]
    ortho = (rot.transpose(1, 2) @ rot - torch.eye(3, dtype=torch.float64)).abs().amax(dim=(1, 2))
    if (i := first(ortho > ORTHONORMAL_TOL)) is not None:
        return i, (
            f"cam2world rotation is not orthonormal (max |RᵀR − I| = {ortho[i].item():.3g} > "
            f"{ORTHONORMAL_TOL:g}); pass a rigid camera-to-world pose without scale or shear"
        )
    det = torch.linalg.det(rot)
    if (i := first(det < 0)) is not None:
        return i, (
            f"cam2world rotation has det {det[i].item():.3f}, a reflection (left-handed axes); "
            "its columns must be the camera's right, down and forward axes (OpenCV)"
        )
    if check_facing:
        position = e[:, :3, 3]
        dist = torch.linalg.vector_norm(position, dim=1)
        facing = -(rot[:, :, 2] * position).sum(dim=1) / dist.clamp_min(1e-12)
        if (i := first((dist > 1e-3) & (facing < -0.5))) is not None:
            return i, (
                f"the camera at {_fmt(position[i].tolist())} looks away from the origin; EG3D uses OpenCV "
                "axes (+z forward, +y down): convert an OpenGL pose with cam2world·diag(1, −1, −1, 1)"
            )
    k_ref = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    structure = ((k[:, 2] - k_ref).abs().amax(dim=1) > _EXACT_TOL) | (k[:, 1, 0].abs() > _EXACT_TOL)
    if (i := first(structure)) is not None:
        return i, (
            "intrinsics must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] (row-major, numbers 16..24), got "
            f"rows {_fmt(k[i, 1].tolist())} and {_fmt(k[i, 2].tolist())} for the last two"
        )
    fx, fy = k[:, 0, 0], k[:, 1, 1]
    if (i := first((fx <= 0) | (fy <= 0))) is not None:
        return i, (
            f"focal length must be positive, got fx={fx[i].item():.4g}, fy={fy[i].item():.4g}; "
            "use the normalised focal (4.2647 for FFHQ)"
        )
    cx, cy = k[:, 0, 2], k[:, 1, 2]
    if (i := first((cx < -1) | (cx > 2) | (cy < -1) | (cy > 2))) is not None:
        return i, (
            f"principal point ({cx[i].item():.4g}, {cy[i].item():.4g}) looks like pixels; divide fx, cx "
            "by the image width and fy, cy by the height (0.5 = centre)"
        )
    return None
