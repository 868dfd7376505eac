"""Head pose from 5 landmarks → EG3D's 25-number camera label.

EG3D's in-the-wild pipeline gets the head pose from Deep3DFaceRecon (a 3DMM regressor, not available offline)
and converts it with ``3dface2idr_mat.py`` and ``preprocess_face_cameras.py --mode orig``. This module keeps
that camera model and conversion but replaces the network by a least-squares fit of the 5-point mean face
(:data:`POSE_TEMPLATE`, the symmetrised :data:`~triplanenet.preprocess.align.LM3D_STD`) to the 5 landmarks in
the aligned crop:

* Deep3DFaceRecon's camera: face points ``P = M·X + T`` (``M = Rz(γ)·Ry(β)·Rx(α)``, angles ``(α, β, γ)`` =
  ``angle`` of its output), a pin-hole camera at ``(0, 0, 10)`` looking down −z with focal 1015 px at 224 px,
  which is ``2985.29`` px in the 1024-px aligned image, i.e. ``4.2647 × size`` in the final crop, principal
  point at the crop centre.
* The fit: Levenberg–Marquardt on ``(α, β, γ, T)`` (float64, batched torch), minimising the landmark
  reprojection error in the crop (mouth corners' vertical residuals down-weighted, see
  :data:`MOUTH_VERTICAL_WEIGHT`), started from a grid of yaw/pitch guesses; the lowest cost wins.
* Conversion (``3dface2idr_mat.py``): camera centre in face coordinates ``c = −Mᵀ(T − (0, 0, 10))``, scaled by
  0.27 and shifted by ``(0, 0.006, 0.161)``; cam2world rotation ``Mᵀ·diag(1, −1, −1)``; then the centre is
  rescaled to radius 2.7 about the world origin (``fix_pose_orig``); intrinsics ``fx = fy = 4.2647``,
  ``cx = cy = 0.5``.

Roll: in ``camera="official"`` mode (default) the label keeps the fitted roll, as EG3D's labels do (the crop is
not de-rotated, so the camera must carry the head's in-plane tilt). ``camera="lookat"`` instead returns the
roll-free look-at camera :func:`~triplanenet.eg3d.camera.camera_label` ``(yaw, pitch)`` aimed at the FFHQ pivot
``(0, 0, 0.2)`` (what TriPlaneNet's novel views use); it matches the photo only when the head is upright.

Accuracy caveat: a mean face cannot know a person's nose length or mouth width, so pitch (nose height between
eyes and mouth) is the least reliable angle; a broad smile reads as a few degrees of pitch. Yaw and roll are
better constrained. This is a stand-in for Deep3DFaceRecon, not a reproduction of its numbers: on TriPlaneNet's
``example_dataset/example.png`` (official label yaw 0.539, pitch −0.160 rad) it gives yaw 0.438, pitch −0.235;
MTCNN's landmarks drift towards a frontal layout at large yaw, so |yaw| tends to be underestimated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from triplanenet.eg3d.camera import (
    FFHQ_FOCAL,
    FFHQ_PIVOT,
    FFHQ_RADIUS,
    camera_label,
    intrinsics_matrix,
    label_from_matrices,
    label_to_yaw_pitch,
    lookat_cam2world,
)
from triplanenet.errors import ConfigError, InputImageError
from triplanenet.preprocess.align import LM3D_STD

__all__ = [
    "CAMERA_DISTANCE",
    "MOUTH_VERTICAL_WEIGHT",
    "POSE_TEMPLATE",
    "PoseEstimate",
    "camera_from_face_pose",
    "estimate_pose",
    "face_rotation",
    "project_template",
]

CAMERA_DISTANCE: float = 10.0
"""Deep3DFaceRecon's camera distance from the face origin (BFM decimetres)."""
_POSITION_SCALE = 0.27  # 3dface2idr_mat.py: normalises the camera radius
_POSITION_OFFSET = (0.0, 0.006, 0.161)  # 3dface2idr_mat.py: "additional offset used in submission"
POSE_TEMPLATE: np.ndarray = 0.5 * (LM3D_STD + LM3D_STD[[1, 0, 2, 4, 3]] * np.array([-1.0, 1.0, 1.0]))
"""(5, 3) :data:`LM3D_STD` made exactly mirror symmetric (averaged with its x-mirror, left/right swapped).

The official template is slightly asymmetric (eye x −0.3115 / +0.3098, nose x +0.0033); fitted as is, exactly
mirrored landmarks give yaws differing by up to 0.02 rad. The symmetric version makes the pose of a mirrored
photo the mirrored pose (EG3D's ``flip_yaw`` labels assume this). Changes are below 0.002 units."""
MOUTH_VERTICAL_WEIGHT: float = 0.2
"""Default weight of the mouth corners' vertical residuals in the pose fit (eyes, nose and mouth x: 1).

Chosen on two real photos (``skimage.data.astronaut()``, broad smile; TriPlaneNet's ``example.png``, whose
official Deep3DFaceRecon label is known): plain least squares (weight 1) reads the astronaut's smile as pitch
−0.56 rad and the example as −0.28 (official −0.16); weight 0.2 gives −0.09 and −0.24 (0.1: −0.05 and −0.22).
Yaw and roll change by < 0.015 rad. The nose (the only deep point) still fixes pitch; the weak mouth term
only disambiguates."""


