"""Shared pieces of the optimisation-based inverters: options, the reconstruction objective, progress and stopping.

Every optimisation inverter measures its objective on renders average-pooled to the encoder input resolution
(``TriPlaneNet.pool_to_input``: 512² -> 256² for the official model, 128² -> 64² for the bundled default), like the
EG3D/PTI projector, which area-downsamples renders to 256² before its perceptual loss. ``loss_resolution='full'``
compares at the generator's output resolution instead (what PTI's tuning stage does).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch

from triplanenet.eg3d.camera import validate_label
from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.inversion import Inversion, prepare_image
from triplanenet.model import TriPlaneNet

ProgressCallback = Callable[[int, int, float], None]
"""Called as ``callback(step, total_steps, loss)`` after every optimisation step (step counts from 1)."""

LossResolution = Literal["input", "full"]


@dataclass
class OptimizationOptions:
    """Options every optimisation method takes (each method subclasses this with its paper defaults).

    Attributes:
        steps: optimisation steps.
        lr: learning rate.
        l2_weight: weight of the mean squared error (images in [-1, 1]).
        lpips_weight: weight of LPIPS-alex (ignored with a warning when the LPIPS weights are not installed).
        loss_resolution: ``'input'`` (renders pooled to the encoder input size) or ``'full'`` (generator output).
        seed: seed of every random draw (W noise, ...); the same seed gives the same result.
        patience: stop when the loss has not improved by more than ``tolerance`` (relative) for this many steps;
            0 disables early stopping (the paper defaults run every step).
        tolerance: relative improvement that counts for ``patience``.
        deterministic: deterministic ray sampling while optimising and rendering (reproducible).
    """

    steps: int = 1000
    lr: float = 0.01
    l2_weight: float = 1.0
    lpips_weight: float = 1.0
    loss_resolution: LossResolution = "input"
    seed: int = 0
    patience: int = 0
    tolerance: float = 1e-4
    deterministic: bool = True

    def validate(self) -> None:
        """Raises ConfigError for values no optimisation can run with."""
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.l2_weight < 0 or self.lpips_weight < 0:
            raise ConfigError("loss weights must be >= 0")
        if self.loss_resolution not in ("input", "full"):
            raise ConfigError(f"loss_resolution must be 'input' or 'full', got {self.loss_resolution!r}")
        if self.patience < 0 or self.tolerance < 0:
            raise ConfigError("patience and tolerance must be >= 0")


OptionsT = TypeVar("OptionsT", bound=OptimizationOptions)


def make_options(cls: type[OptionsT], base: OptionsT | None, overrides: dict[str, Any]) -> OptionsT:
    """``cls`` defaults (or ``base``) with ``overrides`` applied; unknown names raise ConfigError."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; valid: {', '.join(sorted(names))}"
        )
    options = dataclasses.replace(base if base is not None else cls(), **overrides)
    options.validate()
    return options


_LPIPS_CACHE: dict[str, Any] = {}


def load_lpips(device: torch.device) -> torch.nn.Module | None:
    """The LPIPS-alex metric on ``device``, or None (with a warning) when its weights are not installed."""
    key = str(device)
    if key not in _LPIPS_CACHE:
        from triplanenet.losses.lpips import LPIPS

        try:
            _LPIPS_CACHE[key] = LPIPS.from_file().to(device)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; optimising with the L2 loss only", stacklevel=2)
            _LPIPS_CACHE[key] = None
    return _LPIPS_CACHE[key]


