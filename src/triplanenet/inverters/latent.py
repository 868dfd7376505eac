"""Latent optimisation baselines: ``w-opt`` (one code w in W) and ``w+-opt`` (num_ws independent codes in W+).

The schedule follows the StyleGAN2 projector (Karras et al. 2020, the paper's reference [9]) as ported to EG3D by
the EG3D/PTI projectors: 1,000 Adam steps (betas 0.9/0.999) with a peak learning rate of 0.01 reached by a linear
ramp-up over the first 5 % of the steps and cosine ramp-down over the last 25 %; Gaussian noise on w of
0.05 · std(W), decaying quadratically to zero at 75 % of the steps; the code starts at the mean W of 10,000 mapped
samples at the input camera; the per-layer constant noise maps are optimised too, with the multi-scale
autocorrelation regulariser (weight 1e5) and renormalised to zero mean / unit variance after every step.

Differences, by design: the image loss is ``L2 + LPIPS-alex`` (weights 1 and 1, PTI's tuning loss; the StyleGAN2
projector uses an LPIPS-VGG distance alone); the noise maps start from the generator's own constant noise (already
N(0, 1) draws) instead of fresh draws, so the starting point is exactly the generator's mean face; and the
optimised noise maps are kept in the result (a private generator copy) instead of being discarded, so the inversion
renders exactly what was optimised. Noise is "relevant" here because the tri-plane backbone renders with
``noise_mode='const'`` and non-zero learned ``noise_strength``; the super-resolution module renders without noise.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import ConfigError
from triplanenet.inversion import Inversion
from triplanenet.inverters.optimize import (
    OptimizationOptions,
    OptimizingInverter,
    ProgressCallback,
    ReconstructionLoss,
    StepTracker,
    prepare_camera,
    seeded_generator,
)
from triplanenet.model import TriPlaneNet

W_STATS_SEED = 123
"""Seed of the z samples for the W mean and spread (fixed, like the official projector's ``RandomState(123)``)."""


@dataclass
class LatentOptions(OptimizationOptions):
    """Options of ``w-opt`` / ``w+-opt`` (defaults: the EG3D projector's; see the module docstring).

    Attributes:
        lr_rampup: fraction of the steps of the linear learning-rate warm-up.
        lr_rampdown: fraction of the steps of the final cosine ramp-down.
        w_noise_factor: initial std of the noise added to w, relative to the spread of W.
        w_noise_ramp: fraction of the steps after which the w noise is zero (quadratic decay).
        noise_reg_weight: weight of the noise-map autocorrelation regulariser.
        optimize_noise: also optimise the backbone's constant noise maps (kept in a private generator copy).
        w_avg_samples: z samples mapped to estimate the W mean (start) and spread.
    """

    steps: int = 1000
    lr: float = 0.01
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    w_noise_factor: float = 0.05
    w_noise_ramp: float = 0.75
    noise_reg_weight: float = 1e5
    optimize_noise: bool = True
    w_avg_samples: int = 10_000

    def validate(self) -> None:
        super().validate()
        if not (0 < self.lr_rampup <= 1 and 0 < self.lr_rampdown <= 1 and 0 < self.w_noise_ramp <= 1):
            raise ConfigError("lr_rampup, lr_rampdown and w_noise_ramp must be fractions in (0, 1]")
        if self.w_avg_samples < 2:
            raise ConfigError("w_avg_samples must be at least 2")
        if self.w_noise_factor < 0 or self.noise_reg_weight < 0:
            raise ConfigError("w_noise_factor and noise_reg_weight must be >= 0")


def learning_rate(options: LatentOptions, step: int) -> float:
    """Projector schedule at ``step`` of ``options.steps``: linear warm-up, flat, cosine ramp-down."""
    t = step / max(options.steps, 1)
    ramp = min(1.0, (1.0 - t) / options.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return options.lr * ramp * min(1.0, t / options.lr_rampup)


def noise_regularizer(noise_maps: list[torch.Tensor]) -> torch.Tensor:
    """Sum over noise maps and scales (down to 8²) of the squared mean one-pixel autocorrelation along x and y.

    Zero for perfectly white noise; penalises noise maps that encode image structure.
    """
    total = noise_maps[0].new_zeros(())
    for noise in noise_maps:
        level = noise[None, None]
        while True:
            total = total + (level * torch.roll(level, shifts=1, dims=3)).mean() ** 2
            total = total + (level * torch.roll(level, shifts=1, dims=2)).mean() ** 2
            if level.shape[2] <= 8:
                break
            level = F.avg_pool2d(level, kernel_size=2)
    return total


def noise_buffers(generator: TriPlaneGenerator) -> list[torch.Tensor]:
    """The backbone's constant noise maps (R, R), in module order."""
    return [buf for name, buf in generator.backbone.named_buffers() if name.endswith("noise_const")]


class LatentOptimizer(OptimizingInverter):
    """``w-opt`` (``plus=False``) or ``w+-opt`` (``plus=True``) with the model's generator.

    Args:
        model: supplies the generator (never modified: noise maps are optimised in a private copy).
        plus: optimise num_ws independent codes (W+) instead of one code repeated over all layers (W).
        options: a :class:`LatentOptions` (default: paper defaults); ``overrides`` change single fields.
        callback: progress callback ``(step, total, loss)``.
    """

    def __init__(
        self,
        model: TriPlaneNet,
        plus: bool = False,
        options: LatentOptions | None = None,
        callback: ProgressCallback | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(model, "w+-opt" if plus else "w-opt", LatentOptions, options, callback, overrides)
        self.options: LatentOptions
        self.plus = plus

    @torch.no_grad()
    def w_stats(self, label: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(mean w (1, 1, w_dim), spread of W) from ``w_avg_samples`` codes mapped at camera ``label`` (1, 25)."""
        generator = self.model.decoder
        count = self.options.w_avg_samples
        z = torch.randn(count, generator.config.z_dim, generator=seeded_generator(W_STATS_SEED)).to(self.device)
        w = generator.mapping(z, label.expand(count, -1))[:, :1, :]
        mean = w.mean(dim=0, keepdim=True)
        spread = float(((w - mean) ** 2).sum().div(count).sqrt())
        return mean, spread

    def _expand(self, w: torch.Tensor) -> torch.Tensor:
        return w if self.plus else w.repeat(1, self.model.decoder.num_ws, 1)

    def start(self, image: torch.Tensor, camera: torch.Tensor) -> Inversion:
        """The starting point: the mean code with the shared generator."""
        label = prepare_camera(camera, self.device)
        mean, _ = self.w_stats(label)
        return Inversion(self.model.decoder, mean.repeat(1, self.model.decoder.num_ws, 1), label, None, self.name)

    def objective(self, image: torch.Tensor, inversion: Inversion) -> float:
        """The optimised loss (image loss + noise regulariser, without the w noise) of ``inversion``."""
        loss = ReconstructionLoss(
            self.model, image, self.options.l2_weight, self.options.lpips_weight, self.options.loss_resolution
        )
        return self._objective(inversion.generator, inversion.ws, inversion.camera, loss)

    @torch.no_grad()
    def _objective(
        self, generator: TriPlaneGenerator, ws: torch.Tensor, label: torch.Tensor, loss: ReconstructionLoss
    ) -> float:
        value = loss(generator.synthesis(ws, label, deterministic=self.options.deterministic).image)
        if self.options.optimize_noise and self.options.noise_reg_weight > 0:
            value = value + self.options.noise_reg_weight * noise_regularizer(noise_buffers(generator))
        return float(value)

    def invert(self, image: torch.Tensor, camera: torch.Tensor) -> Inversion:
        """Optimise a code for one image (3, H, W) in [-1, 1] seen from camera (25,) or (1, 25)."""
        options = self.options
        label = prepare_camera(camera, self.device)
        loss_fn = ReconstructionLoss(
            self.model, image, options.l2_weight, options.lpips_weight, options.loss_resolution
        )
        base = self.model.decoder
        mean, spread = self.w_stats(label)
        generator = copy.deepcopy(base).eval().requires_grad_(False) if options.optimize_noise else base
        noise = noise_buffers(generator) if options.optimize_noise else []
        regularize = bool(noise) and options.noise_reg_weight > 0
        w_opt = (mean if not self.plus else mean.repeat(1, base.num_ws, 1)).clone()
        start_value = self._objective(generator, self._expand(w_opt), label, loss_fn)
        w_opt.requires_grad_(True)
        for buf in noise:
            buf.requires_grad_(True)
        optimizer = torch.optim.Adam([w_opt, *noise], lr=options.lr, betas=(0.9, 0.999))
        rng = seeded_generator(options.seed)
        tracker = StepTracker(options.steps, options, self.callback)
        for step in range(options.steps):
            progress = step / options.steps
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(options, step)
            scale = spread * options.w_noise_factor * max(0.0, 1.0 - progress / options.w_noise_ramp) ** 2
            jitter = torch.randn(w_opt.shape, generator=rng).to(self.device) * scale
            render = generator.synthesis(self._expand(w_opt + jitter), label, deterministic=options.deterministic)
            loss = loss_fn(render.image)
            if regularize:
                loss = loss + options.noise_reg_weight * noise_regularizer(noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for buf in noise:
                    buf.sub_(buf.mean())
                    buf.mul_(buf.square().mean().rsqrt())
            if tracker.update(step + 1, float(loss.detach())):
                break
        for buf in noise:
            buf.requires_grad_(False)
        ws = self._expand(w_opt.detach())
        final = self._objective(generator, ws, label, loss_fn)
        return Inversion(
            generator,
            ws.clone(),
            label,
            None,
            self.name,
            base_generator=base if noise else None,
            history=[start_value, *tracker.history, final],
        )
