"""Inversion methods; every one returns :class:`triplanenet.inversion.Inversion`.

:func:`build_inverter` turns a method name (as used by ``triplanenet invert --method``) into an inverter.

=========================  ================================================================  ==================
method                     what it does                                                      paper defaults
=========================  ================================================================  ==================
``w-opt``                  optimise one code w in W (EG3D/StyleGAN2 projector)               1,000 Adam steps
``w+-opt``                 optimise num_ws codes in W+                                       1,000 Adam steps
``w+-pred``                pSp first branch only (feed-forward)                              —
``eg3d-params``            fine-tune all generator parameters around the pSp W+ code         1,000 Adam steps
``pti``                    W pivot search, then generator fine-tuning (PTI)                  450 + 350 steps
``triplane-opt``           optimise tri-plane offsets on the mean face with L-BFGS           50 L-BFGS steps
``w+-pred+triplane-opt``   pSp W+, then tri-plane offsets with L-BFGS                        50 L-BFGS steps
``triplanenet``            TriPlaneNet (both branches, feed-forward)                         —
``triplanenet+cttr``       TriPlaneNet with cascaded test-time refinement                    —
=========================  ================================================================  ==================
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from triplanenet.errors import ConfigError
from triplanenet.inversion import Inverter
from triplanenet.inverters.encoder import TriPlaneNetInverter
from triplanenet.inverters.latent import LatentOptimizer, LatentOptions
from triplanenet.inverters.optimize import OptimizationOptions, ProgressCallback
from triplanenet.inverters.pti import GeneratorTuner, PTIOptions, TuningOptions
from triplanenet.inverters.triplane_opt import TriPlaneOptimizer, TriPlaneOptions
from triplanenet.model import TriPlaneNet

METHOD_NAMES: tuple[str, ...] = (
    "w-opt",
    "w+-opt",
    "w+-pred",
    "eg3d-params",
    "pti",
    "triplane-opt",
    "w+-pred+triplane-opt",
    "triplanenet",
    "triplanenet+cttr",
)
"""Every method :func:`build_inverter` knows, in the order tables list them."""

OPTIONS_CLASSES: dict[str, type[OptimizationOptions]] = {
    "w-opt": LatentOptions,
    "w+-opt": LatentOptions,
    "eg3d-params": TuningOptions,
    "pti": PTIOptions,
    "triplane-opt": TriPlaneOptions,
    "w+-pred+triplane-opt": TriPlaneOptions,
}
"""Options dataclass of every optimisation method (feed-forward methods take TriPlaneNetInverter's options)."""

OPTIMIZATION_METHODS: tuple[str, ...] = tuple(name for name in METHOD_NAMES if name in OPTIONS_CLASSES)


def default_options(method: str) -> OptimizationOptions | None:
    """The paper-default options of an optimisation method, or None for a feed-forward method."""
    _check_name(method)
    cls = OPTIONS_CLASSES.get(method)
    return cls() if cls is not None else None


def step_options(method: str, steps: int) -> dict[str, int]:
    """Options that set a method's optimisation length to ``steps`` (for ``pti``: both stages; {} if feed-forward)."""
    _check_name(method)
    if method not in OPTIONS_CLASSES:
        return {}
    return {"steps": steps, "latent_steps": steps} if method == "pti" else {"steps": steps}


def scaled_step_options(method: str, scale: float) -> dict[str, int]:
    """Options that multiply every step count of ``method``'s defaults by ``scale`` (at least 1 step each)."""
    defaults = default_options(method)
    if defaults is None:
        return {}
    names = [name for name in ("steps", "latent_steps") if hasattr(defaults, name)]
    return {name: max(1, round(getattr(defaults, name) * scale)) for name in names}


def _check_name(method: str) -> None:
    if method not in METHOD_NAMES:
        raise ConfigError(f"unknown inversion method {method!r}; choose one of: {', '.join(METHOD_NAMES)}")


def _feed_forward_options() -> set[str]:
    """Keyword options of :class:`TriPlaneNetInverter` other than the ones the method name decides."""
    parameters = inspect.signature(TriPlaneNetInverter.__init__).parameters
    return set(parameters) - {"self", "model", "cttr", "first_branch_only"}


def build_inverter(method: str, model: TriPlaneNet, **options: Any) -> Inverter:
    """The inverter for ``method`` using ``model`` (its generator, and its encoders where the method needs them).

    ``options`` are fields of the method's options dataclass (see :data:`OPTIONS_CLASSES`, e.g. ``steps``, ``lr``,
    ``seed``) plus ``callback`` (a progress callback ``(step, total, loss)``, ignored by feed-forward methods).
    Feed-forward methods take only :class:`TriPlaneNetInverter`'s own options (``deterministic``, ...).

    Raises:
        ConfigError: unknown method name or an option the method does not take.
    """
    _check_name(method)
    callback: ProgressCallback | None = options.pop("callback", None)
    if method not in OPTIONS_CLASSES:
        unknown = sorted(set(options) - _feed_forward_options())
        if unknown:
            raise ConfigError(f"method {method!r} is feed-forward and takes no option(s) {', '.join(unknown)}")
        if method == "w+-pred":
            return TriPlaneNetInverter(model, first_branch_only=True, **options)
        return TriPlaneNetInverter(model, cttr=method == "triplanenet+cttr", **options)
    if method in ("w-opt", "w+-opt"):
        return LatentOptimizer(model, plus=method == "w+-opt", callback=callback, **options)
    if method in ("eg3d-params", "pti"):
        return GeneratorTuner(model, pivot="w-opt" if method == "pti" else "encoder", callback=callback, **options)
    return TriPlaneOptimizer(model, first_branch=method == "w+-pred+triplane-opt", callback=callback, **options)


def options_summary(method: str) -> dict[str, Any]:
    """The default options of ``method`` as a plain dict ({} for feed-forward methods)."""
    defaults = default_options(method)
    return {} if defaults is None else dataclasses.asdict(defaults)


__all__ = [
    "METHOD_NAMES",
    "OPTIMIZATION_METHODS",
    "OPTIONS_CLASSES",
    "GeneratorTuner",
    "LatentOptimizer",
    "TriPlaneNetInverter",
    "TriPlaneOptimizer",
    "build_inverter",
    "default_options",
    "scaled_step_options",
    "step_options",
]
