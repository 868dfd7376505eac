"""MTCNN face detector (Zhang et al. 2016) with 5 landmarks, in pure PyTorch.

This is the detector EG3D's in-the-wild preprocessing runs (``batch_mtcnn.py``, through the ``mtcnn`` pip
package); the weights are the same MTCNN P/R/O-nets. They are read from the ``facenet-pytorch`` wheel
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``, plain state dicts, MIT licence), which must be installed with
``pip install --no-deps facenet-pytorch==2.6.0``. Its Python modules are **never imported** (they need
torchvision, which cannot be imported next to this torch); only the three files are located on disk and read
with ``torch.load(weights_only=True)``. Module attribute names follow facenet-pytorch's state-dict keys.

Pipeline (:func:`detect_faces`):

1. Image pyramid: scales ``(12 / min_face_size) · factor^k`` while the short side stays ≥ 12 px; each level is
   area-resized, normalised with ``(x − 127.5) / 128`` and run through the fully convolutional P-Net. Every
   cell whose face probability is ≥ ``thresholds[0]`` gives a 12×12 window (stride 2) mapped back to the image.
2. NMS (IoU 0.5) per pyramid level, then (IoU 0.7) over all levels; P-Net box regression; boxes squared.
3. R-Net on 24×24 crops (zero padded outside the image): score ≥ ``thresholds[1]``, NMS 0.7, box
   regression, squared again.
4. O-Net on 48×48 crops: score ≥ ``thresholds[2]``, 5 landmarks, box regression, NMS 0.7 with the
   intersection-over-minimum criterion.

Coordinates follow the original MTCNN code: boxes use its 1-based, inclusive convention (a box is
``[x1, y1, x2, y2]`` with ``x2 − x1 + 1`` columns, first column ``x1 − 1`` in 0-based indices), landmarks
are 0-based pixel coordinates (column, row; the centre of pixel ``(i, j)`` is at ``(i, j)``).

Landmark order and "left": the five points are ``left_eye, right_eye, nose, mouth_left, mouth_right`` exactly
as MTCNN returns them and as EG3D's ``batch_mtcnn.py`` writes them. **"Left" means the image's left** (smaller
x), i.e. the subject's *right* eye and mouth corner for a frontal face.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.errors import CheckpointError, ConfigError, InputImageError

__all__ = [
    "LANDMARK_NAMES",
    "MTCNN",
    "Face",
    "NoFaceError",
    "ONet",
    "PNet",
    "RNet",
    "batched_nms",
    "box_overlap",
    "detect_faces",
    "find_mtcnn_weights",
    "load_mtcnn",
    "nms",
    "to_rgb_tensor",
]

LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
"""Order of :attr:`Face.landmarks` rows. "left" = image left (the subject's right side)."""

WEIGHTS_ENV = "TRIPLANENET_MTCNN_DIR"
"""Environment variable naming a folder with ``pnet.pt``, ``rnet.pt``, ``onet.pt`` (overrides the wheel)."""

_INSTALL_HINT = "install them with `pip install --no-deps facenet-pytorch==2.6.0` or set TRIPLANENET_MTCNN_DIR"


class NoFaceError(InputImageError):
    """No face (or no face confident enough) was found in an input image."""


# ------------------------------------------------------------------------------------------------------------
# Networks


class _DenseFlatten(nn.Module):
    """Flatten (B, C, H, W) in (B, W, H, C) order: the layout the MTCNN dense weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network, fully convolutional.

    Input (B, 3, H, W) RGB normalised as ``(x − 127.5) / 128``; H, W ≥ 12. Output ``(regression (B, 4, h, w),
    face probability (B, h, w))`` with ``h = ceil((H − 2) / 2) − 4`` (one cell per 12×12 window, stride 2).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / no-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box regression

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        prob = torch.softmax(self.conv4_1(x), dim=1)[:, 1]
        return self.conv4_2(x), prob


class RNet(nn.Module):
    """Refinement network. Input (B, 3, 24, 24) normalised; output ``(regression (B, 4), probability (B,))``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.flatten = _DenseFlatten()
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(self.flatten(x)))
        prob = torch.softmax(self.dense5_1(x), dim=1)[:, 1]
        return self.dense5_2(x), prob


