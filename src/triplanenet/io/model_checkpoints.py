"""Load and save whole TriPlaneNet models (both encoders + generator).

Two formats:

* the official TriPlaneNet checkpoints, v1 (``triplanenet_final.pth``) and v2 (``triplanenet_v2_final.pth``), both
  ``{'state_dict', 'opts', ...}``, read with ``torch.load(weights_only=True)``. The version and v2's decoder variant
  are told from the keys (and checked against ``opts.use_pixelshuffle``). They have no ``latent_avg``: that comes
  from the EG3D generator file the model was trained with (``ffhq512-128.pth``), which must be passed as
  ``generator``;
* our ``.safetensors`` (``format = triplanenet-model``): all weights, ``latent_avg`` and the config as JSON;
* training checkpoints written by ``triplanenet train`` (``.pt``, read with ``weights_only=True``).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import torch

from triplanenet import limits
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.io.checkpoints import check_state_dict, checked_latent_avg, load_generator, safe_torch_load
from triplanenet.io.safetensors_files import read_safetensors, write_safetensors
from triplanenet.io.sniff import sniff_format
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig

MODEL_FORMAT = "triplanenet-model"
TRAINING_CHECKPOINT_FORMAT = "triplanenet-train"  # written by triplanenet.train.trainer


def load_triplanenet(
    checkpoint: str | os.PathLike[str],
    generator: str | os.PathLike[str] | TriPlaneGenerator | None = None,
    device: str | torch.device = "cpu",
    download: bool | None = None,
) -> TriPlaneNet:
    """Load a TriPlaneNet model in eval mode.

    Args:
        checkpoint: our ``.safetensors`` model, a ``triplanenet train`` checkpoint, or an official TriPlaneNet
            checkpoint (v1 ``triplanenet_final.pth`` or v2 ``triplanenet_v2_final.pth``; the version is detected),
            or an official name (``triplanenet-v2``, ``triplanenet-v1``) resolved to its cached download.
        generator: for official checkpoints, the EG3D generator file they were trained with (TriPlaneNet's
            ``ffhq512-128.pth``, NVIDIA's ``.pkl`` or our generator ``.safetensors``), its name
            (``triplanenet-ffhq512-128-pth``) or a loaded generator; it supplies the architecture and
            ``latent_avg``. Defaults to the generator a named checkpoint was released with. Ignored for our format.
        download: fetch named files that are not cached yet (default: only under ``triplanenet --download``).

    Raises:
        CheckpointError: missing/corrupt/unsafe file, a name not downloaded yet, missing generator, or weights that
            do not fit.
    """
    from triplanenet.io.registry import default_generator_for, resolve_checkpoint

    if generator is None:
        generator = default_generator_for(checkpoint)
    file = resolve_checkpoint(checkpoint, download=download)
    if file.is_dir():
        raise CheckpointError(f"{file}: is a directory; pass the checkpoint file inside it")
    if not file.is_file():
        raise CheckpointError(f"{file}: model checkpoint not found")
    if file.stat().st_size == 0:
        raise CheckpointError(f"{file}: empty file; download the checkpoint again")
    try:
        kind = sniff_format(file)
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    if kind == "safetensors":
        model = _load_safetensors_model(file)
    else:
        model = _load_official_model(file, generator, download)
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
    except (KeyError, ValueError, TypeError, RecursionError) as exc:  # ValueError: ConfigError, bad JSON
        raise CheckpointError(f"{file}: invalid model config in the file ({limits.shown_error(exc)})") from None
    latent_avg = tensors.pop("latent_avg", None)
    if latent_avg is None:
        raise CheckpointError(f"{file}: the model file has no latent_avg tensor")
    model = TriPlaneNet(config)
    check_state_dict(model.state_dict(), tensors, source=str(file))
    model.load_state_dict(tensors, strict=True)
    model.set_latent_avg(_latent_avg_of(file, latent_avg, config))
    return model


def _latent_avg_of(file: Path, latent_avg: object, config: TriPlaneNetConfig) -> torch.Tensor:
    """A model file's ``latent_avg``, checked: a finite float (w_dim,) or (num_ws, w_dim) tensor."""
    gen = config.generator
    return checked_latent_avg(file, latent_avg, ((gen.w_dim,), (gen.num_ws, gen.w_dim)))


def _load_official_model(
    file: Path, generator: str | os.PathLike[str] | TriPlaneGenerator | None, download: bool | None = None
) -> TriPlaneNet:
    obj = safe_torch_load(file)
    if isinstance(obj, dict) and obj.get("format") == TRAINING_CHECKPOINT_FORMAT:
        return _load_training_checkpoint(file, obj)
    return triplanenet_from_official(obj, generator, file, download)


def triplanenet_from_official(
    obj: object,
    generator: str | os.PathLike[str] | TriPlaneGenerator | None,
    file: Path | str,
    download: bool | None = None,
) -> TriPlaneNet:
    """A TriPlaneNet from the already-read contents of an official v1/v2 checkpoint (``{'state_dict', 'opts', …}``)
    around ``generator`` (which supplies ``latent_avg``); ``file`` names the source in errors."""
    if generator is None:
        raise CheckpointError(
            f"{file}: official TriPlaneNet checkpoints do not contain latent_avg; pass the EG3D generator they were "
            "trained with (e.g. --generator ffhq512-128.pth, or the name triplanenet-ffhq512-128-pth)"
        )
    gen = generator if isinstance(generator, TriPlaneGenerator) else load_generator(generator, download=download)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file}: not a TriPlaneNet checkpoint (no 'state_dict' of tensors inside)")
    config = official_config(state, obj.get("opts") if isinstance(obj, dict) else None, gen.config, file)
    model = TriPlaneNet(config, generator=gen)
    check_state_dict(model.state_dict(), state, source=str(file))
    model.load_state_dict(state, strict=True)
    latent_avg = getattr(gen, "latent_avg", None)
    model.set_latent_avg(latent_avg if latent_avg is not None else gen.w_avg)
    return model