@dataclass(frozen=True)
class PoseEstimate:
    """Result of :func:`estimate_pose`.

    Attributes:
        label: (25,) float32 EG3D camera label (cam2world row-major + normalised intrinsics).
        yaw: camera yaw in radians, EG3D convention (``label_to_yaw_pitch``): > 0 = camera towards world +x,
            i.e. the face appears turned towards the image's left.
        pitch: camera pitch in radians, EG3D convention: < 0 = camera above the face (looking down).
        roll: in-plane rotation of the camera about its viewing axis relative to the roll-free look-at camera at
            the same place, radians; > 0 when the face appears rotated counter-clockwise in the image (eye line
            rising towards the image's right), close to the face angle γ. Always reported, also in ``"lookat"``
            mode (whose label drops it).
        angles: (3,) float64 Deep3DFaceRecon-style face angles ``(α about x, β about y, γ about z)``.
        translation: (3,) float64 face translation ``T`` in the Deep3DFaceRecon camera frame (decimetres).
        reprojection_error: RMS landmark reprojection error, pixels in the crop the landmarks were given in.
    """

    label: torch.Tensor
    yaw: float
    pitch: float
    roll: float
    angles: np.ndarray
    translation: np.ndarray
    reprojection_error: float


def face_rotation(angles: torch.Tensor) -> torch.Tensor:
    """``M = Rz(γ)·Ry(β)·Rx(α)`` for (..., 3) angles ``(α, β, γ)``; returns (..., 3, 3).

    (Deep3DFaceRecon's ``compute_rotation`` returns ``Mᵀ``, for row-vector points.)
    """
    a, b, g = angles[..., 0], angles[..., 1], angles[..., 2]
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    rx = torch.stack((one, zero, zero, zero, a.cos(), -a.sin(), zero, a.sin(), a.cos()), -1)
    ry = torch.stack((b.cos(), zero, b.sin(), zero, one, zero, -b.sin(), zero, b.cos()), -1)
    rz = torch.stack((g.cos(), -g.sin(), zero, g.sin(), g.cos(), zero, zero, zero, one), -1)
    shape = (*angles.shape[:-1], 3, 3)
    return rz.reshape(shape) @ ry.reshape(shape) @ rx.reshape(shape)


def project_template(params: torch.Tensor, template: torch.Tensor, focal_px: float, center_px: float) -> torch.Tensor:
    """Project 3D points with the Deep3DFaceRecon camera.

    Args:
        params: (..., 6) ``(α, β, γ, T_x, T_y, T_z)``.
        template: (N, 3) face points (y up, z towards the camera).
        focal_px: focal length in crop pixels.
        center_px: principal point (x = y) in crop pixel coordinates (pixel centres at integers).

    Returns:
        (..., N, 2) pixel coordinates (y down).
    """
    rot = face_rotation(params[..., :3])
    points = template @ rot.transpose(-1, -2) + params[..., None, 3:6]
    depth = CAMERA_DISTANCE - points[..., 2]
    u = center_px + focal_px * points[..., 0] / depth
    v = center_px - focal_px * points[..., 1] / depth
    return torch.stack((u, v), dim=-1)


