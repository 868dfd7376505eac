"""``triplanenet invert``: aligned face photos + cameras in, 3D heads out."""

from __future__ import annotations

import collections
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import typer

from triplanenet.cli.common import (
    CheckpointOption,
    FastOption,
    GeneratorOption,
    ModelOption,
    PoseOption,
    PresetOption,
    check_sizes,
    console,
    console_warnings,
    fast_settings,
    load_cli_model,
    output_folder,
    parse_floats,
    resolve_device,
    user_errors,
)
from triplanenet.cli.sharding import job_progress, throughput
from triplanenet.distributed.records import CompletionRecords, verify_completed
from triplanenet.distributed.shard import shard
from triplanenet.distributed.world import World, process_group
from triplanenet.errors import TriplaneNetError
from triplanenet.io.atomic import remove_stale_temporaries, write_json_atomic
from triplanenet.preprocess.pose_methods import check_pose_method

if TYPE_CHECKING:
    from triplanenet.perf import InferenceSettings

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
PAPER_YAWS = "-0.8,-0.4,0,0.4,0.8"


@dataclass
class _Job:
    path: Path
    image: torch.Tensor
    camera: torch.Tensor
    warning: str | None = None
    name: str = ""
    """The output folder's name (unique in this run, see :class:`OutputNames`)."""


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Expand folders into their image files (sorted, not recursive); a file named twice is kept once."""
    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            paths.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        else:
            paths.append(item)
    if not paths:
        raise TriplaneNetError("no input images found (give image files or a folder containing PNG/JPEG files)")
    unique: dict[str, Path] = {}
    for path in paths:
        unique.setdefault(_input_key(path), path)
    return list(unique.values())


def _input_key(path: Path) -> str:
    return str(path.resolve())


class OutputNames:
    """One output folder name per input (and per face), unique in the output folder, deterministic.

    An input keeps its file stem unless that name is taken (compared case-insensitively, as some file systems do):
    by another input of this run with the same stem, or by an earlier run in the same folder that recorded the name
    for a different input in ``summary.json``. Then the extension is added (``face.png`` + ``face.jpg`` ->
    ``face_png``, ``face_jpg``) and, where that is taken too, a hash of the absolute path (``a/x.png`` +
    ``b/x.png`` -> ``x_png``, ``x_png_3f2a9c1e``). Faces of ``--all-faces`` are ``<name>_face<k>``, with the same
    rule.

    Args:
        paths: this run's inputs.
        previous: folder name -> absolute input path, from the output folder's earlier ``summary.json``.
    """

    def __init__(self, paths: list[Path], previous: dict[str, str] | None = None) -> None:
        self._previous = {name.lower(): key for name, key in (previous or {}).items()}
        self._used: set[str] = set()
        self.inputs: dict[str, str] = {}
        """Folder name -> absolute input path, for every name handed out."""
        self._names: dict[str, str] = {}
        keys = [_input_key(path) for path in paths]
        stems = collections.Counter(Path(key).stem.lower() for key in keys)
        for key in keys:  # unambiguous stems first, so that they keep their plain name
            if stems[Path(key).stem.lower()] == 1 and self._free(Path(key).stem, key):
                self._names[key] = self._take(Path(key).stem, key)
        for key in sorted(keys):  # clashing inputs in path order, whatever the order they were given in
            if key not in self._names:
                stem, extension = Path(key).stem, Path(key).suffix.lstrip(".").lower() or "file"
                self._names[key] = self._first_free([f"{stem}_{extension}"], key)

    def name(self, path: Path) -> str:
        """The folder name of input ``path``."""
        return self._names[_input_key(path)]

    def faces(self, path: Path, count: int) -> list[str]:
        """Folder names for the ``count`` faces of input ``path``."""
        key = _input_key(path)
        return [self._first_free([f"{self._names[key]}_face{k}"], key) for k in range(count)]

    def _free(self, name: str, key: str) -> bool:
        return name.lower() not in self._used and self._previous.get(name.lower(), key) == key

    def _take(self, name: str, key: str) -> str:
        self._used.add(name.lower())
        self.inputs[name] = key
        return name

    def _first_free(self, candidates: list[str], key: str) -> str:
        hashed = f"{candidates[-1]}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        candidates = [*candidates, hashed, *(f"{hashed}_{k}" for k in range(2, 1000))]
        return self._take(next(c for c in candidates if self._free(c, key)), key)


def _previous_outputs(out: Path) -> dict[str, str]:
    """Folder -> input recorded by an earlier run's ``summary.json`` in ``out`` (folders that still exist)."""
    try:
        recorded = json.loads((out / "summary.json").read_text(encoding="utf-8")).get("outputs")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {
        name: key
        for name, key in recorded.items()
        if isinstance(name, str) and isinstance(key, str) and name and "/" not in name and (out / name).is_dir()
    }


