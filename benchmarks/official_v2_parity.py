"""Run the official TriPlaneNet v2 code and ours side by side on CPU and compare every output (not a pytest test: CI
has no official checkout).

Usage (an export of https://github.com/anantarb/triplanenet, never committed to this repository; see the header of
``benchmarks/gpu_session.sh`` for how to export it)::

    python benchmarks/official_v2_parity.py --official .cache/official/triplanenet --official-ops ref \\
        --configs pixelshuffle,nearest,batch2 --out outputs/official_v2_parity

For each configuration both models get identical weights: ours are built from a seed (default initialisation, then
the encoders' batch-norm statistics, affine parameters, biases and PReLU slopes are perturbed so that none of them is
a trivial 0/1), written as the generator ``.pth`` the official ``set_eg3d_generator`` reads (``G_ema``,
``init_kwargs``, ``latent_avg``, through a temporarily patched ``model_paths``), and then the whole state dict is
copied into the official model by key with ``strict=True`` (so every key name and shape is checked). The official model
is assembled with its own ``set_*`` methods but without ``load_weights`` (which would read the IR-SE50 file).

Rendering is deterministic on both sides: ours with ``deterministic=True``; the official renderer is patched at run
time (never on disk) as the fixture README describes: the stratified jitter ``torch.rand_like`` becomes the constant
0.5 and ``sample_pdf`` is called with ``det=True``.

Compared tensors (official name in brackets): the codes ``ws`` [``latent_codes``], the first-branch planes, the
first-branch renders at the input and mirror cameras pooled to 256² [``y_hat_initial_resized``,
``y_hat_initial_novel_resized``, captured from ``get_initial_inversion``], the final planes ``planes.flatten(1, 2)``
[``triplane_offsets``: in v2 the encoder returns the full planes], the final renders at the input camera (256² and
512²) [``y_hat_resized``, ``y_hat``] and its depth [``depth``], and the novel view [``y_hat_novel_resized``,
``y_hat_novel``, ``depth_novel``]. A tensor passes when ``|Δ| <= tol + tol·|official|`` everywhere (as
``torch.testing.assert_close`` with atol = rtol = tol): tol 1e-4 for codes and planes, 1e-3 for images and depth.

Configurations (``--configs``, default all):

* ``pixelshuffle``: ``--use_pixelshuffle``, generator ``channel_base`` 16384, an explicit novel camera (yaw -0.45,
  pitch 0.1), explicit ``x_mirror = x.flip(-1)`` and mirror camera ``mirror_label(c)``; batch 1.
* ``nearest``: the nearest-neighbour decoder at ``channel_base`` 32768 with no novel camera (novel = mirror), as the
  recorded fixture; batch 1.
* ``batch2``: batch 2, PixelShuffle, ``channel_base`` 8192, a different input and novel camera per item.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from triplanenet.eg3d.camera import camera_label, mirror_label
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.io.atomic import write_text_atomic
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig

OFFICIAL_SR_MODULE = "models.eg3d.superresolution.SuperresolutionHybrid8XDC"
CODE_TOL = 1e-4
IMAGE_TOL = 1e-3


@dataclass(frozen=True)
class ParityConfig:
    name: str
    pixelshuffle: bool
    channel_base: int
    batch: int
    yaws: tuple[float, ...]
    pitches: tuple[float, ...]
    novel: tuple[tuple[float, ...], tuple[float, ...]] | None  # (yaws, pitches) or None: novel view = mirror camera
    explicit_mirror: bool


CONFIGS = {
    "pixelshuffle": ParityConfig("pixelshuffle", True, 16384, 1, (0.35,), (0.12,), ((-0.45,), (0.1,)), True),
    "nearest": ParityConfig("nearest", False, 32768, 1, (0.35,), (0.12,), None, False),
    "batch2": ParityConfig("batch2", True, 8192, 2, (0.3, -0.2), (-0.1, 0.15), ((-0.5, 0.6), (0.05, -0.1)), True),
}

# (name, tolerance, ours, official); the official outputs are the forward's dict plus 'initial' (the captured
# get_initial_inversion outputs).
COMPARISONS: list[tuple[str, float, Callable[[Any, TriPlaneNet], torch.Tensor], Callable[[dict], torch.Tensor]]] = [
    ("codes (ws)", CODE_TOL, lambda o, m: o.ws, lambda t: t["latent_codes"]),
    (
        "first-branch planes",
        CODE_TOL,
        lambda o, m: m.decoder.planes(o.ws).flatten(1, 2),
        lambda t: t["initial"]["triplanes"],
    ),
    ("first render @input 256²", IMAGE_TOL, lambda o, m: o.image_psp, lambda t: t["initial"]["y_hat_initial_resized"]),
    (
        "first render @mirror 256²",
        IMAGE_TOL,
        lambda o, m: o.image_psp_mirror,
        lambda t: t["initial"]["y_hat_initial_novel_resized"],
    ),
    ("final planes", CODE_TOL, lambda o, m: o.planes.flatten(1, 2), lambda t: t["triplane_offsets"]),
    ("final image @input 256²", IMAGE_TOL, lambda o, m: o.image, lambda t: t["y_hat_resized"]),
    ("final image @input 512²", IMAGE_TOL, lambda o, m: o.synthesis.image, lambda t: t["y_hat"]),
    ("depth @input 128²", IMAGE_TOL, lambda o, m: o.depth, lambda t: t["depth"]),
    ("novel view 256²", IMAGE_TOL, lambda o, m: o.image_target, lambda t: t["y_hat_novel_resized"]),
    ("novel view 512²", IMAGE_TOL, lambda o, m: o.synthesis_target.image, lambda t: t["y_hat_novel"]),
    ("depth @novel 128²", IMAGE_TOL, lambda o, m: o.depth_target, lambda t: t["depth_novel"]),
]


# ---------------------------------------------------------------------------------------------------------------------
# The official code


def _load_side_by_side() -> types.ModuleType:
    """``benchmarks/official_side_by_side.py`` (its ``import_official`` stubs rosinality's ops and can force EG3D's
    custom ops onto their reference path)."""
    path = Path(__file__).resolve().parent / "official_side_by_side.py"
    spec = importlib.util.spec_from_file_location("official_side_by_side", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def _unusable_module(name: str, *attributes: str) -> types.ModuleType:
    """A stand-in module whose named attributes fail loudly when called."""

    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(f"{name} is stubbed out (not installed)")

    module = types.ModuleType(name)
    for attribute in attributes:
        setattr(module, attribute, unavailable)
    return module


def import_official_v2(path: Path, ops: str) -> types.SimpleNamespace:
    """The official v2 modules (after the v1 import of the side-by-side script, which sets up ``sys.path``)."""
    if not (path / "models" / "triplanenet_v2.py").is_file():
        raise SystemExit(f"{path} has no models/triplanenet_v2.py (not a TriPlaneNet checkout with v2)")
    _load_side_by_side().import_official(path, ops)
    try:
        importlib.import_module("torchvision.models")
    except ImportError:  # the v2 encoder file imports resnet34 but never uses it
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        sys.modules["torchvision.models"] = _unusable_module("torchvision.models", "resnet34")
    return types.SimpleNamespace(
        module=importlib.import_module("models.triplanenet_v2"),
        TriPlaneNet=importlib.import_module("models.triplanenet_v2").TriPlaneNet,
        renderer=importlib.import_module("models.eg3d.volumetric_rendering.renderer"),
    )


class _DeterministicTorch:
    """Stands in for ``torch`` inside the official renderer module: ``rand_like`` returns 0.5 everywhere (the
    stratified jitter of ``sample_stratified``), everything else is torch's."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def rand_like(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full_like(tensor, 0.5)


