"""Ranger: RAdam + Lookahead + gradient centralization, as TriPlaneNet trains with it.

Origin and licence: Ranger is the work of Less Wright (GitHub ``lessw2020``, "Ranger-Deep-Learning-Optimizer",
version 20.4.11), published under the Apache License, Version 2.0; TriPlaneNet ships that version as
``training/ranger.py``. Ranger combines RAdam (Liu et al. 2019, "On the Variance of the Adaptive Learning Rate and
Beyond", code ``LiyuanLucasLiu/RAdam``), Lookahead (Zhang, Lucas, Hinton, Ba 2019) and Gradient Centralization
(Yong et al. 2020, code ``Yonghongwei/Gradient-Centralization``). This module is derived from Ranger 20.4.11: it
reproduces that optimizer's update rule, defaults, state layout (``slow_buffer``, ``radam_buffer``) and order of
floating-point operations, so that official optimizer states load and updates follow the same arithmetic (the
tests check the formulas on hand-computed steps; there is no side-by-side run against Ranger's own code), and it
is written in our own structure. It is therefore distributed under the Apache License 2.0
(``LICENSES/Apache-2.0.txt``; attribution in ``NOTICE``), not under the package's MIT licence. Changes from Ranger
20.4.11, made for this package: ``use_gc=False`` turns centralization off (Ranger stores the flag but always
centralises); ``p.grad`` is not modified; float64 parameters are updated in float64; the RAdam cache is saved in
:meth:`Ranger.state_dict` so resumed runs continue bit for bit; arguments are validated with
:class:`~triplanenet.errors.ConfigError`.

Behaviour (reference §6.5, TriPlaneNet ``training/ranger.py``, Ranger version 20.4.11), per parameter ``p`` with a
gradient ``g`` and per-parameter step counter ``t``:

1. Gradient centralization (``use_gc``): when ``g.ndim > 1`` (``> 3`` with ``gc_conv_only``), subtract from ``g``
   its mean over every dimension but the first. Conv and linear weights are centralised; biases, norm and PReLU
   weights (1-D) are not. ``p.grad`` itself is left untouched (the reference changes it in place as a side effect).
   The reference stores ``use_gc`` but never reads it (it always centralises); here ``use_gc=False`` really turns
   centralization off. With the default ``use_gc=True`` both behave identically.
2. Moments: ``v = β2·v + (1−β2)·g²``, ``m = β1·m + (1−β1)·g``.
3. RAdam rectification with ``ρ∞ = 2/(1−β2) − 1`` and ``ρ_t = ρ∞ − 2t·β2ᵗ/(1−β2ᵗ)``:

   * ``ρ_t > n_sma_threshold`` (5): ``s = sqrt((1−β2ᵗ)·(ρ_t−4)/(ρ∞−4)·(ρ_t−2)/ρ_t·ρ∞/(ρ∞−2)) / (1−β1ᵗ)`` and
     ``p −= lr·s·m/(sqrt(v) + eps)``: the bias corrections are folded into ``s``, the denominator uses the
     *uncorrected* ``v``.
   * otherwise: ``s = 1/(1−β1ᵗ)`` and ``p −= lr·s·m`` (SGD with momentum on the bias-corrected ``m``).

   With the default betas (0.95, 0.999), ``ρ_t ≈ t``: steps 1–5 are momentum steps, step 6 is the first rectified
   one. Weight decay (when non-zero) is applied first, as ``p −= weight_decay·lr·p``.
4. Lookahead: each parameter keeps a ``slow_buffer`` (its value before its first step). Every ``k`` steps,
   ``slow += alpha·(p − slow)`` and ``p = slow``.

``(ρ_t, s)`` are cached in ``radam_buffer``, ten slots indexed by ``t % 10`` and shared by all parameters and
groups of one optimizer, exactly like the reference (so with groups of different betas, the first group that
reaches a step decides its ``(ρ_t, s)``). The cache is saved in :meth:`Ranger.state_dict`, which makes a resumed
run continue bit for bit; state dicts without it (the official checkpoints) load too and rebuild it.

Arithmetic is done in float32 for float32 and lower-precision parameters (the moments are float32 tensors, like
the reference) and in float64 for float64 parameters (the reference would downcast them to float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.optimizer import Optimizer

from triplanenet.errors import CheckpointError, ConfigError

__all__ = ["RADAM_BUFFER_SLOTS", "Ranger", "radam_rectification"]

RADAM_BUFFER_SLOTS = 10
"""Number of slots of the shared ``(step, ρ_t, step size)`` cache, indexed by ``step % 10``."""


def radam_rectification(step: int, beta1: float, beta2: float, threshold: float) -> tuple[float, float]:
    """``(ρ_t, step_size)`` of RAdam step ``step`` (1-based); see the module docstring for the formulas.

    ``step_size`` contains the bias corrections: it multiplies ``m / (sqrt(v) + eps)`` when ``ρ_t > threshold``
    and ``m`` otherwise (the learning rate is applied separately).
    """
    beta2_t = beta2**step
    n_sma_max = 2.0 / (1.0 - beta2) - 1.0
    n_sma = n_sma_max - 2.0 * step * beta2_t / (1.0 - beta2_t)
    if n_sma > threshold:
        # Evaluated left to right in this order, which keeps the floats identical to the reference.
        ratio = (1.0 - beta2_t) * (n_sma - 4.0) / (n_sma_max - 4.0) * (n_sma - 2.0) / n_sma
        step_size = math.sqrt(ratio * n_sma_max / (n_sma_max - 2.0)) / (1.0 - beta1**step)
    else:
        step_size = 1.0 / (1.0 - beta1**step)
    return n_sma, step_size


def _fresh_buffer() -> list[list[Any]]:
    return [[None, None, None] for _ in range(RADAM_BUFFER_SLOTS)]


class Ranger(Optimizer):
    """RAdam + Lookahead + gradient centralization (TriPlaneNet's optimizer; see the module docstring).

    Args:
        params: parameters or parameter groups (groups may override ``lr``, ``alpha``, ``k``, ``betas``,
            ``n_sma_threshold``, ``eps``, ``weight_decay``).
        lr: learning rate (> 0). TriPlaneNet uses 1e-4 for both encoders.
        alpha: Lookahead interpolation factor in [0, 1].
        k: Lookahead period in steps (≥ 1).
        n_sma_threshold: rectification threshold on ρ_t (5: steps 1–5 are momentum steps).
        betas: ``(β1, β2)``, each in [0, 1).
        eps: added to ``sqrt(v)`` (> 0).
        weight_decay: L2 factor (≥ 0), applied as ``p −= weight_decay·lr·p`` before the update.
        use_gc: gradient centralization on.
        gc_conv_only: centralise only gradients with more than 3 dimensions (conv weights).

    Raises:
        ConfigError: an argument out of range.

    Per-parameter state: ``step`` (int), ``exp_avg``, ``exp_avg_sq`` (float32, or float64 for float64
    parameters) and ``slow_buffer`` (parameter dtype). Sparse gradients are not supported.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        alpha: float = 0.5,
        k: int = 6,
        n_sma_threshold: float = 5,
        betas: tuple[float, float] = (0.95, 0.999),
        eps: float = 1e-5,
        weight_decay: float = 0,
        use_gc: bool = True,
        gc_conv_only: bool = False,
    ) -> None:
        _check_hyper(lr=lr, alpha=alpha, k=k, n_sma_threshold=n_sma_threshold, betas=betas, eps=eps, wd=weight_decay)
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "k": k,
            "n_sma_threshold": n_sma_threshold,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)
        self.alpha = alpha
        self.k = k
        self.n_sma_threshold = n_sma_threshold
        self.use_gc = bool(use_gc)
        self.gc_conv_only = bool(gc_conv_only)
        self.gc_gradient_threshold = 3 if gc_conv_only else 1
        self.radam_buffer: list[list[Any]] = _fresh_buffer()

    def _rectification(self, step: int, beta1: float, beta2: float, threshold: float) -> tuple[float, float]:
        """Cached :func:`radam_rectification` (slot ``step % 10``, shared by all parameters)."""
        slot = self.radam_buffer[step % RADAM_BUFFER_SLOTS]
        if slot[0] == step:
            return slot[1], slot[2]
        n_sma, step_size = radam_rectification(step, beta1, beta2, threshold)
        slot[0], slot[1], slot[2] = step, n_sma, step_size
        return n_sma, step_size

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One optimisation step over every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            eps = group["eps"]
            weight_decay = group["weight_decay"]
            period = group.get("k", self.k)
            alpha = group.get("alpha", self.alpha)
            threshold = group.get("n_sma_threshold", self.n_sma_threshold)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Ranger does not support sparse gradients; use a dense embedding/gradient")
                work_dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
                grad = p.grad.to(dtype=work_dtype, copy=True)
                work = p if p.dtype == work_dtype else p.to(work_dtype)

                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(work, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(work, memory_format=torch.preserve_format)
                    state["slow_buffer"] = p.detach().clone(memory_format=torch.preserve_format)
                else:
                    state["exp_avg"] = state["exp_avg"].to(work_dtype)
                    state["exp_avg_sq"] = state["exp_avg_sq"].to(work_dtype)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

                if self.use_gc and grad.dim() > self.gc_gradient_threshold:
                    grad.sub_(grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True))

                state["step"] += 1
                t = int(state["step"])
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)

                n_sma, step_size = self._rectification(t, beta1, beta2, threshold)
                if weight_decay != 0:
                    work.add_(work, alpha=-weight_decay * lr)
                if n_sma > threshold:
                    denom = exp_avg_sq.sqrt().add_(eps)
                    work.addcdiv_(exp_avg, denom, value=-step_size * lr)
                else:
                    work.add_(exp_avg, alpha=-step_size * lr)
                if work is not p:
                    p.copy_(work)

                if t % period == 0:
                    slow = state["slow_buffer"]
                    slow.add_(p - slow, alpha=alpha)
                    p.copy_(slow)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The usual ``{"state", "param_groups"}`` plus ``"radam_buffer"`` (10 × [step, ρ_t, step size])."""
        out = super().state_dict()
        out["radam_buffer"] = [list(slot) for slot in self.radam_buffer]
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (also accepts official Ranger states, which have no ``radam_buffer``).

        The moments are restored in their saved precision (float32), not cast to a low-precision parameter's
        dtype as :meth:`torch.optim.Optimizer.load_state_dict` would, and every state tensor is copied (loading
        another optimizer's live ``state_dict()`` does not make the two share buffers).

        Raises:
            CheckpointError: a malformed ``radam_buffer``.
            ValueError: groups or parameter counts that do not match (from PyTorch).
        """
        state_dict = dict(state_dict)
        buffer = _parse_buffer(state_dict.pop("radam_buffer", None))
        super().load_state_dict(state_dict)
        saved_ids = [pid for group in state_dict["param_groups"] for pid in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for pid, p in zip(saved_ids, params, strict=True):
            saved = state_dict["state"].get(pid)
            if not saved:
                continue
            work_dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
            for key, dtype in (("exp_avg", work_dtype), ("exp_avg_sq", work_dtype), ("slow_buffer", p.dtype)):
                value = saved.get(key)
                if isinstance(value, torch.Tensor):  # always a copy: never alias the caller's tensors
                    self.state[p][key] = value.to(device=p.device, dtype=dtype, copy=True)
        self.radam_buffer = buffer


def _parse_buffer(value: Any) -> list[list[Any]]:
    if value is None:
        return _fresh_buffer()
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == RADAM_BUFFER_SLOTS
        and all(isinstance(slot, (list, tuple)) and len(slot) == 3 for slot in value)
    )
    if not ok:
        raise CheckpointError(
            "optimizer state has a malformed 'radam_buffer' (expected 10 [step, n_sma, step_size] slots); "
            "drop that key to rebuild it"
        )
    return [list(slot) for slot in value]


def _check_hyper(
    *, lr: float, alpha: float, k: int, n_sma_threshold: float, betas: tuple[float, float], eps: float, wd: float
) -> None:
    if not lr > 0:
        raise ConfigError(f"Ranger learning rate must be > 0, got {lr}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"Ranger lookahead alpha must be in [0, 1], got {alpha}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"Ranger lookahead period k must be an integer ≥ 1, got {k!r}")
    if not math.isfinite(n_sma_threshold):
        raise ConfigError(f"Ranger n_sma_threshold must be a finite number, got {n_sma_threshold}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"Ranger betas must be two numbers in [0, 1), got {betas}")
    if not eps > 0:
        raise ConfigError(f"Ranger eps must be > 0, got {eps}")
    if not wd >= 0:
        raise ConfigError(f"Ranger weight_decay must be ≥ 0, got {wd}")
