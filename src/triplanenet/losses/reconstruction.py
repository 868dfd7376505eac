"""Pixel reconstruction losses, averaged over every element (batch, channels, pixels).

* :func:`l2_loss`: mean squared error (pSp branch, ``l2_lambda_psp``).
* :func:`smooth_l1_loss`: Huber with beta = 1 (TriPlaneNet branch, ``l1_lambda_triplane``; the official help text
  calls it "L2"): ``0.5 d^2`` for ``|d| < 1`` else ``|d| - 0.5``.
* :func:`l1_loss`: mean absolute error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from triplanenet.errors import InputImageError


def _check(y_hat: torch.Tensor, x: torch.Tensor, name: str) -> None:
    if y_hat.shape != x.shape:
        raise InputImageError(f"{name} needs tensors of equal shape, got {tuple(y_hat.shape)} and {tuple(x.shape)}")


def l2_loss(y_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mean((y_hat - x)^2)`` over all elements (any equal shapes); scalar."""
    _check(y_hat, x, "l2_loss")
    return F.mse_loss(y_hat, x)


def smooth_l1_loss(y_hat: torch.Tensor, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Mean smooth-L1 (Huber, ``beta`` = 1 like ``F.smooth_l1_loss``'s default); scalar."""
    _check(y_hat, x, "smooth_l1_loss")
    return F.smooth_l1_loss(y_hat, x, beta=beta)


def l1_loss(y_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mean(|y_hat - x|)`` over all elements; scalar."""
    _check(y_hat, x, "l1_loss")
    return F.l1_loss(y_hat, x)