@contextlib.contextmanager
def deterministic_official_rendering(renderer_module: types.ModuleType) -> Iterator[None]:
    """Patch the official renderer at run time (restored afterwards): stratified samples at the middle of their
    interval (jitter 0.5 instead of ``rand``) and importance samples with ``det=True`` (``u = linspace(0, 1, N)``)."""
    cls = renderer_module.ImportanceRenderer
    sample_pdf = cls.sample_pdf
    saved_torch = renderer_module.torch

    def sample_pdf_det(
        self: Any, bins: Any, weights: Any, n_importance: int, det: bool = False, eps: float = 1e-5
    ) -> Any:
        return sample_pdf(self, bins, weights, n_importance, det=True, eps=eps)

    renderer_module.torch = _DeterministicTorch()
    cls.sample_pdf = sample_pdf_det
    try:
        yield
    finally:
        renderer_module.torch = saved_torch
        cls.sample_pdf = sample_pdf


def build_official_v2(official: types.SimpleNamespace, ours: TriPlaneNet) -> nn.Module:
    """The official v2 ``TriPlaneNet`` built by its own ``set_*`` methods (the generator from a ``.pth`` of ours in a
    temporary folder), without ``load_weights``; then our whole state dict copied in with ``strict=True``. Same decoder
    variant, generator configuration (including the rendering samples our decoder is set to) and device as ``ours``."""
    if ours.version != 2:
        raise SystemExit("build_official_v2 needs a TriPlaneNet v2 of ours")
    gen = ours.decoder.config
    device = ours.latent_avg.device
    kwargs = gen.to_official_kwargs()
    kwargs["rendering_kwargs"] = dict(kwargs["rendering_kwargs"], superresolution_module=OFFICIAL_SR_MODULE)
    opts = types.SimpleNamespace(
        n_styles=gen.num_ws,
        device=str(device),
        checkpoint_path=None,
        use_pixelshuffle=ours.config.triplane.upsampling == "pixelshuffle",
    )
    model = official.TriPlaneNet.__new__(official.TriPlaneNet)
    nn.Module.__init__(model)
    model.opts = opts
    model.set_psp_encoder()
    model.set_triplane_encoder()
    paths = official.module.model_paths
    with tempfile.TemporaryDirectory() as tmp:
        pth = Path(tmp) / "generator.pth"
        latent_avg = ours.latent_avg[0].clone()
        torch.save({"G_ema": ours.decoder.state_dict(), "init_kwargs": kwargs, "latent_avg": latent_avg}, pth)
        saved = paths["eg3d_ffhq"]
        paths["eg3d_ffhq"] = str(pth)
        try:
            model.set_eg3d_generator()
        finally:
            paths["eg3d_ffhq"] = saved
    if model.decoder.neural_rendering_resolution != gen.neural_rendering_resolution:
        raise SystemExit(
            f"official neural rendering resolution {model.decoder.neural_rendering_resolution} != ours "
            f"{gen.neural_rendering_resolution}"
        )
    model.load_state_dict(ours.state_dict(), strict=True)
    if not torch.equal(model.latent_avg, ours.latent_avg):
        raise SystemExit("latent_avg differs after loading the generator file")
    return model.to(device).eval().requires_grad_(False)


