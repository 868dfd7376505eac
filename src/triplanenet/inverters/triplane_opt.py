"""Tri-plane optimisation baselines: ``triplane-opt`` and the hybrid ``w+-pred+triplane-opt``.

The paper's "tri-plane opt." (supplement §D) optimises tri-plane offsets with L-BFGS (Liu & Nocedal 1989) for 50
steps, with an ``L2`` or ``LPIPS`` image loss plus a regulariser toward the first-branch prediction; as L-BFGS
evaluates several gradients per step, 50 steps are about 1,000 gradient evaluations. Here each step runs
``torch.optim.LBFGS`` with ``max_iter=20`` (50 × 20 = 1,000 iterations) and a strong-Wolfe line search (the
paper does not name a line search; without one, unit steps on tri-planes of std ≈ 30 diverge). The regulariser is
``regularization · mean(offsets²)``: an L2 pull of the optimised planes toward the planes they started from.

* ``w+-pred+triplane-opt`` (the paper's hybrid, Fig. 2 (d) then (b)): W+ from the pSp first branch, offsets start at
  zero on top of its planes, and are pulled toward them.
* ``triplane-opt`` (Fig. 2 (b) alone, one stage, no encoder): the same on top of the generator's mean face
  (``w_avg`` repeated over the layers); the super-resolution styles stay those of ``w_avg``.

The result stores the optimised offsets as :attr:`Inversion.offsets`, so it saves, loads and renders exactly like a
TriPlaneNet inversion (planes = backbone(ws) + offsets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from triplanenet.errors import ConfigError
from triplanenet.inversion import Inversion, prepare_image
from triplanenet.inverters.optimize import (
    OptimizationOptions,
    OptimizingInverter,
    ProgressCallback,
    ReconstructionLoss,
    StepTracker,
    prepare_camera,
)
from triplanenet.model import TriPlaneNet


@dataclass
class TriPlaneOptions(OptimizationOptions):
    """Options of the tri-plane optimisers (defaults: the paper's 50 L-BFGS steps with an L2 image loss).

    Attributes:
        steps: L-BFGS steps (outer iterations).
        lr: L-BFGS learning rate (initial step length before the line search).
        l2_weight / lpips_weight: image loss; the paper uses one of them (default L2: 1 and 0).
        max_iter: L-BFGS iterations per step.
        history_size: L-BFGS curvature pairs kept.
        line_search: ``'strong_wolfe'`` or ``'none'``.
        regularization: weight of ``mean(offsets²)``. 0.01 makes the bundled model's own TriPlaneNet offsets
            (std ≈ 0.4) cost about a tenth of its first-branch image MSE.
    """

    steps: int = 50
    lr: float = 1.0
    l2_weight: float = 1.0
    lpips_weight: float = 0.0
    max_iter: int = 20
    history_size: int = 100
    line_search: Literal["strong_wolfe", "none"] = "strong_wolfe"
    regularization: float = 0.01

    def validate(self) -> None:
        super().validate()
        if self.max_iter < 1 or self.history_size < 1:
            raise ConfigError("max_iter and history_size must be >= 1")
        if self.line_search not in ("strong_wolfe", "none"):
            raise ConfigError(f"line_search must be 'strong_wolfe' or 'none', got {self.line_search!r}")
        if self.regularization < 0:
            raise ConfigError("regularization must be >= 0")


class TriPlaneOptimizer(OptimizingInverter):
    """Optimise tri-plane offsets with L-BFGS on top of the first-branch (or mean-face) planes.

    Args:
        model: supplies the generator (not modified) and, with ``first_branch=True``, the pSp encoder.
        first_branch: start from the pSp W+ prediction (``w+-pred+triplane-opt``) instead of ``w_avg``
            (``triplane-opt``).
        options: :class:`TriPlaneOptions`; ``overrides`` change single fields.
        callback: progress callback ``(step, total, loss)``.
    """

    def __init__(
        self,
        model: TriPlaneNet,
        first_branch: bool = False,
        options: TriPlaneOptions | None = None,
        callback: ProgressCallback | None = None,
        **overrides: Any,
    ) -> None:
        name = "w+-pred+triplane-opt" if first_branch else "triplane-opt"
        super().__init__(model, name, TriPlaneOptions, options, callback, overrides)
        self.options: TriPlaneOptions
        self.first_branch = first_branch

    @torch.no_grad()
    def _start_ws(self, image: torch.Tensor) -> torch.Tensor:
        generator = self.model.decoder
        if self.first_branch:
            x = prepare_image(image, self.model.config.input_resolution).unsqueeze(0).to(self.device)
            return self.model.encode_ws(x)
        return generator.w_avg.view(1, 1, -1).repeat(1, generator.num_ws, 1).to(self.device)

    def start(self, image: torch.Tensor, camera: torch.Tensor) -> Inversion:
        """The starting point: the start code with zero offsets."""
        label = prepare_camera(camera, self.device)
        return Inversion(self.model.decoder, self._start_ws(image), label, None, self.name)

    def _loss(self, image: torch.Tensor) -> ReconstructionLoss:
        o = self.options
        return ReconstructionLoss(self.model, image, o.l2_weight, o.lpips_weight, o.loss_resolution)

    def _value(
        self, loss_fn: ReconstructionLoss, base: torch.Tensor, ws: torch.Tensor, label: torch.Tensor, offsets
    ) -> torch.Tensor:
        planes = base + offsets.view_as(base)
        render = self.model.decoder.render(planes, ws, label, deterministic=self.options.deterministic)
        return loss_fn(render.image) + self.options.regularization * offsets.square().mean()

    @torch.no_grad()
    def objective(self, image: torch.Tensor, inversion: Inversion) -> float:
        """Image loss + offset regulariser of ``inversion`` (offsets relative to the backbone planes of its ws)."""
        generator = self.model.decoder
        base = generator.planes(inversion.ws, noise_mode="const")
        offsets = inversion.offsets if inversion.offsets is not None else torch.zeros_like(base).flatten(1, 2)
        return float(self._value(self._loss(image), base, inversion.ws, inversion.camera, offsets))

    def invert(self, image: torch.Tensor, camera: torch.Tensor) -> Inversion:
        """Optimise offsets for one image (3, H, W) in [-1, 1] seen from camera (25,) or (1, 25)."""
        options = self.options
        label = prepare_camera(camera, self.device)
        loss_fn = self._loss(image)
        ws = self._start_ws(image)
        with torch.no_grad():
            base = self.model.decoder.planes(ws, noise_mode="const")
        offsets = torch.zeros_like(base).flatten(1, 2)
        with torch.no_grad():
            start_value = float(self._value(loss_fn, base, ws, label, offsets))
        offsets.requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            [offsets],
            lr=options.lr,
            max_iter=options.max_iter,
            history_size=options.history_size,
            line_search_fn=None if options.line_search == "none" else options.line_search,
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            value = self._value(loss_fn, base, ws, label, offsets)
            value.backward()
            return value

        tracker = StepTracker(options.steps, options, self.callback)
        best_value, result = start_value, offsets.detach().clone()
        for step in range(options.steps):
            optimizer.step(closure)
            with torch.no_grad():
                current = float(self._value(loss_fn, base, ws, label, offsets))
            if current < best_value:  # keep the best iterate (guards against a diverging line search)
                best_value, result = current, offsets.detach().clone()
            if tracker.update(step + 1, current):
                break
        with torch.no_grad():
            final = float(self._value(loss_fn, base, ws, label, result))
        return Inversion(
            self.model.decoder, ws, label, result, self.name, history=[start_value, *tracker.history, final]
        )