class ReconstructionLoss:
    """``l2_weight · MSE + lpips_weight · LPIPS`` between a render and one target image.

    Args:
        model: supplies ``pool_to_input`` and the input resolution.
        target: (3, H, W) image in [-1, 1] (resized to the loss resolution).
        resolution: ``'input'`` or ``'full'`` (see the module docstring).
    """

    def __init__(
        self,
        model: TriPlaneNet,
        target: torch.Tensor,
        l2_weight: float,
        lpips_weight: float,
        resolution: LossResolution = "input",
    ) -> None:
        self.model = model
        self.resolution = resolution
        device = model.latent_avg.device
        side = model.config.input_resolution if resolution == "input" else model.config.generator.img_resolution
        self.target = prepare_image(target, side).unsqueeze(0).to(device)
        self.l2_weight = l2_weight
        self.lpips = load_lpips(device) if lpips_weight > 0 else None
        self.lpips_weight = lpips_weight if self.lpips is not None else 0.0

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """A render (1, 3, S, S) brought to the loss resolution."""
        if self.resolution == "input":
            return self.model.pool_to_input(image)
        return image

    def terms(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(MSE, LPIPS or None) of a render (1, 3, S, S) against the target."""
        pred = self.prepare(image)
        mse = torch.mean((pred - self.target) ** 2)
        lpips = self.lpips(pred, self.target) if self.lpips is not None else None
        return mse, lpips

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        mse, lpips = self.terms(image)
        loss = self.l2_weight * mse
        if lpips is not None:
            loss = loss + self.lpips_weight * lpips
        return loss


class StepTracker:
    """Records the loss history, reports progress and decides on early stopping."""

    def __init__(self, total: int, options: OptimizationOptions, callback: ProgressCallback | None) -> None:
        self.total = total
        self.options = options
        self.callback = callback
        self.history: list[float] = []
        self.best = math.inf
        self.since_best = 0

    def update(self, step: int, loss: float) -> bool:
        """Record the loss after step ``step`` (from 1); True when optimisation should stop early."""
        self.history.append(loss)
        if self.callback is not None:
            self.callback(step, self.total, loss)
        if not math.isfinite(loss):
            return True
        if loss < self.best - self.options.tolerance * abs(self.best if math.isfinite(self.best) else loss):
            self.best, self.since_best = loss, 0
        else:
            self.since_best += 1
        return self.options.patience > 0 and self.since_best >= self.options.patience


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU torch.Generator seeded with ``seed`` (draws are moved to the model's device afterwards)."""
    return torch.Generator().manual_seed(int(seed))


def prepare_camera(camera: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(25,) or (1, 25) camera label -> (1, 25) on ``device``."""
    label = validate_label(camera).to(device)
    if label.shape[0] != 1:
        raise ConfigError(f"invert() takes one camera, got {label.shape[0]}; use invert_batch for several images")
    return label


class OptimizingInverter:
    """Base of the optimisation inverters: ``invert_batch`` loops over images (every image is its own problem).

    Args:
        model: supplies the generator (never modified) and, where a method needs them, the encoders.
        name: the method name (as in ``build_inverter``).
        options_class: the method's options dataclass; ``options`` (or its defaults) with ``overrides`` applied.
        callback: progress callback ``(step, total, loss)``.
    """

    def __init__(
        self,
        model: TriPlaneNet,
        name: str,
        options_class: type[OptimizationOptions],
        options: OptimizationOptions | None,
        callback: ProgressCallback | None,
        overrides: dict[str, Any],
    ) -> None:
        self.model = model.eval()
        self.name = name
        self.options = make_options(options_class, options, overrides)
        self.callback = callback

    @property
    def device(self) -> torch.device:
        return self.model.latent_avg.device

    def invert(self, image: torch.Tensor, camera: torch.Tensor) -> Inversion:  # pragma: no cover - abstract
        raise NotImplementedError

    def invert_batch(self, images: Sequence[torch.Tensor] | torch.Tensor, cameras: torch.Tensor) -> list[Inversion]:
        """images: B tensors (3, H, W) in [-1, 1]; cameras (B, 25). Optimised one after another."""
        labels = validate_label(cameras)
        if labels.shape[0] != len(images):
            raise ConfigError(f"{len(images)} images but {labels.shape[0]} cameras")
        return [self.invert(image, labels[i : i + 1]) for i, image in enumerate(images)]
