"""Mirror-view ("probably symmetric") losses weighted by a per-pixel uncertainty map sigma.

Notation (TriPlaneNet supplementary, "Loss functions"): ``x_m = flip(x)`` is the horizontally mirrored input,
``y_m`` the reconstruction rendered at the mirrored camera, ``sigma = sigma(x_m) > 0`` the uncertainty map of the
pretrained unsup3d ConfNet (:mod:`triplanenet.losses.confnet`), predicted at 64x64 and bilinearly upsampled to the
image size. Per-pixel distances are averaged over the colour channels.

* Eq. 5 (:func:`symmetry_loss_fixed_sigma`, what TriPlaneNet trains with):
  ``mean_uv d_uv / (sigma_uv + eps)`` with ``d`` the squared error (``'l2'``, pSp branch) or smooth-L1
  (``'smooth_l1'``, tri-plane branch). ``eps = 0`` is the paper's formula; the official v2 code uses ``eps = 1``
  (``EPS = 1`` in ``training/coach_v2.py``). ``normalize=True`` is the official ``--normalize_mirror``: each image's
  mean is divided by ``mean_uv 1 / (sigma_uv + eps)`` before averaging over the batch. sigma is a fixed weight here
  (detached).
* Eq. 4 (:func:`laplacian_nll`): the negative log-likelihood of a factorised Laplacian,
  ``log sqrt(2) + mean_uv [log sigma_uv + sqrt(2) l1_uv / sigma_uv]``; gradients reach sigma, so it can train a
  sigma predictor from scratch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from triplanenet.errors import ConfigError, InputImageError

SymmetryDistance = Literal["l2", "smooth_l1", "l1"]
OFFICIAL_V2_EPS = 1.0
"""``EPS`` added to sigma by the official TriPlaneNet v2 mirror losses."""


def _check_pair(x_m: torch.Tensor, y_m: torch.Tensor, name: str) -> None:
    if x_m.ndim != 4 or x_m.shape != y_m.shape:
        raise InputImageError(
            f"{name} expects two (B, C, H, W) images of equal shape, got {tuple(x_m.shape)} and {tuple(y_m.shape)}"
        )


def resize_sigma(sigma: torch.Tensor, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """sigma as (B, 1, H, W): accepts (B, 1, h, w) or (B, h, w); bilinear resize (align_corners=False) if needed.

    A batch dimension of 1 broadcasts over ``batch``.
    """
    if sigma.ndim == 3:
        sigma = sigma.unsqueeze(1)
    if sigma.ndim != 4 or sigma.shape[1] != 1 or sigma.shape[0] not in (1, batch):
        raise InputImageError(
            f"sigma must have shape (B, 1, h, w) or (B, h, w) with B = {batch}, got {tuple(sigma.shape)}"
        )
    if tuple(sigma.shape[-2:]) != tuple(size):
        sigma = F.interpolate(sigma, size=size, mode="bilinear", align_corners=False)
    return sigma


def pixel_distance(x_m: torch.Tensor, y_m: torch.Tensor, distance: SymmetryDistance = "l2") -> torch.Tensor:
    """Per-pixel distance averaged over channels: (B, C, H, W) x2 -> (B, 1, H, W)."""
    if distance == "l2":
        d = (y_m - x_m) ** 2
    elif distance == "smooth_l1":
        d = F.smooth_l1_loss(y_m, x_m, reduction="none", beta=1.0)
    elif distance == "l1":
        d = (y_m - x_m).abs()
    else:
        raise ConfigError(f"unknown symmetry distance {distance!r}; use 'l2', 'smooth_l1' or 'l1'")
    return d.mean(dim=1, keepdim=True)


def symmetry_loss_fixed_sigma(
    x_m: torch.Tensor,
    y_m: torch.Tensor,
    sigma: torch.Tensor,
    distance: SymmetryDistance = "l2",
    eps: float = 0.0,
    normalize: bool = False,
) -> torch.Tensor:
    """Eq. 5: uncertainty-weighted mirror loss (scalar), sigma detached.

    Args:
        x_m: mirrored input (B, C, H, W), [-1, 1].
        y_m: reconstruction at the mirrored camera, same shape (gradients flow to it).
        sigma: uncertainty (B, 1, h, w) or (B, h, w), > 0 (or > -eps); resized to (H, W) if needed.
        distance: ``'l2'`` (squared error), ``'smooth_l1'`` (beta 1) or ``'l1'``.
        eps: added to sigma; 0 = paper, 1 = official v2 code (:data:`OFFICIAL_V2_EPS`).
        normalize: official ``--normalize_mirror`` (divide each image's mean by ``mean(1 / (sigma + eps))``).
    """
    _check_pair(x_m, y_m, "symmetry_loss_fixed_sigma")
    if eps < 0:
        raise ConfigError(f"symmetry loss eps must be >= 0, got {eps}")
    s = resize_sigma(sigma.detach(), x_m.shape[0], (x_m.shape[-2], x_m.shape[-1])).to(y_m.dtype) + eps
    weighted = pixel_distance(x_m, y_m, distance) / s
    if not normalize:
        return weighted.mean()
    per_image = weighted.mean(dim=(1, 2, 3))
    norm = (1.0 / s).mean(dim=(1, 2, 3)).expand_as(per_image)
    return (per_image / norm).mean()


def laplacian_nll(x_m: torch.Tensor, y_m: torch.Tensor, sigma: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Eq. 4: ``log sqrt(2) + mean_uv [log sigma_uv + sqrt(2) l1_uv / sigma_uv]`` (scalar).

    ``l1_uv`` is ``|y_m - x_m|`` averaged over channels; sigma (B, 1, h, w) or (B, h, w) > 0 is resized to (H, W)
    if needed and keeps its gradient. ``eps`` (default 0) is added to sigma in both terms.
    """
    _check_pair(x_m, y_m, "laplacian_nll")
    if eps < 0:
        raise ConfigError(f"laplacian_nll eps must be >= 0, got {eps}")
    s = resize_sigma(sigma, x_m.shape[0], (x_m.shape[-2], x_m.shape[-1])).to(y_m.dtype) + eps
    l1 = pixel_distance(x_m, y_m, "l1")
    return math.log(math.sqrt(2.0)) + (torch.log(s) + math.sqrt(2.0) * l1 / s).mean()
