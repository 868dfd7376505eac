"""Head pose from 3DDFA_V2's 3DMM regressor → EG3D camera label (the default ``--pose 3ddfa`` estimator).

EG3D's official cameras come from Deep3DFaceRecon, a network that regresses Basel-Face-Model parameters, pose
included. 3DDFA_V2 (:mod:`triplanenet.preprocess.tddfa`) is a network of the same kind on the same face model,
and it is available offline; its head rotation agrees with the official one better than any landmark fit we
tried (``docs/cameras.md``), above all at large yaw, where the 468-point mesh reads a 60° profile as 51°.

Pipeline (in the aligned crop, pure PyTorch, one batched forward pass):

1. **Framings.** 3DDFA_V2's rule turns a face box into a square region: side 1.58 × the box's mean side, centre
   0.14 × that mean side below the box's centre. The network is sensitive to that framing, so nine framings are
   used, the rule's and its neighbours (:data:`ROI_SCALES` × :data:`ROI_SHIFTS`), each cropped (zeros outside the
   image), resized to 120² with antialiasing, and also mirrored: 18 crops.
2. **Rotation.** From each output's projection rows ``s·r₁, s·r₂``: ``R = [r₁; r₂; r₁ × r₂]``; the rotations of
   the mirrored crops are mirrored back (``F R F``, ``F = diag(−1, 1, 1)``), and the 18 are averaged (the
   nearest rotation to their sum, by SVD). A mirrored photo therefore gives exactly the mirrored rotation.
3. **Angles.** ``R = Rz(γ)·Ry(β)·Rx(α)`` is read as Deep3DFaceRecon's face angles.
4. **Translation.** The rotation held fixed, the face translation ``T`` of Deep3DFaceRecon's camera is fitted to
   MTCNN's 5 landmarks with the 5-point mean face (:data:`~triplanenet.preprocess.pose.POSE_TEMPLATE`); it moves the
   camera centre, not its rotation.
5. **Camera.** The official ``3dface2idr_mat.py`` + ``fix_pose_orig`` conversion
   (:func:`~triplanenet.preprocess.pose.camera_from_face_pose`).

No constant is calibrated on the reference photos: the framing rule and the network are 3DDFA_V2's, the grid is
symmetric about the rule.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from triplanenet.eg3d.camera import FFHQ_FOCAL
from triplanenet.errors import ConfigError, InputImageError
from triplanenet.preprocess.pose import POSE_TEMPLATE, PoseEstimate, least_squares_lm, pose_estimate, project_template
from triplanenet.preprocess.tddfa import TDDFA_INPUT_SIZE, TddfaNet

__all__ = [
    "ROI_SCALES",
    "ROI_SHIFTS",
    "box_in_crop",
    "estimate_pose_tddfa",
    "rotation_angles",
    "tddfa_crops",
    "tddfa_rois",
    "tddfa_rotation",
]

ROI_SCALES: tuple[float, ...] = (1.45, 1.58, 1.70)
"""Side of the square region in units of the face box's mean side: 3DDFA_V2's 1.58 and its neighbours."""
ROI_SHIFTS: tuple[float, ...] = (0.08, 0.14, 0.20)
"""Downward shift of the region's centre from the box centre, in the same units: 3DDFA_V2's 0.14 and neighbours."""

_MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))


def box_in_crop(box: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """A face box ``[x1, y1, x2, y2]`` in the photo → the same face's box in the aligned crop: its centre mapped by
    the (2, 3) similarity ``transform`` (``AlignedFace.transform``), its sides scaled by the similarity's scale."""
    box = np.asarray(box, dtype=np.float64)
    matrix = np.asarray(transform, dtype=np.float64)
    scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    centre = matrix[:, :2] @ ((box[:2] + box[2:4]) / 2) + matrix[:, 2]
    half = (box[2:4] - box[:2]) * scale / 2
    return np.concatenate([centre - half, centre + half])


def tddfa_rois(box: np.ndarray) -> np.ndarray:
    """(9, 4) square regions ``[x1, y1, x2, y2]`` for a face box: every (scale, shift) of :data:`ROI_SCALES` ×
    :data:`ROI_SHIFTS`, by 3DDFA_V2's framing rule."""
    left, top, right, bottom = (float(v) for v in np.asarray(box, dtype=np.float64)[:4])
    size = (right - left + bottom - top) / 2
    cx, cy = (left + right) / 2, (top + bottom) / 2
    rois = []
    for scale in ROI_SCALES:
        for shift in ROI_SHIFTS:
            half = size * scale / 2
            y = cy + size * shift
            rois.append([cx - half, y - half, cx + half, y + half])
    return np.asarray(rois)