def _prepare(path: Path, cameras: Path | None, size: int) -> _Job:
    from triplanenet.eg3d.camera import validate_label
    from triplanenet.inversion import prepare_image
    from triplanenet.io.cameras import camera_for_image
    from triplanenet.io.images import load_image

    image = load_image(path)
    height, width = image.shape[-2:]
    try:
        prepared = prepare_image(image, size)
    except TriplaneNetError as exc:
        raise type(exc)(f"{path.name}: {exc}") from None
    label = validate_label(camera_for_image(path, cameras))
    warning = None
    if (height, width) not in ((size, size), (2 * size, 2 * size)):
        warning = f"{path.name} is {width}x{height}; resized to {size}x{size} (expected an aligned {2 * size}² crop)"
    return _Job(path, prepared, label, warning)


def _prepare_jobs(
    path: Path,
    cameras: Path | None,
    size: int,
    align: bool,
    all_faces: bool,
    out: Path,
    names: OutputNames,
    pose: str = "3ddfa",
) -> list[_Job]:
    """Aligned crops with a camera as in :func:`_prepare`; a photo without any camera file (or with ``--align`` /
    ``--all-faces``) is first detected, aligned (EG3D recipe) and posed (``pose``: ``3ddfa``, ``mesh`` or
    ``mtcnn`` estimator), and its crop + camera saved in ``out``."""
    from triplanenet.inversion import prepare_image
    from triplanenet.preprocess.batch import align_photo_for_inversion, has_camera_source

    if not align and not all_faces and (cameras is not None or has_camera_source(path)):
        job = _prepare(path, cameras, size)
        job.name = names.name(path)
        return [job]

    def face_names(count: int) -> list[str]:
        return names.faces(path, count) if all_faces else [names.name(path)]

    # Each face is inverted as its own job, in its own folder (<name> or <name>_face<k>).
    return [
        _Job(path, prepare_image(face.image, size), face.label, face.note, name=face.name)
        for face in align_photo_for_inversion(
            path,
            out,
            all_faces=all_faces,
            face_names=face_names,
            pose_method=pose,  # type: ignore[arg-type]
        )
    ]


