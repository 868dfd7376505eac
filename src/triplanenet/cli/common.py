"""Shared CLI plumbing: one-line errors, device selection, model options, list parsing, progress bars."""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import torch
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from triplanenet.errors import TriplaneNetError

if TYPE_CHECKING:
    from triplanenet.model import TriPlaneNet
    from triplanenet.perf import InferenceSettings

ModelOption = Annotated[
    Path | None,
    typer.Option("--model", help="Our TriPlaneNet .safetensors, or an official name (default: the bundled model)."),
]
CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        help="Official TriPlaneNet checkpoint: a name (triplanenet-v2, recommended, or triplanenet-v1; see "
        "`triplanenet download --list`) or a file, v2 (triplanenet_v2_final.pth) or v1 (triplanenet_final.pth), "
        "which needs --generator. A triplanenet train checkpoint works too."
    ),
]
GeneratorOption = Annotated[
    Path | None,
    typer.Option(
        help="EG3D generator of an official checkpoint: a file (ffhq512-128.pth / .pkl) or a name "
        "(triplanenet-ffhq512-128-pth, eg3d-ffhq512-128); named checkpoints default to theirs."
    ),
]
PresetOption = Annotated[
    str | None,
    typer.Option(help="'tiny' (v1) or 'tiny-v2': random-weight models, for testing the pipeline."),
]
DeviceOption = Annotated[str, typer.Option(help="cpu | cuda | auto")]
PoseOption = Annotated[
    str,
    typer.Option(
        help="Camera estimator: 3ddfa (3DDFA_V2 head-pose network, default) | mesh (468-point face mesh fit) | "
        "mtcnn (5 landmarks). Accuracy: docs/cameras.md."
    ),
]
FastOption = Annotated[
    str | None,
    typer.Option(
        "--fast",
        help="Fast mode of the feed-forward inversion (and of invert-video's renders): bf16, fp16 (CUDA), "
        "channels_last, compile, cuda_graphs (CUDA), joined by '+', e.g. bf16+cuda_graphs (accuracy: "
        "docs/benchmarks.md). Default: exact fp32.",
    ),
]

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` in one line and return the exit to raise.

    Under torchrun the other ranks name themselves (``error: rank 1: ...``), and an error of the command line, which
    every rank finds alike before the job starts, is printed by rank 0 only."""
    from triplanenet.distributed.world import current_rank, joined_job

    rank, world_size = current_rank()
    if world_size > 1 and rank > 0:
        if not joined_job():
            return typer.Exit(code=1)
        message = f"rank {rank}: {message}"
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def user_errors(func: F) -> F:
    """Turn our user-facing exceptions into one-line messages and Ctrl-C into a clean exit (code 130).

    Float options are checked first: ``nan`` and ``inf`` are refused for every command (:func:`check_finite_options`).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            check_finite_options(kwargs)
            return func(*args, **kwargs)
        except TriplaneNetError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished files are kept; nothing half-written was left behind")
            raise typer.Exit(code=130) from None
        except torch.cuda.OutOfMemoryError:
            raise fail("the GPU ran out of memory: use a smaller --batch-size or --device cpu") from None
        except OSError as exc:  # disk full, permissions, a file where a folder should be: the system's own reason
            raise fail(describe_os_error(exc)) from None

    return wrapper  # type: ignore[return-value]


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file-system operation: what failed, on which path, and what to do."""
    import errno

    reason = exc.strerror or str(exc) or type(exc).__name__
    where = f" ({exc.filename})" if exc.filename else ""
    advice = {
        errno.ENOSPC: "free some disk space or write elsewhere with --out, then rerun",
        errno.EDQUOT: "free some disk space or write elsewhere with --out, then rerun",
        errno.EACCES: "choose a folder you can write to",
        errno.EPERM: "choose a folder you can write to",
        errno.EROFS: "the file system is read-only; choose another folder",
        errno.EEXIST: "a file is in the way; choose another path or remove it",
        errno.ENOTDIR: "part of the path is a file, not a folder; choose another path",
    }.get(exc.errno or -1, "check the path and rerun")
    return f"{reason}{where}: {advice}"


def fast_settings(mode: str | None, device: torch.device) -> InferenceSettings | None:
    """``--fast MODE`` -> the settings (None when not given), checked against ``device``.

    Raises:
        ConfigError: unknown mode part, or a CUDA-only part (fp16, cuda_graphs) on the CPU.
    """
    from triplanenet.perf import InferenceSettings, check_settings

    if mode is None:
        return None
    settings = InferenceSettings.from_mode(mode)
    check_settings(settings, device)
    return settings


def output_folder(path: Path, option: str = "--out") -> Path:
    """Check, before any work starts, that the output folder ``path`` can be created or written into, so a long run
    cannot fail at the end because its results have nowhere to go. Nothing is created here (a command that stops on
    another bad option leaves no empty folder behind). Returns ``path``.

    Raises:
        TriplaneNetError: ``path`` or one of its parents is a file, or the folder (or the nearest existing parent,
            where it will be created) is not writable.
    """
    import os

    if path.exists() and not path.is_dir():
        raise TriplaneNetError(f"{option} {path} is a file; give a folder (it is created if missing)")
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise TriplaneNetError(f"{option} {path}: {existing} is a file, not a folder; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TriplaneNetError(f"{option} {path}: cannot write into {existing}; choose a folder you can write to")
    return path


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; validates explicit choices."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TriplaneNetError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TriplaneNetError("--device cuda was requested but no CUDA GPU is available: use --device cpu")
    return device


def parse_int_ranges(text: str, what: str = "seeds", example: str = "0-3,7") -> list[int]:
    """``"0-3,7"`` -> [0, 1, 2, 3, 7] (non-negative integers below 2**63); ``example`` goes into the error message.

    The count is checked against :data:`triplanenet.limits.SEEDS` before the list is built (``0-9999999999`` is
    refused at once)."""
    from triplanenet.limits import SEEDS

    limit = SEEDS.value()
    values: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            start_text, _, end_text = part.partition("-")
            start = int(start_text)
            end = int(end_text) if end_text else start
            if start < 0 or end < start or end >= 2**63:
                raise ValueError
            if len(values) + (end - start + 1) > limit:
                raise TriplaneNetError(
                    f"{what} {text[:40]!r} asks for more than {limit} {what} in one run; split the range over "
                    f"several runs, or set {SEEDS.env} to raise the limit"
                )
            values.extend(range(start, end + 1))
    except ValueError:
        raise TriplaneNetError(f"cannot parse {what} {text[:60]!r}: use non-negative numbers like {example}") from None
    if not values:
        raise TriplaneNetError(f"no {what} given")
    return values


def parse_floats(text: str, what: str) -> list[float]:
    """``"-0.4,0,0.4"`` -> [-0.4, 0.0, 0.4] (finite numbers only: ``nan`` and ``inf`` are refused)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise TriplaneNetError(
            f"cannot parse {what} {text[:60]!r}: use comma-separated numbers like -0.4,0,0.4"
        ) from None
    if not values:
        raise TriplaneNetError(f"no {what} given")
    if not all(math.isfinite(value) for value in values):
        raise TriplaneNetError(f"{what} {text[:60]!r} holds nan or inf: use finite numbers like -0.4,0,0.4")
    return values


def check_finite_options(options: dict[str, Any]) -> None:
    """Refuse ``nan``/``inf`` in any float option (typer accepts them: ``--trunc nan`` gave black images).

    Raises:
        TriplaneNetError: naming the first non-finite option.
    """
    for name, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise TriplaneNetError(f"--{name.replace('_', '-')} is {value}: give a finite number")


def check_sizes(*, depth_samples: int | None = None, mesh_resolution: int | None = None) -> None:
    """Bounds of the options that size a computation: ``--depth-samples`` (4 ..
    :data:`~triplanenet.limits.DEPTH_SAMPLES`) and ``--mesh-resolution`` (8 ..
    :data:`~triplanenet.limits.MESH_RESOLUTION`), checked before anything is rendered or allocated.

    Raises:
        TriplaneNetError / ConfigError: a value out of its range (the message says how to raise a limit).
    """
    from triplanenet.limits import DEPTH_SAMPLES, MESH_RESOLUTION

    if depth_samples is not None:
        if depth_samples < 4:
            raise TriplaneNetError("--depth-samples must be at least 4")
        DEPTH_SAMPLES.check(depth_samples, "--depth-samples")
    if mesh_resolution is not None:
        if mesh_resolution < 8:
            raise TriplaneNetError("--mesh-resolution must be at least 8")
        MESH_RESOLUTION.check(mesh_resolution, "--mesh-resolution")


def progress(rate: bool = False) -> Progress:
    """A rich progress bar on stderr (quiet when stderr is not a terminal); ``rate``: an images/s column, read from
    the task field ``rate`` (give it in ``add_task``)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if rate:
        columns.append(TextColumn("{task.fields[rate]:.2f} images/s"))
    return Progress(
        *columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )


@contextlib.contextmanager
def console_warnings(prefix: str) -> Iterator[None]:
    """Show Python warnings raised inside the block as one-line ``warning: prefix: message`` console lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        console.print(f"[yellow]warning:[/] {prefix}: {warning.message}", highlight=False)


def load_cli_model(
    model_path: Path | None,
    checkpoint: Path | None,
    generator: Path | None,
    preset: str | None,
    device: torch.device,
) -> TriPlaneNet:
    """The TriPlaneNet chosen by ``--model`` / ``--checkpoint --generator`` / ``--preset``; the bundled default model
    when none is given. Official names (``--checkpoint triplanenet-v2``) resolve to their cached downloads inside
    :func:`~triplanenet.io.model_checkpoints.load_triplanenet` (:func:`triplanenet.io.registry.resolve_checkpoint`).

    Raises:
        TriplaneNetError: several sources, ``--generator`` without ``--checkpoint``, an unknown preset, or a name
            that is not downloaded yet.
    """
    from triplanenet.io.model_checkpoints import load_triplanenet
    from triplanenet.model import TriPlaneNet, TriPlaneNetConfig

    chosen = [
        name for name, value in (("--model", model_path), ("--checkpoint", checkpoint), ("--preset", preset)) if value
    ]
    if len(chosen) > 1:
        raise TriplaneNetError(
            f"choose one model source, not {' and '.join(chosen)}: --model ours.safetensors, --checkpoint "
            "triplanenet-v2 (or triplanenet_v2_final.pth --generator ffhq512-128.pth), --preset tiny, or none for "
            "the bundled model"
        )
    if generator is not None and checkpoint is None:
        raise TriplaneNetError(
            "--generator goes with --checkpoint triplanenet_v2_final.pth (or v1's triplanenet_final.pth)"
        )
    if model_path is not None:
        return load_triplanenet(model_path, device=device)
    if checkpoint is not None:
        return load_triplanenet(checkpoint, generator=generator, device=device)
    if preset is not None:
        versions = {"tiny": 1, "tiny-v2": 2}
        if preset not in versions:
            raise TriplaneNetError(f"unknown --preset {preset!r}: 'tiny' or 'tiny-v2' (random weights)")
        torch.manual_seed(0)
        return TriPlaneNet(TriPlaneNetConfig.tiny(versions[preset])).eval().to(device)  # type: ignore[arg-type]
    from triplanenet.demo import load_default_model

    return load_default_model(device)
