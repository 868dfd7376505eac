"""Fast inference settings: autocast precision, ``torch.compile``, channels-last, CUDA graphs and CPU threads.

:class:`InferenceSettings` describes what to switch on; :func:`apply_fast_mode` prepares a model once (in place) and
:func:`fast_context` wraps each call (inference mode, autocast, thread count). :class:`FastRunner` puts both together
for a fixed function of tensors, with optional CUDA-graph capture per input shape.

The default settings (``InferenceSettings()``) change nothing numerically: fp32, no compile, no channels-last, no CUDA
graphs; only ``torch.inference_mode`` replaces ``torch.no_grad``, which produces bit-identical results.

:func:`tune_cpu_allocator` is a process-wide CPU setting (glibc's ``mallopt``) that the command-line tool applies at
start-up: it stops the C allocator from returning every large freed tensor to the operating system, so that the
renderer's per-chunk buffers are not page-faulted in again on every chunk.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from triplanenet.errors import ConfigError

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}

COMPILED_SUBMODULES: tuple[str, ...] = (
    "psp_encoder",
    "triplanenet_encoder",
    "decoder.backbone.synthesis",
    "decoder.superresolution",
)
"""Submodules :func:`apply_fast_mode` compiles (the renderer's chunk loop and the tiny MLP stay eager)."""


@dataclass(frozen=True)
class InferenceSettings:
    """What to switch on for inference.

    Attributes:
        dtype: ``fp32`` (exact), or ``bf16`` / ``fp16`` autocast (matmuls and convolutions in reduced precision;
            see ``docs/benchmarks.md`` for the measured image error). fp16 is meant for CUDA.
        compile: ``torch.compile`` the encoders, the StyleGAN2 backbone and the super-resolution (in place, with
            ``nn.Module.compile`` so state-dict keys do not change). First calls are slow (compilation).
        channels_last: store the 4-D conv weights (and the encoder input) in channels-last memory format.
        cuda_graphs: capture one CUDA graph per input shape and replay it (CUDA only; needs deterministic
            rendering or the default random generator).
        threads: ``torch.set_num_threads`` while running (None: leave as is).
        inference_mode: run under ``torch.inference_mode`` (results are cloned into normal tensors on return).
    """

    dtype: Precision = "fp32"
    compile: bool = False
    channels_last: bool = False
    cuda_graphs: bool = False
    threads: int | None = None
    inference_mode: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.dtype!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain fp32."""
        return _DTYPES.get(self.dtype)

    @property
    def is_exact(self) -> bool:
        """True when results are bit-identical to the plain fp32 path at the same thread count (CPU convolutions
        may round differently when ``threads`` changes the number of threads)."""
        return self.dtype == "fp32" and not (self.compile or self.channels_last or self.cuda_graphs)

    @property
    def label(self) -> str:
        """Short name for tables, e.g. ``fp32``, ``bf16+compile``, ``fp32+channels_last``."""
        parts = [self.dtype]
        parts += [name for name in ("compile", "channels_last", "cuda_graphs") if getattr(self, name)]
        return "+".join(parts)

    @classmethod
    def from_mode(cls, mode: str, threads: int | None = None) -> InferenceSettings:
        """Parse a mode name: ``+``-joined parts from ``fp32 bf16 fp16 compile channels_last cuda_graphs``
        (``fp32`` implied), e.g. ``bf16+compile``.

        Raises:
            ConfigError: unknown part.
        """
        settings = cls(threads=threads)
        for part in (p.strip() for p in mode.split("+")):
            if part in PRECISIONS:
                settings = replace(settings, dtype=part)  # type: ignore[arg-type]
            elif part in ("compile", "channels_last", "cuda_graphs"):
                settings = replace(settings, **{part: True})
            else:
                raise ConfigError(
                    f"unknown fast-mode part {part!r} in {mode!r}; use fp32, bf16, fp16, compile, channels_last or "
                    "cuda_graphs joined by '+'"
                )
        return settings


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
DEFAULT_ALLOCATOR_THRESHOLD = 1 << 30
_ALLOCATOR_THRESHOLD: int | None = None
"""Bytes below which freed CPU memory stays in the process heap after :func:`tune_cpu_allocator` (1 GiB)."""


def tune_cpu_allocator(threshold_bytes: int = DEFAULT_ALLOCATOR_THRESHOLD) -> bool:
    """Keep large freed CPU buffers in the process heap instead of handing them back to the operating system.

    glibc serves allocations above 32 MiB with ``mmap`` and unmaps them when they are freed, so a loop that allocates
    and frees buffers of that size (the renderer's per-chunk features at FFHQ size: 34-50 MB) pays page faults on
    every iteration. Raising ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to ``threshold_bytes`` lets those buffers
    be reused: the FFHQ-size inversion on 2 CPU threads went from 6.2 s to 4.6 s (``docs/benchmarks.md``). Numerics
    are unchanged. The cost is that the process keeps its peak heap size until it exits.

    Process-wide, so a library does not do it on import: the ``triplanenet`` command does it at start-up (set
    ``TRIPLANENET_MALLOC_TUNING=0`` to skip), Python users may call it themselves.

    Returns:
        True when applied; False where the C library is not glibc (macOS, Windows, musl) or refused the values.
    """
    if not sys.platform.startswith("linux") or threshold_bytes < 1:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    value = min(int(threshold_bytes), 2**31 - 1)
    applied = bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))
    global _ALLOCATOR_THRESHOLD
    _ALLOCATOR_THRESHOLD = value if applied else _ALLOCATOR_THRESHOLD
    return applied


def cpu_allocator_threshold() -> int | None:
    """The threshold last applied by :func:`tune_cpu_allocator` in this process (None: never applied)."""
    return _ALLOCATOR_THRESHOLD


def check_settings(settings: InferenceSettings, device: torch.device) -> None:
    """Refuse combinations that cannot work on ``device``.

    Raises:
        ConfigError: CUDA graphs or fp16 requested off CUDA.
    """
    if settings.cuda_graphs and device.type != "cuda":
        raise ConfigError(
            f"CUDA graphs need a CUDA device but the model is on {device.type}; drop cuda_graphs or use --device cuda"
        )
    if settings.dtype == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 autocast is only supported on CUDA here; use bf16 on the CPU")


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    module: Any = model
    for name in path.split("."):
        module = getattr(module, name, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def apply_fast_mode(model: nn.Module, settings: InferenceSettings) -> nn.Module:
    """Prepare ``model`` (a :class:`~triplanenet.model.TriPlaneNet` or any module) for ``settings``, in place.

    channels-last converts parameters and buffers; compile marks the submodules in :data:`COMPILED_SUBMODULES`
    (the whole module when none is found) for ``torch.compile`` — compilation itself happens on the first call.
    Returns ``model``.

    Raises:
        ConfigError: settings that cannot work on the model's device, or ``torch.compile`` unavailable.
    """
    device = _module_device(model)
    check_settings(settings, device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    if settings.compile:
        if not hasattr(torch, "compile"):
            raise ConfigError("this PyTorch has no torch.compile; upgrade PyTorch or drop compile")
        targets = [m for m in (_submodule(model, p) for p in COMPILED_SUBMODULES) if m is not None] or [model]
        for module in targets:
            if not getattr(module, "_triplanenet_compiled", False):
                module.compile(dynamic=False)
                module._triplanenet_compiled = True  # type: ignore[assignment]
    return model


def _module_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def fast_context(settings: InferenceSettings, device: torch.device | str) -> Iterator[None]:
    """Inference mode (or no_grad), autocast and thread count for the duration of the block."""
    device = torch.device(device)
    previous_threads = torch.get_num_threads()
    grad_context = torch.inference_mode() if settings.inference_mode else torch.no_grad()
    autocast_dtype = settings.autocast_dtype
    try:
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        with (
            grad_context,
            torch.autocast(
                device.type,
                dtype=autocast_dtype or torch.float32,
                enabled=autocast_dtype is not None,
                cache_enabled=not settings.cuda_graphs,  # autocast's weight cache must be off while capturing
            ),
        ):
            yield
    finally:
        if settings.threads is not None:
            torch.set_num_threads(previous_threads)


def _is_compile_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("torch._dynamo", "torch._inductor")) or "inductor" in str(exc).lower()


def detach_outputs(value: Any) -> Any:
    """Clone every tensor in a (nested) result into a normal tensor usable outside inference mode."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple | list):
        return type(value)(detach_outputs(v) for v in value)
    if isinstance(value, dict):
        return {k: detach_outputs(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return type(value)(**{name: detach_outputs(getattr(value, name)) for name in value.__dataclass_fields__})
    return value


class FastRunner:
    """Run ``fn(*tensors)`` under ``settings`` on ``device``, capturing a CUDA graph per input shape if asked.

    ``fn`` must be a pure function of its tensor arguments (fixed options bound in a closure). Results are cloned, so
    they are normal tensors owned by the caller.

    Raises (on call):
        ConfigError: ``torch.compile`` failed (the message says how to run without it).
    """

    def __init__(self, fn: Callable[..., Any], settings: InferenceSettings, device: torch.device | str) -> None:
        self.fn = fn
        self.settings = settings
        self.device = torch.device(device)
        check_settings(settings, self.device)
        self._graphs: dict[tuple[tuple[int, ...], ...], tuple[Any, list[torch.Tensor], Any]] = {}

    def __call__(self, *tensors: torch.Tensor) -> Any:
        if self.settings.channels_last:
            tensors = tuple(t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t for t in tensors)
        try:
            if self.settings.cuda_graphs:
                return self._replay(tensors)
            with fast_context(self.settings, self.device):
                result = self.fn(*tensors)
            return detach_outputs(result) if self.settings.inference_mode else result
        except ConfigError:
            raise
        except Exception as exc:
            if self.settings.compile and _is_compile_error(exc):
                raise ConfigError(
                    f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                    "run without the compile option"
                ) from exc
            raise

    # CUDA graphs ----------------------------------------------------------------------------------------------------
    def _replay(self, tensors: tuple[torch.Tensor, ...]) -> Any:
        """Capture on first sight of these shapes (after warm-up on a side stream), then copy inputs and replay."""
        key = tuple(tuple(t.shape) for t in tensors)
        if key not in self._graphs:
            self._graphs[key] = self._capture(tensors)
        graph, static_inputs, static_output = self._graphs[key]
        with torch.no_grad():
            for static, value in zip(static_inputs, tensors, strict=True):
                static.copy_(value)
        graph.replay()
        return detach_outputs(static_output)

    def _capture(self, tensors: tuple[torch.Tensor, ...]) -> tuple[Any, list[torch.Tensor], Any]:
        static_inputs = [t.detach().clone() for t in tensors]
        # inference_mode tensors cannot be captured reliably across graph replays; use no_grad during capture.
        settings = replace(self.settings, inference_mode=False)
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), fast_context(settings, self.device):
            for _ in range(3):
                self.fn(*static_inputs)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with fast_context(settings, self.device), torch.cuda.graph(graph):
            static_output = self.fn(*static_inputs)
        return graph, static_inputs, static_output


__all__ = [
    "COMPILED_SUBMODULES",
    "PRECISIONS",
    "FastRunner",
    "InferenceSettings",
    "apply_fast_mode",
    "check_settings",
    "cpu_allocator_threshold",
    "detach_outputs",
    "fast_context",
    "tune_cpu_allocator",
]
