"""EG3D in-the-wild face crop: 5 landmarks → 512² aligned image (+ the 256² network input).

The recipe is EG3D's ``crop_images_in_the_wild.py`` (reused unchanged by TriPlaneNet), which calls
Deep3DFaceRecon's ``align_img``:

1. The 5 landmarks (y flipped to point up: ``y' = H − 1 − y``) are fitted by least squares to an affine
   camera applied to the standard 3D landmarks :data:`LM3D_STD`: ``lm ≈ A·X + t`` with ``A`` a free 2×3
   matrix (8 unknowns, 10 equations). The scale ``s`` is the mean norm of A's two rows, ``t`` is where the
   template origin projects.
2. The image is resized (bicubic) by ``k = rescale_factor / s`` (300 for EG3D) to ``int(W·k) × int(H·k)``, and a
   ``target_size`` (1024) square is cut around ``t`` (left ``int(w/2 − 512 + (t_x − W/2)·k)``, top
   ``int(h/2 − 512 + (H/2 − t'_y)·k)``).
3. The centre ``center_crop_size`` (700) square of that is resized to ``output_size`` (512) with LANCZOS.

The official arithmetic is kept exactly, quirks included: it mixes pixel-index and pixel-edge coordinates and
flips y with ``H − 1 − y`` but centres with ``H / 2``, so the template origin lands ``0.5·k`` resized pixels right
of and above the 1024 crop's centre (≈ 1.5 px in the 512² output for a typical ``k`` ≈ 4), and the ``int()``
truncations move the crop by up to one resized pixel.

Here the bicubic resize is evaluated only on the 700-pixel region that survives step 3 (identical pixels, far
less work), and pixels outside the photo are filled by ``pad_mode``: ``"reflect"`` (default, the FFHQ-style
choice), ``"edge"``, or ``"constant"`` (black, what EG3D's in-the-wild script produces via PIL's crop).

The 256² network input is the 512² crop resized with PIL's antialiased bilinear filter (TriPlaneNet's
``transforms.Resize((256, 256))``).

Template provenance: :data:`LM3D_STD` are the exact 5 points ``load_lm3d`` derives from Deep3DFaceRecon's
``BFM/similarity_Lm3D_all.mat`` (68 points of the BFM mean face; 5-point = eye centres as the means of
points 37/40 and 43/46, nose tip 31, mouth corners 49 and 55, reordered to MTCNN's order). The .mat file is
part of the MIT-licensed ``sicxu/Deep3DFaceRecon_pytorch`` repository; only its numbers are used. Units: BFM
decimetres; axes: x towards image right, y up, z out of the face (towards a frontal camera).

Pixel coordinates: everywhere here ``(x, y)`` are 0-based pixel coordinates with the centre of pixel ``(i, j)``
at ``(i, j)`` (the convention of MTCNN landmarks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from triplanenet.errors import ConfigError, InputImageError

__all__ = [
    "KEEP_ALIGNED_SCALE",
    "KEEP_ALIGNED_SHIFT_PX",
    "LM3D_STD",
    "TEMPLATE_LANDMARKS_512",
    "AlignedFace",
    "align_face",
    "apply_affine",
    "fit_landmarks_pos",
    "template_landmarks",
]

PadMode = Literal["reflect", "edge", "constant"]

LM3D_STD: np.ndarray = np.array(
    [
        [-0.31148657, 0.29036078, 0.13377953],  # left eye (image left)
        [0.30979887, 0.28972036, 0.13179526],  # right eye
        [0.00325350, -0.04617932, 0.55244243],  # nose tip
        [-0.25216928, -0.38133916, 0.22405732],  # mouth left
        [0.24846620, -0.38128236, 0.22235769],  # mouth right
    ],
    dtype=np.float64,
)
"""(5, 3) standard 3D landmarks of Deep3DFaceRecon (BFM mean face, decimetres, y up, z towards the camera)."""

TARGET_SIZE = 1024
RESCALE_FACTOR = 300.0
CENTER_CROP_SIZE = 700
OUTPUT_SIZE = 512
INPUT_SIZE = 256


def template_landmarks(output_size: int = OUTPUT_SIZE) -> np.ndarray:
    """Where :data:`LM3D_STD` lands in the crop for a perfectly frontal face (orthographic, scale 300 px/unit).

    Returns (5, 2) pixel coordinates in an ``output_size`` crop made with the default recipe (1024 → 700 → size),
    without the official recipe's half-pixel offset (``(+0.5, −0.5)·k`` resized pixels, see the module docstring).
    A real face's landmarks land near these points; yaw, pitch and expressions move the nose and mouth most.
    """
    centre = TARGET_SIZE / 2 - math.floor(TARGET_SIZE / 2 - CENTER_CROP_SIZE / 2)  # 350 in the 700 crop
    scale = output_size / CENTER_CROP_SIZE
    x = (centre + RESCALE_FACTOR * LM3D_STD[:, 0]) * scale - 0.5
    y = (centre - RESCALE_FACTOR * LM3D_STD[:, 1]) * scale - 0.5
    return np.stack((x, y), axis=1)


TEMPLATE_LANDMARKS_512: np.ndarray = template_landmarks(OUTPUT_SIZE)
"""(5, 2) frontal template landmark positions in the 512² crop (eyes ≈ y 191.7, mouth ≈ y 339.1)."""


@dataclass(frozen=True)
class AlignedFace:
    """Result of :func:`align_face`.

    Attributes:
        image: (S, S, 3) uint8 RGB, the EG3D crop (S = ``output_size``, 512 by default).
        image_input: (s, s, 3) uint8 RGB, the encoder input (s = ``input_size``, 256 by default).
        transform: (2, 3) float64 affine mapping source-image pixel coordinates to crop pixel coordinates:
            ``[x', y'] = transform @ [x, y, 1]``.
        transform_input: (2, 3) float64, the same for the ``image_input`` crop.
        landmarks: (5, 2) float64, the input landmarks mapped into ``image`` coordinates.
        scale: ``s`` of the least-squares fit (source pixels per template unit).
        center: (2,) float64 ``t`` of the fit in source pixel coordinates (y down): where the template origin
            projects.
    """

    image: np.ndarray
    image_input: np.ndarray
    transform: np.ndarray
    transform_input: np.ndarray
    landmarks: np.ndarray
    scale: float
    center: np.ndarray


def apply_affine(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ np.asarray(transform)[:, :2].T + np.asarray(transform)[:, 2]


def fit_landmarks_pos(landmarks: np.ndarray, height: int, template: np.ndarray = LM3D_STD) -> tuple[np.ndarray, float]:
    """Deep3DFaceRecon's ``POS`` fit: affine camera from 3D template points to the 5 landmarks.

    Args:
        landmarks: (5, 2) pixel coordinates (y down).
        height: image height H (landmarks are flipped to ``H − 1 − y`` as the official code does).
        template: (5, 3) 3D points.

    Returns:
        ``(t, s)``: ``t`` (2,) is the template origin's projection **in flipped (y-up) coordinates**, ``s`` the
        mean norm of the two rows of the fitted 2×3 matrix.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2).copy()
    lm[:, 1] = height - 1 - lm[:, 1]
    n = lm.shape[0]
    design = np.zeros((2 * n, 8))
    design[0::2, 0:3] = template
    design[0::2, 3] = 1.0
    design[1::2, 4:7] = template
    design[1::2, 7] = 1.0
    solution, *_ = np.linalg.lstsq(design, lm.reshape(-1), rcond=None)
    scale = (np.linalg.norm(solution[0:3]) + np.linalg.norm(solution[4:7])) / 2.0
    return np.array([solution[3], solution[7]]), float(scale)


