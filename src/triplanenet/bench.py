"""Benchmark runner: latency/throughput of encode, render, full inversion and a training step, per fast mode.

Every timed call is bracketed by ``torch.cuda.synchronize`` on CUDA. Modes are interleaved (one call of each mode per
round) so that a noisy machine slows them alike; results are medians and inter-quartile ranges over the rounds.
Accuracy of each mode is measured against the ``fp32`` mode on the same inputs (max |Δ| and PSNR of images in
[-1, 1]; for ``encode`` of the W+ codes). Output: a JSON document and a markdown table.

Use :func:`run_benchmark` from code, ``triplanenet bench`` from the shell, ``benchmarks/bench_suite.py`` as a script.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from triplanenet.eg3d.renderer import default_points_per_chunk
from triplanenet.errors import ConfigError
from triplanenet.model import TriPlaneNet
from triplanenet.perf import (
    FastRunner,
    InferenceSettings,
    apply_fast_mode,
    check_settings,
    cpu_allocator_threshold,
)

PRESETS: tuple[str, ...] = ("tiny", "default", "ffhq", "tiny-v2", "ffhq-v2")
WORKLOADS: tuple[str, ...] = ("encode", "render", "invert", "train_step")
RESULT_KEYS: tuple[str, ...] = (
    "workload",
    "batch",
    "mode",
    "median_s",
    "iqr_s",
    "per_image_s",
    "images_per_s",
    "cpu_s_per_image",
    "first_call_s",
    "peak_memory_bytes",
    "memory_kind",
    "max_abs_diff",
    "psnr_db",
    "repeats",
)


@dataclass(frozen=True)
class BenchConfig:
    """What to run.

    Attributes:
        preset: ``tiny`` (random tiny model, seconds), ``default`` (the bundled model), ``ffhq`` (official FFHQ
            sizes, random weights); ``tiny-v2`` / ``ffhq-v2``: the same sizes as TriPlaneNet v2 (mirror view, 9-channel
            second branch).
        batch_sizes: batch sizes to time (latency at 1, throughput at larger ones).
        repeats: timed rounds per (workload, batch); each round calls every mode once.
        warmup: untimed calls per mode before the rounds (the first one is reported as ``first_call_s``).
        modes: fast-mode names (see :meth:`InferenceSettings.from_mode`); ``fp32`` is always run as the reference.
        workloads: subset of :data:`WORKLOADS`. ``train_step`` ignores the modes (the trainer's own precision).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        threads: ``torch.set_num_threads`` for the whole run (None: PyTorch's default).
        depth_samples: override coarse = fine samples per ray (None: the preset's).
        points_per_chunk: the renderer's decoded points per chunk (None: its per-device default).
        seed: seed of the random weights and inputs.
        checkpoint: benchmark this model file instead of the preset (our model, an official v1/v2 checkpoint or a
            training checkpoint); official checkpoints need ``generator``.
        generator: the EG3D generator file of an official ``checkpoint``.
    """

    preset: str = "tiny"
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    repeats: int = 5
    warmup: int = 1
    modes: tuple[str, ...] = ("fp32",)
    workloads: tuple[str, ...] = WORKLOADS
    device: str = "cpu"
    threads: int | None = None
    depth_samples: int | None = None
    points_per_chunk: int | None = None
    seed: int = 0
    checkpoint: str | None = None
    generator: str | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown benchmark preset {self.preset!r}; choose one of: {', '.join(PRESETS)}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError("batch sizes must be positive integers, e.g. 1,8,32")
        if self.repeats < 1 or self.warmup < 0:
            raise ConfigError("need repeats >= 1 and warmup >= 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if self.points_per_chunk is not None and self.points_per_chunk < 1:
            raise ConfigError(f"points per chunk must be at least 1, got {self.points_per_chunk}")
        if self.depth_samples is not None and self.depth_samples < 4:
            raise ConfigError(f"depth samples must be at least 4 (for importance sampling), got {self.depth_samples}")
        unknown = [w for w in self.workloads if w not in WORKLOADS]
        if unknown or not self.workloads:
            raise ConfigError(f"unknown workload(s) {unknown}; choose from: {', '.join(WORKLOADS)}")
        for mode in self.modes:
            InferenceSettings.from_mode(mode)

    @property
    def all_modes(self) -> tuple[str, ...]:
        """``fp32`` first (the accuracy reference), then the other requested modes, without duplicates."""
        modes = ["fp32"]
        for mode in self.modes:
            label = InferenceSettings.from_mode(mode).label
            if label not in modes:
                modes.append(label)
        return tuple(modes)


@dataclass
class BenchReport:
    """What :func:`run_benchmark` returns: metadata and one row per (workload, batch, mode)."""

    meta: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"meta": self.meta, "results": self.results}, indent=2, default=_json_default)

    def to_markdown(self) -> str:
        return report_markdown(self.meta, self.results)

    def write(self, out: str | os.PathLike[str], stem: str = "bench") -> tuple[Path, Path]:
        """Write ``stem.json`` and ``stem.md`` into ``out`` (atomically). Returns both paths."""
        from triplanenet.io.atomic import write_text_atomic

        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
        write_text_atomic(json_path, self.to_json() + "\n")
        write_text_atomic(md_path, self.to_markdown())
        return json_path, md_path


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)


# ---------------------------------------------------------------------------------------------------------------------
# Models and inputs


def build_preset_model(
    preset: str, device: torch.device, seed: int = 0, depth_samples: int | None = None
) -> TriPlaneNet:
    """The benchmark model: tiny random, the bundled default, or FFHQ-size random weights (v1, or v2 for the
    ``-v2`` presets); eval mode, frozen."""
    from triplanenet.eg3d.config import GeneratorConfig
    from triplanenet.eg3d.generator import TriPlaneGenerator
    from triplanenet.model import TriPlaneNetConfig

    if preset == "default":
        from triplanenet.demo import load_default_model

        model = load_default_model(device=device)
    else:
        torch.manual_seed(seed)
        size, _, version = preset.partition("-")
        gen_config = GeneratorConfig.tiny() if size == "tiny" else GeneratorConfig.ffhq512()
        generator = TriPlaneGenerator(gen_config)
        if size == "tiny":
            config = TriPlaneNetConfig.tiny(2 if version == "v2" else 1, generator=gen_config)
        else:
            config = TriPlaneNetConfig.official_v2(gen_config) if version == "v2" else TriPlaneNetConfig.official()
        model = TriPlaneNet(config, generator=generator)
        model.set_latent_avg(generator.w_avg)
        model = model.to(device)
    if depth_samples is not None:
        model.decoder.set_rendering(depth_resolution=depth_samples, depth_resolution_importance=depth_samples)
    return model.eval().requires_grad_(False)


def synthetic_inputs(model: TriPlaneNet, batch: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Images x (B, 3, S, S) in [-1, 1], cameras (B, 25) at varied yaws, ws, base planes and a fake render."""
    from triplanenet.eg3d.camera import camera_label

    gen = model.config.generator
    size = model.config.input_resolution
    rng = torch.Generator().manual_seed(seed)
    yaws = torch.linspace(-0.4, 0.4, batch) if batch > 1 else torch.zeros(1)
    inputs = {
        "x": torch.rand(batch, 3, size, size, generator=rng) * 2 - 1,
        "rendered": torch.rand(batch, 3, size, size, generator=rng) * 2 - 1,
        "camera": camera_label(yaws, torch.zeros(batch)),
        "ws": model.latent_avg.cpu().unsqueeze(0) + 0.5 * torch.randn(batch, gen.num_ws, gen.w_dim, generator=rng),
        "planes": torch.randn(
            batch, 3, gen.triplane_channels, gen.backbone_resolution, gen.backbone_resolution, generator=rng
        ),
    }
    return {k: v.to(device) for k, v in inputs.items()}


def _workload_fn(model: TriPlaneNet, workload: str) -> tuple[Callable[..., Any], tuple[str, ...]]:
    """The function timed for ``workload`` and the names of its input tensors; returns a tensor to compare."""
    if workload == "encode":

        def encode(x: torch.Tensor, rendered: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
            ws = model.encode_ws(x)
            # v2 also reads a render at the mirror camera; the flipped render stands in for it here (same cost).
            offsets = model.predict_offsets(x, rendered, planes, rendered_mirror=rendered.flip(-1))
            return torch.cat([ws.flatten(1), offsets.flatten(1)], dim=1)

        return encode, ("x", "rendered", "planes")
    if workload == "render":

        def render(planes: torch.Tensor, ws: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
            return model.decoder.render(planes, ws, camera, deterministic=True).image

        return render, ("planes", "ws", "camera")
    if workload == "invert":

        def invert(x: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
            return model(x, camera, deterministic=True).image

        return invert, ("x", "camera")
    raise ConfigError(f"internal: no function for workload {workload!r}")


def make_trainer_step(
    model: TriPlaneNet,
    batch: int,
    device: torch.device,
    seed: int,
    *,
    mirror: bool = True,
    amp: bool = True,
    depth_samples: int | None = None,
) -> Callable[[], None]:
    """One :class:`~triplanenet.train.trainer.Trainer` step (both branches, no LPIPS/ID networks) on synthetic
    tensors. The model is deep-copied, so the benchmark model is not trained.

    Args:
        mirror: render the mirrored view too (the paper's symmetry prior); False is the official v1 step. A v2 model
            always gets the mirror inputs (its second branch reads them).
        amp: the trainer's bf16 autocast on CUDA (ignored on the CPU, where training is fp32).
        depth_samples: coarse = fine samples per ray while training (None: the model's own setting).
    """
    from triplanenet import losses
    from triplanenet.eg3d.camera import mirror_label
    from triplanenet.train.config import BranchLossConfig, TrainConfig
    from triplanenet.train.trainer import Criteria, Trainer

    losses_cfg = BranchLossConfig(
        lpips_weight=0.0, id_weight=0.0, mirror=0.1 if mirror else 0.0, mirror_lpips_weight=0.0, mirror_id_weight=0.0
    )
    config = TrainConfig(
        batch_size=batch,
        amp=amp,
        add_triplanenet=0,
        max_steps=1,
        optimizer="adam",
        psp_losses=losses_cfg,
        triplane_losses=losses_cfg,
        seed=seed,
        out=str(Path(tempfile.gettempdir()) / "triplanenet-bench-unused"),  # never written: no fit/save
    )
    criteria = Criteria(
        lpips=None,
        identity=None,
        symmetry=lambda x_m, y_m, sigma, kind: losses.symmetry_loss_fixed_sigma(x_m, y_m, sigma, distance=kind),
        laplacian_nll=losses.laplacian_nll,
    )
    train_model = copy.deepcopy(model)
    if depth_samples is not None:
        train_model.decoder.set_rendering(depth_resolution=depth_samples, depth_resolution_importance=depth_samples)
    train_model.psp_encoder.requires_grad_(True)
    train_model.triplanenet_encoder.requires_grad_(True)
    trainer = Trainer(config, train_model, [], None, criteria, device, log=lambda _m: None)
    inputs = synthetic_inputs(model, batch, seed, device)
    data = {"image": inputs["x"], "camera": inputs["camera"]}
    if mirror or model.uses_mirror:
        data.update(image_mirror=inputs["x"].flip(-1), camera_mirror=mirror_label(inputs["camera"]))

    def step() -> None:
        trainer.training_step(data)
        trainer.step += 1

    return step


# ---------------------------------------------------------------------------------------------------------------------
# Timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, kind): CUDA max allocated since the last reset, or the process's peak RSS so far on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale), "process_peak_rss"


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of one call, synchronised on CUDA."""
    _sync(device)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - wall0, time.process_time() - cpu0, result


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return quartiles[2] - quartiles[0]


def image_accuracy(reference: torch.Tensor, value: torch.Tensor) -> tuple[float, float]:
    """(max |Δ|, PSNR in dB for images spanning [-1, 1]; inf when identical)."""
    diff = value.detach().float().cpu() - reference.detach().float().cpu()
    mse = float(diff.square().mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(4.0 / mse)
    return float(diff.abs().max()), psnr


def _row(
    workload: str,
    batch: int,
    mode: str,
    walls: list[float],
    cpus: list[float],
    first: float,
    memory: tuple[int, str],
    accuracy: tuple[float, float] | None,
) -> dict[str, Any]:
    median = statistics.median(walls)
    return {
        "workload": workload,
        "batch": batch,
        "mode": mode,
        "median_s": median,
        "iqr_s": _iqr(walls),
        "per_image_s": median / batch,
        "images_per_s": batch / median if median > 0 else math.inf,
        "cpu_s_per_image": statistics.median(cpus) / batch,
        "first_call_s": first,
        "peak_memory_bytes": memory[0],
        "memory_kind": memory[1],
        "max_abs_diff": None if accuracy is None else accuracy[0],
        "psnr_db": None if accuracy is None else accuracy[1],
        "repeats": len(walls),
    }


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = lambda _m: None) -> BenchReport:
    """Run every (workload, batch size) for every mode, interleaved, and collect the rows.

    Raises:
        ConfigError: bad settings (e.g. CUDA graphs on the CPU, unknown mode, torch.compile failure).
    """
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is available: use --device cpu")
    for mode in config.all_modes:  # refuse impossible modes before building a large model
        check_settings(InferenceSettings.from_mode(mode), device)
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, device, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run(config: BenchConfig, device: torch.device, log: Callable[[str], None]) -> BenchReport:
    if config.checkpoint is not None:
        from triplanenet.io.model_checkpoints import load_triplanenet

        base = load_triplanenet(config.checkpoint, generator=config.generator, device=device).requires_grad_(False)
        if config.depth_samples is not None:
            base.decoder.set_rendering(
                depth_resolution=config.depth_samples, depth_resolution_importance=config.depth_samples
            )
    else:
        base = build_preset_model(config.preset, device, config.seed, config.depth_samples)
    if config.points_per_chunk is not None:
        base.decoder.renderer.max_points_per_chunk = config.points_per_chunk  # copies below inherit it
    settings = {mode: InferenceSettings.from_mode(mode) for mode in config.all_modes}
    # Modes that change the model in place (channels-last, compile) get their own copy; autocast modes share.
    models: dict[tuple[bool, bool], TriPlaneNet] = {(False, False): base}
    runners_model: dict[str, TriPlaneNet] = {}
    for mode, setting in settings.items():
        key = (setting.channels_last, setting.compile)
        if key not in models:
            models[key] = apply_fast_mode(copy.deepcopy(base), dataclasses.replace(setting, cuda_graphs=False))
        runners_model[mode] = models[key]
    report = BenchReport(meta=environment_meta(config, base, device))
    for workload in config.workloads:
        for batch in config.batch_sizes:
            if workload == "train_step":
                failed = None
                try:
                    report.results.append(_bench_train(base, batch, config, device, log))
                except RuntimeError as exc:
                    failed = failure_reason(exc)
                if failed is not None:
                    _skip(report, workload, batch, "fp32", failed, device, log)
                continue
            inputs = synthetic_inputs(base, batch, config.seed + batch, device)
            runners: dict[str, Callable[[], Any]] = {}
            for mode, setting in settings.items():
                fn, names = _workload_fn(runners_model[mode], workload)
                runner = FastRunner(fn, setting, device)
                args = tuple(inputs[n] for n in names)
                runners[mode] = lambda runner=runner, args=args: runner(*args)
            firsts: dict[str, float] = {}
            outputs: dict[str, Any] = {}
            for mode, runner in list(runners.items()):
                failed = None
                try:
                    for i in range(max(config.warmup, 1)):
                        wall, _cpu, out = _timed(runner, device)
                        if i == 0:
                            firsts[mode] = wall
                except (RuntimeError, ConfigError) as exc:  # e.g. CUDA out of memory at a large batch
                    failed = failure_reason(exc)
                if failed is not None:
                    _skip(report, workload, batch, mode, failed, device, log)
                    del runners[mode]
                    continue
                outputs[mode] = out
            walls: dict[str, list[float]] = {m: [] for m in runners}
            cpus: dict[str, list[float]] = {m: [] for m in runners}
            peaks: dict[str, int] = dict.fromkeys(runners, 0)
            kind = ""
            for _ in range(config.repeats):
                for mode, runner in runners.items():
                    _reset_peak(device)
                    wall, cpu, _out = _timed(runner, device)
                    walls[mode].append(wall)
                    cpus[mode].append(cpu)
                    peak, kind = _peak_memory(device)
                    peaks[mode] = max(peaks[mode], peak)
            for mode in runners:
                accuracy = (
                    None if mode == "fp32" or "fp32" not in outputs else image_accuracy(outputs["fp32"], outputs[mode])
                )
                row = _row(workload, batch, mode, walls[mode], cpus[mode], firsts[mode], (peaks[mode], kind), accuracy)
                report.results.append(row)
                log(_format_row(row))
    return report


def failure_reason(exc: BaseException) -> str:
    """A short reason for a measurement that could not run: ``out of memory`` (the expected one at large batches) or
    the exception's type and first line."""
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "out of memory"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"[:200]


def release_cached_memory(device: torch.device) -> None:
    """Hand the CUDA caching allocator's free blocks back after a failed call (call it outside the ``except`` block,
    whose traceback still holds the failed call's tensors), so the next measurement starts from a clean slate."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _skip(
    report: BenchReport,
    workload: str,
    batch: int,
    mode: str,
    reason: str,
    device: torch.device,
    log: Callable[[str], None],
) -> None:
    """Record a (workload, batch, mode) that could not run, so one failure does not end a long benchmark."""
    release_cached_memory(device)
    report.meta.setdefault("skipped", []).append({"workload": workload, "batch": batch, "mode": mode, "reason": reason})
    log(f"{workload:10s} b={batch:<3d} {mode:22s} skipped: {reason}")


def _bench_train(
    model: TriPlaneNet, batch: int, config: BenchConfig, device: torch.device, log: Callable[[str], None]
) -> dict[str, Any]:
    step = make_trainer_step(model, batch, device, config.seed)
    first = 0.0
    for i in range(max(config.warmup, 1)):
        wall, _cpu, _ = _timed(step, device)
        if i == 0:
            first = wall
    walls, cpus, peak, kind = [], [], 0, ""
    for _ in range(config.repeats):
        _reset_peak(device)
        wall, cpu, _ = _timed(step, device)
        walls.append(wall)
        cpus.append(cpu)
        value, kind = _peak_memory(device)
        peak = max(peak, value)
    mode = "bf16-amp" if device.type == "cuda" else "fp32"  # Trainer autocasts to bf16 on CUDA (config.amp)
    row = _row("train_step", batch, mode, walls, cpus, first, (peak, kind), None)
    row["steps_per_s"] = 1 / row["median_s"] if row["median_s"] > 0 else math.inf
    log(_format_row(row))
    return row


# ---------------------------------------------------------------------------------------------------------------------
# Reporting


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_meta(config: BenchConfig, model: TriPlaneNet, device: torch.device) -> dict[str, Any]:
    """Device name, torch version, threads, CPU, date and the benchmark + model configuration."""
    gen = model.config.generator
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"{_cpu_model()} ({os.cpu_count()} logical CPUs)"
    return {
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "cpu_allocator_threshold": cpu_allocator_threshold(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": dataclasses.asdict(config),
        "model": {
            "preset": config.preset if config.checkpoint is None else Path(config.checkpoint).name,
            "version": model.version,
            "img_resolution": gen.img_resolution,
            "neural_rendering_resolution": gen.neural_rendering_resolution,
            "backbone": f"{gen.backbone_channels}x{gen.backbone_resolution}^2",
            "samples_per_ray": f"{gen.rendering.depth_resolution}+{gen.rendering.depth_resolution_importance}",
            "points_per_chunk": model.decoder.renderer.max_points_per_chunk or default_points_per_chunk(device),
            "encoder_input": model.config.input_resolution,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "notes": "modes interleaved per round; medians and IQR over rounds; accuracy vs the fp32 mode on the same "
        "inputs; CPU memory = peak RSS of the whole process so far (monotonic)",
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isinf(value):
            return "exact" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return str(value)


def _format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['workload']:10s} b={row['batch']:<3d} {row['mode']:22s} median {row['median_s'] * 1e3:9.2f} ms "
        f"(IQR {row['iqr_s'] * 1e3:.2f}) first {row['first_call_s']:.2f} s"
        + ("" if row["psnr_db"] is None else f" max|Δ| {row['max_abs_diff']:.3g} PSNR {_fmt(row['psnr_db'])}")
    )


def _allocator_note(meta: dict[str, Any]) -> str:
    threshold = meta.get("cpu_allocator_threshold")
    if meta.get("device") != "cpu":
        return ""
    return " (CPU allocator: glibc defaults)" if threshold is None else f" (CPU allocator tuned: {threshold >> 20} MiB)"


def report_markdown(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """A markdown section: environment line and one table row per result (speed relative to fp32 in the same run)."""
    reference = {(r["workload"], r["batch"]): r["median_s"] for r in results if r["mode"] in ("fp32", "bf16-amp")}
    model = meta.get("model", {})
    lines = [
        f"Device: {meta.get('device_name')} ({meta.get('device')}), torch {meta.get('torch')}, "
        f"{meta.get('threads')} threads{_allocator_note(meta)}, preset `{model.get('preset')}` "
        f"({model.get('parameters', 0) / 1e6:.1f} M parameters, {model.get('img_resolution')}² output, "
        f"{model.get('samples_per_ray')} samples/ray, {model.get('points_per_chunk')} points/chunk), "
        f"{meta.get('date_utc')}.",
        "",
        "| workload | batch | mode | median ms | IQR ms | ms/image | images/s | CPU s/image | first call s | peak mem "
        "MiB | speed-up vs fp32 | max \\|Δ\\| | PSNR dB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ref = reference.get((r["workload"], r["batch"]))
        speedup = ref / r["median_s"] if ref and r["median_s"] > 0 else None
        lines.append(
            f"| {r['workload']} | {r['batch']} | {r['mode']} | {r['median_s'] * 1e3:.1f} | {r['iqr_s'] * 1e3:.1f} | "
            f"{r['per_image_s'] * 1e3:.1f} | {r['images_per_s']:.2f} | {r['cpu_s_per_image']:.3f} | "
            f"{r['first_call_s']:.2f} | {r['peak_memory_bytes'] / 2**20:.0f} | "
            f"{'' if speedup is None else f'{speedup:.2f}×'} | {_fmt(r['max_abs_diff'], 3)} | {_fmt(r['psnr_db'], 4)} |"
        )
    for skipped in meta.get("skipped", []):
        lines.append(
            f"\nNot measured: {skipped['workload']} at batch {skipped['batch']} in {skipped['mode']} "
            f"({skipped['reason']})."
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "PRESETS",
    "RESULT_KEYS",
    "WORKLOADS",
    "BenchConfig",
    "BenchReport",
    "build_preset_model",
    "failure_reason",
    "image_accuracy",
    "make_trainer_step",
    "release_cached_memory",
    "report_markdown",
    "run_benchmark",
    "synthetic_inputs",
]