class ONet(nn.Module):
    """Output network. Input (B, 3, 48, 48) normalised; output ``(regression (B, 4), landmarks (B, 10),
    probability (B,))``. Landmarks are ``[x0..x4, y0..y4]`` as fractions of the crop's width/height."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.flatten = _DenseFlatten()
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(self.flatten(x)))
        prob = torch.softmax(self.dense6_1(x), dim=1)[:, 1]
        return self.dense6_2(x), self.dense6_3(x), prob


class MTCNN(nn.Module):
    """The three MTCNN networks together (state-dict prefixes ``pnet.``, ``rnet.``, ``onet.``)."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet = PNet()
        self.rnet = RNet()
        self.onet = ONet()


# ------------------------------------------------------------------------------------------------------------
# Weights


def find_mtcnn_weights(weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder holding ``pnet.pt``, ``rnet.pt`` and ``onet.pt``.

    Search order: ``weights_dir``, the ``TRIPLANENET_MTCNN_DIR`` environment variable, then the ``data/`` folder
    of an installed ``facenet-pytorch`` distribution (found through package metadata / import specs, without
    importing the package).

    Raises:
        CheckpointError: no folder with the three files was found.
    """
    names = ("pnet.pt", "rnet.pt", "onet.pt")
    candidates: list[Path] = []
    if weights_dir is not None:
        candidates.append(Path(weights_dir))
    elif os.environ.get(WEIGHTS_ENV):
        candidates.append(Path(os.environ[WEIGHTS_ENV]))
    else:
        try:
            dist = importlib.metadata.distribution("facenet-pytorch")
            for file in dist.files or ():
                if str(file).replace("\\", "/").endswith("facenet_pytorch/data/pnet.pt"):
                    candidates.append(Path(str(dist.locate_file(file))).parent)
        except importlib.metadata.PackageNotFoundError:
            pass
        # find_spec on a top-level name only locates the package; it does not execute its __init__.
        spec = importlib.util.find_spec("facenet_pytorch")
        if spec is not None and spec.submodule_search_locations:
            candidates.extend(Path(p) / "data" for p in spec.submodule_search_locations)
    for folder in candidates:
        if all((folder / name).is_file() for name in names):
            return folder
    where = str(candidates[0]) if candidates else "the facenet-pytorch package"
    raise CheckpointError(f"MTCNN weights (pnet.pt, rnet.pt, onet.pt) not found in {where}; {_INSTALL_HINT}")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that is more than tensors
        raise CheckpointError(f"{path}: cannot read MTCNN weights ({type(exc).__name__}); {_INSTALL_HINT}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors; {_INSTALL_HINT}")
    return state


@functools.lru_cache(maxsize=4)
def _load_cached(folder: str, device: str) -> MTCNN:
    model = MTCNN()
    for name in ("pnet", "rnet", "onet"):
        net: nn.Module = getattr(model, name)
        path = Path(folder) / f"{name}.pt"
        state = _read_state_dict(path)
        expected = net.state_dict()
        if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
            raise CheckpointError(f"{path}: keys or shapes differ from the MTCNN {name.upper()}; {_INSTALL_HINT}")
        net.load_state_dict(state)
    model.requires_grad_(False)
    return model.eval().to(torch.device(device))


def load_mtcnn(weights_dir: str | os.PathLike[str] | None = None, device: torch.device | str | None = None) -> MTCNN:
    """The pretrained MTCNN (eval mode, no gradients), cached per folder and device (treat it as read-only).

    Raises:
        CheckpointError: weights missing, unreadable, or with unexpected keys/shapes.
    """
    folder = find_mtcnn_weights(weights_dir)
    return _load_cached(str(folder.resolve()), str(torch.device(device or "cpu")))


# ------------------------------------------------------------------------------------------------------------
# Non-maximum suppression


def box_overlap(box: torch.Tensor, others: torch.Tensor, mode: Literal["union", "min"] = "union") -> torch.Tensor:
    """Overlap of one box (4,) with boxes (N, 4) ``[x1, y1, x2, y2]`` in MTCNN's inclusive pixel convention.

    Areas and intersections count ``x2 − x1 + 1`` columns. ``mode="union"`` gives IoU, ``"min"`` divides the
    intersection by the smaller of the two areas. Returns (N,).
    """
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    areas = (others[:, 2] - others[:, 0] + 1) * (others[:, 3] - others[:, 1] + 1)
    iw = (torch.minimum(box[2], others[:, 2]) - torch.maximum(box[0], others[:, 0]) + 1).clamp_min(0)
    ih = (torch.minimum(box[3], others[:, 3]) - torch.maximum(box[1], others[:, 1]) + 1).clamp_min(0)
    inter = iw * ih
    denom = torch.minimum(area, areas) if mode == "min" else area + areas - inter
    return inter / denom


def nms(
    boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: Literal["union", "min"] = "union"
) -> torch.Tensor:
    """Greedy non-maximum suppression.

    Repeatedly keeps the highest-scoring remaining box and drops every remaining box whose overlap with it
    (:func:`box_overlap`) is **greater than** ``threshold`` (ties in score: the later index wins, as in MTCNN's
    stable ascending sort).

    Args:
        boxes: (N, 4) float ``[x1, y1, x2, y2]``.
        scores: (N,).
        threshold: overlap above which a box is suppressed.
        mode: ``"union"`` (IoU) or ``"min"`` (intersection over the smaller area).

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.
    """
    if mode not in ("union", "min"):
        raise ConfigError(f"NMS mode must be 'union' or 'min', got {mode!r}")
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.flip(torch.argsort(scores, stable=True), dims=(0,))
    keep: list[torch.Tensor] = []
    while order.numel() > 0:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        if rest.numel() == 0:
            break
        overlap = box_overlap(boxes[best], boxes[rest], mode)
        order = rest[overlap <= threshold]
    return torch.stack(keep)


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor,
    threshold: float,
    mode: Literal["union", "min"] = "union",
) -> torch.Tensor:
    """:func:`nms` run independently within each group (e.g. image index or pyramid level).

    Boxes of different groups are shifted apart by a per-group offset larger than any coordinate, so they
    never overlap, and one NMS pass handles all groups.

    Returns:
        (K,) int64 indices into ``boxes``, by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    span = boxes.max() - boxes.min() + 2
    shifted = boxes - boxes.min() + (groups.to(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, threshold, mode)


# ------------------------------------------------------------------------------------------------------------
# Detection


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: (4,) float64 ``[x1, y1, x2, y2]`` in pixels (MTCNN convention, see the module docstring).
        score: O-Net face probability in [0, 1].
        landmarks: (5, 2) float64 ``(x, y)`` pixel coordinates, rows in :data:`LANDMARK_NAMES` order
            (left = image left).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Width + height of the box (EG3D keeps the face with the largest value)."""
        return float(self.box[2] - self.box[0] + self.box[3] - self.box[1])

    def keypoints(self) -> dict[str, tuple[float, float]]:
        """Landmarks as ``{name: (x, y)}`` (the ``mtcnn`` package's format)."""
        return {name: (float(x), float(y)) for name, (x, y) in zip(LANDMARK_NAMES, self.landmarks, strict=True)}


def to_rgb_tensor(image: Any) -> torch.Tensor:
    """Convert an input image to a (3, H, W) float32 tensor with values in [0, 255].

    Accepts a PIL image; a numpy or torch ``uint8`` array (H, W, 3), (H, W, 4) (alpha dropped) or (H, W)
    (grayscale); or a float torch tensor (3, H, W) in [−1, 1] (the project's image convention).

    Raises:
        InputImageError: any other type, dtype or shape.
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise InputImageError(f"image array has dtype {image.dtype}; pass uint8 (H, W, 3) RGB")
        image = torch.from_numpy(np.array(image, copy=True))  # own, writable copy
    if not isinstance(image, torch.Tensor):
        raise InputImageError(f"image must be a PIL image, numpy array or torch tensor, got {type(image).__name__}")
    if image.dtype == torch.uint8:
        if image.dim() == 2:
            image = image[..., None]
        if image.dim() != 3 or image.shape[-1] not in (1, 3, 4):
            raise InputImageError(f"uint8 image has shape {tuple(image.shape)}; pass (H, W, 3) RGB")
        rgb = image[..., :3] if image.shape[-1] != 1 else image.expand(*image.shape[:2], 3)
        return rgb.permute(2, 0, 1).to(torch.float32)
    if image.is_floating_point():
        if image.dim() != 3 or image.shape[0] != 3:
            raise InputImageError(
                f"float image tensor has shape {tuple(image.shape)}; pass (3, H, W) in [-1, 1] or uint8 (H, W, 3)"
            )
        return ((image.detach().to(torch.float32) + 1.0) * 127.5).clamp(0.0, 255.0)
    raise InputImageError(f"image tensor has dtype {image.dtype}; pass uint8 (H, W, 3) or float (3, H, W)")


def _pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    scale = 12.0 / min_face_size
    short = min(height, width) * scale
    scales = []
    while short >= 12:
        scales.append(scale)
        scale *= factor
        short *= factor
    return scales


def _normalize(patches: torch.Tensor) -> torch.Tensor:
    return (patches - 127.5) * 0.0078125


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow (N, 4+) boxes to squares of side max(w, h) around their centres (w = x2 − x1)."""
    out = boxes.clone()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: torch.Tensor, offsets: torch.Tensor, inclusive: bool) -> torch.Tensor:
    """Apply box-regression offsets (fractions of the box size) to (N, 4) boxes."""
    extra = 1.0 if inclusive else 0.0
    w = (boxes[:, 2] - boxes[:, 0] + extra)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + extra)[:, None]
    scale = torch.cat((w, h, w, h), dim=1)
    return boxes[:, :4] + offsets * scale


def _crop_patches(image: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-resized (K, 3, size, size) crops of (N, 4) integer boxes, zero padded outside the image.

    Box ``[x1, y1, x2, y2]`` covers 0-based columns ``x1 − 1 … x2 − 1`` (MTCNN's 1-based convention).
    Returns the patches and the (K,) indices of the boxes that were usable (non-empty, touching the image).
    """
    _, height, width = image.shape
    patches: list[torch.Tensor] = []
    used: list[int] = []
    for k, (x1, y1, x2, y2) in enumerate(boxes.to(torch.int64).tolist()):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        c0, r0 = x1 - 1, y1 - 1
        sc0, sc1 = max(c0, 0), min(c0 + bw, width)
        sr0, sr1 = max(r0, 0), min(r0 + bh, height)
        if bw < 1 or bh < 1 or sc1 <= sc0 or sr1 <= sr0:
            continue
        canvas = image.new_zeros((3, bh, bw))
        canvas[:, sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = image[:, sr0:sr1, sc0:sc1]
        patches.append(F.interpolate(canvas[None], size=(size, size), mode="area"))
        used.append(k)
    if not patches:
        return image.new_zeros((0, 3, size, size)), torch.zeros(0, dtype=torch.long)
    return torch.cat(patches), torch.tensor(used, dtype=torch.long)


@torch.inference_mode()
def detect_faces(
    image: Any,
    min_face_size: float = 20.0,
    thresholds: Sequence[float] = (0.6, 0.7, 0.7),
    factor: float = 0.709,
    model: MTCNN | None = None,
    device: torch.device | str | None = None,
) -> list[Face]:
    """Detect faces and their 5 landmarks with MTCNN.

    Args:
        image: RGB image; see :func:`to_rgb_tensor` for the accepted types (uint8 (H, W, 3) is the usual one).
        min_face_size: smallest face side to look for, in pixels.
        thresholds: face-probability thresholds of P-Net, R-Net and O-Net.
        factor: pyramid scale step.
        model: networks from :func:`load_mtcnn` (loaded from the facenet-pytorch wheel when None).
        device: where to load the networks when ``model`` is None (default CPU); a given model runs where it is.

    Returns:
        Faces sorted by size (box width + height), largest first, as EG3D picks ``faces[0]``. Empty when no face
        passes the thresholds. Landmarks are in :data:`LANDMARK_NAMES` order (left = image left).

    Raises:
        InputImageError: unsupported image type or shape.
        CheckpointError: the MTCNN weights cannot be found or read.
    """
    if len(thresholds) != 3 or not all(0.0 <= float(t) <= 1.0 for t in thresholds):
        raise ConfigError(f"MTCNN thresholds must be 3 probabilities, got {tuple(thresholds)!r}")
    if not 0.0 < factor < 1.0 or not min_face_size >= 12:
        raise ConfigError(f"MTCNN needs 0 < factor < 1 and min_face_size >= 12, got {factor!r}, {min_face_size!r}")
    if model is None:
        model = load_mtcnn(device=device)
    dev = next(model.parameters()).device
    img = to_rgb_tensor(image).to(dev)
    _, height, width = img.shape

    # Stage 1: P-Net over the pyramid.
    candidates: list[torch.Tensor] = []
    levels: list[torch.Tensor] = []
    for level, scale in enumerate(_pyramid_scales(height, width, min_face_size, factor)):
        size = (math.ceil(height * scale), math.ceil(width * scale))
        scaled = F.interpolate(img[None], size=size, mode="area")
        offsets, prob = model.pnet(_normalize(scaled))
        rows, cols = torch.nonzero(prob[0] >= thresholds[0], as_tuple=True)
        if rows.numel() == 0:
            continue
        cells = torch.stack((cols, rows), dim=1).to(torch.float32)
        top_left = torch.floor((2 * cells + 1) / scale)
        bottom_right = torch.floor((2 * cells + 12) / scale)
        score = prob[0, rows, cols][:, None]
        reg = offsets[0, :, rows, cols].T
        candidates.append(torch.cat((top_left, bottom_right, score, reg), dim=1))
        levels.append(torch.full((rows.numel(),), level, dtype=torch.long, device=dev))
    if not candidates:
        return []
    boxes = torch.cat(candidates)
    level_ids = torch.cat(levels)
    boxes = boxes[batched_nms(boxes[:, :4], boxes[:, 4], level_ids, 0.5)]
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    boxes = _square(torch.cat((_regress(boxes[:, :4], boxes[:, 5:9], inclusive=False), boxes[:, 4:5]), dim=1))
    boxes[:, :4] = torch.trunc(boxes[:, :4])

    # Stage 2: R-Net.
    patches, used = _crop_patches(img, boxes[:, :4], 24)
    if used.numel() == 0:
        return []
    boxes = boxes[used.to(dev)]
    offsets, prob = model.rnet(_normalize(patches))
    keep = prob > thresholds[1]
    boxes = torch.cat((boxes[keep, :4], prob[keep, None]), dim=1)
    offsets = offsets[keep]
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
    boxes, offsets = boxes[pick], offsets[pick]
    boxes = _square(torch.cat((_regress(boxes[:, :4], offsets, inclusive=True), boxes[:, 4:5]), dim=1))
    if boxes.shape[0] == 0:
        return []
    boxes[:, :4] = torch.trunc(boxes[:, :4])

    # Stage 3: O-Net with landmarks.
    patches, used = _crop_patches(img, boxes[:, :4], 48)
    if used.numel() == 0:
        return []
    boxes = boxes[used.to(dev)]
    offsets, points, prob = model.onet(_normalize(patches))
    keep = prob > thresholds[2]
    boxes, offsets, points, prob = boxes[keep, :4], offsets[keep], points[keep], prob[keep]
    w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    xs = boxes[:, 0:1] - 1 + w * points[:, :5]
    ys = boxes[:, 1:2] - 1 + h * points[:, 5:]
    landmarks = torch.stack((xs, ys), dim=-1)  # (K, 5, 2)
    boxes = _regress(boxes, offsets, inclusive=True)
    pick = nms(boxes, prob, 0.7, mode="min")

    faces = [
        Face(
            box=boxes[i].double().cpu().numpy(),
            score=float(prob[i]),
            landmarks=landmarks[i].double().cpu().numpy(),
        )
        for i in pick.tolist()
    ]
    faces.sort(key=lambda face: face.size, reverse=True)
    return faces
