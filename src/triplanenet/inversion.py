"""Inversion results and the inverter interface.

An :class:`Inversion` is what every inversion method returns: W+ codes, optional tri-plane offsets (TriPlaneNet's
second branch, or directly optimised planes stored relative to the backbone) and the input camera, bound to the
generator they live in. Methods that fine-tune the generator (PTI, EG3D-params optimisation, optimised noise
buffers) bind the inversion to a private fine-tuned copy and remember the base generator it came from. It can
re-render from any camera, give depth and meshes, write orbit videos, and be saved to / loaded from a small
safetensors file.

File layout (one safetensors file): ``ws`` (1, num_ws, w_dim), ``camera`` (1, 25), optional ``offsets``
(1, 3·C, R, R) and, for fine-tuned generators, ``generator.<state-dict key>`` for every parameter/buffer whose value
differs from the base generator. The metadata holds ``base_generator_sha256`` (a fingerprint of the base generator's
full state dict) so that :meth:`Inversion.load` refuses to rebuild the fine-tuned copy on top of the wrong base.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from triplanenet.eg3d.camera import novel_view_labels, validate_label
from triplanenet.eg3d.generator import SynthesisOutput, TriPlaneGenerator
from triplanenet.errors import CheckpointError, InputImageError
from triplanenet.io.checkpoints import check_tensor_values
from triplanenet.io.mesh import Mesh
from triplanenet.io.safetensors_files import read_safetensors, write_safetensors
from triplanenet.io.video import write_mp4
from triplanenet.views import orbit_frames, render_labels

INVERSION_FORMAT = "triplanenet-inversion"
TUNED_PREFIX = "generator."
"""Tensor-name prefix of the fine-tuned generator's changed state-dict entries in an inversion file."""