V2_HEAD_KEY = "triplanenet_encoder.final_head_two.0.weight"
V1_HEAD_KEY = "triplanenet_encoder.final_head.0.weight"


def official_config(
    state: dict[str, torch.Tensor], opts: object, generator: GeneratorConfig, file: Path | str = "checkpoint"
) -> TriPlaneNetConfig:
    """The :class:`TriPlaneNetConfig` of an official TriPlaneNet state dict: v1 (head ``final_head``) or v2 (head
    ``final_head_two``; PixelShuffle when its head reads 96 + 24 channels, nearest when 96 + 64). ``opts`` (the
    checkpoint's options dict, may be None) must agree on ``use_pixelshuffle`` when it says."""
    has_v1, has_v2 = V1_HEAD_KEY in state, V2_HEAD_KEY in state
    if has_v1 == has_v2:
        found = "both heads" if has_v1 else "no tri-plane encoder head"
        raise CheckpointError(
            f"{file}: not a TriPlaneNet v1 or v2 checkpoint ({found}: expected {V1_HEAD_KEY} or {V2_HEAD_KEY})"
        )
    if has_v1:
        return TriPlaneNetConfig.official(generator)
    head_in = int(state[V2_HEAD_KEY].shape[1]) if state[V2_HEAD_KEY].ndim == 4 else -1
    by_shape = {96 + 24: "pixelshuffle", 96 + 64: "nearest"}
    if head_in not in by_shape:
        raise CheckpointError(
            f"{file}: TriPlaneNet v2 checkpoint with an unknown decoder ({V2_HEAD_KEY} reads {head_in} channels; "
            "the official layouts read 120 (use_pixelshuffle) or 160)"
        )
    upsampling = by_shape[head_in]
    flag = opts.get("use_pixelshuffle") if isinstance(opts, dict) else None
    if isinstance(flag, bool) and flag != (upsampling == "pixelshuffle"):
        raise CheckpointError(
            f"{file}: its opts say use_pixelshuffle={flag} but its weights have the {upsampling} decoder; the file "
            "was edited or assembled from two runs"
        )
    return TriPlaneNetConfig.official_v2(generator, upsampling)  # type: ignore[arg-type]


def _load_training_checkpoint(file: Path, obj: dict) -> TriPlaneNet:
    """A checkpoint written by ``triplanenet train``: weights, latent_avg and the model config are all inside."""
    try:
        config = TriPlaneNetConfig.from_dict(json.loads(obj["model_config"]))
        state, latent_avg = obj["state_dict"], obj["latent_avg"]
    except ConfigError as exc:
        raise CheckpointError(f"{file}: invalid model config in the checkpoint ({exc})") from None
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{file}: incomplete training checkpoint ({limits.shown_error(exc)})") from None
    model = TriPlaneNet(config)
    check_state_dict(model.state_dict(), state, source=str(file))
    model.load_state_dict(state, strict=True)
    model.set_latent_avg(_latent_avg_of(file, latent_avg, config))
    return model


def save_triplanenet(model: TriPlaneNet, path: str | os.PathLike[str]) -> None:
    """Write every weight, ``latent_avg`` and the config to one ``.safetensors`` file, atomically."""
    tensors = dict(model.state_dict())
    tensors["latent_avg"] = model.latent_avg
    write_safetensors(path, tensors, {"format": MODEL_FORMAT, "config": json.dumps(model.config.to_dict())})


def is_triplanenet_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a whole TriPlaneNet model (official v1/v2, a training checkpoint or our model file)
    rather than a generator. Peeks at the safetensors header or the torch zip's pickle bytes; unpickles nothing."""
    file = Path(path)
    try:
        if sniff_format(file) == "safetensors":
            with open(file, "rb") as handle:
                length = int.from_bytes(handle.read(8), "little")
                return f'"{MODEL_FORMAT}"'.encode() in handle.read(min(length, 1 << 26))
        if not zipfile.is_zipfile(file):
            return False
        with zipfile.ZipFile(file) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not names:
                return False
            data = archive.read(names[0])
    except (OSError, zipfile.BadZipFile):
        return False
    return b"psp_encoder." in data or TRAINING_CHECKPOINT_FORMAT.encode() in data


def convert_triplanenet(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    generator: str | os.PathLike[str] | TriPlaneGenerator | None = None,
) -> TriPlaneNet:
    """Load a TriPlaneNet checkpoint (official v1/v2 need ``generator``) and write it as our ``.safetensors`` model;
    the version and decoder variant travel in the file's config."""
    model = load_triplanenet(source, generator)
    save_triplanenet(model, destination)
    return model