@user_errors
def invert(
    inputs: Annotated[list[Path], typer.Argument(help="Aligned face crops (EG3D framing) or photos, or folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; one subfolder per image.")] = Path(
        "outputs/invert"
    ),
    cameras: Annotated[
        Path | None,
        typer.Option(
            help="dataset.json / cameras.json / per-image JSON. Default: <image>.json or dataset.json beside it."
        ),
    ] = None,
    align: Annotated[
        bool,
        typer.Option(
            "--align/--no-align",
            help="Detect, align and pose un-aligned photos. Automatic for images without any camera file.",
        ),
    ] = False,
    all_faces: Annotated[
        bool, typer.Option("--all-faces", help="With alignment: invert every face as <stem>_face<k>.")
    ] = False,
    pose: PoseOption = "3ddfa",
    model_path: ModelOption = None,
    checkpoint: CheckpointOption = None,
    generator: GeneratorOption = None,
    preset: PresetOption = None,
    views: Annotated[str, typer.Option(help="Novel-view yaw offsets in radians.")] = PAPER_YAWS,
    method: Annotated[
        str,
        typer.Option(
            help="Inversion method: triplanenet, triplanenet+cttr, w+-pred (encoders, fast) or w-opt, w+-opt, "
            "eg3d-params, pti, triplane-opt, w+-pred+triplane-opt (optimisation, paper defaults, slow on CPU)."
        ),
    ] = "triplanenet",
    cttr: Annotated[
        bool, typer.Option("--cttr/--no-cttr", help="Cascaded test-time refinement (= --method triplanenet+cttr).")
    ] = False,
    steps: Annotated[
        int | None, typer.Option(help="Optimisation steps (default: the method's paper default; pti: both stages).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the optimisation methods' random draws.")] = None,
    fast: FastOption = None,
    depth_samples: Annotated[
        int | None, typer.Option(help="Coarse and fine samples per ray (official inference uses 96).")
    ] = None,
    mesh: Annotated[bool, typer.Option("--mesh/--no-mesh", help="Write a PLY mesh.")] = False,
    mesh_resolution: Annotated[int, typer.Option(help="Density grid side for --mesh.")] = 128,
    video: Annotated[bool, typer.Option("--video/--no-video", help="Write an orbit MP4.")] = False,
    frames: Annotated[int, typer.Option(help="Frames of the orbit video.")] = 48,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 4,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "auto",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Skip inputs whose outputs an earlier run completed (checked against their completion records: "
            "sizes and sha256 of every file, same input, same options); redo the rest.",
        ),
    ] = False,
) -> None:
    """Invert face photos into EG3D with TriPlaneNet and write renders, novel views, depth, latents and meshes.

    Example: triplanenet invert photos/ --cameras photos/dataset.json --checkpoint triplanenet_v2_final.pth
    --generator ffhq512-128.pth --mesh --out results/
    """
    output_folder(out)
    if batch_size < 1 or frames < 1:
        raise TriplaneNetError("--batch-size and --frames must be >= 1")
    check_sizes(depth_samples=depth_samples, mesh_resolution=mesh_resolution)
    check_pose_method(pose, "--pose")
    yaws = parse_floats(views, "views")
    paths = collect_inputs(inputs)
    torch_device = resolve_device(device)
    with process_group(torch_device) as world:
        torch_device = world.device(torch_device)
        model = load_cli_model(model_path, checkpoint, generator, preset, torch_device)
        if depth_samples is not None:
            model.decoder.set_rendering(depth_resolution=depth_samples, depth_resolution_importance=depth_samples)
        inverter = _build_inverter(model, method, cttr, steps, seed, fast_settings(fast, torch_device))
        fingerprint = {
            "command": "invert",
            "method": inverter.name,
            "model": [str(v) if v is not None else None for v in (model_path, checkpoint, generator, preset)],
            "cameras": None if cameras is None else str(cameras.resolve()),
            "align": align,
            "all_faces": all_faces,
            "pose": pose,
            "views": yaws,
            "steps": steps,
            "seed": seed,
            "fast": fast,
            "depth_samples": depth_samples,
            "mesh": mesh_resolution if mesh else None,
            "video": frames if video else None,
        }
        names = OutputNames(paths, _previous_outputs(out))
        run = _InvertRun(
            world, out, model.config.input_resolution, cameras, align, all_faces, names, inverter, pose=pose
        )

        def output(folder: Path, job: _Job, inversion: Any) -> None:
            _write_outputs(folder, job, inversion, yaws, mesh, mesh_resolution, video, frames)

        records = CompletionRecords(out, fingerprint)
        out.mkdir(parents=True, exist_ok=True)
        if world.is_main:
            records.clean()  # temporaries of a killed run, before any rank writes a record
        world.barrier()
        keys = [_input_key(path) for path in paths]
        finished = verify_completed(world, records, keys, list(paths)) if resume else {}
        todo = [index for index in range(len(paths)) if index not in finished]
        mine = [index for _, index in shard(todo, world.rank, world.world_size)]
        entries: list[tuple[int, dict[str, Any]]] = []
        with job_progress(world, "inverting", len(paths), len(finished)) as (tracker, bar):
            if bar is not None:
                _show_loss(bar, inverter)
            for round_index in range(tracker.rounds(-(-len(mine) // batch_size))):
                chunk = mine[round_index * batch_size : (round_index + 1) * batch_size]
                failures: list[tuple[str, str]] = []
                entries.extend(run.invert_chunk([(i, paths[i]) for i in chunk], records, batch_size, failures, output))
                tracker.report(len(chunk), failures)
        gathered = world.gather_to_main(entries)
    if gathered is None:  # another rank than 0: rank 0 writes the summary and reports
        return
    merged = dict(finished)
    merged.update(dict(item for part in gathered for item in part))
    done = [name for index in sorted(merged) for name in merged[index]["inverted"]]
    failures_by_input = {k: v for index in sorted(merged) for k, v in merged[index]["failed"].items()}
    # Which input each folder holds (kept across runs in this folder, so that a later run never reuses a name).
    outputs = _previous_outputs(out)
    for index, path in enumerate(paths):
        outputs[run.names.name(path)] = keys[index]
        outputs.update(merged.get(index, {}).get("outputs", {}))
    outputs = {name: key for name, key in outputs.items() if (out / name).is_dir()}
    summary = {
        "inverted": done,
        "failed": failures_by_input,
        "method": inverter.name,
        "views": yaws,
        "outputs": dict(sorted(outputs.items())),
    }
    write_json_atomic(out / "summary.json", summary)  # strict JSON: no NaN/Infinity tokens
    found = len(done) + sum(1 for name in failures_by_input if name.endswith(")"))
    faces = f" ({found} face(s) found)" if all_faces or len(done) > len(paths) else ""
    skipped = f", {len(failures_by_input)} failed (see summary.json)" if failures_by_input else ""
    console.print(
        f"inverted {len(done)} face(s) from {len(paths)} image(s){faces}{skipped} into [bold]{out}[/]; "
        f"{throughput(tracker, world)}",
        highlight=False,
    )
    if failures_by_input:
        raise typer.Exit(code=1)


@dataclass
class _InvertRun:
    """What every round of a (sharded) ``invert`` run shares."""

    world: World
    out: Path
    size: int
    cameras: Path | None
    align: bool
    all_faces: bool
    names: OutputNames
    inverter: Any
    pose: str = "3ddfa"
    """Camera estimator for the photos that are aligned here (``--pose``: ``3ddfa``, ``mesh`` or ``mtcnn``)."""

    def invert_chunk(
        self,
        chunk: list[tuple[int, Path]],
        records: CompletionRecords,
        batch_size: int,
        failures: list[tuple[str, str]],
        output: Callable[[Path, _Job, Any], None],
    ) -> list[tuple[int, dict[str, Any]]]:
        """Invert the inputs of one round; returns ``(position, {"inverted", "failed", "outputs"})`` per input and
        appends ``(input, message)`` to ``failures``. A fully written input gets its completion record."""
        entries: dict[int, dict[str, Any]] = {}
        jobs: list[tuple[int, _Job]] = []
        for index, path in chunk:
            key = _input_key(path)
            records.remove(key)  # its outputs are rewritten now; a record would claim them too early
            entry: dict[str, Any] = {"inverted": [], "failed": {}, "outputs": {}}
            entries[index] = entry
            try:
                new_jobs = _prepare_jobs(
                    path, self.cameras, self.size, self.align, self.all_faces, self.out, self.names, self.pose
                )
            except TriplaneNetError as exc:
                entry["failed"][str(path)] = str(exc)
                failures.append((path.name, str(exc)))
                continue
            for job in new_jobs:
                if job.warning:
                    tag = f"rank {self.world.rank}: " if self.world.distributed else ""
                    console.print(f"[yellow]warning:[/] {tag}{job.warning}", highlight=False)
                entry["outputs"][job.name] = key
                jobs.append((index, job))
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            results = self.inverter.invert_batch(
                [j.image for _, j in batch], torch.stack([j.camera[0] for _, j in batch])
            )
            for (index, job), inversion in zip(batch, results, strict=True):
                try:
                    remove_stale_temporaries(self.out / job.name)  # left by a killed run in this folder
                    output(self.out / job.name, job, inversion)
                    entries[index]["inverted"].append(job.name)
                except TriplaneNetError as exc:
                    face = "" if job.name == self.names.name(job.path) else f" ({job.name})"
                    entries[index]["failed"][f"{job.path}{face}"] = str(exc)
                    failures.append((f"{job.path.name} ({job.name})", str(exc)))
        for index, path in chunk:
            entry = entries[index]
            if entry["failed"] or not entry["inverted"]:
                continue
            files = [
                file
                for name in entry["inverted"]
                for file in sorted((self.out / name).rglob("*"))
                if file.is_file() and not file.name.startswith(".")
            ]
            records.write(_input_key(path), files, entry, input_file=path)
        return sorted(entries.items())


def _build_inverter(
    model, method: str, cttr: bool, steps: int | None, seed: int | None, fast: InferenceSettings | None = None
):
    """The inverter for ``--method`` (``--cttr`` is an alias of ``--method triplanenet+cttr``)."""
    from triplanenet.inverters import OPTIMIZATION_METHODS, build_inverter, step_options

    if cttr:
        if method not in ("triplanenet", "triplanenet+cttr"):
            raise TriplaneNetError(f"--cttr only applies to --method triplanenet, not {method!r}")
        method = "triplanenet+cttr"
    options: dict[str, Any] = {}
    if fast is not None:
        if method in OPTIMIZATION_METHODS:
            raise TriplaneNetError(
                f"--fast applies to the feed-forward methods (triplanenet, triplanenet+cttr, w+-pred), not {method!r}"
            )
        options["fast"] = fast
    if steps is not None or seed is not None:
        if method not in OPTIMIZATION_METHODS:
            raise TriplaneNetError(
                f"--steps/--seed only apply to optimisation methods ({', '.join(OPTIMIZATION_METHODS)}), not {method!r}"
            )
        if steps is not None:
            if steps < 1:
                raise TriplaneNetError("--steps must be at least 1")
            options.update(step_options(method, steps))
        if seed is not None:
            options["seed"] = seed
    return build_inverter(method, model, **options)


def _show_loss(bar, inverter) -> None:
    """Give an optimisation inverter a second progress-bar line with its step count and current loss."""
    if not hasattr(inverter, "callback"):
        return
    line = bar.add_task(inverter.name, total=None, visible=False)

    def report(step: int, total: int, loss: float) -> None:
        bar.update(line, completed=step, total=total, visible=True, description=f"{inverter.name} loss {loss:.4g}")

    inverter.callback = report


def _write_outputs(
    folder: Path,
    job: _Job,
    inversion,
    yaws: list[float],
    mesh: bool,
    mesh_resolution: int,
    video: bool,
    frames: int,
) -> None:
    from triplanenet.io.images import (
        image_grid,
        resize_image,
        save_depth,
        save_image,
        save_png,
        tensor_to_uint8,
    )
    from triplanenet.io.mesh import write_ply

    folder.mkdir(parents=True, exist_ok=True)
    recon = inversion.render()
    final = recon.image[0]
    side = final.shape[-1]
    save_image(folder / "input.png", resize_image(job.image, side))
    save_image(folder / "reconstruction.png", final)
    save_depth(folder / "depth.png", recon.image_depth[0], mask=recon.weight_sum[0])
    novel = inversion.novel_views(yaws)
    novel_images = [tensor_to_uint8(image) for image in novel]
    save_png(folder / "novel_views.png", image_grid(novel_images))
    inversion.save(folder / "inversion.safetensors")
    save_png(
        folder / "comparison.png",
        image_grid([tensor_to_uint8(resize_image(job.image, side)), tensor_to_uint8(final), *novel_images]),
    )
    if mesh:
        with console_warnings(job.path.name):
            shape = inversion.mesh(resolution=mesh_resolution)
        write_ply(folder / "mesh.ply", shape)
    if video:
        inversion.video(folder / "orbit.mp4", frames=frames)
