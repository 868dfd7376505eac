"""MP4 writing through the ffmpeg binary shipped by ``imageio-ffmpeg`` (no system ffmpeg needed)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np

from triplanenet.errors import ConfigError
from triplanenet.io.atomic import atomic_path


def write_mp4(path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: int = 30, quality: int = 8) -> int:
    """Encode (H, W, 3) uint8 frames to an H.264 MP4, atomically. Returns the number of frames written.

    Sides are padded to even sizes as H.264 requires.

    Raises:
        ConfigError: ``fps`` is not a positive finite number (ffmpeg would silently pick its own rate).
    """
    import imageio.v2 as imageio

    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"the video frame rate must be a positive number, got {fps!r}")

    count = 0
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(
            tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=quality, macro_block_size=2
        )
        try:
            for frame in frames:
                writer.append_data(np.ascontiguousarray(frame))
                count += 1
        finally:
            writer.close()
    return count
