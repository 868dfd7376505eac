"""Head pose from MediaPipe's 468-point face mesh → EG3D camera label (the default ``--pose mesh`` estimator).

Pipeline (all in the aligned crop, pure PyTorch, about 0.4 s per photo on one CPU thread):

1. **Region of interest.** A square, eye-line-aligned 192² crop around the face, first from MTCNN's 5 landmarks,
   then twice more from the mesh the previous pass found (MediaPipe's own tracking rule: bounding box of the mesh
   in the eye-aligned frame, enlarged 1.5×), sampled bilinearly from an antialiased copy of the image; the last
   pass averages three ROI sizes (:data:`FINAL_ROI_SCALES`).
2. **Mesh.** :class:`~triplanenet.preprocess.face_mesh.FaceMeshNet` on the crop **and on its mirror image**; the
   mirrored mesh is mapped back (x flipped, left/right vertices swapped) and the two are averaged, so a mirrored
   photo gives exactly the mirrored mesh (and camera).
3. **Fit.** The canonical face model (:func:`canonical_face`, MediaPipe's 468-vertex mean face) is moved
   into Deep3DFaceRecon's BFM frame by the similarity that maps its 5 landmark equivalents (eye centres, nose tip,
   mouth corners) onto :data:`~triplanenet.preprocess.pose.POSE_TEMPLATE`, then tilted by :data:`PITCH_OFFSET`
   about the x axis. Its projection with Deep3DFaceRecon's camera (focal 4.2647 × crop size, 10 units away) is
   fitted to the 468 mesh points (image positions and mean-free depth, :data:`DEPTH_WEIGHT`, the depth at the
   magnification of the face's own distance) by Levenberg–Marquardt over ``(α, β, γ, T)`` (roll included) and
   the face's proportions ``(s_y, s_z)`` (height and depth relative to width: the least identity a mean face
   needs, so that a long or flat face is not read as pitch), re-weighted three times with Huber weights
   (robust to a few wrong points), from a grid of yaw/pitch starts.
4. **Camera.** ``3dface2idr_mat.py`` + ``fix_pose_orig`` conversion, exactly as for the 5-point fit
   (:func:`~triplanenet.preprocess.pose.camera_from_face_pose`).

Calibrated constant: only :data:`PITCH_OFFSET` (one number), on the 12 reference photos with official cameras;
leave-one-out numbers are in ``docs/cameras.md``.
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from triplanenet.eg3d.camera import FFHQ_FOCAL
from triplanenet.errors import ConfigError, InputImageError
from triplanenet.preprocess.face_mesh import FACE_MESH_INPUT_SIZE, FaceMeshNet
from triplanenet.preprocess.pose import (
    CAMERA_DISTANCE,
    POSE_TEMPLATE,
    PoseEstimate,
    face_rotation,
    least_squares_lm,
    pose_estimate,
)

__all__ = [
    "MESH_FIVE_POINTS",
    "PITCH_OFFSET",
    "canonical_face",
    "estimate_pose_mesh",
    "face_mesh_landmarks",
    "fit_mesh_pose",
    "five_points",
    "mirror_index",
]

PITCH_OFFSET: float = -0.04
"""Extra tilt (radians, about x) of the canonical face after the 5-point similarity.

The one calibrated number: the rotation-MAE minimum over a 0.01-rad grid on the 12 reference photos with official
cameras (every leave-one-out fold picks −0.04 too; ``docs/cameras.md``)."""

MESH_FIVE_POINTS: tuple[tuple[int, ...], ...] = ((33, 133), (263, 362), (4,), (61,), (291,))
"""Mesh vertices whose mean is each of MTCNN's 5 landmarks (left/right eye: outer + inner corner; nose tip;
mouth corners), image-left first."""

DEPTH_WEIGHT: float = 1.0
"""Weight of the mesh's depth (z) residuals relative to the image-plane ones (1: an isotropic 3D fit)."""

ROI_SCALE = 1.5
FINAL_ROI_SCALES: tuple[float, ...] = (math.exp(-0.1), 1.0, math.exp(0.1))
"""The last network pass runs on the ROI at these scales and averages the meshes (test-time averaging: it lowers
the network's sensitivity to the ROI size; ±5 %, ±10 %, ±15 %, ±20 % all lowered the rotation MAE on the 12
reference photos, ±10 % the most)."""
HUBER_PX = 1.5
"""Huber threshold of the robust fit, in 512²-crop pixels."""


@functools.lru_cache(maxsize=1)
def canonical_face() -> np.ndarray:
    """(468, 3) MediaPipe canonical face model vertices (centimetres, x image-right, y up, z towards the viewer)."""
    text = resources.files("triplanenet.preprocess").joinpath("data/canonical_face_model.txt").read_text()
    points = np.loadtxt(text.splitlines(), dtype=np.float64)
    if points.shape != (468, 3):  # pragma: no cover - packaging error
        raise ConfigError(f"canonical_face_model.txt has shape {points.shape}, expected (468, 3)")
    return points


