"""Load and save whole TriPlaneNet models (both encoders + generator).

Two formats:

* the official TriPlaneNet v1 checkpoint (``triplanenet_final.pth``: ``{'state_dict', 'opts', ...}``), read with
  ``torch.load(weights_only=True)``. It has no ``latent_avg``: that comes from the EG3D generator file the model was
  trained with (``ffhq512-128.pth``), which must be passed as ``generator``;
* our ``.safetensors`` (``format = triplanenet-model``): all weights, ``latent_avg`` and the config as JSON;
* training checkpoints written by ``triplanenet train`` (``.pt``, read with ``weights_only=True``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.io.checkpoints import check_state_dict, load_generator, safe_torch_load
from triplanenet.io.safetensors_files import read_safetensors, write_safetensors
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig

MODEL_FORMAT = "triplanenet-model"
TRAINING_CHECKPOINT_FORMAT = "triplanenet-train"  # written by triplanenet.train.trainer
_SAFETENSORS_MAGIC_OFFSET = 8


def _is_safetensors(file: Path) -> bool:
    with open(file, "rb") as handle:
        head = handle.read(_SAFETENSORS_MAGIC_OFFSET + 1)
    return len(head) == _SAFETENSORS_MAGIC_OFFSET + 1 and head[-1:] == b"{"


def load_triplanenet(
    checkpoint: str | os.PathLike[str],
    generator: str | os.PathLike[str] | TriPlaneGenerator | None = None,
    device: str | torch.device = "cpu",
) -> TriPlaneNet:
    """Load a TriPlaneNet model in eval mode.

    Args:
        checkpoint: our ``.safetensors`` model, or the official ``triplanenet_final.pth``.
        generator: for official checkpoints, the EG3D generator file they were trained with (TriPlaneNet's
            ``ffhq512-128.pth``, NVIDIA's ``.pkl`` or our generator ``.safetensors``) or a loaded generator; it
            supplies the architecture and ``latent_avg``. Ignored for our own format.

    Raises:
        CheckpointError: missing/corrupt/unsafe file, missing generator, or weights that do not fit.
    """
    file = Path(checkpoint)
    if not file.is_file():
        raise CheckpointError(f"{file}: model checkpoint not found")
    if file.stat().st_size == 0:
        raise CheckpointError(f"{file}: empty file; download the checkpoint again")
    if _is_safetensors(file):
        model = _load_safetensors_model(file)
    else:
        model = _load_official_model(file, generator)
    return model.eval().to(torch.device(device))


def _load_safetensors_model(file: Path) -> TriPlaneNet:
    tensors, metadata = read_safetensors(
        file,
        MODEL_FORMAT,
        "triplanenet model",
        "pass a model written by save_triplanenet (generators go to --generator)",
    )
    try:
        config = TriPlaneNetConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{file}: invalid model config in the file ({exc})") from None
    latent_avg = tensors.pop("latent_avg", None)
    if latent_avg is None:
        raise CheckpointError(f"{file}: the model file has no latent_avg tensor")
    model = TriPlaneNet(config)
    check_state_dict(model.state_dict(), tensors, source=str(file))
    model.load_state_dict(tensors, strict=True)
    model.set_latent_avg(latent_avg)
    return model


def _load_official_model(file: Path, generator: str | os.PathLike[str] | TriPlaneGenerator | None) -> TriPlaneNet:
    obj = safe_torch_load(file)
    if isinstance(obj, dict) and obj.get("format") == TRAINING_CHECKPOINT_FORMAT:
        return _load_training_checkpoint(file, obj)
    if generator is None:
        raise CheckpointError(
            f"{file}: official TriPlaneNet checkpoints do not contain latent_avg; pass the EG3D generator they were "
            "trained with (e.g. --generator ffhq512-128.pth)"
        )
    gen = generator if isinstance(generator, TriPlaneGenerator) else load_generator(generator)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file}: not a TriPlaneNet checkpoint (no 'state_dict' of tensors inside)")
    model = TriPlaneNet(TriPlaneNetConfig.official(gen.config), generator=gen)
    check_state_dict(model.state_dict(), state, source=str(file))
    model.load_state_dict(state, strict=True)
    latent_avg = getattr(gen, "latent_avg", None)
    model.set_latent_avg(latent_avg if latent_avg is not None else gen.w_avg)
    return model


def _load_training_checkpoint(file: Path, obj: dict) -> TriPlaneNet:
    """A checkpoint written by ``triplanenet train``: weights, latent_avg and the model config are all inside."""
    try:
        config = TriPlaneNetConfig.from_dict(json.loads(obj["model_config"]))
        state, latent_avg = obj["state_dict"], obj["latent_avg"]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: incomplete training checkpoint ({exc})") from None
    model = TriPlaneNet(config)
    check_state_dict(model.state_dict(), state, source=str(file))
    model.load_state_dict(state, strict=True)
    model.set_latent_avg(latent_avg)
    return model


def save_triplanenet(model: TriPlaneNet, path: str | os.PathLike[str]) -> None:
    """Write every weight, ``latent_avg`` and the config to one ``.safetensors`` file, atomically."""
    tensors = dict(model.state_dict())
    tensors["latent_avg"] = model.latent_avg
    write_safetensors(path, tensors, {"format": MODEL_FORMAT, "config": json.dumps(model.config.to_dict())})
