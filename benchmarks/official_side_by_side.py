"""Same-process side-by-side timing of the official TriPlaneNet v1 / EG3D code and ours, at the official FFHQ sizes.

Usage (a checkout of https://github.com/anantarb/triplanenet, never committed to this repository; it ships its own
``torch_utils``/``dnnlib``/``models.eg3d``)::

    python benchmarks/official_side_by_side.py --official /path/to/triplanenet --device cuda \\
        --batch-sizes 1,8,32 --repeats 10 --out outputs/side_by_side

Both models get the same random weights (ours are built with a fixed seed and copied into the official modules by
state-dict key, which also checks that the key names still match) and the same inputs. Every round calls ours, then the
official code, for each workload; medians and IQRs over rounds, ``torch.cuda.synchronize`` around each call, peak CUDA
memory per call. Workloads: EG3D ``synthesis`` (512², 48+48 samples), pSp encoder, tri-plane encoder, full inversion
(``forward`` with resize, ``--depth-samples`` per ray as the official inference script: 96). The encoders are
deterministic, so their outputs are compared too (max |Δ|); rendering in the official code is stochastic.

No files of the official code are imported until ``--official`` is given. ``requests`` (only used by ``dnnlib`` for
downloads) is replaced by an empty stub module when it is not installed. On the CPU, rosinality's fused StyleGAN2 ops
(``models.stylegan2.op``, JIT-compiled CUDA code imported by the pSp encoder but not used by it) are replaced by a stub
that fails if called.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from triplanenet.bench import _cpu_model
from triplanenet.eg3d.camera import camera_label
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.io.atomic import write_text_atomic
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig

OFFICIAL_SR_MODULE = "models.eg3d.superresolution.SuperresolutionHybrid8XDC"


def build_ours(device: torch.device, depth_samples: int, seed: int) -> TriPlaneNet:
    torch.manual_seed(seed)
    generator = TriPlaneGenerator(GeneratorConfig.ffhq512())
    model = TriPlaneNet(TriPlaneNetConfig.official(generator.config), generator=generator)
    model.set_latent_avg(generator.w_avg + 0.1 * torch.randn_like(generator.w_avg))
    model.decoder.set_rendering(depth_resolution=depth_samples, depth_resolution_importance=depth_samples)
    return model.to(device).eval().requires_grad_(False)


def _stylegan2_op_stub() -> types.ModuleType:
    """Stand-in for ``models.stylegan2.op`` (rosinality's fused CUDA ops, JIT-compiled at import). The pSp encoder only
    imports ``EqualLinear`` through it and never calls the ops (no activation), so on a CPU without a CUDA toolkit a
    stub that fails loudly when called is enough."""

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


def import_official(path: Path, stub_stylegan2_ops: bool) -> types.SimpleNamespace:
    """Import the official modules from a TriPlaneNet checkout (its root goes first on ``sys.path``)."""
    if not (path / "models" / "triplanenet.py").is_file():
        raise SystemExit(f"{path} is not a TriPlaneNet checkout (models/triplanenet.py missing)")
    try:
        importlib.import_module("requests")
    except ImportError:
        sys.modules["requests"] = types.ModuleType("requests")
    sys.path.insert(0, str(path))
    if stub_stylegan2_ops:
        sys.modules["models.stylegan2.op"] = _stylegan2_op_stub()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="path of a TriPlaneNet checkout")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--depth-samples", type=int, default=96, help="coarse = fine samples for the inversion")
    parser.add_argument("--workloads", default="synthesis,psp,triplane_encoder,inversion")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/side_by_side"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    official = import_official(args.official.resolve(), stub_stylegan2_ops=device.type != "cuda")
    ours = build_ours(device, args.depth_samples, args.seed)
    theirs = build_official(official, ours, device, args.depth_samples)
    synth_kwargs = {"depth_resolution": 48, "depth_resolution_importance": 48}
    rows: list[dict[str, Any]] = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        gen = torch.Generator().manual_seed(args.seed + batch)
        x = (torch.rand(batch, 3, 256, 256, generator=gen) * 2 - 1).to(device)
        x6 = (torch.rand(batch, 6, 256, 256, generator=gen) * 2 - 1).to(device)
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

        workloads: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "synthesis": (ours_synthesis, theirs_synthesis),
            "psp": (lambda x=x: ours.psp_encoder(x), lambda x=x: theirs.psp_encoder(x)),
            "triplane_encoder": (
                lambda x6=x6: ours.triplanenet_encoder(x6),
                lambda x6=x6: theirs.triplanenet_encoder(x6),
            ),
            "inversion": (lambda x=x, c=cams: ours(x, c).image, lambda x=x, c=cams: theirs(x, c)),
        }
        for name in args.workloads.split(","):
            fn_ours, fn_theirs = workloads[name]
            with torch.no_grad():
                for _ in range(args.warmup):
                    out_ours, out_theirs = _call(fn_ours, device)[2], _call(fn_theirs, device)[2]
                times: dict[str, list[float]] = {"ours": [], "official": []}
                peaks = {"ours": 0, "official": 0}
                for _ in range(args.repeats):
                    for who, fn in (("ours", fn_ours), ("official", fn_theirs)):
                        seconds, peak, _ = _call(fn, device)
                        times[who].append(seconds)
                        peaks[who] = max(peaks[who], peak)
            max_diff = None
            if args.warmup and name in ("psp", "triplane_encoder"):
                max_diff = float((_tensor(out_ours).float() - _tensor(out_theirs).float()).abs().max())
            med_ours, med_theirs = statistics.median(times["ours"]), statistics.median(times["official"])
            row = {
                "workload": name,
                "batch": batch,
                "ours_s": med_ours,
                "official_s": med_theirs,
                "speedup": med_theirs / med_ours,
                "ours_peak_bytes": peaks["ours"],
                "official_peak_bytes": peaks["official"],
                "encoder_max_abs_diff": max_diff,
            }
            rows.append(row)
            print(json.dumps(row))
    meta = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "official": str(args.official),
        "depth_samples_inversion": args.depth_samples,
        "repeats": args.repeats,
        "warmup": args.warmup,
    }
    lines = [
        f"{meta['device_name']} ({device}), torch {torch.__version__}, {meta['threads']} threads, fp32, random weights "
        f"at FFHQ sizes, inversion with {args.depth_samples}+{args.depth_samples} samples, medians of "
        f"{args.repeats} interleaved rounds.",
        "",
        "| workload | batch | ours s | official s | speed-up | ours peak MiB | official peak MiB "
        "| encoder max \\|Δ\\| |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        diff = "–" if r["encoder_max_abs_diff"] is None else f"{r['encoder_max_abs_diff']:.2g}"
        lines.append(
            f"| {r['workload']} | {r['batch']} | {r['ours_s']:.4f} | {r['official_s']:.4f} | {r['speedup']:.2f}× | "
            f"{r['ours_peak_bytes'] / 2**20:.0f} | {r['official_peak_bytes'] / 2**20:.0f} | {diff} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "side_by_side.json", json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    write_text_atomic(args.out / "side_by_side.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
