"""Generator fine-tuning baselines: ``eg3d-params`` (tune the generator around the encoder's W+ code) and ``pti``.

Pivotal Tuning Inversion (Roich et al. 2022, the paper's reference [16]) first finds a pivot code by W optimisation,
then fine-tunes every generator parameter with Adam so that the pivot reproduces the image. Defaults follow PTI's
EG3D port (``configs/hyperparameters.py``): pivot search 450 steps at learning rate 5e-3 (W mean from 600 samples);
tuning with Adam at 3e-4, loss ``1 · L2 + 1 · LPIPS-alex`` on the full render, up to 350 steps, stopping as soon
as LPIPS drops to 0.06. ``eg3d-params`` is the paper's "EG3D params opt." baseline (supplement §D): PTI's second
stage started from the pSp (first-branch) W+ code, run for 1,000 steps (no LPIPS threshold by default).

The tuned generator is a private copy (the shared model is never modified); the resulting :class:`Inversion`
carries it and stores only the changed tensors when saved (see :mod:`triplanenet.inversion`). By default the loss is
computed at the encoder input resolution like every inverter here (``loss_resolution='full'`` for PTI's choice);
note that PTI's LPIPS threshold of 0.06 was chosen for 512² renders, and LPIPS values depend on the resolution.

``Inversion.history`` of ``pti``: the objective at the mean code with the base generator, then at the W pivot, then
one value per tuning step and the value at the result (the pivot search reports progress but is not recorded);
of ``eg3d-params``: the objective at the encoder's code, one value per step, and the value at the result.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import ConfigError
from triplanenet.inversion import Inversion, prepare_image
from triplanenet.inverters.latent import LatentOptimizer
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
class TuningOptions(OptimizationOptions):
    """Options of ``eg3d-params`` (PTI's tuning stage run for a fixed 1,000 steps, as the paper states).

    Attributes:
        lpips_threshold: stop as soon as the LPIPS term is at or below this; 0 (default here) disables it. PTI
            itself stops at 0.06 (the ``pti`` default); at the bundled model's 64² loss resolution that stops
            ``eg3d-params`` after 100–150 of its 1,000 steps.
    """

    steps: int = 1000
    lr: float = 3e-4
    lpips_threshold: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.lpips_threshold < 0:
            raise ConfigError("lpips_threshold must be >= 0")


@dataclass
class PTIOptions(TuningOptions):
    """Options of ``pti``: a W pivot search then tuning (defaults: PTI's EG3D hyper-parameters).

    Attributes:
        steps: tuning steps (PTI ``max_pti_steps`` = 350).
        latent_steps: W optimisation steps for the pivot (PTI ``first_inv_steps`` = 450).
        latent_lr: peak learning rate of the pivot search (PTI ``first_inv_lr`` = 5e-3).
        w_avg_samples: samples for the W mean/spread of the pivot search (PTI passes 600).
    """

    steps: int = 350
    lpips_threshold: float = 0.06
    latent_steps: int = 450
    latent_lr: float = 5e-3
    w_avg_samples: int = 600

    def validate(self) -> None:
        super().validate()
        if self.latent_steps < 0 or self.latent_lr <= 0 or self.w_avg_samples < 2:
            raise ConfigError("latent_steps must be >= 0, latent_lr > 0 and w_avg_samples >= 2")


class GeneratorTuner(OptimizingInverter):
    """``eg3d-params`` (pivot = the model's pSp W+ prediction) or ``pti`` (pivot = W optimisation).

    Args:
        model: supplies the generator (copied, never modified) and, for ``eg3d-params``, the pSp encoder.
        pivot: ``'encoder'`` (``eg3d-params``) or ``'w-opt'`` (``pti``).
        options: :class:`TuningOptions` / :class:`PTIOptions` (defaults: paper/PTI); ``overrides`` change fields.
        callback: progress callback ``(step, total, loss)``; the pivot search reports as steps too.
    """

    def __init__(
        self,
        model: TriPlaneNet,
        pivot: str = "encoder",
        options: TuningOptions | None = None,
        callback: ProgressCallback | None = None,
        **overrides: Any,
    ) -> None:
        if pivot not in ("encoder", "w-opt"):
            raise ConfigError(f"pivot must be 'encoder' or 'w-opt', got {pivot!r}")
        options_class = PTIOptions if pivot == "w-opt" else TuningOptions
        super().__init__(
            model, "pti" if pivot == "w-opt" else "eg3d-params", options_class, options, callback, overrides
        )
        self.options: TuningOptions
        self.pivot = pivot

    def _loss(self, image: torch.Tensor) -> ReconstructionLoss:
        o = self.options
        return ReconstructionLoss(self.model, image, o.l2_weight, o.lpips_weight, o.loss_resolution)

    def _latent(self) -> LatentOptimizer:
        o = self.options
        if not isinstance(o, PTIOptions):
            raise ConfigError("only pti (pivot 'w-opt') has a W pivot search")
        return LatentOptimizer(
            self.model,
            plus=False,
            steps=o.latent_steps,
            lr=o.latent_lr,
            w_avg_samples=o.w_avg_samples,
            seed=o.seed,
            l2_weight=o.l2_weight,
            lpips_weight=o.lpips_weight,
            loss_resolution=o.loss_resolution,
            deterministic=o.deterministic,
        )

    @torch.no_grad()
    def _encoder_ws(self, image: torch.Tensor) -> torch.Tensor:
        x = prepare_image(image, self.model.config.input_resolution).unsqueeze(0).to(self.device)
        return self.model.encode_ws(x)

    def start(self, image: torch.Tensor, camera: torch.Tensor) -> Inversion:
        """The starting point: the encoder's W+ code (``eg3d-params``) or the mean W code (``pti``), base generator."""
        if self.pivot == "w-opt":
            return self._latent().start(image, camera)
        label = prepare_camera(camera, self.device)
        return Inversion(self.model.decoder, self._encoder_ws(image), label, None, self.name)

    @torch.no_grad()
    def _evaluate(self, generator: TriPlaneGenerator, ws: torch.Tensor, label: torch.Tensor, loss) -> float:
        return float(loss(generator.synthesis(ws, label, deterministic=self.options.deterministic).image))

    def objective(self, image: torch.Tensor, inversion: Inversion) -> float:
        """The tuning loss (L2 + LPIPS at the pivot) of ``inversion``."""
        return self._evaluate(inversion.generator, inversion.ws, inversion.camera, self._loss(image))

    def invert(self, image: torch.Tensor, camera: torch.Tensor) -> Inversion:
        """Find the pivot, then fine-tune a copy of the generator for one image (3, H, W) in [-1, 1]."""
        options = self.options
        label = prepare_camera(camera, self.device)
        loss_fn = self._loss(image)
        base = self.model.decoder
        history: list[float] = []
        if self.pivot == "w-opt":
            latent = self._latent()
            latent.callback = self.callback
            pivot = latent.invert(image, label)
            history.append(self._evaluate(base, latent.start(image, label).ws, label, loss_fn))
            generator = pivot.generator if pivot.generator is not base else copy.deepcopy(base)
        else:
            pivot = Inversion(base, self._encoder_ws(image), label, None, self.name)
            generator = copy.deepcopy(base)
        ws = pivot.ws.detach().clone()
        history.append(self._evaluate(generator, ws, label, loss_fn))
        generator.eval().requires_grad_(True)
        optimizer = torch.optim.Adam(generator.parameters(), lr=options.lr)
        tracker = StepTracker(options.steps, options, self.callback)
        for step in range(options.steps):
            render = generator.synthesis(ws, label, deterministic=options.deterministic)
            mse, lpips = loss_fn.terms(render.image)
            loss = options.l2_weight * mse
            if lpips is not None:
                loss = loss + loss_fn.lpips_weight * lpips
                if float(lpips.detach()) <= options.lpips_threshold:
                    tracker.update(step + 1, float(loss.detach()))
                    break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if tracker.update(step + 1, float(loss.detach())):
                break
        generator.requires_grad_(False)
        history.extend(tracker.history)
        history.append(self._evaluate(generator, ws, label, loss_fn))
        return Inversion(generator, ws, label, None, self.name, base_generator=base, history=history)
