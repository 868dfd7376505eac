"""Identity loss with a frozen ArcFace IR-SE-50 face-recognition network (pSp / TriPlaneNet ``IDLoss``).

Feature extraction for an image batch (B, 3, H, W) in [-1, 1]: crop rows ``35:223`` and columns ``32:220`` (pSp's
FFHQ face crop for 256x256 images; for other sizes the bounds are scaled by H/256 and W/256 and rounded),
adaptive-average-pool to the embedder's input size (112), run the embedder -> L2-normalised embedding.

``loss = mean_b (1 - <f(y_hat_b), f(x_b).detach()>)``; ``id_similarity = mean_b <f(y_hat_b), f(x_b)>`` (detached).
The official ``id_improve`` log value equals ``id_similarity - 1`` in TriPlaneNet (its target is the input).

The real weights (``model_ir_se50.pth``, TreB1eN InsightFace_Pytorch via pSp) are not on PyPI; the user supplies
them. Without them training runs with the identity terms disabled (:data:`IDENTITY_DISABLED_WARNING`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.encoders.config import IRSEBackboneConfig
from triplanenet.encoders.irse import IRSEBackbone
from triplanenet.errors import CheckpointError, ConfigError, InputImageError

PSP_FACE_CROP = (35, 223, 32, 220)
"""(row_start, row_end, col_start, col_end) of the face crop in a 256x256 image."""
CROP_REFERENCE_SIZE = 256
IDENTITY_DISABLED = "disabled"
IDENTITY_DISABLED_WARNING = (
    "identity loss disabled: no ArcFace weights given (model_ir_se50.pth, from pSp's pretrained models); the ID "
    "terms of the training loss are skipped, so results will not match the paper"
)


class IdentityLossDisabledWarning(UserWarning):
    """Emitted once when training runs without the ArcFace identity network."""


class IdentityLossOutput(NamedTuple):
    """``loss``: scalar with gradient to ``y_hat``; ``id_similarity``: detached mean cosine similarity."""

    loss: torch.Tensor
    id_similarity: torch.Tensor


def scaled_crop(
    height: int, width: int, crop: tuple[int, int, int, int] = PSP_FACE_CROP, reference: int = CROP_REFERENCE_SIZE
) -> tuple[int, int, int, int]:
    """Crop bounds for an ``height`` x ``width`` image: ``crop`` scaled from a ``reference``-sized square.

    Exactly ``crop`` when the image is 256x256.
    """
    r0, r1, c0, c1 = crop
    sy, sx = height / reference, width / reference
    bounds = (round(r0 * sy), round(r1 * sy), round(c0 * sx), round(c1 * sx))
    if bounds[1] <= bounds[0] or bounds[3] <= bounds[2]:
        raise InputImageError(f"image {height}x{width} is too small for the identity-loss face crop; use 256x256")
    return bounds


class IdentityLoss(nn.Module):
    """``1 - cos`` between face embeddings of the reconstruction and the (detached) target.

    Args:
        embedder: a face-recognition network mapping (B, 3, S, S) in [-1, 1] to L2-normalised (B, D) embeddings,
            e.g. :class:`IRSEBackbone`. It is frozen (``requires_grad_(False)``) and kept in eval mode.
        crop: face crop (row_start, row_end, col_start, col_end) for 256x256 images; scaled for other sizes.
        input_size: side ``S`` of the embedder input; default ``embedder.cfg.input_size`` or 112.
    """

    def __init__(
        self,
        embedder: nn.Module,
        crop: tuple[int, int, int, int] = PSP_FACE_CROP,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if len(crop) != 4 or not (0 <= crop[0] < crop[1] and 0 <= crop[2] < crop[3]):
            raise ConfigError(f"identity crop must be (row_start, row_end, col_start, col_end), got {crop}")
        self.embedder = embedder
        self.crop = tuple(int(v) for v in crop)
        cfg = getattr(embedder, "cfg", None)
        self.input_size = int(input_size or getattr(cfg, "input_size", 112))
        self.embedder.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> IdentityLoss:
        """The embedder is a fixed metric: it always stays in eval mode."""
        return super().train(False)

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) of (B, 3, H, W) images in [-1, 1] (crop, pool to ``input_size``, embed)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputImageError(f"identity loss expects (B, 3, H, W) images, got {tuple(images.shape)}")
        r0, r1, c0, c1 = scaled_crop(images.shape[-2], images.shape[-1], self.crop)  # type: ignore[arg-type]
        face = images[:, :, r0:r1, c0:c1]
        face = F.adaptive_avg_pool2d(face, (self.input_size, self.input_size))
        return self.embedder(face)

    def forward(self, y_hat: torch.Tensor, x: torch.Tensor) -> IdentityLossOutput:
        """Identity loss of reconstruction ``y_hat`` against target ``x`` (same shape, [-1, 1])."""
        if y_hat.shape != x.shape:
            raise InputImageError(
                f"identity loss needs equal shapes, got y_hat {tuple(y_hat.shape)} and x {tuple(x.shape)}"
            )
        target = self.extract(x).detach()
        pred = self.extract(y_hat)
        cosine = (pred * target).sum(dim=1)
        return IdentityLossOutput(loss=(1.0 - cosine).mean(), id_similarity=cosine.detach().mean())


_warned_disabled = False


def load_identity_network(
    path: str | os.PathLike[str] | None,
    config: IRSEBackboneConfig | None = None,
) -> IRSEBackbone | None:
    """Load ArcFace IR-SE-50 from ``model_ir_se50.pth`` (strict, ``weights_only`` loading), frozen, eval.

    ``path=None`` or ``"disabled"``: returns None and warns once per process (:class:`IdentityLossDisabledWarning`
    with :data:`IDENTITY_DISABLED_WARNING`, which the trainer prints).

    Args:
        config: architecture; default ``IRSEBackboneConfig.arcface_ir_se50(dropout=0.6)`` (TriPlaneNet's
            ``Backbone(112, 50, 'ir_se', drop_ratio=0.6)``; dropout is inactive in eval mode).

    Raises:
        CheckpointError: missing/unsafe file, or keys/shapes that do not match the architecture.
    """
    global _warned_disabled
    if path is None or str(path) == IDENTITY_DISABLED:
        if not _warned_disabled:
            _warned_disabled = True
            warnings.warn(IDENTITY_DISABLED_WARNING, IdentityLossDisabledWarning, stacklevel=2)
        return None
    from triplanenet.io.checkpoints import safe_torch_load
    from triplanenet.io.registry import resolve_checkpoint

    file = resolve_checkpoint(path)  # the names ir-se50 / curricularface -> their cached downloads
    if not file.is_file():
        raise CheckpointError(
            f"identity network {file} not found; pass the path of model_ir_se50.pth or 'disabled' to skip the ID loss"
        )
    state = _plain_state_dict(file, safe_torch_load(file))
    network = IRSEBackbone(config if config is not None else IRSEBackboneConfig.arcface_ir_se50(dropout=0.6))
    _check_keys(file, network.state_dict(), state)
    network.load_state_dict(state, strict=True)
    network.eval().requires_grad_(False)
    return network


def _plain_state_dict(file: Path, obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{file}: is not a state dict of tensors; pass model_ir_se50.pth")
    keys = [str(k) for k in obj]
    if all(k.startswith("module.") for k in keys):  # saved from nn.DataParallel
        return {str(k)[len("module.") :]: v for k, v in obj.items()}
    return {str(k): v for k, v in obj.items()}


def _check_keys(file: Path, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    from triplanenet.io.checkpoints import check_state_dict

    check_state_dict(
        expected, found, str(file), what="the ArcFace IR-SE-50 architecture", advice="pass pSp's model_ir_se50.pth"
    )
