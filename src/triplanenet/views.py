"""Rendering helpers shared by generation, inversion and editing: fixed views, yaw strips and orbit videos."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from triplanenet.eg3d.camera import camera_label, orbit_labels
from triplanenet.eg3d.generator import SynthesisOutput, TriPlaneGenerator
from triplanenet.io.images import tensor_to_uint8


def default_label(generator: TriPlaneGenerator, yaw: float = 0.0, pitch: float = 0.0, batch: int = 1) -> torch.Tensor:
    """(batch, 25) look-at camera at the generator's average radius and pivot, FFHQ intrinsics."""
    rendering = generator.config.rendering
    yaws = torch.full((batch,), float(yaw))
    pitches = torch.full((batch,), float(pitch))
    return camera_label(yaws, pitches, radius=rendering.avg_camera_radius, pivot=rendering.avg_camera_pivot)


@torch.no_grad()
def render_labels(
    generator: TriPlaneGenerator,
    planes: torch.Tensor,
    ws: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 4,
    deterministic: bool = True,
) -> Iterator[SynthesisOutput]:
    """Render one sample's tri-planes (1, 3, C, R, R) at each camera of labels (N, 25), in batches."""
    device = planes.device
    for start in range(0, labels.shape[0], batch_size):
        chunk = labels[start : start + batch_size].to(device)
        count = chunk.shape[0]
        yield generator.synthesis(
            ws.expand(count, -1, -1),
            chunk,
            planes=planes.expand(count, -1, -1, -1, -1),
            deterministic=deterministic,
        )


def orbit_frames(
    generator: TriPlaneGenerator,
    planes: torch.Tensor,
    ws: torch.Tensor,
    n_frames: int = 60,
    batch_size: int = 4,
) -> Iterator[np.ndarray]:
    """uint8 frames of EG3D's orbit path (yaw ±0.35 sine, pitch wobble) around one sample."""
    rendering = generator.config.rendering
    labels = orbit_labels(n_frames, radius=rendering.avg_camera_radius, pivot=rendering.avg_camera_pivot)
    for out in render_labels(generator, planes, ws, labels, batch_size):
        for image in out.image:
            yield tensor_to_uint8(image)