def camera_from_face_pose(
    angles: torch.Tensor | np.ndarray,
    translation: torch.Tensor | np.ndarray,
    camera: Literal["official", "lookat"] = "official",
) -> torch.Tensor:
    """EG3D label from a Deep3DFaceRecon-style pose (``3dface2idr_mat.py`` + ``fix_pose_orig``).

    Args:
        angles: (3,) face angles ``(α, β, γ)`` (radians).
        translation: (3,) face translation ``T`` (decimetres).
        camera: ``"official"`` keeps roll (EG3D's labels); ``"lookat"`` returns the roll-free look-at camera
            with the same yaw/pitch, aimed at the FFHQ pivot.

    Returns:
        (25,) float32 label.
    """
    ang = torch.as_tensor(angles, dtype=torch.float64)
    trans = torch.as_tensor(translation, dtype=torch.float64)
    rot_t = face_rotation(ang).T  # Deep3DFaceRecon's compute_rotation output
    centre = -rot_t @ (trans - torch.tensor([0.0, 0.0, CAMERA_DISTANCE], dtype=torch.float64))
    centre = centre * _POSITION_SCALE + torch.tensor(_POSITION_OFFSET, dtype=torch.float64)
    centre = centre / torch.linalg.vector_norm(centre) * FFHQ_RADIUS
    cam2world = torch.eye(4, dtype=torch.float64)
    cam2world[:3, :3] = rot_t @ torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    cam2world[:3, 3] = centre
    label = label_from_matrices(cam2world.to(torch.float32), intrinsics_matrix(FFHQ_FOCAL))
    if camera == "official":
        return label
    if camera == "lookat":
        yaw, pitch = label_to_yaw_pitch(label)
        return camera_label(yaw.double(), pitch.double())[0]
    raise ConfigError(f"camera must be 'official' or 'lookat', got {camera!r}")


def _camera_roll(label: torch.Tensor) -> float:
    """Signed angle from the look-at camera's right axis to the label's right axis, about the viewing axis."""
    cam2world = label[:16].reshape(4, 4).double()
    position = cam2world[:3, 3]
    reference = lookat_cam2world(position[None], torch.tensor(FFHQ_PIVOT, dtype=torch.float64)[None])[0]
    right, forward = cam2world[:3, 0], cam2world[:3, 2]
    ref_right = reference[:3, 0]
    # Project the reference right axis into the image plane of the actual camera, then measure the angle.
    ref_right = ref_right - (ref_right @ forward) * forward
    sin = torch.linalg.cross(ref_right, right) @ forward
    cos = ref_right @ right
    return float(torch.atan2(sin, cos))


def pose_estimate(
    angles: torch.Tensor, translation: torch.Tensor, error: torch.Tensor, camera: Literal["official", "lookat"]
) -> PoseEstimate:
    """A fitted face pose as a :class:`PoseEstimate`: angles (3,) wrapped to [-π, π), translation (3,), the
    (N, 2) reprojection residuals in pixels; the label is the official conversion, or the roll-free look-at camera
    at the same yaw and pitch with ``camera="lookat"`` (roll is measured on the official label either way)."""
    angles = torch.remainder(angles + math.pi, 2 * math.pi) - math.pi
    label = camera_from_face_pose(angles, translation, camera="official")
    yaw, pitch = label_to_yaw_pitch(label)
    roll = _camera_roll(label)
    if camera == "lookat":
        label = camera_label(yaw.double(), pitch.double())[0]
    return PoseEstimate(
        label=label,
        yaw=float(yaw),
        pitch=float(pitch),
        roll=roll,
        angles=angles.numpy(),
        translation=translation.numpy().copy(),
        reprojection_error=float(torch.linalg.vector_norm(error, dim=-1).square().mean().sqrt()),
    )