def tddfa_crops(image: np.ndarray, rois: np.ndarray) -> torch.Tensor:
    """(N, 3, 120, 120) network inputs: each region (corners rounded to whole pixels, zeros outside the image)
    resized with antialiased bilinear interpolation, as BGR ``(value − 127.5) / 128``.

    Args:
        image: uint8 (H, W, 3) RGB.
        rois: (N, 4) regions ``[x1, y1, x2, y2]`` in pixels.
    """
    pixels = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)
    height, width = pixels.shape[1:]
    crops = []
    for roi in np.asarray(rois, dtype=np.float64):
        x1, y1, x2, y2 = (round(float(v)) for v in roi)
        if x2 - x1 < 2 or y2 - y1 < 2:
            raise InputImageError(f"face region {roi.round(1).tolist()} is too small to pose")
        crop = torch.zeros(3, y2 - y1, x2 - x1)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx2 > sx1 and sy2 > sy1:
            crop[:, sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = pixels[:, sy1:sy2, sx1:sx2]
        size = (TDDFA_INPUT_SIZE, TDDFA_INPUT_SIZE)
        crops.append(F.interpolate(crop[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0])
    batch = torch.stack(crops).flip(1)  # RGB -> BGR
    return (batch - 127.5) / 128.0


def tddfa_rotation(params: torch.Tensor) -> torch.Tensor:
    """(B, 62) 3DDFA_V2 parameters → (B, 3, 3) float64 rotations ``[r₁; r₂; r₁ × r₂]`` of the projection rows."""
    rows = params[:, :12].double().reshape(-1, 3, 4)[:, :2, :3]
    rows = rows / torch.linalg.vector_norm(rows, dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], dim=1)


def _nearest_rotation(matrix: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(matrix)
    fix = torch.ones(3, dtype=matrix.dtype)
    fix[2] = torch.sign(torch.linalg.det(u @ vh))
    return u @ torch.diag(fix) @ vh


def rotation_angles(rotation: torch.Tensor) -> torch.Tensor:
    """(3,) Deep3DFaceRecon face angles ``(α, β, γ)`` with ``rotation = Rz(γ)·Ry(β)·Rx(α)``
    (:func:`~triplanenet.preprocess.pose.face_rotation`); β in [−π/2, π/2]."""
    r = rotation.double()
    return torch.stack(
        [
            torch.atan2(r[2, 1], r[2, 2]),
            torch.asin((-r[2, 0]).clamp(-1.0, 1.0)),
            torch.atan2(r[1, 0], r[0, 0]),
        ]
    )


def _fit_translation(
    angles: torch.Tensor, landmarks: torch.Tensor, crop_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Translation ``T`` (3,) of the mean face at fixed ``angles`` that best projects onto the 5 landmarks, and the
    (5, 2) pixel residuals."""
    template = torch.as_tensor(POSE_TEMPLATE, dtype=torch.float64)
    focal, centre = FFHQ_FOCAL * crop_size, crop_size / 2 - 0.5

    def project(translation: torch.Tensor) -> torch.Tensor:  # (M, 3) -> (M, 5, 2)
        params = torch.cat([angles.expand(translation.shape[0], 3), translation], dim=-1)
        return project_template(params, template, focal, centre)

    fitted, _ = least_squares_lm(
        lambda t: (project(t) - landmarks).flatten(-2), torch.zeros(1, 3, dtype=torch.float64), iterations=50
    )
    return fitted[0], project(fitted)[0] - landmarks


def estimate_pose_tddfa(
    image: np.ndarray,
    box: np.ndarray,
    landmarks5: np.ndarray,
    net: TddfaNet,
    camera: Literal["official", "lookat"] = "official",
) -> PoseEstimate:
    """Camera of the face in an aligned crop from 3DDFA_V2's head rotation (see the module).

    Args:
        image: uint8 (S, S, 3) aligned crop (``AlignedFace.image``).
        box: (4,) face box ``[x1, y1, x2, y2]`` in that crop (:func:`box_in_crop` of the MTCNN detection).
        landmarks5: (5, 2) MTCNN landmarks in that crop (``AlignedFace.landmarks``), for the translation.
        net: :func:`~triplanenet.preprocess.tddfa.load_tddfa`.
        camera: ``"official"`` (keeps roll, like EG3D's labels) or ``"lookat"`` (roll-free look-at camera).

    Raises:
        InputImageError: a box or landmarks that are not finite, or a face too small to crop.
    """
    if camera not in ("official", "lookat"):
        raise ConfigError(f"camera must be 'official' or 'lookat', got {camera!r}")
    image = np.asarray(image)
    box = np.asarray(box, dtype=np.float64)
    landmarks = torch.as_tensor(np.asarray(landmarks5, dtype=np.float64))
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise InputImageError(f"face box must be 4 finite numbers [x1, y1, x2, y2], got {box.tolist()}")
    if landmarks.shape != (5, 2) or not torch.isfinite(landmarks).all():
        raise InputImageError(f"landmarks must be 5 finite (x, y) points, got shape {tuple(landmarks.shape)}")
    crops = tddfa_crops(image, tddfa_rois(box))
    with torch.no_grad():
        params = net(torch.cat([crops, crops.flip(-1)]).to(next(net.parameters()).device)).cpu()
    rotations = tddfa_rotation(params)
    direct, mirrored = rotations.chunk(2)
    rotation = _nearest_rotation((direct + _MIRROR @ mirrored @ _MIRROR).sum(0))
    angles = rotation_angles(rotation)
    translation, residuals = _fit_translation(angles, landmarks, int(image.shape[0]))
    return pose_estimate(angles, translation, residuals, camera)