def _as_uint8_rgb(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    try:
        import torch

        if isinstance(image, torch.Tensor):
            from triplanenet.preprocess.mtcnn import to_rgb_tensor

            return to_rgb_tensor(image).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InputImageError("image must be uint8 (H, W, 3) RGB (numpy), a PIL image or an image tensor")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputImageError(f"image has shape {image.shape}; pass (H, W, 3) RGB")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _source_indices(start: int, stop: int, length: int, mode: PadMode) -> tuple[np.ndarray, np.ndarray]:
    """Indices into an axis of ``length`` for positions ``start..stop-1`` and a mask of in-range positions."""
    pos = np.arange(start, stop)
    inside = (pos >= 0) & (pos < length)
    if mode == "reflect" and length > 1:
        period = 2 * (length - 1)
        idx = np.mod(pos, period)
        idx = np.where(idx >= length, period - idx, idx)
    else:  # edge, constant (masked afterwards), or a 1-pixel axis
        idx = np.clip(pos, 0, length - 1)
    return idx, inside


KEEP_ALIGNED_SHIFT_PX: float = 12.0
"""``keep_aligned``: largest move of the crop centre (output pixels) still treated as "already aligned".

Re-detecting the 12 official EG3D crops of the reference pack with our MTCNN and re-aligning them would move them
by 1.2–7.4 px and scale them by 0.96–1.04 (the official landmarks came from another MTCNN on the full photo), so
the tolerances are about 1.6× those worst cases; the camera is estimated on the kept crop itself."""
KEEP_ALIGNED_SCALE: float = 0.07
"""``keep_aligned``: largest relative scale change still treated as "already aligned"."""


def _near_identity(transform: np.ndarray, size: int) -> bool:
    scale = math.sqrt(abs(float(np.linalg.det(transform[:, :2]))))
    centre = np.array([size / 2 - 0.5, size / 2 - 0.5])
    shift = float(np.linalg.norm(transform[:, :2] @ centre + transform[:, 2] - centre))
    return abs(scale - 1.0) <= KEEP_ALIGNED_SCALE and shift <= KEEP_ALIGNED_SHIFT_PX


def align_face(
    image: Any,
    landmarks: np.ndarray,
    *,
    target_size: int = TARGET_SIZE,
    rescale_factor: float = RESCALE_FACTOR,
    center_crop_size: int = CENTER_CROP_SIZE,
    output_size: int = OUTPUT_SIZE,
    input_size: int = INPUT_SIZE,
    pad_mode: PadMode = "reflect",
    keep_aligned: bool = False,
) -> AlignedFace:
    """Crop a face the way EG3D's in-the-wild preprocessing does (see the module docstring).

    Args:
        image: uint8 (H, W, 3) RGB array, PIL image or image tensor (see ``mtcnn.to_rgb_tensor``).
        landmarks: (5, 2) MTCNN landmarks in pixel coordinates (left eye, right eye, nose, mouth left, mouth right;
            left = image left).
        target_size, rescale_factor, center_crop_size, output_size: the EG3D recipe (1024, 300, 700, 512).
        input_size: side of the encoder input made from the crop (256).
        pad_mode: how to fill pixels outside the photo: ``"reflect"``, ``"edge"`` or ``"constant"`` (black).
        keep_aligned: an ``output_size``² image that this recipe would move by at most
            :data:`KEEP_ALIGNED_SHIFT_PX` and scale by at most :data:`KEEP_ALIGNED_SCALE` is already an EG3D crop: it
            is returned unchanged (identity transform) instead of being re-cropped by landmark noise.

    Returns:
        :class:`AlignedFace` with the crops, the affine transforms and the mapped landmarks.

    Raises:
        InputImageError: bad image, or landmarks that are not 5 finite, distinct points.
    """
    if pad_mode not in ("reflect", "edge", "constant"):
        raise ConfigError(f"pad_mode must be 'reflect', 'edge' or 'constant', got {pad_mode!r}")
    rgb = _as_uint8_rgb(image)
    h0, w0 = rgb.shape[:2]
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (5, 2) or not np.isfinite(lm).all():
        raise InputImageError(f"landmarks must be 5 finite (x, y) points, got shape {lm.shape}")

    # 1. Least-squares fit to the standard landmarks.
    t_up, s = fit_landmarks_pos(lm, h0)
    if not s > 1e-6:
        raise InputImageError("landmarks are degenerate (all at one point); detect the face again")
    k = rescale_factor / s

    # 2. Geometry of the official resize + 1024 crop + 700 centre crop, in the resized image's pixels.
    w = int(w0 * k)
    h = int(h0 * k)
    if w < 1 or h < 1:
        raise InputImageError("the face is too large for this image to be rescaled; check the landmarks")
    left = int(w / 2 - target_size / 2 + (t_up[0] - w0 / 2) * k)
    up = int(h / 2 - target_size / 2 + (h0 / 2 - t_up[1]) * k)
    inner = int(target_size / 2 - center_crop_size / 2)
    x0, y0 = left + inner, up + inner  # top-left of the centre crop in the resized image
    sx, sy = w0 / w, h0 / h  # source pixels per resized pixel

    # 3. Bicubic resize of just the centre-crop region (PIL's box resize equals resize-then-crop), with padding.
    box = (x0 * sx, y0 * sy, (x0 + center_crop_size) * sx, (y0 + center_crop_size) * sy)
    support = 2.0 * max(sx, sy, 1.0) + 2.0  # bicubic kernel radius in source pixels, plus slack
    c0, c1 = math.floor(box[0] - support), math.ceil(box[2] + support)
    r0, r1 = math.floor(box[1] - support), math.ceil(box[3] + support)
    cols, col_in = _source_indices(c0, c1, w0, pad_mode)
    rows, row_in = _source_indices(r0, r1, h0, pad_mode)
    region = rgb[rows][:, cols]
    if pad_mode == "constant":
        region = region * (row_in[:, None, None] & col_in[None, :, None])
    region_box = (box[0] - c0, box[1] - r0, box[2] - c0, box[3] - r0)
    crop = Image.fromarray(np.ascontiguousarray(region.astype(np.uint8))).resize(
        (center_crop_size, center_crop_size), Image.Resampling.BICUBIC, box=region_box
    )
    out = crop.resize((output_size, output_size), Image.Resampling.LANCZOS)
    small = out.resize((input_size, input_size), Image.Resampling.BILINEAR)

    # Affine source → crop (pixel centres at integers; PIL maps pixel edges, hence the ±0.5).
    f = output_size / center_crop_size
    transform = np.array(
        [
            [f / sx, 0.0, (0.5 / sx - x0) * f - 0.5],
            [0.0, f / sy, (0.5 / sy - y0) * f - 0.5],
        ]
    )
    g = input_size / output_size
    to_input = np.array([[g, 0.0, 0.5 * g - 0.5], [0.0, g, 0.5 * g - 0.5]])
    if keep_aligned and h0 == w0 == output_size and _near_identity(transform, output_size):
        return AlignedFace(
            image=rgb.copy(),
            image_input=np.asarray(Image.fromarray(rgb).resize((input_size, input_size), Image.Resampling.BILINEAR)),
            transform=np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
            transform_input=to_input,
            landmarks=lm.copy(),
            scale=s,
            center=np.array([t_up[0], h0 - 1 - t_up[1]]),
        )
    transform_input = to_input[:, :2] @ transform
    transform_input[:, 2] += to_input[:, 2]
    center = np.array([t_up[0], h0 - 1 - t_up[1]])
    return AlignedFace(
        image=np.asarray(out),
        image_input=np.asarray(small),
        transform=transform,
        transform_input=transform_input,
        landmarks=apply_affine(transform, lm),
        scale=s,
        center=center,
    )