def least_squares_lm(
    residual: Callable[[torch.Tensor], torch.Tensor],
    params: torch.Tensor,
    iterations: int = 100,
    step_tolerance: float = 1e-9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Levenberg–Marquardt: minimise ``|residual(p)|²`` from each of the (B, D) starting points ``params``.

    ``residual`` maps (M, D) parameters to (M, R) residuals; Jacobians come from forward differences (step 1e-7:
    the problems here are tiny and smooth, float64). Each start keeps its own damping and stops when a step no
    longer lowers its cost and moves it by less than ``step_tolerance``. Returns the refined (B, D) parameters and
    their costs (B,).
    """
    batch, dim = params.shape
    probe_step = 1e-7
    eye = torch.eye(dim, dtype=params.dtype)
    damping = torch.full((batch,), 1e-3, dtype=params.dtype)
    res = residual(params)
    cost = (res * res).sum(-1)
    for _ in range(iterations):
        probes = residual((params[:, None, :] + probe_step * eye).reshape(-1, dim)).reshape(batch, dim, -1)
        jac = ((probes - res[:, None, :]) / probe_step).transpose(1, 2)  # (B, R, D)
        jtj = jac.transpose(1, 2) @ jac
        grad = (jac.transpose(1, 2) @ res[..., None])[..., 0]
        diag = torch.diag_embed(torch.diagonal(jtj, dim1=1, dim2=2) + 1e-9)
        step = -torch.linalg.solve(jtj + damping[:, None, None] * diag, grad)
        trial = params + step
        trial_res = residual(trial)
        trial_cost = (trial_res * trial_res).sum(-1)
        better = trial_cost < cost
        params = torch.where(better[:, None], trial, params)
        res = torch.where(better[:, None], trial_res, res)
        converged = (~better | (cost - trial_cost < 1e-10 * (1.0 + cost))) & (step.abs().amax(-1) < step_tolerance)
        cost = torch.where(better, trial_cost, cost)
        damping = torch.where(better, damping * 0.3, damping * 10.0).clamp(1e-12, 1e12)
        if bool(converged.all()):
            break
    return params, cost


def _levenberg_marquardt(
    params: torch.Tensor,
    observed: torch.Tensor,
    weights: torch.Tensor,
    template: torch.Tensor,
    focal_px: float,
    center_px: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5-landmark fit over (B, 6) starting points; returns the refined params and their weighted costs (B,).

    Residuals are ``weights · (projection − observed)`` (10 numbers).
    """

    def residual(p: torch.Tensor) -> torch.Tensor:  # (M, 6) -> (M, 10)
        return ((project_template(p, template, focal_px, center_px) - observed) * weights).flatten(-2)

    return least_squares_lm(residual, params, iterations=100, step_tolerance=1e-9)


def estimate_pose(
    landmarks: np.ndarray | torch.Tensor,
    crop_size: int = 512,
    camera: Literal["official", "lookat"] = "official",
    template: np.ndarray = POSE_TEMPLATE,
    mouth_vertical_weight: float = MOUTH_VERTICAL_WEIGHT,
) -> PoseEstimate:
    """Estimate the head pose and EG3D camera from 5 landmarks in an aligned crop.

    Args:
        landmarks: (5, 2) pixel coordinates **in the aligned crop** (``AlignedFace.landmarks`` for the 512² crop,
            or landmarks mapped with ``AlignedFace.transform_input`` and ``crop_size=256``), in MTCNN order
            (left eye, right eye, nose, mouth left, mouth right; left = image left).
        crop_size: side of the crop the landmarks are in (the camera focal is ``4.2647 · crop_size`` pixels).
        camera: ``"official"`` (keeps roll, like EG3D's labels) or ``"lookat"`` (roll-free look-at camera).
        template: (5, 3) 3D mean-face points (BFM decimetres); default the symmetrised Deep3DFaceRecon template.
        mouth_vertical_weight: weight of the mouth corners' y residuals (1 = plain least squares). Smiles lift
            the mouth corners, which a rigid mean face can only explain as pitch; see :data:`MOUTH_VERTICAL_WEIGHT`.

    Returns:
        :class:`PoseEstimate`.

    Raises:
        InputImageError: landmarks that are not 5 finite points.
    """
    lm = torch.as_tensor(np.asarray(landmarks, dtype=np.float64))
    if lm.shape != (5, 2) or not torch.isfinite(lm).all():
        raise InputImageError(f"landmarks must be 5 finite (x, y) points, got shape {tuple(lm.shape)}")
    if camera not in ("official", "lookat"):
        raise ConfigError(f"camera must be 'official' or 'lookat', got {camera!r}")
    focal_px = FFHQ_FOCAL * crop_size
    center_px = crop_size / 2 - 0.5
    points3d = torch.as_tensor(np.asarray(template, dtype=np.float64))

    # Starting points: a grid of yaw (β) and pitch (α); roll from the eye line; T = 0 (the crop already puts the
    # template origin at the centre, at the scale of a face 10 units away).
    eyes = lm[1] - lm[0]
    roll0 = -math.atan2(float(eyes[1]), float(eyes[0]))
    starts = [
        [alpha, beta, roll0, 0.0, 0.0, 0.0] for beta in (-0.9, -0.45, 0.0, 0.45, 0.9) for alpha in (-0.4, 0.0, 0.4)
    ]
    weights = torch.ones(5, 2, dtype=torch.float64)
    weights[3:, 1] = mouth_vertical_weight
    params, cost = _levenberg_marquardt(
        torch.tensor(starts, dtype=torch.float64), lm, weights, points3d, focal_px, center_px
    )
    best = int(torch.argmin(cost))
    fitted = params[best]
    error = project_template(fitted, points3d, focal_px, center_px) - lm
    return pose_estimate(fitted[:3], fitted[3:6], error, camera)
