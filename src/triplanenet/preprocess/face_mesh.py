"""MediaPipe's 468-point face mesh network, rebuilt as a plain PyTorch module, and its setup-time weight conversion.

The network (``face_landmark.tflite``, Apache-2.0, shipped inside the ``mediapipe==0.10.21`` wheel) maps a 192²
RGB face crop in [0, 1] to 468 (x, y, z) points in crop pixels (z: relative depth, same scale as x, smaller = closer
to the camera) and a face-presence logit. Its graph, read with :mod:`triplanenet.io.tflite`, is a BlazeFace-style
stack of residual blocks (depthwise 3×3 → 1×1 conv, skip through max-pool + zero channel padding when the block
downsamples, PReLU after the add) with two heads. :class:`FaceMeshNet` spells that structure out with ordinary
layers; TF's "SAME" padding for the stride-2 3×3 convolutions on even sizes pads only right/bottom, which is done
explicitly.

Weights: ``triplanenet fetch-weights`` reads the ``.tflite`` file from the installed ``mediapipe`` distribution
(found through package metadata; **mediapipe is never imported**), checks its sha256, converts the float16
constants to float32 and writes ``face_mesh.safetensors`` into the weights cache. Run time only reads that file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.errors import CheckpointError
from triplanenet.weights import ConvertedNetwork

__all__ = [
    "FACE_MESH_FILENAME",
    "FACE_MESH_INPUT_SIZE",
    "FACE_MESH_TFLITE_SHA256",
    "FaceMeshNet",
    "convert_face_mesh_tflite",
    "fetch_face_mesh_weights",
    "find_face_mesh_tflite",
    "load_face_mesh",
]

FACE_MESH_FILENAME = "face_mesh.safetensors"
FACE_MESH_FORMAT = "triplanenet-face-mesh"
FACE_MESH_INPUT_SIZE = 192
MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
FACE_MESH_MEMBER = "mediapipe/modules/face_landmark/face_landmark.tflite"
FACE_MESH_TFLITE_SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
"""sha256 of ``face_landmark.tflite`` in the ``mediapipe-0.10.21`` cp311 wheel (1,242,398 bytes)."""
_HINT = "run `triplanenet fetch-weights` (it needs `pip install --no-deps mediapipe==0.10.21`, as `make setup` does)"

# (in, out, stride) of the trunk blocks, then of each head's blocks before its 1×1 reduction.
_TRUNK = ((16, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 64, 1))
_TRUNK += ((64, 128, 2), (128, 128, 1), (128, 128, 1), (128, 128, 2), (128, 128, 1), (128, 128, 1))
_MESH_HEAD = ((128, 128, 2), (128, 128, 1), (128, 128, 1))
_FLAG_HEAD = ((128, 128, 2),)


def _same_pad(x: torch.Tensor, stride: int) -> torch.Tensor:
    """TF "SAME" padding for a 3×3 kernel: 1 on every side at stride 1, right/bottom only at stride 2."""
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


class ResidualBlock(nn.Module):
    """Depthwise 3×3 (stride s) → 1×1 conv, plus the input (max-pooled when s = 2, zero-padded channels), PReLU."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = channels_out - channels_in
        self.depthwise = nn.Conv2d(channels_in, channels_in, 3, stride=stride, groups=channels_in)
        self.pointwise = nn.Conv2d(channels_in, channels_out, 1)
        self.act = nn.PReLU(channels_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(_same_pad(x, self.stride)))
        skip = F.max_pool2d(x, 2) if self.stride == 2 else x
        if self.extra_channels:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra_channels))
        return self.act(y + skip)


