"""``triplanenet eval`` (metrics of inversion methods against ground truth) and ``triplanenet ablate``."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from triplanenet.cli.common import (
    CheckpointOption,
    GeneratorOption,
    PresetOption,
    console,
    load_cli_model,
    output_folder,
    parse_floats,
    resolve_device,
    user_errors,
)
from triplanenet.distributed.world import World, process_group
from triplanenet.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from triplanenet.distributed.progress import JobProgress
    from triplanenet.eval.protocol import EvalOptions, EvalResult, EvalSet, IdentityMetric
    from triplanenet.model import TriPlaneNet


def parse_method_options(
    methods: list[str], steps: int | None, options: list[str], step_scale: float | None = None
) -> dict[str, dict[str, Any]]:
    """``--steps`` / ``--step-scale`` (every optimisation method; feed-forward ones ignore them) and
    ``-O METHOD:key=value`` into per-method keyword options for ``build_inverter``."""
    from triplanenet.inverters import scaled_step_options, step_options

    parsed: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for method in methods:
        if step_scale is not None:
            parsed[method].update(scaled_step_options(method, step_scale))
        if steps is not None:
            parsed[method].update(step_options(method, steps))
    for text in options:
        method, colon, assignment = text.partition(":")
        key, equals, raw = assignment.partition("=")
        if not colon or not equals or not key.strip():
            raise ConfigError(f"option {text!r} must look like METHOD:key=value (e.g. w+-opt:steps=200)")
        if method not in parsed:
            raise ConfigError(f"option {text!r} names {method!r}, which is not in --method ({', '.join(methods)})")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parsed[method][key.strip()] = value
    return {m: o for m, o in parsed.items() if o}


@user_errors
def eval_command(
    method: Annotated[
        str, typer.Option("--method", "-m", help="Comma-separated methods (see `triplanenet invert --help`), or all.")
    ] = "triplanenet,w+-pred",
    data: Annotated[
        str, typer.Option(help="'synthetic' (held-out procedural heads) or a folder with dataset.json + images.")
    ] = "synthetic",
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("outputs/eval"),
    heads: Annotated[int, typer.Option(help="Heads for --data synthetic; image limit for a folder.")] = 8,
    model: Annotated[
        Path | None, typer.Option(help="TriPlaneNet .safetensors / training .pt (default: the bundled model).")
    ] = None,
    checkpoint: CheckpointOption = None,
    generator: GeneratorOption = None,
    preset: PresetOption = None,
    identity_net: Annotated[
        Path | None,
        typer.Option(help="ArcFace model_ir_se50.pth, CurricularFace_Backbone.pth or our identity .safetensors."),
    ] = None,
    mesh_ad: Annotated[bool, typer.Option("--mesh-ad/--no-mesh-ad", help="Geometric AD against reference meshes.")] = (
        True
    ),
    yaws: Annotated[str, typer.Option(help="Novel-view yaws in radians.")] = "-0.8,-0.4,0,0.4,0.8",
    steps: Annotated[int | None, typer.Option(help="Steps for every optimisation method (default: theirs).")] = None,
    step_scale: Annotated[
        float | None, typer.Option(help="Multiply every optimisation method's default step counts by this.")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-O", help="METHOD:key=value passed to that method.")
    ] = None,
    mesh_resolution: Annotated[int, typer.Option(help="Marching-cubes grid for our meshes (AD).")] = 128,
    reference_resolution: Annotated[
        int, typer.Option(help="Marching-cubes grid of the procedural ground-truth meshes (AD).")
    ] = 160,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "auto",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Keep the images an earlier run into OUT completed (their stored results check out) and evaluate "
            "the others; the report covers all.",
        ),
    ] = False,
) -> None:
    """Evaluate inversion methods: MSE, LPIPS, MS-SSIM, identity (same view and novel yaws), depth error, AD and
    time per image; writes report.md, metrics.csv, per_image.csv, comparison.png and novel_views.png."""
    output_folder(out)
    from triplanenet.eval.protocol import EvalOptions, evaluate, folder_set, load_identity_metric, synthetic_heads
    from triplanenet.eval.report import write_report
    from triplanenet.inverters import METHOD_NAMES

    methods = list(METHOD_NAMES) if method == "all" else [m.strip() for m in method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown or not methods:
        raise ConfigError(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METHOD_NAMES)}")
    if heads < 1:
        raise ConfigError("--heads must be at least 1")
    torch_device = resolve_device(device)
    with process_group(torch_device) as world:
        torch_device = world.device(torch_device)
        network = load_cli_model(model, checkpoint, generator, preset, torch_device)
        size = network.decoder.config.img_resolution
        dataset = synthetic_heads(heads, size)[0] if data == "synthetic" else folder_set(data, size, limit=heads)
        identity = load_identity_metric(identity_net)
        from triplanenet.errors import CheckpointError
        from triplanenet.losses.lpips import LPIPS

        try:
            lpips = LPIPS.from_file().to(torch_device)
        except CheckpointError:
            lpips = None
            if world.is_main:
                console.print("note: LPIPS weights not installed; the LPIPS columns are left out")
        options = EvalOptions(
            novel_yaws=tuple(parse_floats(yaws, "yaws")),
            mesh_ad=mesh_ad,
            mesh_resolution=mesh_resolution,
            reference_resolution=reference_resolution,
            method_options=parse_method_options(methods, steps, list(option or []), step_scale),
        )
        if world.is_main:
            console.print(f"identity network: {identity.name if identity else 'none'}", highlight=False)
        if world.distributed or resume:
            result = _evaluate_sharded(world, network, methods, dataset, options, identity, lpips, out, resume)
        else:
            result = evaluate(network, methods, dataset, options, identity, lpips, log=lambda m: console.print(m))
    if result is None:  # another rank than 0
        return
    command = "triplanenet " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    paths = write_report(result, out, command)
    typer.echo(paths["report"].read_text())
    console.print(f"wrote {', '.join(p.name for p in paths.values())} to {out} in {result.seconds:.1f} s")


def _evaluate_sharded(
    world: World,
    network: TriPlaneNet,
    methods: list[str],
    dataset: EvalSet,
    options: EvalOptions,
    identity: IdentityMetric | None,
    lpips: torch.nn.Module | None,
    out: Path,
    resume: bool,
) -> EvalResult | None:
    """``eval`` split over torchrun's ranks and/or resumed (:mod:`triplanenet.eval.sharded`); rank 0's result."""
    from dataclasses import asdict

    from triplanenet.cli.sharding import job_progress, rank_tag, throughput
    from triplanenet.eval.sharded import evaluate_sharded

    fingerprint = {"data": dataset.source, "methods": methods, "options": asdict(options), "argv": _model_args()}
    log = lambda m: console.print(f"{m}{rank_tag(world)}", highlight=False)  # noqa: E731
    with contextlib.ExitStack() as stack:

        def counter(completed: int) -> JobProgress:
            tracker, _ = stack.enter_context(job_progress(world, "evaluating", len(dataset.items), completed))
            return tracker

        result, tracker = evaluate_sharded(
            world, network, methods, dataset, options, identity, lpips, out, fingerprint, resume=resume,
            progress=counter, log=log,
        )  # fmt: skip
    if result is not None:
        if not result.data.items:
            raise ConfigError("no image could be evaluated (see the failures above)")
        console.print(f"evaluated {throughput(tracker, world)}", highlight=False)
    return result


def _model_args() -> list[str]:
    """The model options of the command line (what a resumed run must share with the first one)."""
    argv, kept = sys.argv[1:], []
    for index, arg in enumerate(argv):
        name = arg.split("=", 1)[0]
        if name in ("--model", "--checkpoint", "--generator", "--preset", "--identity-net"):
            kept.append(arg if "=" in arg else f"{arg}={argv[index + 1] if index + 1 < len(argv) else ''}")
    return kept


@user_errors
def ablate(
    kind: Annotated[str, typer.Argument(help="synthetic-samples | symmetry")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (runs, tables, plots).")] = Path(
        "outputs/ablation"
    ),
    counts: Annotated[str, typer.Option(help="Synthetic-sample counts (synthetic-samples only).")] = "0,40,160,320",
    steps: Annotated[int, typer.Option(help="Training steps per run.")] = 300,
    add_triplanenet: Annotated[int, typer.Option(help="Step at which the second branch starts.")] = 60,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 4,
    world_identities: Annotated[int, typer.Option(help="Procedural training identities (6 views each).")] = 40,
    heads: Annotated[int, typer.Option(help="Held-out evaluation heads.")] = 6,
    mesh_ad: Annotated[bool, typer.Option("--mesh-ad/--no-mesh-ad", help="Also compute AD.")] = False,
    override: Annotated[
        list[str] | None, typer.Option("--override", "-O", help="Extra training key=value for every run.")
    ] = None,
) -> None:
    """Train and evaluate ablations: number of EG3D synthetic samples, or symmetry prior on/off + first branch only;
    writes <kind>.md/.csv/.png into --out."""
    output_folder(out)
    from triplanenet.eval.ablations import AblationSettings, run_symmetry_ablation, run_synthetic_samples_ablation

    settings = AblationSettings(
        steps=steps,
        add_triplanenet=min(add_triplanenet, steps),
        batch_size=batch_size,
        world_identities=world_identities,
        heads=heads,
        mesh_ad=mesh_ad,
        extra_overrides=list(override or []),
    )
    log = lambda m: console.print(m, highlight=False)  # noqa: E731
    if kind == "synthetic-samples":
        numbers = [int(v) for v in parse_floats(counts, "counts")]
        result = run_synthetic_samples_ablation(out, numbers, settings, log)
    elif kind == "symmetry":
        result = run_symmetry_ablation(out, settings, log)
    else:
        raise ConfigError(f"unknown ablation {kind!r}; choose synthetic-samples or symmetry")
    typer.echo(result.table)
    console.print(f"wrote the table, CSV and plot to {result.out} in {result.seconds:.0f} s")
