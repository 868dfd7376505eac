"""Same-process side-by-side timing of the official TriPlaneNet v1 / EG3D code and ours, at the official FFHQ sizes.

Usage (a checkout of https://github.com/anantarb/triplanenet, never committed to this repository; it ships its own
``torch_utils``/``dnnlib``/``models.eg3d``)::

    python benchmarks/official_side_by_side.py --official /path/to/triplanenet --device cuda \\
        --batch-sizes 1,8,32 --repeats 10 --out outputs/side_by_side

Both models get the same random weights (ours are built with a fixed seed and copied into the official modules by
state-dict key, which also checks that the key names still match) and the same inputs. Every round calls ours, then the
official code, for each workload; medians and IQRs over rounds, ``torch.cuda.synchronize`` around each call, peak CUDA
memory per call. Workloads: EG3D ``synthesis`` (512², 48+48 samples), pSp encoder, tri-plane encoder, full inversion
(``forward`` with resize, ``--depth-samples`` per ray as the official inference script: 96) and ``train_step``: one
optimisation step of both encoders as the official v1 coach does it (forward with ``return_yhat_psp``, the pSp loss
backward and Adam step, then the tri-plane loss backward and Adam step; ``--train-depth-samples`` per ray, 48 as in
training) against one step of our ``Trainer`` with the same losses (L2 only on both sides: the LPIPS and identity
networks are left out of both, and no mirror loss, as in v1). The encoders are deterministic, so their outputs are
compared too (max |Δ|); rendering in the official code is stochastic.

``--fast-modes bf16,fp16,bf16+cuda_graphs,...`` adds an ``inversion`` row per mode: ours under that
:class:`~triplanenet.perf.InferenceSettings` against the official code in fp32, with the accuracy of the mode against
our own fp32 inversion (deterministic rendering on both, max |Δ| and PSNR of the 512² image). ``--train-amp`` adds a
``train_step`` row with our trainer's bf16 autocast (CUDA only; the official coach has no mixed precision).

``--version 2`` runs TriPlaneNet v2 (the WACV'24 model) on both sides instead: the official ``models/triplanenet_v2.py``
(built and loaded by ``benchmarks/official_v2_parity.py``, which copies our weights in with ``strict=True``;
``--v2-upsampling`` picks its decoder, default the paper's nearest-neighbour one) against our v2 model. Its
``inversion`` is the official v2 forward ``net(x, c, c_mirror, x_mirror=x_mirror)``, which renders the first branch at
the input and mirror cameras and the final planes at the input camera and the novel view (the mirror camera when none
is given), against ours with ``target_camera='mirror'`` and the same mirror inputs (the same four renders);
``triplane_encoder`` feeds both encoders 9 channels and the first-branch planes (ours returns the residual, so the
planes are added to it as the official encoder does). There is no ``train_step`` for v2 (the official v1 coach).

No files of the official code are imported until ``--official`` is given. ``requests`` (only used by ``dnnlib`` for
downloads) is replaced by an empty stub module when it is not installed. rosinality's fused StyleGAN2 ops
(``models.stylegan2.op``, CUDA code JIT-compiled at import, imported by the pSp encoder but not used by it) are always
replaced by a stub that fails if called. ``--official-ops ref`` runs EG3D's custom ops (bias_act, upfirdn2d,
filtered_lrelu) through their reference PyTorch code, as the official code does when they do not build; the default,
``cuda``, lets them JIT-build on first use (that time falls in the warm-up calls) on a CUDA device.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import importlib.util
import json
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.bench import (
    _cpu_model,
    failure_reason,
    image_accuracy,
    make_trainer_step,
    release_cached_memory,
)
from triplanenet.eg3d.camera import camera_label, mirror_label
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.io.atomic import write_text_atomic
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig
from triplanenet.perf import FastRunner, InferenceSettings, apply_fast_mode, cpu_allocator_threshold, tune_cpu_allocator

OFFICIAL_SR_MODULE = "models.eg3d.superresolution.SuperresolutionHybrid8XDC"


def build_ours(
    device: torch.device, depth_samples: int, seed: int, version: int = 1, upsampling: str = "nearest"
) -> TriPlaneNet:
    torch.manual_seed(seed)
    generator = TriPlaneGenerator(GeneratorConfig.ffhq512())
    if version == 2:
        config = TriPlaneNetConfig.official_v2(generator.config, upsampling=upsampling)  # type: ignore[arg-type]
    else:
        config = TriPlaneNetConfig.official(generator.config)
    model = TriPlaneNet(config, generator=generator)
    model.set_latent_avg(generator.w_avg + 0.1 * torch.randn_like(generator.w_avg))
    model.decoder.set_rendering(depth_resolution=depth_samples, depth_resolution_importance=depth_samples)
    return model.to(device).eval().requires_grad_(False)


def _stylegan2_op_stub() -> types.ModuleType:
    """Stand-in for ``models.stylegan2.op`` (rosinality's fused CUDA ops, JIT-compiled at import). The pSp encoder only
    imports ``EqualLinear`` through it and never calls the ops (no activation; its outputs match ours exactly), so a
    stub that fails loudly when called is enough, on any device."""

    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the official fused StyleGAN2 CUDA ops are stubbed out (CPU run)")

    class FusedLeakyReLU(nn.Module):
        def __init__(self, *_args: Any, **_kwargs: Any) -> None:
            super().__init__()

        def forward(self, *_args: Any, **_kwargs: Any) -> Any:
            return unavailable()

    module = types.ModuleType("models.stylegan2.op")
    module.FusedLeakyReLU = FusedLeakyReLU  # type: ignore[attr-defined]
    module.fused_leaky_relu = unavailable  # type: ignore[attr-defined]
    module.upfirdn2d = unavailable  # type: ignore[attr-defined]
    return module


def import_official(path: Path, ops: str = "cuda") -> types.SimpleNamespace:
    """Import the official modules from a TriPlaneNet checkout (its root goes first on ``sys.path``).

    rosinality's fused StyleGAN2 ops (``models.stylegan2.op``), which the pSp encoder imports but never calls, are
    always replaced by a stub: on CUDA they would be JIT-compiled at import for nothing. ``ops='ref'`` also makes
    EG3D's own custom ops (``torch_utils.ops``: bias_act, upfirdn2d, filtered_lrelu) take their reference PyTorch
    path, as they do when their CUDA build fails; ``'cuda'`` lets them build and run (CUDA devices only).
    """
    if ops not in ("cuda", "ref"):
        raise SystemExit(f"--official-ops must be cuda or ref, got {ops!r}")
    if not (path / "models" / "triplanenet.py").is_file():
        raise SystemExit(f"{path} is not a TriPlaneNet checkout (models/triplanenet.py missing)")
    try:
        importlib.import_module("requests")
    except ImportError:
        sys.modules["requests"] = types.ModuleType("requests")
    sys.path.insert(0, str(path))
    sys.modules["models.stylegan2.op"] = _stylegan2_op_stub()
    if ops == "ref":
        for name in ("bias_act", "upfirdn2d", "filtered_lrelu"):
            module = importlib.import_module(f"torch_utils.ops.{name}")
            if not hasattr(module, "_init"):
                raise SystemExit(f"torch_utils.ops.{name} has no _init(); cannot force its reference path")
            module._init = lambda: False  # the official code then takes its reference implementation
    return types.SimpleNamespace(
        TriPlaneNet=importlib.import_module("models.triplanenet").TriPlaneNet,
        TriPlaneGenerator=importlib.import_module("models.eg3d.triplane").TriPlaneGenerator,
        GradualStyleEncoder=importlib.import_module("models.encoders.psp_encoders").GradualStyleEncoder,
        TriPlaneEncoder=importlib.import_module("models.encoders.triplane_encoders").TriPlane_Encoder,
    )


def build_official(official: types.SimpleNamespace, ours: TriPlaneNet, device: torch.device, depth: int) -> nn.Module:
    """The official ``TriPlaneNet`` assembled without its file-loading constructor, holding our weights."""
    config = ours.config.generator
    kwargs = config.to_official_kwargs()
    kwargs["rendering_kwargs"] = dict(kwargs["rendering_kwargs"], superresolution_module=OFFICIAL_SR_MODULE)
    kwargs["rendering_kwargs"].update(depth_resolution=depth, depth_resolution_importance=depth)
    opts = types.SimpleNamespace(n_styles=config.num_ws, device=str(device), checkpoint_path=None)
    model = official.TriPlaneNet.__new__(official.TriPlaneNet)
    nn.Module.__init__(model)
    model.opts = opts
    model.psp_encoder = official.GradualStyleEncoder(50, "ir_se", opts)
    model.triplanenet_encoder = official.TriPlaneEncoder()
    model.decoder = official.TriPlaneGenerator(**kwargs)
    model.decoder.neural_rendering_resolution = config.neural_rendering_resolution
    state = ours.state_dict()
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        print(f"warning: key mismatch: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    model.latent_avg = ours.latent_avg.clone()
    return model.to(device).eval().requires_grad_(False)


def _v2_parity_module() -> types.ModuleType:
    """``benchmarks/official_v2_parity.py`` (the official v2 import and builder), loaded from its file."""
    path = Path(__file__).resolve().parent / "official_v2_parity.py"
    spec = importlib.util.spec_from_file_location("official_v2_parity", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_official_v2(path: Path, ops: str, ours: TriPlaneNet) -> nn.Module:
    """The official v2 ``TriPlaneNet`` holding the weights of our v2 ``ours`` (same decoder, samples and device)."""
    parity = _v2_parity_module()
    return parity.build_official_v2(parity.import_official_v2(path, ops), ours)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _call(fn: Callable[[], Any], device: torch.device) -> tuple[float, int, Any]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0
    return seconds, peak, out


def _tensor(value: Any) -> torch.Tensor:
    if isinstance(value, dict):
        return value["image"]
    if isinstance(value, list | tuple):
        return value[0]
    return value


def official_train_step(
    theirs: nn.Module, x: torch.Tensor, cams: torch.Tensor, depth: int, lr: float = 1e-4
) -> Callable[[], None]:
    """One step of the official v1 coach's loop on a copy of ``theirs`` (L2 losses only, Adam on both encoders)."""
    net = copy.deepcopy(theirs)
    net.decoder.rendering_kwargs.update(depth_resolution=depth, depth_resolution_importance=depth)
    net.psp_encoder.requires_grad_(True)
    net.triplanenet_encoder.requires_grad_(True)
    opt_psp = torch.optim.Adam(net.psp_encoder.parameters(), lr=lr)
    opt_triplane = torch.optim.Adam(net.triplanenet_encoder.parameters(), lr=lr)

    def step() -> None:
        net.train()
        opt_psp.zero_grad()
        opt_triplane.zero_grad()
        y_hat, y_hat_psp = net.forward(x, camera_params=cams, resize=True, return_yhat_psp=True)
        F.mse_loss(y_hat_psp, x).backward()
        opt_psp.step()
        opt_psp.zero_grad()
        F.mse_loss(y_hat, x).backward()
        opt_triplane.step()
        opt_triplane.zero_grad()

    return step


def fast_inversion(
    model: TriPlaneNet, mode: str, device: torch.device, target: str | None = None
) -> Callable[..., torch.Tensor]:
    """Our deterministic inversion ``(x, cams) -> 512² image`` under a fast mode (models changed in place by
    channels-last or compile are copies); ``target='mirror'`` also renders the mirror view, as the official v2 does."""
    settings = InferenceSettings.from_mode(mode)
    if settings.channels_last or settings.compile:
        model = apply_fast_mode(copy.deepcopy(model), dataclasses.replace(settings, cuda_graphs=False))
    return FastRunner(lambda x, c: model(x, c, target, deterministic=True).image, settings, device)


def time_side(
    fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int, grad: bool
) -> tuple[list[float], int, Any, str | None]:
    """Warm-up calls then ``repeats`` timed calls of one side. Returns (seconds, peak bytes, last warm-up output,
    failure reason or None). A failure (e.g. CUDA out of memory) is caught so the other rows still run."""
    times: list[float] = []
    peak, output, failed = 0, None, None
    try:
        with torch.set_grad_enabled(grad):
            for _ in range(warmup):
                output = _call(fn, device)[2]
            for _ in range(repeats):
                seconds, used, _ = _call(fn, device)
                times.append(seconds)
                peak = max(peak, used)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
        failed = failure_reason(exc)
    if failed is None:
        return times, peak, output, None
    release_cached_memory(device)  # after the except block: its traceback no longer holds the failed call's tensors
    return times, peak, None, failed


def time_pair(
    fn_ours: Callable[[], Any],
    fn_theirs: Callable[[], Any],
    device: torch.device,
    warmup: int,
    repeats: int,
    grad: bool,
) -> dict[str, tuple[list[float], int, Any, str | None]]:
    """Both sides; interleaved round by round (ours, official) when both run, so drifts hit both alike."""
    results: dict[str, tuple[list[float], int, Any, str | None]] = {}
    warm = {"ours": fn_ours, "official": fn_theirs}
    for who, fn in warm.items():  # warm-up (and failure check) of each side first
        results[who] = time_side(fn, device, warmup, 0, grad)
    for _ in range(repeats):
        for who, fn in warm.items():
            times, peak, output, failed = results[who]
            if failed:
                continue
            more, used, _, failed = time_side(fn, device, 0, 1, grad)
            results[who] = (times + more, max(peak, used), output, failed)
    return results


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def report_markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The side-by-side table (one line per workload × mode × batch)."""
    lines = [
        f"TriPlaneNet v{meta.get('version', 1)}, "
        f"{meta['device_name']} ({meta['device']}), torch {meta['torch']}, {meta['threads']} threads, "
        f"{'glibc malloc defaults' if meta.get('cpu_allocator_threshold') is None else 'CPU allocator tuned'}, "
        f"random weights at FFHQ sizes, inversion with {meta['depth_samples_inversion']}+"
        f"{meta['depth_samples_inversion']} samples, "
        f"training step with {meta['depth_samples_training']}+{meta['depth_samples_training']}, medians of "
        f"{meta['repeats']} interleaved rounds. The official code always runs in fp32; `mode` is ours. max |Δ| is ours "
        "vs official for the encoders and ours vs our fp32 for fast modes.",
        "",
        "| workload | mode | batch | ours s | official s | speed-up | ours images/s | official images/s "
        "| ours peak MiB | official peak MiB | max \\|Δ\\| | PSNR dB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def num(value: float | None, fmt: str, failed: str | None) -> str:
        return failed if value is None and failed else "–" if value is None else format(value, fmt)

    for r in rows:
        speedup = "–" if r["speedup"] is None else f"{r['speedup']:.2f}×"
        lines.append(
            f"| {r['workload']} | {r['mode']} | {r['batch']} | {num(r['ours_s'], '.4f', r['ours_failed'])} | "
            f"{num(r['official_s'], '.4f', r['official_failed'])} | {speedup} | "
            f"{num(r['ours_images_per_s'], '.2f', None)} | {num(r['official_images_per_s'], '.2f', None)} | "
            f"{r['ours_peak_bytes'] / 2**20:.0f} | {r['official_peak_bytes'] / 2**20:.0f} | "
            f"{num(r['max_abs_diff'], '.2g', None)} | {num(r['psnr_db'], '.1f', None)} |"
        )
    return "\n".join(lines) + "\n"


def write_report(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Write ``side_by_side.json`` and ``.md`` atomically (called after every row, so a killed run keeps its rows)."""
    out.mkdir(parents=True, exist_ok=True)
    markdown = report_markdown(meta, rows)
    write_text_atomic(out / "side_by_side.json", json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    write_text_atomic(out / "side_by_side.md", markdown)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="path of a TriPlaneNet checkout")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--depth-samples", type=int, default=96, help="coarse = fine samples for the inversion")
    parser.add_argument("--workloads", default="synthesis,psp,triplane_encoder,inversion,train_step")
    parser.add_argument("--train-depth-samples", type=int, default=48, help="coarse = fine samples while training")
    parser.add_argument("--fast-modes", default="", help="comma-separated fast modes of ours for extra inversion rows")
    parser.add_argument("--train-amp", action="store_true", help="add a train_step row with our bf16 AMP (CUDA)")
    parser.add_argument("--train-batch-sizes", default=None, help="batch sizes of train_step (default: --batch-sizes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--version", type=int, choices=(1, 2), default=1, help="TriPlaneNet version of both sides (2: the v2 code)"
    )
    parser.add_argument(
        "--v2-upsampling",
        choices=("nearest", "pixelshuffle"),
        default="nearest",
        help="decoder of the v2 tri-plane encoder on both sides (official --use_pixelshuffle: pixelshuffle)",
    )
    parser.add_argument(
        "--official-ops",
        choices=("cuda", "ref"),
        default="cuda",
        help="EG3D's custom CUDA ops in the official code: cuda (JIT-built on first use) or ref (PyTorch reference)",
    )
    parser.add_argument(
        "--default-allocator", action="store_true", help="keep glibc's malloc defaults (see perf.tune_cpu_allocator)"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/side_by_side"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.default_allocator:
        tune_cpu_allocator()  # process-wide: both code bases run with it
    device = torch.device(args.device)
    names = [n for n in args.workloads.split(",") if n]
    if args.version == 2 and "train_step" in names:
        raise SystemExit("train_step is the official v1 coach's step; leave it out of --workloads with --version 2")
    official = import_official(args.official.resolve(), args.official_ops)
    ours = build_ours(device, args.depth_samples, args.seed, args.version, args.v2_upsampling)
    if args.version == 2:
        theirs = build_official_v2(args.official.resolve(), args.official_ops, ours)
    else:
        theirs = build_official(official, ours, device, args.depth_samples)
    synth_kwargs = {"depth_resolution": 48, "depth_resolution_importance": 48}
    meta = {
        "version": args.version,
        "v2_upsampling": args.v2_upsampling if args.version == 2 else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_allocator_threshold": cpu_allocator_threshold(),
        "official": str(args.official),
        "official_ops": args.official_ops if device.type == "cuda" else "ref (CPU)",
        "depth_samples_inversion": args.depth_samples,
        "depth_samples_training": args.train_depth_samples,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "fast_modes": [m for m in args.fast_modes.split(",") if m],
    }
    known = ("synthesis", "psp", "triplane_encoder", "inversion", "train_step")
    for name in names:
        if name not in known:
            raise SystemExit(f"unknown workload {name!r}; choose from {', '.join(known)}")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    train_batch_sizes = [int(b) for b in (args.train_batch_sizes or args.batch_sizes).split(",")]
    rows: list[dict[str, Any]] = []
    for batch in sorted(set(batch_sizes) | set(train_batch_sizes)):
        gen = torch.Generator().manual_seed(args.seed + batch)
        x = (torch.rand(batch, 3, 256, 256, generator=gen) * 2 - 1).to(device)
        x6 = (torch.rand(batch, 6 if args.version == 1 else 9, 256, 256, generator=gen) * 2 - 1).to(device)
        cams = camera_label(torch.linspace(-0.3, 0.3, batch) if batch > 1 else torch.zeros(1), torch.zeros(batch))
        cams = cams.to(device)
        ws = ours.latent_avg.unsqueeze(0) + 0.5 * torch.randn(batch, 14, 512, generator=gen).to(device)

        def ours_synthesis(ws: torch.Tensor = ws, cams: torch.Tensor = cams) -> Any:
            ours.decoder.set_rendering(**synth_kwargs)
            try:
                return ours.decoder.synthesis(ws, cams, noise_mode="const")
            finally:
                ours.decoder.set_rendering(
                    depth_resolution=args.depth_samples, depth_resolution_importance=args.depth_samples
                )

        def theirs_synthesis(ws: torch.Tensor = ws, cams: torch.Tensor = cams) -> Any:
            saved = dict(theirs.decoder.rendering_kwargs)
            theirs.decoder.rendering_kwargs.update(synth_kwargs)
            try:
                return theirs.decoder.synthesis(ws, cams, noise_mode="const")
            finally:
                theirs.decoder.rendering_kwargs.clear()
                theirs.decoder.rendering_kwargs.update(saved)

        # v2: the mirror inputs and first-branch planes (computed once, outside the timed calls).
        x_mirror, cams_mirror = x.flip(-1), mirror_label(cams)
        planes = ours.decoder.planes(ws).flatten(1, 2) if args.version == 2 else None
        target = "mirror" if args.version == 2 else None
        workloads: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "synthesis": (ours_synthesis, theirs_synthesis),
            "psp": (lambda x=x: ours.psp_encoder(x), lambda x=x: theirs.psp_encoder(x)),
            "triplane_encoder": (
                lambda x6=x6: ours.triplanenet_encoder(x6),
                lambda x6=x6: theirs.triplanenet_encoder(x6),
            ),
            "inversion": (lambda x=x, c=cams: ours(x, c).image, lambda x=x, c=cams: theirs(x, c)),
        }
        if args.version == 2:
            workloads["triplane_encoder"] = (
                lambda x9=x6, p=planes: ours.triplanenet_encoder(x9, p) + p,
                lambda x9=x6, p=planes: theirs.triplanenet_encoder(x9, p),
            )
            workloads["inversion"] = (
                lambda x=x, c=cams, xm=x_mirror, cm=cams_mirror: (
                    ours(x, c, "mirror", x_mirror=xm, camera_mirror=cm).image
                ),
                lambda x=x, c=cams, xm=x_mirror, cm=cams_mirror: theirs(x, c, cm, x_mirror=xm)["y_hat_resized"],
            )
        reference: torch.Tensor | None = None
        for name in names:
            if batch not in (train_batch_sizes if name == "train_step" else batch_sizes):
                continue
            # (mode, ours, official, grad); the official side always runs in fp32.
            cases: list[tuple[str, Callable[[], Any], Callable[[], Any], bool]] = []
            if name == "train_step":
                train_theirs = official_train_step(theirs, x, cams, args.train_depth_samples)
                for amp in (False, True) if args.train_amp and device.type == "cuda" else (False,):
                    train_ours = make_trainer_step(
                        ours, batch, device, args.seed, mirror=False, amp=amp, depth_samples=args.train_depth_samples
                    )
                    cases.append(("bf16-amp" if amp else "fp32", train_ours, train_theirs, True))
            else:
                cases.append(("fp32", *workloads[name], False))
            if name == "inversion":
                for mode in meta["fast_modes"]:
                    runner = fast_inversion(ours, mode, device, target)
                    cases.append((mode, lambda r=runner, x=x, c=cams: r(x, c), workloads[name][1], False))
            for mode, fn_ours, fn_theirs, grad in cases:
                result = time_pair(fn_ours, fn_theirs, device, args.warmup, args.repeats, grad)
                (t_ours, p_ours, out_ours, f_ours), (t_theirs, p_theirs, out_theirs, f_theirs) = (
                    result["ours"],
                    result["official"],
                )
                max_diff, psnr = None, None
                if out_ours is not None and out_theirs is not None and name in ("psp", "triplane_encoder"):
                    max_diff = float((_tensor(out_ours).float() - _tensor(out_theirs).float()).abs().max())
                if out_ours is not None and name == "inversion" and mode != "fp32":
                    if reference is None:
                        reference = fast_inversion(ours, "fp32", device, target)(x, cams)
                    max_diff, psnr = image_accuracy(reference, out_ours)
                med_ours, med_theirs = _median(t_ours), _median(t_theirs)
                row = {
                    "workload": name,
                    "mode": mode,
                    "batch": batch,
                    "ours_s": med_ours,
                    "official_s": med_theirs,
                    "speedup": med_theirs / med_ours if med_ours and med_theirs else None,
                    "ours_images_per_s": batch / med_ours if med_ours else None,
                    "official_images_per_s": batch / med_theirs if med_theirs else None,
                    "ours_peak_bytes": p_ours,
                    "official_peak_bytes": p_theirs,
                    "ours_failed": f_ours,
                    "official_failed": f_theirs,
                    "max_abs_diff": max_diff,
                    "psnr_db": psnr,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                write_report(args.out, meta, rows)
            del cases
    print(write_report(args.out, meta, rows))


if __name__ == "__main__":
    main()