@functools.lru_cache(maxsize=1)
def mirror_index() -> np.ndarray:
    """(468,) index of each vertex's mirror partner (x → −x) in the canonical model (self for midline points)."""
    points = canonical_face()
    mirrored = points * np.array([-1.0, 1.0, 1.0])
    distance = np.linalg.norm(points[None, :, :] - mirrored[:, None, :], axis=-1)
    index = distance.argmin(1)
    if distance[np.arange(468), index].max() > 1e-3 or not np.array_equal(index[index], np.arange(468)):
        raise ConfigError("canonical face model is not mirror symmetric")  # pragma: no cover
    return index


def five_points(mesh: np.ndarray) -> np.ndarray:
    """(5, D) MTCNN-order landmarks from (468, D) mesh points (means of :data:`MESH_FIVE_POINTS`)."""
    return np.stack([mesh[list(ids)].mean(0) for ids in MESH_FIVE_POINTS])


@functools.lru_cache(maxsize=8)
def _template(pitch_offset: float) -> np.ndarray:
    """Canonical face in the BFM frame (decimetres): 5-point similarity onto POSE_TEMPLATE, then the pitch tilt."""
    source = five_points(canonical_face())
    target = POSE_TEMPLATE
    mu_s, mu_t = source.mean(0), target.mean(0)
    cs, ct = source - mu_s, target - mu_t
    u, sing, vt = np.linalg.svd(ct.T @ cs)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    scale = float((sing * np.diag(fix)).sum() / (cs**2).sum())
    points = (canonical_face() - mu_s) @ rot.T * scale + mu_t
    c, s = math.cos(pitch_offset), math.sin(pitch_offset)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    pivot = mu_t
    return (points - pivot) @ tilt.T + pivot