def run_official(model: nn.Module, **inputs: Any) -> dict[str, Any]:
    """Official forward, with the first-branch outputs of ``get_initial_inversion`` captured under ``'initial'``."""
    captured: dict[str, Any] = {}
    original = type(model).get_initial_inversion

    def capture(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out = original(model, *args, **kwargs)
        captured.update(out)
        return out

    model.get_initial_inversion = capture  # instance attribute, shadows the method for this call
    try:
        out = model(**inputs)
    finally:
        del model.get_initial_inversion
    return {**out, "initial": captured}


# ---------------------------------------------------------------------------------------------------------------------
# Ours


def perturb_encoders(model: TriPlaneNet, seed: int) -> None:
    """Give the encoders' 1-D parameters and buffers non-trivial values (default init leaves BN statistics at 0/1,
    biases at 0, PReLU slopes at 0.25), so that a wrongly ordered or ignored one would show."""
    gen = torch.Generator().manual_seed(seed + 12345)
    for module in (model.psp_encoder, model.triplanenet_encoder):
        for key, value in module.state_dict().items():
            if not value.is_floating_point() or value.ndim != 1:
                continue
            noise = torch.randn(value.shape, generator=gen)
            if key.endswith("running_var"):
                value.copy_(0.5 + torch.rand(value.shape, generator=gen))
            elif key.endswith("running_mean") or key.endswith("bias"):
                value.add_(0.05 * noise)
            else:  # BN / PReLU weights
                value.mul_(1 + 0.1 * noise)


def build_ours(config: ParityConfig, depth_samples: int, seed: int) -> TriPlaneNet:
    gen = GeneratorConfig.ffhq512().replace(
        channel_base=config.channel_base,
        rendering={"depth_resolution": depth_samples, "depth_resolution_importance": depth_samples},
    )
    torch.manual_seed(seed)
    model = TriPlaneNet(
        TriPlaneNetConfig.official_v2(gen, upsampling="pixelshuffle" if config.pixelshuffle else "nearest")
    )
    with torch.no_grad():
        perturb_encoders(model, seed)
        w_avg = model.decoder.state_dict()["backbone.mapping.w_avg"]
        model.set_latent_avg(w_avg + 0.1 * torch.randn(w_avg.shape, generator=torch.Generator().manual_seed(seed)))
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------------
# Comparison


def compare(ours_out: Any, ours: TriPlaneNet, theirs_out: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, tol, get_ours, get_theirs in COMPARISONS:
        a = get_ours(ours_out, ours)
        b = get_theirs(theirs_out)
        if a is None or b is None or a.shape != b.shape:
            rows.append(
                {
                    "tensor": name,
                    "shape": None if b is None else list(b.shape),
                    "max_abs_diff": None,
                    "max_abs_official": None,
                    "tolerance": tol,
                    "pass": False,
                    "note": f"missing or shape mismatch: ours {None if a is None else tuple(a.shape)}, official "
                    f"{None if b is None else tuple(b.shape)}",
                }
            )
            continue
        a, b = a.detach().double(), b.detach().double()
        diff = (a - b).abs()
        excess = diff - (tol + tol * b.abs())
        rows.append(
            {
                "tensor": name,
                "shape": list(b.shape),
                "max_abs_diff": float(diff.max()),
                "mean_abs_diff": float(diff.mean()),
                "max_abs_official": float(b.abs().max()),
                "std_official": float(b.std()),
                "tolerance": tol,
                "n_outside": int((excess > 0).sum()),
                "pass": bool((excess <= 0).all()),
            }
        )
    return rows


def run_config(official: types.SimpleNamespace, config: ParityConfig, depth_samples: int, seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    ours = build_ours(config, depth_samples, seed)
    theirs = build_official_v2(official, ours)
    build_s = time.perf_counter() - start
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(config.batch, 3, 256, 256, generator=gen) * 2 - 1
    c = camera_label(torch.tensor(config.yaws), torch.tensor(config.pitches))
    c_mirror = mirror_label(c)
    x_mirror = x.flip(-1)
    novel = None if config.novel is None else camera_label(torch.tensor(config.novel[0]), torch.tensor(config.novel[1]))
    mirror_kwargs = dict(x_mirror=x_mirror, camera_mirror=c_mirror) if config.explicit_mirror else {}
    with torch.no_grad():
        start = time.perf_counter()
        ours_out = ours(x, c, "mirror" if novel is None else novel, deterministic=True, **mirror_kwargs)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        with deterministic_official_rendering(official.renderer):
            theirs_out = run_official(
                theirs,
                x=x,
                camera_params=c,
                mirror_camera_params=c_mirror,
                novel_view_camera_params=novel,
                x_mirror=x_mirror,
            )
        official_s = time.perf_counter() - start
        rows = compare(ours_out, ours, theirs_out)
        residual = ours_out.offsets
    return {
        "config": config.name,
        "upsampling": "pixelshuffle" if config.pixelshuffle else "nearest",
        "channel_base": config.channel_base,
        "batch": config.batch,
        "camera": {"yaw": list(config.yaws), "pitch": list(config.pitches)},
        "novel_camera": "mirror"
        if config.novel is None
        else {"yaw": list(config.novel[0]), "pitch": list(config.novel[1])},
        "explicit_mirror_inputs": config.explicit_mirror,
        "depth_samples": f"{depth_samples}+{depth_samples}",
        "residual_std": float(residual.std()),
        "build_s": build_s,
        "ours_forward_s": ours_s,
        "official_forward_s": official_s,
        "pass": all(row["pass"] for row in rows),
        "rows": rows,
    }


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2e}"


def section_markdown(res: dict[str, Any]) -> list[str]:
    """One configuration's verdict, settings and table."""
    lines = [
        f"### {res['config']}: {'PASS' if res['pass'] else 'FAIL'}",
        "",
        f"{res['upsampling']} decoder, channel_base {res['channel_base']}, batch {res['batch']}, camera "
        f"{res['camera']}, novel camera {res['novel_camera']}, explicit mirror inputs "
        f"{res['explicit_mirror_inputs']}, {res['depth_samples']} samples; forward ours {res['ours_forward_s']:.1f} s, "
        f"official {res['official_forward_s']:.1f} s; second-branch residual std {res['residual_std']:.3g}.",
        "",
        "| tensor | shape | max \\|Δ\\| | mean \\|Δ\\| | max \\|official\\| | tol | pass |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in res["rows"]:
        shape = "×".join(map(str, row["shape"])) if row["shape"] else "–"
        verdict = "yes" if row["pass"] else f"NO ({row.get('n_outside', row.get('note'))})"
        lines.append(
            f"| {row['tensor']} | {shape} | {_fmt(row['max_abs_diff'])} | {_fmt(row.get('mean_abs_diff'))} | "
            f"{_fmt(row['max_abs_official'])} | {row['tolerance']:.0e} | {verdict} |"
        )
    return [*lines, ""]


def report_markdown(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = [
        f"Official TriPlaneNet v2 vs ours, {meta['device']}, torch {meta['torch']}, {meta['threads']} threads, "
        f"official custom ops: {meta['official_ops']}, deterministic rendering, random seeded weights "
        f"(seed {meta['seed']}). Pass: |Δ| ≤ tol + tol·|official| everywhere.",
        "",
    ]
    for res in results:
        lines += section_markdown(res)
    return "\n".join(lines)


def write_report(out: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    markdown = report_markdown(meta, results)
    write_text_atomic(out / "official_v2_parity.json", json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    write_text_atomic(out / "official_v2_parity.md", markdown)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="path of a TriPlaneNet checkout (with v2)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--depth-samples", type=int, default=24, help="coarse = fine samples per ray (both sides)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--official-ops",
        choices=("cuda", "ref"),
        default="ref",
        help="EG3D's custom ops in the official code: ref (PyTorch reference; CPU) or cuda",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/official_v2_parity"))
    args = parser.parse_args()
    names = [n for n in args.configs.split(",") if n]
    for name in names:
        if name not in CONFIGS:
            raise SystemExit(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
    torch.set_num_threads(args.threads)
    official = import_official_v2(args.official.resolve(), args.official_ops)
    meta = {
        "device": "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "official": str(args.official),
        "official_ops": args.official_ops,
        "seed": args.seed,
        "tolerances": {"codes_planes": CODE_TOL, "images_depth": IMAGE_TOL},
    }
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    for name in names:
        result = run_config(official, CONFIGS[name], args.depth_samples, args.seed)
        results.append(result)
        meta["wall_s"] = time.perf_counter() - start
        write_report(args.out, meta, results)
        print("\n".join(section_markdown(result)), flush=True)
    print(f"wall time {meta['wall_s']:.1f} s; overall {'PASS' if all(r['pass'] for r in results) else 'FAIL'}")
    sys.exit(0 if all(r["pass"] for r in results) else 1)


if __name__ == "__main__":
    main()