class _Head(nn.Module):
    """Blocks at 128 channels → 1×1 to 32 + PReLU → one 32-channel block → 3×3 valid conv to the outputs."""

    def __init__(self, blocks: tuple[tuple[int, int, int], ...], outputs: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualBlock(*spec) for spec in blocks))
        self.reduce = nn.Conv2d(128, 32, 1)
        self.reduce_act = nn.PReLU(32)
        self.block32 = ResidualBlock(32, 32, 1)
        self.out = nn.Conv2d(32, outputs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce_act(self.reduce(self.blocks(x)))
        return self.out(self.block32(x)).flatten(1)


class FaceMeshNet(nn.Module):
    """The face mesh network: (B, 3, 192, 192) RGB in [0, 1] → ((B, 468, 3) points in crop pixels, (B,) logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2)
        self.stem_act = nn.PReLU(16)
        self.trunk = nn.Sequential(*(ResidualBlock(*spec) for spec in _TRUNK))
        self.mesh_head = _Head(_MESH_HEAD, 468 * 3)
        self.flag_head = _Head(_FLAG_HEAD, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(self.stem_act(self.stem(_same_pad(x, 2))))
        points = self.mesh_head(features).reshape(-1, 468, 3)
        return points, self.flag_head(features)[:, 0]


# ------------------------------------------------------------------------------------------------------------
# Conversion from the .tflite graph (setup time)


FACE_MESH_WEIGHTS = ConvertedNetwork(FACE_MESH_FILENAME, "face-mesh", FaceMeshNet, _HINT)
"""Where ``fetch-weights`` puts the converted face mesh and how it is read back."""


def _tflite_names() -> dict[str, tuple[str, str]]:
    """Our state-dict key → (TFLite constant name, kind) with kind ∈ conv / depthwise / bias / prelu."""
    names: dict[str, tuple[str, str]] = {}

    def conv(key: str, tf: str, kind: str = "conv") -> None:
        names[f"{key}.weight"] = (f"{tf}/Kernel", kind)
        names[f"{key}.bias"] = (f"{tf}/Bias", "bias")

    def block(key: str, dw: int, pw: int, act: int) -> None:
        conv(f"{key}.depthwise", f"depthwise_conv2d_{dw}", "depthwise")
        conv(f"{key}.pointwise", f"conv2d_{pw}")
        names[f"{key}.act.weight"] = (f"p_re_lu_{act}/Alpha", "prelu")

    conv("stem", "conv2d_1")
    names["stem_act.weight"] = ("p_re_lu_1/Alpha", "prelu")
    for k in range(len(_TRUNK)):  # trunk block k: depthwise k+1, conv k+2, PReLU k+2
        block(f"trunk.{k}", k + 1, k + 2, k + 2)
    for k in range(len(_MESH_HEAD)):
        block(f"mesh_head.blocks.{k}", 15 + k, 16 + k, 16 + k)
    conv("mesh_head.reduce", "conv2d_19")
    names["mesh_head.reduce_act.weight"] = ("p_re_lu_19/Alpha", "prelu")
    block("mesh_head.block32", 18, 20, 20)
    conv("mesh_head.out", "conv2d_21")
    block("flag_head.blocks.0", 23, 28, 26)
    conv("flag_head.reduce", "conv2d_29")
    names["flag_head.reduce_act.weight"] = ("p_re_lu_27/Alpha", "prelu")
    block("flag_head.block32", 24, 30, 28)
    conv("flag_head.out", "conv2d_31")
    return names


def convert_face_mesh_tflite(data: bytes, what: str = FACE_MESH_MEMBER) -> dict[str, torch.Tensor]:
    """``face_landmark.tflite`` bytes → :class:`FaceMeshNet` state dict (float32).

    Raises:
        CheckpointError: not a TFLite file, or not the face mesh graph (a constant is missing or misshapen).
    """
    from triplanenet.io.tflite import parse_tflite

    graph = parse_tflite(data, what)
    by_name = {t.name: t.index for t in graph.tensors}
    expected = FaceMeshNet().state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, (tf_name, kind) in _tflite_names().items():
        if tf_name not in by_name:
            raise CheckpointError(f"{what}: has no tensor {tf_name!r}; it is not MediaPipe's face_landmark.tflite")
        value = graph.constant(by_name[tf_name])
        if kind == "conv":  # TFLite OHWI -> torch OIHW
            value = value.transpose(0, 3, 1, 2)
        elif kind == "depthwise":  # (1, H, W, C) -> (C, 1, H, W)
            value = value.transpose(3, 0, 1, 2)
        else:
            value = value.reshape(-1)
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{what}: {tf_name} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}"
            )
        state[key] = tensor
    return state


def find_face_mesh_tflite() -> Path:
    """``face_landmark.tflite`` of the installed ``mediapipe`` distribution (package metadata only, no import).

    Raises:
        CheckpointError: mediapipe is not installed or the file is not in it.
    """
    from triplanenet.weights import installed_package_file

    return installed_package_file("mediapipe", FACE_MESH_MEMBER, MEDIAPIPE_REQUIREMENT, "face mesh network")


def fetch_face_mesh_weights(
    dest_dir: str | os.PathLike[str] | None = None,
    *,
    tflite: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Convert ``face_landmark.tflite`` into ``<dest_dir>/face_mesh.safetensors`` (setup time); return its path.

    Args:
        dest_dir: weights folder (default: ``$TRIPLANENET_WEIGHTS`` or ``~/.cache/triplanenet``).
        tflite: the ``.tflite`` file (default: from the installed mediapipe distribution).
        force: rebuild even if a valid file exists.

    Raises:
        CheckpointError: source missing, wrong sha256, not the face mesh, or the file cannot be written.
    """
    from triplanenet.weights import default_weights_dir, read_pinned_file

    folder = Path(dest_dir) if dest_dir is not None else default_weights_dir()
    if not force and FACE_MESH_WEIGHTS.has_valid_file(folder):
        return folder / FACE_MESH_FILENAME
    source = Path(tflite) if tflite is not None else find_face_mesh_tflite()
    data = read_pinned_file(source, FACE_MESH_TFLITE_SHA256, f"face_landmark.tflite from {MEDIAPIPE_REQUIREMENT}")
    state = convert_face_mesh_tflite(data, str(source))
    metadata = {"format": FACE_MESH_FORMAT, "source": FACE_MESH_MEMBER, "source_sha256": FACE_MESH_TFLITE_SHA256}
    return FACE_MESH_WEIGHTS.write(folder, state, metadata)


def load_face_mesh(weights_dir: str | os.PathLike[str] | None = None) -> FaceMeshNet:
    """The face mesh network with its converted weights (cached per file; eval mode, no gradients).

    Raises:
        CheckpointError: ``face_mesh.safetensors`` is missing (one line: run ``triplanenet fetch-weights``) or bad.
    """
    return cast(FaceMeshNet, FACE_MESH_WEIGHTS.load(weights_dir))
