"""Video inversion: a preprocessed clip → per-frame TriPlaneNet inversions → re-rendered videos.

:func:`invert_video` takes the output of :func:`triplanenet.preprocess.video.prepare_video` (per-frame encoder
inputs and smoothed cameras), inverts the frames in batches with
:meth:`~triplanenet.inverters.encoder.TriPlaneNetInverter.invert_and_render`, whose final render at each frame's own
camera is the reconstruction (``reconstruction.mp4``; not rendered a second time), renders the same tri-planes at one
fixed novel camera (``novel_view.mp4``, look-at camera at absolute ``yaw`` / ``pitch`` around the FFHQ pivot, input
intrinsics) under the inverter's fast settings, and writes ``side_by_side.mp4`` (aligned input | reconstruction
| novel view) and ``frames.json`` (per-frame cameras, detection flags and timings).

Background removal: no offline matting model ships with the project, so ``background="white"`` / ``"black"``
composites the renders over a flat colour using the renderer's accumulated opacity (``weight_sum``, the
volume-rendering alpha, bilinearly upsampled from the neural-rendering resolution to the output size):
``out = α·image + (1 − α)·colour``. This is only as good as the model's geometry: an FFHQ EG3D generator often
models the photo background as opaque surfaces behind the head, which then stays; on the bundled procedural-heads
model the background is empty space and is removed cleanly. ``mask.mp4`` (α as grey) is written too, so the
mask can be inspected or used in an editor. ``"none"`` (default) leaves the renders as they are.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from triplanenet.errors import ConfigError
from triplanenet.inverters.encoder import TriPlaneNetInverter
from triplanenet.preprocess.video import PreparedVideo

__all__ = ["VideoInversionResult", "invert_video"]

Background = Literal["none", "white", "black"]
VIDEO_FILES = ("reconstruction.mp4", "novel_view.mp4", "side_by_side.mp4")


@dataclass
class VideoInversionResult:
    """Summary of :func:`invert_video`.

    Attributes:
        out_dir: output folder.
        frames: frames inverted.
        files: written file names (relative to ``out_dir``).
        seconds_inversion: encoder time (all batches), seconds.
        seconds_rendering: rendering time (both views), seconds.
        frames_per_second: ``frames / (seconds_inversion + seconds_rendering)``.
    """

    out_dir: Path
    frames: int
    files: list[str]
    seconds_inversion: float
    seconds_rendering: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / max(self.seconds_inversion + self.seconds_rendering, 1e-9)


class _Writers:
    """Several MP4 files written frame by frame at once, each atomically (kept only if everything succeeds)."""

    def __init__(self, stack: contextlib.ExitStack, paths: list[Path], fps: float) -> None:
        import imageio.v2 as imageio

        from triplanenet.io.atomic import atomic_path

        self.writers: list[Any] = []
        for path in paths:
            tmp = stack.enter_context(atomic_path(path))
            writer = imageio.get_writer(
                tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8, macro_block_size=2
            )
            stack.callback(writer.close)  # closed before the atomic rename (callbacks run in reverse order)
            self.writers.append(writer)

    def append(self, frames: list[np.ndarray]) -> None:
        for writer, frame in zip(self.writers, frames, strict=True):
            writer.append_data(np.ascontiguousarray(frame))


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [−1, 1] → (B, H, W, 3) uint8."""
    scaled = (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _composite(image: torch.Tensor, alpha: torch.Tensor, background: Background) -> tuple[torch.Tensor, torch.Tensor]:
    alpha = F.interpolate(alpha.float(), size=image.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
    if background == "none":
        return image, alpha
    colour = 1.0 if background == "white" else -1.0
    return image * alpha + colour * (1 - alpha), alpha


def _batches(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@torch.no_grad()
def invert_video(
    video: PreparedVideo,
    inverter: TriPlaneNetInverter,
    out_dir: str | os.PathLike[str],
    *,
    yaw: float = 0.5,
    pitch: float = 0.0,
    batch_size: int = 4,
    background: Background = "none",
    fps: float | None = None,
    extra_info: dict[str, Any] | None = None,
) -> VideoInversionResult:
    """Invert every frame of a prepared clip and write the videos and ``frames.json`` (see the module docstring).

    Args:
        video: output of :func:`~triplanenet.preprocess.video.prepare_video`.
        inverter: a TriPlaneNet inverter (its model decides the device and output size S).
        out_dir: output folder (created).
        yaw, pitch: absolute novel-view camera angles in radians (EG3D convention; yaw > 0 moves the camera to +x).
        batch_size: frames per encoder pass.
        background: ``"none"``, ``"white"`` or ``"black"`` (opacity compositing, see the module docstring).
        fps: output frame rate (default: the clip's).
        extra_info: more entries for ``frames.json`` (e.g. preprocessing time).

    Returns:
        :class:`VideoInversionResult` with timings.
    """
    from triplanenet.eg3d.camera import novel_view_labels
    from triplanenet.io.atomic import write_json_atomic

    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if background not in ("none", "white", "black"):
        raise ConfigError(f"background must be 'none', 'white' or 'black', got {background!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = inverter.model.decoder
    rendering = generator.config.rendering
    novel_labels = novel_view_labels(
        video.labels, yaw, pitch=pitch, radius=rendering.avg_camera_radius, pivot=rendering.avg_camera_pivot
    )
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    clip_rate = float(video.fps) if video.fps and math.isfinite(video.fps) and video.fps > 0 else 25.0
    rate = float(fps) if fps is not None else clip_rate  # a clip without a usable rate is written at 25
    files = list(VIDEO_FILES) + (["mask.mp4"] if background != "none" else [])
    seconds_inversion = seconds_rendering = 0.0
    device = inverter.device
    with contextlib.ExitStack() as stack:
        writers = _Writers(stack, [out / name for name in files], rate)
        for chunk in _batches(len(video), batch_size):
            t0 = time.perf_counter()
            inputs = video.input_tensor(chunk)
            # The forward pass's own final render is the reconstruction; only the novel view is rendered again,
            # from the same tri-planes (no second backbone pass).
            batch = inverter.invert_and_render(inputs, video.labels[chunk])
            t1 = time.perf_counter()
            with inverter.render_context():
                novel = generator.synthesis(
                    batch.ws, novel_labels[chunk].to(device), planes=batch.planes, deterministic=True
                )
            recon, alpha = _composite(batch.image, batch.opacity, background)
            novel_image, _ = _composite(novel.image.float(), novel.weight_sum.float(), background)
            t2 = time.perf_counter()
            seconds_inversion += t1 - t0
            seconds_rendering += t2 - t1
            size = recon.shape[-1]
            crops = F.interpolate(inputs, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            recon_u8, novel_u8, crops_u8 = _to_uint8(recon), _to_uint8(novel_image), _to_uint8(crops)
            mask_u8 = (alpha[:, 0].cpu().numpy() * 255).round().astype(np.uint8)
            for k in range(recon_u8.shape[0]):
                frame_set = [recon_u8[k], novel_u8[k], np.concatenate((crops_u8[k], recon_u8[k], novel_u8[k]), 1)]
                if background != "none":
                    frame_set.append(np.repeat(mask_u8[k][..., None], 3, axis=2))
                writers.append(frame_set)
    result = VideoInversionResult(out, len(video), files, seconds_inversion, seconds_rendering)
    info: dict[str, Any] = {
        "frames": len(video),
        "fps": rate,
        "frame_size": list(video.frame_size),
        "output_size": int(generator.config.img_resolution),
        "method": inverter.name,
        "fast_mode": "fp32" if inverter.fast is None else inverter.fast.label,
        "device": str(device),
        "novel_view": {"yaw": yaw, "pitch": pitch},
        "background": background,
        "detected_frames": int(video.detected.sum()),
        "seconds_inversion": round(seconds_inversion, 4),
        "seconds_rendering": round(seconds_rendering, 4),
        "frames_per_second": round(result.frames_per_second, 3),
        **(extra_info or {}),
        "per_frame": [
            {
                "index": i,
                "detected": bool(video.detected[i]),
                "yaw": round(float(video.yaw[i]), 5),
                "pitch": round(float(video.pitch[i]), 5),
                "raw_yaw": None if np.isnan(video.raw_yaw[i]) else round(float(video.raw_yaw[i]), 5),
                "raw_pitch": None if np.isnan(video.raw_pitch[i]) else round(float(video.raw_pitch[i]), 5),
                "label": [float(np.float32(v)) for v in video.labels[i].tolist()],
            }
            for i in range(len(video))
        ],
    }
    write_json_atomic(out / "frames.json", info, indent=1)
    return result
