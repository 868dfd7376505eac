"""Editing an inversion in W (TriPlaneNet supplement, Sec. C, eq. 6).

The paper first finds a code ``w ∈ W`` for the image by optimisation, then edits it along a direction and keeps the
tri-plane offsets of its second branch::

    T_edit = (G(w) + ΔT) + G(w_edit) − G(w),     w_edit = w + strength · scale · direction

where ``G`` maps a code (broadcast to all W+ layers) to backbone tri-planes. Here:

* :func:`fit_w` finds ``w`` by matching ``G(w)``'s backbone tri-planes to those of the inversion's W+ codes
  (objective below); no image is needed, so any saved inversion can be edited.
* :func:`make_edit_base` fixes the unedited term ``(G(w) + ΔT)``. Three choices of ΔT:
  ``"absorb"`` (default) ``ΔT = T_inv − G(w)`` so the unedited planes are exactly the inversion's planes
  (strength 0 reproduces the reconstruction bit for bit); ``"keep"`` reuses the inversion's own offsets as in the
  formula's literal reading (its W+→W fitting residual then shows in the result); ``"encoder"`` re-runs
  TriPlaneNet's second branch on ``G(w)``, the paper's "replace the first-branch components" (needs the model and
  the input image).
* :func:`edit_planes` evaluates eq. 6 and :func:`edited_inversion` wraps the result in an :class:`Inversion` that
  renders, gives novel views, meshes, videos and saves like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from triplanenet.editing.directions import Direction
from triplanenet.errors import ConfigError
from triplanenet.inversion import Inversion

OffsetMode = Literal["absorb", "keep", "encoder"]


def _broadcast(w: torch.Tensor, num_ws: int) -> torch.Tensor:
    """(1, w_dim) or (w_dim,) -> (1, num_ws, w_dim)."""
    return w.reshape(1, 1, -1).expand(1, num_ws, -1)


def _is_w(ws: torch.Tensor) -> bool:
    """Whether all W+ layers of (1, num_ws, w_dim) hold the same code."""
    return bool((ws - ws[:, :1]).abs().max() == 0)


def fit_w(
    inversion: Inversion,
    steps: int = 200,
    lr: float = 0.01,
    start: Literal["mean", "avg"] = "mean",
) -> tuple[torch.Tensor, float]:
    """Find one code ``w ∈ W`` whose tri-planes match the inversion's first-branch tri-planes.

    Objective (Adam, ``steps`` steps, learning rate ``lr``)::

        min_w  mean( (G(w·1) − G(w+))² )

    over all backbone tri-plane features (offsets excluded: ΔT is shared by both sides). ``w·1`` broadcasts ``w`` to
    all ``num_ws`` layers. Starts from the mean of the inversion's W+ codes over layers (``start="mean"``) or from the
    generator's ``w_avg``; returns the best code seen. When the inversion's codes already lie in W (all layers equal)
    that code is returned unchanged.

    Returns:
        (w (1, w_dim), final objective value).
    """
    if steps < 0 or lr <= 0:
        raise ConfigError("fit steps must be >= 0 and the learning rate > 0")
    generator = inversion.generator
    ws = inversion.ws.detach()
    num_ws = ws.shape[1]
    if _is_w(ws):
        return ws[:, 0].clone(), 0.0
    with torch.no_grad():
        target = generator.planes(ws, noise_mode="const")
    init = ws.mean(dim=1) if start == "mean" else generator.w_avg.reshape(1, -1).to(ws)
    w = init.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr)
    best = (w.detach().clone(), float("inf"))
    with torch.enable_grad():
        for step in range(steps + 1):
            loss = (generator.planes(_broadcast(w, num_ws), noise_mode="const") - target).square().mean()
            value = float(loss.detach())
            if value < best[1]:
                best = (w.detach().clone(), value)
            if step == steps:
                break
            (grad,) = torch.autograd.grad(loss, [w])
            w.grad = grad
            optimizer.step()
    return best


@torch.no_grad()
def reencode_offsets(model, image: torch.Tensor, camera: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """TriPlaneNet's second branch run on ``G(w)`` instead of the first branch: offsets (1, 3·C, R, R).

    Args:
        model: the :class:`~triplanenet.model.TriPlaneNet` that made the inversion.
        image: (3, H, W) input in [-1, 1]; camera: (1, 25) its label; w: (1, w_dim).
    """
    from triplanenet.inversion import prepare_image

    generator = model.decoder
    device = model.latent_avg.device
    x = prepare_image(image, model.config.input_resolution)[None].to(device)
    ws = _broadcast(w.to(device), generator.num_ws)
    planes = generator.planes(ws, noise_mode="const")
    return model.refine_offsets(x, ws, planes, camera.reshape(1, 25).to(device), deterministic=True)


@dataclass
class EditBase:
    """The unedited state of eq. 6 for one inversion.

    Attributes:
        inversion: the original inversion.
        w: (1, w_dim) code in W.
        g_w: (1, 3, C, R, R) ``G(w)``.
        base: (1, 3, C, R, R) ``G(w) + ΔT`` (for ``"absorb"``: exactly the inversion's planes).
        mode: how ΔT was chosen (``absorb``, ``keep``, ``encoder``).
        fit_loss: the :func:`fit_w` objective at ``w`` (0 when the codes were already in W).
    """

    inversion: Inversion
    w: torch.Tensor
    g_w: torch.Tensor
    base: torch.Tensor
    mode: str
    fit_loss: float

    @property
    def num_ws(self) -> int:
        return self.inversion.ws.shape[1]


@torch.no_grad()
def make_edit_base(
    inversion: Inversion,
    w: torch.Tensor | None = None,
    offsets: OffsetMode = "absorb",
    steps: int = 200,
    lr: float = 0.01,
    model=None,
    image: torch.Tensor | None = None,
) -> EditBase:
    """Fit ``w`` (unless given) and fix the unedited planes ``G(w) + ΔT`` (see the module docstring for ``offsets``)."""
    generator = inversion.generator
    num_ws = inversion.ws.shape[1]
    loss = 0.0
    if w is None:
        w, loss = fit_w(inversion, steps=steps, lr=lr)
    w = w.reshape(1, -1).to(inversion.ws)
    g_w = generator.planes(_broadcast(w, num_ws).contiguous(), noise_mode="const")
    if offsets == "absorb":
        base = inversion.planes()
    elif offsets == "keep":
        delta = inversion.offsets
        base = g_w if delta is None else g_w + delta.reshape_as(g_w).to(g_w)
    elif offsets == "encoder":
        if model is None or image is None:
            raise ConfigError("offsets='encoder' needs the TriPlaneNet model and the input image")
        base = g_w + reencode_offsets(model, image, inversion.camera, w).reshape_as(g_w)
    else:
        raise ConfigError(f"unknown offset mode {offsets!r}: use absorb, keep or encoder")
    return EditBase(inversion=inversion, w=w, g_w=g_w, base=base, mode=offsets, fit_loss=loss)


def edited_ws(
    w: torch.Tensor, direction: Direction, strength: float, num_ws: int, layers: tuple[int, int] | None = None
) -> torch.Tensor:
    """(1, num_ws, w_dim) ``w_edit = w·1 + strength · scale · direction`` on the chosen layers."""
    if not torch.isfinite(torch.tensor(float(strength))):
        raise ConfigError(f"edit strength must be a finite number, got {strength}")
    delta = direction.delta(num_ws, strength, layers).to(w)
    return _broadcast(w, num_ws) + delta.unsqueeze(0)


@torch.no_grad()
def edit_planes(
    inversion: Inversion | EditBase,
    direction: Direction,
    strength: float,
    layers: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Eq. 6: ``T_edit = (G(w) + ΔT) + G(w_edit) − G(w)`` as (1, 3, C, R, R) tri-planes.

    ``inversion`` may be an :class:`EditBase` (reuse one fit for several edits) or an :class:`Inversion` (fits ``w``
    with the defaults of :func:`make_edit_base`). Strength 0 returns the unedited planes exactly.
    """
    base = inversion if isinstance(inversion, EditBase) else make_edit_base(inversion)
    generator = base.inversion.generator
    ws_edit = edited_ws(base.w, direction, strength, base.num_ws, layers)
    g_edit = generator.planes(ws_edit, noise_mode="const")
    return base.base + (g_edit - base.g_w)


@torch.no_grad()
def edited_inversion(
    base: EditBase,
    direction: Direction,
    strength: float,
    layers: tuple[int, int] | None = None,
) -> Inversion:
    """An :class:`Inversion` holding the edited planes ``T_edit`` (eq. 6).

    Its codes are the inversion's W+ codes moved by the same edit, ``ws = w+ + strength · scale · direction`` (they
    only drive the super-resolution styles once planes are given, so strength 0 renders exactly the inversion), and
    its offsets are ``T_edit − G(ws)``, so a saved and re-loaded edit renders the same head.
    """
    generator = base.inversion.generator
    ws_edit = edited_ws(base.w, direction, strength, base.num_ws, layers)
    planes = base.base + (generator.planes(ws_edit, noise_mode="const") - base.g_w)
    ws_out = base.inversion.ws + direction.delta(base.num_ws, strength, layers).to(base.inversion.ws).unsqueeze(0)
    offsets = (planes - generator.planes(ws_out, noise_mode="const")).reshape(1, -1, *planes.shape[-2:])
    edited = Inversion(
        generator=generator,
        ws=ws_out.contiguous(),
        camera=base.inversion.camera,
        offsets=offsets.contiguous(),
        method=f"{base.inversion.method}+edit",
    )
    if getattr(base.inversion, "base_generator", None) is not None:  # fine-tuned generators (PTI) stay bound
        edited.base_generator = base.inversion.base_generator
    edited._planes = planes
    return edited