def generator_fingerprint(generator: torch.nn.Module) -> str:
    """SHA-256 over every state-dict entry (name, dtype, shape, bytes) of ``generator``: identifies a base model."""
    digest = hashlib.sha256()
    for key, value in sorted(generator.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def changed_state(tuned: torch.nn.Module, base: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State-dict entries of ``tuned`` whose values differ from ``base`` (same architecture), as CPU tensors."""
    base_state = base.state_dict()
    changed: dict[str, torch.Tensor] = {}
    for key, value in tuned.state_dict().items():
        reference = base_state.get(key)
        if reference is None or reference.shape != value.shape or not torch.equal(value.cpu(), reference.cpu()):
            changed[key] = value.detach().cpu()
    return changed


@dataclass
class Inversion:
    """One inverted image.

    Attributes:
        generator: the EG3D generator the codes belong to.
        ws: (1, num_ws, w_dim) W+ codes.
        camera: (1, 25) camera label of the input image.
        offsets: (1, 3·C, R, R) tri-plane offsets added to the backbone planes, or None. Directly optimised planes
            P are stored as offsets ``P - backbone(ws)`` (the planes are always recomputed as backbone + offsets).
        method: name of the method that produced it (e.g. ``triplanenet``).
        base_generator: for fine-tuned inversions (PTI, ``eg3d-params``, optimised noise), the shared generator that
            ``generator`` (a private copy) was tuned from; None when ``generator`` is the shared one.
        history: objective values of an optimisation method: ``history[0]`` at the starting point, then one per
            step, and the last entry at the returned result (empty for feed-forward methods).
    """

    generator: TriPlaneGenerator
    ws: torch.Tensor
    camera: torch.Tensor
    offsets: torch.Tensor | None = None
    method: str = "triplanenet"
    base_generator: TriPlaneGenerator | None = field(default=None, repr=False)
    history: list[float] = field(default_factory=list, repr=False)
    _planes: torch.Tensor | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.ws.device

    @torch.no_grad()
    def planes(self) -> torch.Tensor:
        """(1, 3, C, R, R) tri-planes (computed once, then cached)."""
        if self._planes is None:
            self._planes = self.generator.planes(self.ws, noise_mode="const", offsets=self.offsets)
        return self._planes

    @torch.no_grad()
    def render(self, camera: torch.Tensor | None = None, deterministic: bool = True) -> SynthesisOutput:
        """Render at camera labels (N, 25) or (25,) (default: the input camera)."""
        labels = self.camera if camera is None else validate_label(camera).to(self.device)
        count = labels.shape[0]
        return self.generator.synthesis(
            self.ws.expand(count, -1, -1),
            labels,
            planes=self.planes().expand(count, -1, -1, -1, -1),
            deterministic=deterministic,
        )

    def novel_views(self, yaws: Sequence[float], pitch: float = 0.0, batch_size: int = 4) -> torch.Tensor:
        """(N, 3, S, S) renders at yaw offsets from frontal (pitch in radians), intrinsics of the input camera."""
        rendering = self.generator.config.rendering
        labels = novel_view_labels(
            self.camera.cpu(),
            list(yaws),
            pitch=pitch,
            radius=rendering.avg_camera_radius,
            pivot=rendering.avg_camera_pivot,
        ).reshape(-1, 25)
        outputs = render_labels(self.generator, self.planes(), self.ws, labels, batch_size)
        return torch.cat([out.image for out in outputs])

    def depth(self, camera: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 1, r, r) depth (distance along each ray) at the given cameras (default: input camera)."""
        return self.render(camera).image_depth

    def mesh(self, resolution: int = 128, level: float | None = 10.0, with_colors: bool = True) -> Mesh:
        """Marching-cubes mesh of the inverted head (see :func:`triplanenet.eg3d.shapes.extract_mesh`)."""
        from triplanenet.eg3d.shapes import extract_mesh

        return extract_mesh(self.generator, self.planes(), resolution=resolution, level=level, with_colors=with_colors)

    def video(self, path: str | os.PathLike[str], frames: int = 48, fps: int = 24, batch_size: int = 4) -> int:
        """Write an orbit MP4; returns the number of frames."""
        return write_mp4(path, orbit_frames(self.generator, self.planes(), self.ws, frames, batch_size), fps=fps)

    # ----------------------------------------------------------------------------------------------------------------
    @property
    def fine_tuned(self) -> bool:
        """True when the inversion carries its own fine-tuned generator copy."""
        return self.base_generator is not None and self.base_generator is not self.generator

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ws, camera, offsets and (if fine-tuned) the changed generator tensors to a safetensors file (atomic).

        Only the state-dict entries that differ from :attr:`base_generator` are stored, plus a fingerprint of the
        base; reload with ``Inversion.load(path, base_generator)``.
        """
        tensors = {"ws": self.ws, "camera": self.camera}
        if self.offsets is not None:
            tensors["offsets"] = self.offsets
        config = self.generator.config
        metadata = {
            "format": INVERSION_FORMAT,
            "method": self.method,
            "num_ws": str(config.num_ws),
            "w_dim": str(config.w_dim),
            "generator_config": json.dumps(config.to_dict()),
        }
        if self.history:
            metadata["history"] = json.dumps([float(value) for value in self.history])
        base = self.base_generator
        if base is not None and base is not self.generator:
            changed = changed_state(self.generator, base)
            tensors.update({TUNED_PREFIX + key: value for key, value in changed.items()})
            metadata["base_generator_sha256"] = generator_fingerprint(base)
            metadata["tuned_tensors"] = str(len(changed))
        write_safetensors(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike[str], generator: TriPlaneGenerator) -> Inversion:
        """Read a file written by :meth:`save` and bind it to ``generator`` (which must have the same architecture).

        For a fine-tuned inversion, ``generator`` must be the base generator it was tuned from (checked by
        fingerprint); a private copy of it receives the stored changed tensors. ``generator`` itself is not modified.

        Raises:
            CheckpointError: the file is missing, corrupt, not an inversion, made with another architecture, or
                fine-tuned from a different base generator.
        """
        file = Path(path)
        tensors, metadata = read_safetensors(
            file, INVERSION_FORMAT, "triplanenet inversion", "pass a file written by Inversion.save"
        )
        if "ws" not in tensors or "camera" not in tensors:
            raise CheckpointError(f"{file}: the inversion file has no ws/camera tensors; write it with Inversion.save")
        device = next(generator.parameters()).device
        config = generator.config
        ws = _checked_tensor(file, "ws", tensors["ws"], (1, config.num_ws, config.w_dim)).to(device)
        camera = _checked_tensor(file, "camera", tensors["camera"], (1, 25))
        offsets = tensors.get("offsets")
        if offsets is not None:
            side = config.backbone_resolution
            offsets = _checked_tensor(file, "offsets", offsets, (1, config.backbone_channels, side, side))
        tuned = {key[len(TUNED_PREFIX) :]: value for key, value in tensors.items() if key.startswith(TUNED_PREFIX)}
        bound, base = generator, None
        if tuned or "base_generator_sha256" in metadata:
            bound, base = _rebuild_tuned(file, generator, tuned, metadata.get("base_generator_sha256", "")), generator
        try:
            history = [float(value) for value in json.loads(metadata.get("history", "[]"))]
        except (ValueError, TypeError):
            history = []
        return cls(
            generator=bound,
            ws=ws,
            camera=camera.to(device),
            offsets=None if offsets is None else offsets.to(device),
            method=metadata.get("method", "unknown"),
            base_generator=base,
            history=history,
        )


def _checked_tensor(file: Path, name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``tensor`` as float32 if it is a finite float tensor of ``shape``; else a one-line error naming the file and
    the field.

    Raises:
        CheckpointError: wrong dtype (integer, bool, complex), wrong shape (batch, count, width), NaN or inf.
    """
    if not tensor.is_floating_point():
        raise CheckpointError(
            f"{file}: {name} has dtype {tensor.dtype}, expected float32; the file is damaged or not an inversion "
            "written by triplanenet invert"
        )
    if tuple(tensor.shape) != shape:
        raise CheckpointError(
            f"{file}: {name} has shape {tuple(tensor.shape)} but this generator needs {shape}; load it with the "
            "generator it was inverted with (one inversion per file)"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise CheckpointError(f"{file}: {name} holds NaN or inf values; the file is damaged, invert the image again")
    return tensor.float()


def _rebuild_tuned(
    file: Path, base: TriPlaneGenerator, tuned: dict[str, torch.Tensor], fingerprint: str
) -> TriPlaneGenerator:
    """A copy of ``base`` with the stored fine-tuned tensors written into it (after checking the base fingerprint)."""
    if fingerprint != generator_fingerprint(base):
        raise CheckpointError(
            f"{file}: this inversion fine-tuned a different generator than the one given; load it with the exact "
            "generator (same weights) it was inverted with"
        )
    copy_ = copy.deepcopy(base).eval().requires_grad_(False)
    state = copy_.state_dict()
    for key, value in tuned.items():
        if key not in state or state[key].shape != value.shape:
            raise CheckpointError(
                f"{file}: fine-tuned tensor {key!r} does not fit the generator; load it with the generator it was "
                "inverted with"
            )
    check_tensor_values({key: state[key] for key in tuned}, tuned, str(file))
    with torch.no_grad():
        for key, value in tuned.items():
            state[key].copy_(value.to(state[key]))
    return copy_


class Inverter(Protocol):
    """Anything that turns an aligned face image and its camera into an :class:`Inversion`."""

    name: str

    def invert(self, image: torch.Tensor, camera: torch.Tensor) -> Inversion:
        """image: (3, H, W) in [-1, 1]; camera: (25,) or (1, 25)."""
        ...


def prepare_image(image: torch.Tensor | np.ndarray, size: int) -> torch.Tensor:
    """Validate an image (3, H, W) in [-1, 1] and bring it to (3, size, size).

    Raises:
        InputImageError: wrong shape, non-finite values or a far-from-square image.
    """
    from triplanenet.io.images import resize_image

    tensor = torch.as_tensor(image, dtype=torch.float32)
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise InputImageError(f"expected an RGB image tensor (3, H, W), got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise InputImageError("the image contains NaN or infinite values")
    height, width = tensor.shape[-2:]
    if abs(height - width) > 0.02 * max(height, width):
        raise InputImageError(
            f"the image is {width}x{height}, not a square aligned face crop: crop it to the EG3D framing first"
        )
    if height != width:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        tensor = tensor[:, top : top + side, left : left + side]
    return resize_image(tensor, size)