def _antialiased(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Gaussian-blur (3, H, W) before sampling it down by ``factor`` (> 1)."""
    sigma = 0.5 * max(factor - 1.0, 0.0)
    if sigma < 0.3:
        return image
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(image[:, None], (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))[:, 0]


def _roi_grid(center: np.ndarray, size: float, angle: float, height: int, width: int) -> torch.Tensor:
    """grid_sample grid (1, S, S, 2) of a square ROI rotated by ``angle`` (radians, the ROI's x axis direction)."""
    n = FACE_MESH_INPUT_SIZE
    steps = (torch.arange(n, dtype=torch.float64) + 0.5) / n - 0.5  # ROI-normalised pixel centres
    gy, gx = torch.meshgrid(steps, steps, indexing="ij")
    c, s = math.cos(angle), math.sin(angle)
    px = center[0] + size * (c * gx - s * gy)
    py = center[1] + size * (s * gx + c * gy)
    grid = torch.stack((px / width * 2 - 1, py / height * 2 - 1), -1)  # continuous coordinates: 0 = left edge
    return grid[None].float()


def _roi_to_image(points: np.ndarray, center: np.ndarray, size: float, angle: float) -> np.ndarray:
    """Map (N, 3) network outputs (ROI pixels, z in the same scale) to image pixels (x, y) + z in image pixels."""
    n = FACE_MESH_INPUT_SIZE
    u = points[:, 0] / n - 0.5
    v = points[:, 1] / n - 0.5
    c, s = math.cos(angle), math.sin(angle)
    x = center[0] + size * (c * u - s * v) - 0.5
    y = center[1] + size * (s * u + c * v) - 0.5
    return np.stack((x, y, points[:, 2] * size / n), -1)


def _roi_from_points(
    points: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """MediaPipe-style ROI: eye-line angle, bounding box of the points in that frame, square, × ROI_SCALE."""
    eyes = right_eye - left_eye
    angle = math.atan2(float(eyes[1]), float(eyes[0]))
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # image → eye-aligned frame
    local = points[:, :2] @ rot.T
    lo, hi = local.min(0), local.max(0)
    center = rot.T @ ((lo + hi) / 2)
    size = float((hi - lo).max()) * ROI_SCALE
    return center + 0.5, size, angle  # +0.5: pixel-centre → continuous coordinates


def face_mesh_landmarks(
    image: np.ndarray | torch.Tensor,
    landmarks5: np.ndarray,
    net: FaceMeshNet,
    passes: int = 3,
    mirror: bool = True,
    final_scales: tuple[float, ...] = FINAL_ROI_SCALES,
) -> np.ndarray:
    """468 face mesh points (x, y pixels; z in the same pixel scale, smaller = nearer) of the face in ``image``.

    Args:
        image: uint8 (H, W, 3) RGB (usually the aligned 512² crop).
        landmarks5: (5, 2) MTCNN landmarks of that face in the same pixel coordinates (used for the first ROI).
        net: the network (:func:`~triplanenet.preprocess.face_mesh.load_face_mesh`).
        passes: network passes (≥ 1; the first ROI comes from the 5 landmarks, each next one from the mesh).
        mirror: average with the mirrored crop's mesh (exact mirror equivariance; False halves the work).
        final_scales: the last pass averages the meshes of the ROI scaled by each of these factors.

    Returns:
        (468, 3) float64 mesh in ``image`` coordinates.
    """
    array = torch.tensor(np.asarray(image))
    if array.ndim != 3 or array.shape[-1] != 3:
        raise InputImageError(f"expected an (H, W, 3) RGB image, got shape {tuple(array.shape)}")
    if passes < 1 or not final_scales:
        raise ConfigError(f"passes must be at least 1 and final_scales not empty, got {passes}, {final_scales}")
    pixels = array.permute(2, 0, 1).float() / 255.0
    height, width = pixels.shape[1:]
    lm = np.asarray(landmarks5, dtype=np.float64)
    # First ROI: the 5 landmarks extended by 0.9 eye–mouth distances up (forehead) and down (chin), × ROI_SCALE.
    eyes_mid, mouth_mid = lm[:2].mean(0), lm[3:].mean(0)
    spread = np.concatenate((lm, [eyes_mid + (eyes_mid - mouth_mid) * 0.9, mouth_mid + (mouth_mid - eyes_mid) * 0.9]))
    center, size, angle = _roi_from_points(spread, lm[0], lm[1])
    partner = mirror_index()
    mesh = np.zeros((468, 3))
    for index in range(passes):
        scales = final_scales if index == passes - 1 else (1.0,)
        source = _antialiased(pixels, size / FACE_MESH_INPUT_SIZE)
        grids = torch.cat([_roi_grid(center, size * k, angle, height, width) for k in scales])
        crops = F.grid_sample(
            source[None].expand(len(scales), -1, -1, -1), grids, padding_mode="border", align_corners=False
        )
        with torch.no_grad():
            points, _ = net(torch.cat((crops, crops.flip(-1))) if mirror else crops)
        points = points.double().numpy()
        meshes = []
        for k, scale in enumerate(scales):
            roi_points = points[k]
            if mirror:
                flipped = points[len(scales) + k][partner].copy()
                flipped[:, 0] = FACE_MESH_INPUT_SIZE - flipped[:, 0]
                roi_points = 0.5 * (roi_points + flipped)
            meshes.append(_roi_to_image(roi_points, center, size * scale, angle))
        mesh = np.mean(meshes, axis=0)
        center, size, angle = _roi_from_points(mesh, mesh[33], mesh[263])
    return mesh


def _project(params: torch.Tensor, template: torch.Tensor, focal_px: float, center_px: float) -> torch.Tensor:
    """(..., N, 3): projected (u, v) pixels and the depth coordinate in the same pixel scale (larger = farther).

    ``params`` is (..., 8): face angles ``(α, β, γ)``, translation ``T`` and the face's proportions ``(s_y, s_z)``
    (height and depth relative to width; the template is scaled by ``(1, s_y, s_z)`` about its centroid). The
    depth is scaled by the magnification at the face's own distance ``10 − T_z`` (the face mesh network's z has
    the pixel scale of its x and y), not at the nominal 10 units: the fitted faces sit 10.0–10.95 units away.
    """
    scale = torch.cat((torch.ones_like(params[..., 6:7]), params[..., 6:8]), -1)[..., None, :]
    centroid = template.mean(0)
    shaped = (template - centroid) * scale + centroid
    rot = face_rotation(params[..., :3])
    points = shaped @ rot.transpose(-1, -2) + params[..., None, 3:6]
    depth = CAMERA_DISTANCE - points[..., 2]
    u = center_px + focal_px * points[..., 0] / depth
    v = center_px - focal_px * points[..., 1] / depth
    w = -focal_px * points[..., 2] / (CAMERA_DISTANCE - params[..., None, 5])
    return torch.stack((u, v, w), dim=-1)


def _residuals(
    params: torch.Tensor, template: torch.Tensor, observed: torch.Tensor, weights: torch.Tensor, focal: float, c: float
) -> torch.Tensor:
    """(M, 3N) weighted residuals; the depth residual compares mean-free depths (the network's z has no origin)."""
    pred = _project(params, template, focal, c)
    diff = pred - observed
    diff = torch.cat((diff[..., :2], diff[..., 2:] - diff[..., 2:].mean(-2, keepdim=True)), -1)
    return (diff * weights).flatten(-2)


def _lm(
    params: torch.Tensor, template: torch.Tensor, observed: torch.Tensor, weights: torch.Tensor, focal: float, c: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mesh fit over (B, 8) starts (:func:`~triplanenet.preprocess.pose.least_squares_lm`, float64)."""
    return least_squares_lm(
        lambda p: _residuals(p, template, observed, weights, focal, c), params, iterations=60, step_tolerance=1e-8
    )


def fit_mesh_pose(
    mesh: np.ndarray,
    crop_size: int = 512,
    camera: Literal["official", "lookat"] = "official",
    pitch_offset: float = PITCH_OFFSET,
    depth_weight: float = DEPTH_WEIGHT,
    point_weights: np.ndarray | None = None,
) -> PoseEstimate:
    """Fit the canonical face to (468, 3) mesh points in an aligned crop; return the EG3D camera (see module).

    Args:
        mesh: (468, 3) :func:`face_mesh_landmarks` output in the crop's pixel coordinates.
        crop_size: side of the crop (the camera focal is ``4.2647 · crop_size`` pixels).
        camera: ``"official"`` (keeps roll, like EG3D's labels) or ``"lookat"`` (roll-free look-at camera).
        pitch_offset: tilt of the canonical face (:data:`PITCH_OFFSET`).
        depth_weight: weight of the depth residuals (:data:`DEPTH_WEIGHT`).
        point_weights: optional (468,) per-vertex weights (default: all 1).

    Raises:
        InputImageError: a mesh that is not 468 finite 3D points.
    """
    if camera not in ("official", "lookat"):
        raise ConfigError(f"camera must be 'official' or 'lookat', got {camera!r}")
    observed = torch.as_tensor(np.asarray(mesh, dtype=np.float64))
    if observed.shape != (468, 3) or not torch.isfinite(observed).all():
        raise InputImageError(f"mesh must be 468 finite (x, y, z) points, got shape {tuple(observed.shape)}")
    template = torch.as_tensor(_template(float(pitch_offset)))
    focal_px = FFHQ_FOCAL * crop_size
    center_px = crop_size / 2 - 0.5
    lm5 = five_points(observed.numpy())
    eyes = lm5[1] - lm5[0]
    roll0 = -math.atan2(float(eyes[1]), float(eyes[0]))
    starts = torch.tensor(
        [[a, b, roll0, 0.0, 0.0, 0.0, 1.0, 1.0] for b in (-0.9, -0.45, 0.0, 0.45, 0.9) for a in (-0.3, 0.0, 0.3)],
        dtype=torch.float64,
    )
    base = torch.ones(468, dtype=torch.float64) if point_weights is None else torch.as_tensor(point_weights).double()
    axis = torch.tensor([1.0, 1.0, math.sqrt(depth_weight)], dtype=torch.float64)
    weights = base.sqrt()[:, None] * axis
    params, cost = _lm(starts, template, observed, weights, focal_px, center_px)
    params = params[int(torch.argmin(cost))][None]
    threshold = HUBER_PX * crop_size / 512.0
    for _ in range(3):  # IRLS with Huber weights on the 2D distance
        residual = _project(params[0], template, focal_px, center_px)[:, :2] - observed[:, :2]
        norm = torch.linalg.vector_norm(residual, dim=-1).clamp_min(1e-9)
        huber = torch.where(norm < threshold, 1.0, threshold / norm)
        weights = (base * huber).sqrt()[:, None] * axis
        params, cost = _lm(params, template, observed, weights, focal_px, center_px)
    fitted = params[0]
    error = _project(fitted, template, focal_px, center_px)[:, :2] - observed[:, :2]
    return pose_estimate(fitted[:3], fitted[3:6], error, camera)


def estimate_pose_mesh(
    image: np.ndarray,
    landmarks5: np.ndarray,
    net: FaceMeshNet,
    camera: Literal["official", "lookat"] = "official",
    pitch_offset: float = PITCH_OFFSET,
) -> PoseEstimate:
    """Camera of the face in an aligned crop from its face mesh (:func:`face_mesh_landmarks` + :func:`fit_mesh_pose`).

    Args:
        image: uint8 (S, S, 3) aligned crop (``AlignedFace.image``).
        landmarks5: (5, 2) MTCNN landmarks in that crop (``AlignedFace.landmarks``).
        net: :func:`~triplanenet.preprocess.face_mesh.load_face_mesh`.
        camera: ``"official"`` (keeps roll) or ``"lookat"``.
    """
    mesh = face_mesh_landmarks(image, landmarks5, net)
    return fit_mesh_pose(mesh, crop_size=int(np.asarray(image).shape[0]), camera=camera, pitch_offset=pitch_offset)
