"""``triplanenet invert-video``: a face video → per-frame 3D inversions → re-rendered videos (same and novel view)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import torch
import typer

from triplanenet.cli.common import (
    CheckpointOption,
    FastOption,
    GeneratorOption,
    ModelOption,
    PoseOption,
    PresetOption,
    console,
    fast_settings,
    load_cli_model,
    output_folder,
    resolve_device,
    user_errors,
)
from triplanenet.errors import ConfigError
from triplanenet.preprocess.pose_methods import PoseNetworks, check_pose_method


@user_errors
def invert_video(
    video: Annotated[Path, typer.Argument(help="Input video (MP4, MOV, ...; anything ffmpeg reads).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("outputs/invert_video"),
    model_path: ModelOption = None,
    checkpoint: CheckpointOption = None,
    generator: GeneratorOption = None,
    preset: PresetOption = None,
    yaw: Annotated[float, typer.Option(help="Novel-view camera yaw, radians (absolute, > 0 = camera to +x).")] = 0.5,
    pitch: Annotated[float, typer.Option(help="Novel-view camera pitch, radians (< 0 = from above).")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Frames per encoder pass.")] = 4,
    max_frames: Annotated[int | None, typer.Option(help="Use at most this many frames.")] = None,
    stride: Annotated[int, typer.Option(help="Use every N-th frame.")] = 1,
    smoothing: Annotated[
        float, typer.Option(help="Temporal smoothing of crops and cameras: Gaussian sigma in frames (0 = off).")
    ] = 2.0,
    background: Annotated[
        str, typer.Option(help="none | white | black: composite renders over a colour with the rendered opacity.")
    ] = "none",
    camera: Annotated[str, typer.Option(help="official (keeps head roll) | lookat (roll-free).")] = "official",
    pad_mode: Annotated[str, typer.Option(help="Fill outside the frame: reflect | edge | constant.")] = "reflect",
    pose: PoseOption = "3ddfa",
    cttr: Annotated[bool, typer.Option("--cttr/--no-cttr", help="Cascaded test-time refinement.")] = False,
    fast: FastOption = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "auto",
) -> None:
    """Invert every frame of a face video and write reconstruction.mp4, novel_view.mp4, side_by_side.mp4, frames.json.

    Faces are detected per frame and tracked; each frame's camera comes from --pose (as in preprocess); landmarks
    and cameras are smoothed over time (--smoothing), frames where detection fails are interpolated from their
    neighbours. Without a model option the bundled default model (procedural heads, CPU-sized) is used.

    Example: triplanenet invert-video clip.mp4 --out results/clip --checkpoint triplanenet_v2_final.pth
    --generator ffhq512-128.pth --yaw 0.5
    """
    output_folder(out)
    from triplanenet.inverters.encoder import TriPlaneNetInverter
    from triplanenet.preprocess.mtcnn import load_mtcnn
    from triplanenet.preprocess.video import prepare_video
    from triplanenet.video_inversion import invert_video as run_inversion

    if batch_size < 1 or stride < 1 or (max_frames is not None and max_frames < 1):
        raise ConfigError("--batch-size, --stride and --max-frames must be >= 1")
    if smoothing < 0:
        raise ConfigError("--smoothing must be >= 0 (frames)")
    if background not in ("none", "white", "black"):
        raise ConfigError(f"--background must be none, white or black, got {background!r}")
    if camera not in ("official", "lookat"):
        raise ConfigError(f"--camera must be official or lookat, got {camera!r}")
    if pad_mode not in ("reflect", "edge", "constant"):
        raise ConfigError(f"--pad-mode must be reflect, edge or constant, got {pad_mode!r}")
    networks = PoseNetworks.load(check_pose_method(pose, "--pose"))  # missing weights: one line, before the model
    torch_device = resolve_device(device)
    settings = fast_settings(fast, torch_device)
    model = load_cli_model(model_path, checkpoint, generator, preset, torch_device)

    started = time.perf_counter()
    prepared = prepare_video(
        video,
        max_frames=max_frames,
        stride=stride,
        smoothing=smoothing,
        camera=camera,  # type: ignore[arg-type]
        pad_mode=pad_mode,  # type: ignore[arg-type]
        model=load_mtcnn(device=torch_device),
        pose=networks.method,
        networks=networks,
    )
    seconds_preprocess = time.perf_counter() - started
    missing = int((~prepared.detected).sum())
    if missing:
        console.print(
            f"[yellow]warning:[/] no face detected in {missing} of {len(prepared)} frame(s); "
            "their crops and cameras were interpolated from neighbouring frames",
            highlight=False,
            soft_wrap=True,
        )
    inverter = TriPlaneNetInverter(model, cttr=cttr, fast=settings)
    result = run_inversion(
        prepared,
        inverter,
        out,
        yaw=yaw,
        pitch=pitch,
        batch_size=batch_size,
        background=background,  # type: ignore[arg-type]
        extra_info={
            "video": str(video),
            "seconds_preprocess": round(seconds_preprocess, 4),
            "preprocess_frames_per_second": round(len(prepared) / max(seconds_preprocess, 1e-9), 3),
            "smoothing": smoothing,
            "pose": pose,
            "threads": torch.get_num_threads(),
        },
    )
    console.print(
        f"inverted {result.frames} frame(s) into [bold]{out}[/]: {result.frames_per_second:.2f} frames/s "
        f"(inversion + rendering), {len(prepared) / max(seconds_preprocess, 1e-9):.2f} frames/s preprocessing",
        highlight=False,
        soft_wrap=True,
    )
