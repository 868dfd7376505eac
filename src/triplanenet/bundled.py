"""The bundled default model (``assets/default``) and the held-out identities and poses it is shown on.

Both the demo (:mod:`triplanenet.demo`) and the evaluation protocol (:mod:`triplanenet.eval.protocol`) use these;
keeping them here lets the demo depend on the protocol without the protocol depending back on the demo.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from triplanenet.errors import CheckpointError

if TYPE_CHECKING:
    from triplanenet.encoders.irse import IRSEBackbone
    from triplanenet.losses.confnet import ConfNet
    from triplanenet.model import TriPlaneNet

__all__ = [
    "DEMO_POSES",
    "DEMO_SEED",
    "SIGMA_NET_FORMAT",
    "default_assets_dir",
    "load_default_identity_network",
    "load_default_model",
    "load_default_sigma_net",
]

SIGMA_NET_FORMAT = "triplanenet-confnet"
DEMO_SEED = 900_000  # identities drawn from this seed are not in the training worlds (seeds 0 and 1)
DEMO_POSES = ((0.0, 0.0), (0.35, -0.05), (-0.3, 0.05), (0.15, -0.1), (-0.45, 0.0), (0.5, 0.1))
"""(yaw, pitch) in radians of the held-out heads, cycled when more heads are asked for."""


def default_assets_dir() -> Path:
    return Path(str(resources.files("triplanenet") / "assets" / "default"))


def load_default_model(device: str | torch.device = "cpu") -> TriPlaneNet:
    """The bundled TriPlaneNet + generator trained on the procedural heads world (CPU-sized)."""
    from triplanenet.io.model_checkpoints import load_triplanenet

    path = default_assets_dir() / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"the bundled default model is missing ({path}); reinstall triplanenet")
    return load_triplanenet(path, device=device)


def load_default_identity_network() -> IRSEBackbone | None:
    """The identity network trained on procedural identities, or None when not bundled."""
    from triplanenet.train.identity_net import load_identity_safetensors

    path = default_assets_dir() / "identity.safetensors"
    return load_identity_safetensors(path) if path.is_file() else None


def load_default_sigma_net() -> ConfNet:
    """The bundled σ-net (unsup3d ConfNet, nf 16) trained with eq. 4 on the default model's mirror residuals."""
    from triplanenet.io.safetensors_files import read_safetensors
    from triplanenet.losses.confnet import ConfNet

    path = default_assets_dir() / "confnet.safetensors"
    state, metadata = read_safetensors(path, SIGMA_NET_FORMAT, "σ-net", "reinstall triplanenet")
    config = json.loads(metadata["config"])
    network = ConfNet(nf=config["nf"], zdim=config["zdim"])
    network.load_state_dict(state, strict=True)
    return network.eval().requires_grad_(False)
