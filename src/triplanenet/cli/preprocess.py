"""``triplanenet preprocess``: in-the-wild photos → aligned 512² crops + EG3D ``dataset.json`` (a training folder)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from triplanenet.cli.common import PoseOption, console, output_folder, user_errors
from triplanenet.errors import ConfigError, TriplaneNetError
from triplanenet.preprocess.pose_methods import PoseNetworks, check_pose_method

if TYPE_CHECKING:
    from triplanenet.distributed.progress import JobProgress

# Folders are expanded into files with these extensions; files given by name are always tried.
PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".heic"}


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given, folders expanded to their photo files (sorted, not recursive)."""
    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            paths.extend(sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES))
        else:
            paths.append(item)
    if not paths:
        raise TriplaneNetError("no input photos found (give image files or a folder containing photos)")
    return paths


@user_errors
def preprocess(
    inputs: Annotated[list[Path], typer.Argument(help="Photos (any size, EXIF rotation honoured) or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: crops, dataset.json, report.")] = Path(
        "outputs/preprocessed"
    ),
    all_faces: Annotated[
        bool, typer.Option("--all-faces", help="Crop every face as <stem>_face<k>.png (default: the largest).")
    ] = False,
    pad_mode: Annotated[
        str, typer.Option(help="Fill outside the photo: reflect | edge | constant (black, EG3D's script).")
    ] = "reflect",
    camera: Annotated[
        str, typer.Option(help="official (label keeps head roll, like EG3D's) | lookat (roll-free look-at).")
    ] = "official",
    pose: PoseOption = "3ddfa",
    cameras: Annotated[
        Path | None,
        typer.Option(help="Use these cameras, not estimated ones: official dataset.json / cameras.json / <img>.json."),
    ] = None,
    deep3d: Annotated[
        Path | None, typer.Option(help="Folder of Deep3DFaceRecon <stem>.mat outputs: their pose gives the camera.")
    ] = None,
    min_face_px: Annotated[float, typer.Option(help="Refuse faces narrower than this (pixels).")] = 32.0,
    max_detect_side: Annotated[
        int, typer.Option(help="Detect faces on a copy at most this many pixels long (0 = full size).")
    ] = 1024,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="When OUT already has a crop of the same name from another photo, replace it (default: add the "
            "new one as <stem>_2.png).",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Skip photos that an earlier run into OUT completed (their completion records, crops and labels "
            "check out); process the rest. Also how a run under torchrun works.",
        ),
    ] = False,
) -> None:
    """Detect, align (EG3D FFHQ recipe) and pose faces in photos; write a training-ready dataset folder.

    Bad files (no face, tiny face, corrupt, not an image) are reported and skipped; the exit code is 1 if any
    file failed. Outcomes per file: OUT/preprocess_report.json. OUT can be grown over several runs; it is a valid
    dataset at every moment, also after Ctrl-C (re-run the command to finish).

    Example: triplanenet preprocess photos/ --out data/mine --all-faces
    """
    output_folder(out)
    from triplanenet.preprocess.mtcnn import load_mtcnn

    if pad_mode not in ("reflect", "edge", "constant"):
        raise ConfigError(f"--pad-mode must be reflect, edge or constant, got {pad_mode!r}")
    if camera not in ("official", "lookat"):
        raise ConfigError(f"--camera must be official or lookat, got {camera!r}")
    if max_detect_side < 0 or 0 < max_detect_side < 64:
        raise ConfigError("--max-detect-side must be 0 (full size) or at least 64")
    check_pose_method(pose, "--pose")
    paths = expand_inputs(inputs)
    model = load_mtcnn()
    PoseNetworks.load(pose)  # missing weights: one line before any photo
    options = {
        "all_faces": all_faces,
        "camera": camera,
        "pad_mode": pad_mode,
        "min_face_px": min_face_px,
        "max_detect_side": max_detect_side or None,
        "cameras": cameras,
        "deep3d_dir": deep3d,
        "pose_method": pose,
    }
    # Always through the sharded path (one process = one rank): every committed photo gets a completion record, so
    # any run, crashed or not, can be resumed with --resume.
    _preprocess_sharded(paths, out, options, overwrite, resume, model)


def _preprocess_sharded(
    paths: list[Path], out: Path, options: dict[str, Any], overwrite: bool, resume: bool, model: Any
) -> None:
    """``preprocess`` split over torchrun's ranks and/or resumed (:mod:`triplanenet.preprocess.sharded`)."""
    from triplanenet.cli.sharding import job_progress, throughput
    from triplanenet.distributed.world import process_group
    from triplanenet.preprocess.batch import PhotoOutcome
    from triplanenet.preprocess.sharded import preprocess_sharded

    def on_commit(outcome: PhotoOutcome) -> None:
        if outcome.ok and "--overwrite" in outcome.message:  # a name clash with an existing crop
            console.print(f"[yellow]note[/] {Path(outcome.path).name}: {outcome.message}", highlight=False)

    with process_group(None) as world, contextlib.ExitStack() as stack:

        def counter(completed: int) -> JobProgress:
            tracker, _ = stack.enter_context(job_progress(world, "preprocessing", len(paths), completed))
            return tracker

        report, tracker = preprocess_sharded(
            world, paths, out, options, overwrite=overwrite, resume=resume, model=model, progress=counter,
            on_commit=on_commit,
        )  # fmt: skip
    if report is None:
        return
    ok = len(report.outcomes) - len(report.failed)
    crops = sum(len(o.outputs) for o in report.outcomes)
    console.print(
        f"preprocessed {ok} of {len(report.outcomes)} photo(s) into {crops} crop(s) in [bold]{out}[/]; "
        f"{throughput(tracker, world)}; report: preprocess_report.json",
        highlight=False,
        soft_wrap=True,
    )
    if report.failed:
        raise typer.Exit(code=1)
