"""Adversarial losses of TriPlaneNet v2's optional GAN phase (non-saturating logistic GAN + R1), on raw logits.

With ``D`` the :class:`~triplanenet.losses.discriminator.Discriminator` and ``softplus(t) = log(1 + e^t)``:

* generator (encoder) step: ``L_G = mean softplus(-D(fake))`` (:func:`generator_adversarial_loss`)
* critic step: ``L_D = (mean softplus(-D(real)) + mean softplus(D(fake))) / 2`` (:func:`discriminator_logistic_loss`;
  note the official ``/ 2``)
* lazy R1 every ``d_reg_every`` critic steps: ``L_R1 = d_r1_gamma / 2 * d_reg_every * r1``, with
  ``r1 = mean_b ||d sum(D(real)) / d real_b||^2`` (:func:`r1_penalty` returns ``r1``; the caller applies the scale,
  official defaults ``d_r1_gamma = 10``, ``d_reg_every = 16``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.errors import InputImageError


def _check_logits(logits: torch.Tensor, name: str) -> None:
    if logits.ndim != 2 or logits.shape[1] != 1:
        raise InputImageError(f"{name} must be discriminator logits of shape (B, 1), got {tuple(logits.shape)}")


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``mean(softplus(-fake_logits))``: (B, 1) -> scalar, >= 0."""
    _check_logits(fake_logits, "fake_logits")
    return F.softplus(-fake_logits).mean()


def discriminator_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic critic loss ``(mean softplus(-real) + mean softplus(fake)) / 2``: (B, 1), (B', 1) -> scalar, >= 0.

    Pass ``fake_logits`` of detached fakes so that only the discriminator receives gradients.
    """
    _check_logits(real_logits, "real_logits")
    _check_logits(fake_logits, "fake_logits")
    return (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()) / 2


def r1_penalty(discriminator: nn.Module, real_images: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """R1 gradient penalty ``mean_b sum_{c,h,w} (d sum(D(x)) / d x_b)^2`` on real images (B, C, H, W) -> scalar.

    Runs its own forward pass on a detached copy of ``real_images`` (gradients enabled even inside ``no_grad``). With
    ``create_graph=True`` (the default) the result can be back-propagated into the discriminator's parameters, which
    must have ``requires_grad`` set for that. Unscaled: multiply by ``d_r1_gamma / 2 * d_reg_every`` yourself.
    """
    if real_images.ndim != 4:
        raise InputImageError(f"real_images must be (B, C, H, W), got shape {tuple(real_images.shape)}")
    with torch.enable_grad():
        images = real_images.detach().requires_grad_(True)
        logits = discriminator(images)
        (grad,) = torch.autograd.grad(logits.sum(), images, create_graph=create_graph)
        return grad.square().flatten(1).sum(dim=1).mean()
