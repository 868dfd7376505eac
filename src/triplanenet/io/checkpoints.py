"""Load, save and convert EG3D generator checkpoints safely.

Three formats are read, recognised by their content (not their extension):

* ``nvidia-pkl`` — an EG3D training snapshot / released network pickle (``ffhq512-128.pkl``). Read with
  :mod:`triplanenet.io.safe_pickle`; the source code embedded in the file is never executed. ``G_ema`` is
  used.
* ``triplanenet-pth`` — TriPlaneNet's converted generator (``pretrained_models/ffhq512-128.pth``): a
  ``torch.save`` dict ``{'G_ema': state_dict, 'init_kwargs': dict, 'latent_avg': (512,)}``, read with
  ``weights_only=True``.
* ``safetensors`` — this project's format, written by :func:`save_generator`: the 176 ``G_ema`` tensors, an
  optional ``latent_avg`` tensor, and metadata ``{"format": "triplanenet-generator", "config": <JSON>}``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import torch

from triplanenet import limits
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.io import safe_pickle
from triplanenet.io.sniff import FileFormat, sniff_format

if TYPE_CHECKING:
    from triplanenet.eg3d.generator import TriPlaneGenerator

SourceFormat = Literal["nvidia-pkl", "triplanenet-pth", "safetensors"]

SAFETENSORS_FORMAT = "triplanenet-generator"
SAFETENSORS_FORMAT_VERSION = "1"
LATENT_AVG_KEY = "latent_avg"
DEFAULT_TRIPLANENET_NRR = 128
"""Neural rendering resolution used for ``.pth`` files, which do not store one (TriPlaneNet forces 128)."""

# Top-level submodules of EG3D's TriPlaneGenerator that own state-dict entries. Anything else found at the top
# level of a checkpoint (e.g. the ``dataset_label_std`` buffer the training loop registers) is dropped and
# reported.
_GENERATOR_PREFIXES = ("backbone.", "superresolution.", "decoder.")
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
# Positional order of EG3D's TriPlaneGenerator.__init__ (for pickles whose _init_args is not empty).
_OFFICIAL_POSITIONAL = (
    "z_dim",
    "c_dim",
    "w_dim",
    "img_resolution",
    "img_channels",
    "sr_num_fp16_res",
    "mapping_kwargs",
    "rendering_kwargs",
    "sr_kwargs",
)


@dataclass
class RawGenerator:
    """A generator checkpoint as read from disk, before any module is built.

    Attributes:
        state_dict: the official ``G_ema`` entries (176 for the EG3D architecture), CPU tensors, no gradients.
        init_kwargs: EG3D ``TriPlaneGenerator`` constructor kwargs as plain dicts/lists/scalars.
        neural_rendering_resolution: stored in NVIDIA pickles and our format; ``None`` for TriPlaneNet
            ``.pth``.
        latent_avg: (w_dim,) average latent stored in the file (``.pth`` / ours), ``None`` for NVIDIA pickles
            (use ``backbone.mapping.w_avg``, which is what TriPlaneNet's converted file stores).
        source_format: which of the three formats the file was.
        dropped_keys: names of extra entries found next to the generator weights and not kept
            (e.g. ``dataset_label_std``).
        config: the exact :class:`GeneratorConfig` (our format only; otherwise it is derived from
            ``init_kwargs``).
    """

    state_dict: dict[str, torch.Tensor]
    init_kwargs: dict[str, Any]
    neural_rendering_resolution: int | None
    latent_avg: torch.Tensor | None
    source_format: SourceFormat
    dropped_keys: tuple[str, ...] = ()
    config: GeneratorConfig | None = None

    def generator_config(self, neural_rendering_resolution: int | None = None) -> GeneratorConfig:
        """The architecture to build; ``neural_rendering_resolution`` overrides the stored value.

        Without an override and without a stored value (``.pth``), the super-resolution module's input side is
        used: 128 for the 512² releases (:data:`DEFAULT_TRIPLANENET_NRR`, as TriPlaneNet does), 64 for
        ``shapenetcars128-64``.

        Raises:
            ConfigError: the kwargs describe an unsupported architecture.
        """
        resolution = neural_rendering_resolution or self.neural_rendering_resolution
        if self.config is not None:
            return self.config.replace(
                neural_rendering_resolution=int(resolution or self.config.neural_rendering_resolution)
            )
        return GeneratorConfig.from_official_kwargs(self.init_kwargs, int(resolution) if resolution else None)


# ----------------------------------------------------------------------------------------------------
# Reading


def read_generator_checkpoint(path: str | os.PathLike[str]) -> RawGenerator:
    """Read generator weights and config from an NVIDIA ``.pkl``, TriPlaneNet ``.pth`` or ``.safetensors``.

    No code from the file is executed and no module is built.

    Raises:
        CheckpointError: the file is missing, unreadable, truncated, unsafe, or holds no EG3D generator.
    """
    file = Path(path)
    kind = _sniff(file)
    if kind == "zip":
        return _read_torch_zip(file)
    if kind == "pickle":
        return _read_pickle_family(file)
    return _read_safetensors(file)


def _sniff(file: Path) -> FileFormat:
    if not file.exists():
        raise CheckpointError(f"{file}: no such file; check the path (or download the checkpoint first)")
    if file.is_dir():
        raise CheckpointError(f"{file}: is a directory; pass the checkpoint file inside it (.pkl, .pth, .safetensors)")
    try:
        size = file.stat().st_size
        kind = sniff_format(file)
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    if size == 0:
        raise CheckpointError(f"{file}: the file is empty; the download or copy was probably interrupted")
    if kind is not None:
        return kind
    raise CheckpointError(
        f"{file}: unrecognised file format; expected an EG3D network pickle (.pkl), a TriPlaneNet generator "
        "(.pth) or a triplanenet .safetensors file"
    )


# --- NVIDIA pickle (or a legacy, pre-zip torch.save file) ---------------------------------------------------


def _read_pickle_family(file: Path) -> RawGenerator:
    with open(file, "rb") as handle:
        obj = safe_pickle.safe_load_pickle(handle, source=str(file))
    if isinstance(obj, int) and obj == _LEGACY_TORCH_MAGIC:
        return _read_torch_legacy(file)
    return _raw_from_network_pickle(file, obj)


def _raw_from_network_pickle(file: Path, obj: Any) -> RawGenerator:
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{file}: the pickle holds a {type(obj).__name__}, not an EG3D snapshot dict with 'G_ema'; "
            "pass a network-snapshot-*.pkl or a released EG3D .pkl"
        )
    if "G_ema" not in obj:
        keys = ", ".join(sorted(safe_pickle.printable(k, 40) for k in obj)[:8]) or "none"
        raise CheckpointError(
            f"{file}: the pickle has no 'G_ema' network (keys: {keys}); pass an EG3D network snapshot .pkl"
        )
    g_ema = obj["G_ema"]
    state = safe_pickle.module_state(g_ema)
    if not isinstance(g_ema, safe_pickle.PersistentObject) or state is None:
        raise CheckpointError(
            f"{file}: 'G_ema' is a {safe_pickle.object_class_name(g_ema)}, not a pickled EG3D network"
        )
    if g_ema.class_name != "TriPlaneGenerator":
        raise CheckpointError(
            f"{file}: 'G_ema' is a {safe_pickle.printable(g_ema.class_name)}, not an EG3D TriPlaneGenerator; "
            "only EG3D tri-plane generators are supported"
        )
    tensors: dict[str, torch.Tensor] = {}
    _collect_module_tensors(file, g_ema, "", tensors, depth=0)
    state_dict, dropped = _split_generator_keys(tensors)
    init_kwargs = _network_init_kwargs(file, state)
    resolution = state.get("neural_rendering_resolution")
    return RawGenerator(
        state_dict=state_dict,
        init_kwargs=init_kwargs,
        neural_rendering_resolution=_optional_int(file, "neural_rendering_resolution", resolution),
        latent_avg=None,
        source_format="nvidia-pkl",
        dropped_keys=dropped,
    )


def _collect_module_tensors(file: Path, obj: Any, prefix: str, out: dict[str, torch.Tensor], depth: int) -> None:
    """Flatten a pickled ``nn.Module`` tree into ``state_dict()``-style dotted keys (params, buffers, then
    children, like ``nn.Module.state_dict``)."""
    if depth > 64:
        raise CheckpointError(f"{file}: the pickled network is nested too deeply; the file is corrupt")
    state = safe_pickle.module_state(obj)
    if state is None:
        raise CheckpointError(
            f"{file}: submodule {safe_pickle.printable(prefix.rstrip('.') or '<root>')!r} "
            f"({safe_pickle.object_class_name(obj)}) "
            "has no module state; the file is not a plain EG3D network pickle"
        )
    non_persistent = state.get("_non_persistent_buffers_set")
    skipped = set(non_persistent) if isinstance(non_persistent, set | frozenset | list | tuple) else set()
    for group in ("_parameters", "_buffers"):
        entries = state.get(group) or {}
        if not isinstance(entries, dict):
            where = safe_pickle.printable(f"{prefix}{group}")
            raise CheckpointError(f"{file}: {where} is not a dict; the file is corrupt")
        for name, value in entries.items():
            if value is None or (group == "_buffers" and name in skipped):
                continue
            if not isinstance(value, torch.Tensor):
                where = safe_pickle.printable(f"{prefix}{name}")
                raise CheckpointError(f"{file}: {where} is a {type(value).__name__}, not a tensor")
            out[f"{prefix}{name}"] = value.detach().requires_grad_(False)
    children = state.get("_modules") or {}
    if not isinstance(children, dict):
        raise CheckpointError(f"{file}: {safe_pickle.printable(prefix)}_modules is not a dict; the file is corrupt")
    for name, child in children.items():
        if child is not None:
            _collect_module_tensors(file, child, f"{prefix}{name}.", out, depth + 1)


def _network_init_kwargs(file: Path, state: dict[str, Any]) -> dict[str, Any]:
    kwargs = safe_pickle.to_plain(state.get("_init_kwargs") or {})
    args = safe_pickle.to_plain(state.get("_init_args") or ())
    if not isinstance(kwargs, dict) or not isinstance(args, list) or len(args) > len(_OFFICIAL_POSITIONAL):
        raise CheckpointError(f"{file}: G_ema's constructor arguments are malformed; the file is corrupt")
    for name, value in zip(_OFFICIAL_POSITIONAL, args, strict=False):
        kwargs.setdefault(name, value)
    # EG3D's module reload copies the live rendering_kwargs attribute, which wins over the constructor copy.
    live = safe_pickle.to_plain(state.get("rendering_kwargs"))
    if isinstance(live, dict):
        kwargs["rendering_kwargs"] = live
    if not kwargs:
        raise CheckpointError(f"{file}: G_ema stores no constructor arguments (_init_kwargs); cannot tell its size")
    return kwargs


# --- torch.save files ---------------------------------------------------------------------------------------


def _read_torch_zip(file: Path) -> RawGenerator:
    _require_torch_zip(file)
    obj = _torch_load_weights_only(file, allow_zip_fallback=True)
    return _raw_from_triplanenet_dict(file, obj)


def _require_torch_zip(file: Path) -> None:
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{file}: the zip container is truncated or corrupt ({exc}); download the checkpoint again"
        ) from None
    if not any(name.endswith("data.pkl") and name.count("/") == 1 for name in names):
        raise CheckpointError(
            f"{file}: is a zip archive but not a PyTorch checkpoint (no data.pkl inside); pass a .pth "
            "written by torch.save"
        )


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with one-line errors.

    Zip checkpoints that ``weights_only`` refuses only because of harmless globals (``dnnlib.EasyDict``, numpy
    scalars) are re-read with this project's restricted unpickler; nothing from the file is ever executed.

    Raises:
        CheckpointError: missing/truncated/corrupt file, not a ``torch.save`` file, or an unsafe global.
    """
    file = Path(path)
    kind = _sniff(file)
    if kind == "zip":
        _require_torch_zip(file)
        return _torch_load_weights_only(file, allow_zip_fallback=True)
    if kind == "pickle":
        with open(file, "rb") as handle:
            first = safe_pickle.safe_load_pickle(handle, source=str(file))
        if isinstance(first, int) and first == _LEGACY_TORCH_MAGIC:
            return _torch_load_weights_only(file, allow_zip_fallback=False)
    raise CheckpointError(f"{file}: is not a PyTorch checkpoint written by torch.save")


def _read_torch_legacy(file: Path) -> RawGenerator:
    return _raw_from_triplanenet_dict(file, _torch_load_weights_only(file, allow_zip_fallback=False))


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)|unrecognized function ([^\s]+)")


def _torch_load_weights_only(file: Path, allow_zip_fallback: bool) -> Any:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if allow_zip_fallback:
            # e.g. a dnnlib.EasyDict inside init_kwargs: re-read data.pkl with our own allow-list.
            return _restricted_torch_zip_load(file)
        match = _UNSUPPORTED_GLOBAL.search(str(exc))
        what = f"global {match.group(1) or match.group(2)}" if match else "an object type"
        raise CheckpointError(
            f"{file}: refuses to load {what}: the checkpoint holds more than tensors and plain containers; "
            "re-save it with plain dicts, or convert it in a trusted environment"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{file}: the PyTorch checkpoint is truncated or corrupt ({safe_pickle.short_message(exc)}); "
            "download it again"
        ) from None
    except Exception as exc:  # malformed data inside torch's weights-only unpickler (IndexError, TypeError, ...)
        raise CheckpointError(
            f"{file}: the PyTorch checkpoint could not be read "
            f"({type(exc).__name__}: {safe_pickle.short_message(exc)}); the file is corrupt"
        ) from None


class _StorageType:
    """Placeholder for ``torch.FloatStorage`` & co. inside a torch zip pickle: carries only a dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


class _TorchZipUnpickler(safe_pickle.RestrictedUnpickler):
    """Restricted unpickler for the ``data.pkl`` of a torch zip checkpoint; storages come from the archive."""

    def __init__(self, handle: BinaryIO, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(handle, source)
        self.archive = archive
        self.prefix = prefix
        self.storages: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.source}: unsupported storage reference in the checkpoint; file is corrupt")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise CheckpointError(f"{self.source}: malformed storage reference in the checkpoint; file is corrupt")
        if key not in self.storages:
            data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            dtype = storage_type.dtype
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(data) != numel * itemsize:
                raise CheckpointError(
                    f"{self.source}: storage {safe_pickle.printable(key, 40)} has the wrong size; the file is corrupt"
                )
            untyped = torch.frombuffer(data, dtype=torch.uint8).untyped_storage() if data else torch.UntypedStorage(0)
            self.storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return self.storages[key]


def _restricted_torch_zip_load(file: Path) -> Any:
    label = str(file)
    try:
        with zipfile.ZipFile(file) as archive:
            pkl_name = next(n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1)
            prefix = pkl_name[: -len("data.pkl")]
            if f"{prefix}byteorder" in archive.namelist():
                order = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
                if order != sys.byteorder:
                    raise CheckpointError(f"{file}: the checkpoint was written with {order}-endian byte order")
            with archive.open(pkl_name) as handle:
                return _TorchZipUnpickler(handle, archive, prefix, label).load()  # type: ignore[arg-type]
    except CheckpointError:
        raise
    except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, KeyError, OSError) as exc:
        raise CheckpointError(
            f"{file}: the PyTorch checkpoint is truncated or corrupt ({safe_pickle.short_message(exc)}); "
            "download it again"
        ) from None
    except Exception as exc:  # bad data reaching the allow-listed helpers
        raise CheckpointError(
            f"{file}: the PyTorch checkpoint could not be read "
            f"({type(exc).__name__}: {safe_pickle.short_message(exc)}); the file is corrupt"
        ) from None


def _raw_from_triplanenet_dict(file: Path, obj: Any) -> RawGenerator:
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{file}: holds a {type(obj).__name__}, not a dict with 'G_ema'; pass TriPlaneNet's ffhq512-128.pth"
        )
    if "G_ema" not in obj:
        keys = ", ".join(sorted(safe_pickle.printable(k, 40) for k in obj)[:8]) or "none"
        hint = " (this looks like a TriPlaneNet model checkpoint, not an EG3D generator)" if "state_dict" in obj else ""
        raise CheckpointError(
            f"{file}: has no 'G_ema' generator weights (keys: {keys}){hint}; pass an EG3D .pkl or "
            "TriPlaneNet's ffhq512-128.pth"
        )
    weights = obj["G_ema"]
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise CheckpointError(f"{file}: 'G_ema' is not a state dict of tensors; the file is not a converted EG3D model")
    init_kwargs = safe_pickle.to_plain(obj.get("init_kwargs"))
    if not isinstance(init_kwargs, dict) or not init_kwargs:
        raise CheckpointError(
            f"{file}: has no 'init_kwargs' describing the generator architecture; cannot build the model"
        )
    latent_avg = obj.get(LATENT_AVG_KEY)
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise CheckpointError(f"{file}: 'latent_avg' is a {type(latent_avg).__name__}, not a tensor")
    state_dict, dropped = _split_generator_keys({k: v.detach() for k, v in weights.items()})
    return RawGenerator(
        state_dict=state_dict,
        init_kwargs=init_kwargs,
        neural_rendering_resolution=None,
        latent_avg=None if latent_avg is None else latent_avg.detach(),
        source_format="triplanenet-pth",
        dropped_keys=dropped,
    )


# --- our safetensors format ---------------------------------------------------------------------------------


def _read_safetensors(file: Path) -> RawGenerator:
    from triplanenet.io.safetensors_files import read_safetensors

    tensors, metadata = read_safetensors(
        file, SAFETENSORS_FORMAT, "triplanenet generator", "write generators with triplanenet.io.save_generator"
    )
    version = metadata.get("format_version", SAFETENSORS_FORMAT_VERSION)
    if version != SAFETENSORS_FORMAT_VERSION:
        raise CheckpointError(
            f"{file}: generator format version {version} is not supported "
            f"(expected {SAFETENSORS_FORMAT_VERSION}); upgrade triplanenet"
        )
    try:
        config = GeneratorConfig.from_dict(json.loads(metadata["config"]))
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    except (KeyError, ValueError, TypeError, RecursionError) as exc:  # ValueError: JSON, 4300-digit integers
        raise CheckpointError(
            f"{file}: the generator config in the metadata is missing or invalid ({limits.shown_error(exc)})"
        ) from None
    latent_avg = tensors.pop(LATENT_AVG_KEY, None)
    state_dict, dropped = _split_generator_keys(tensors)
    return RawGenerator(
        state_dict=state_dict,
        init_kwargs=config.to_official_kwargs(),
        neural_rendering_resolution=config.neural_rendering_resolution,
        latent_avg=latent_avg,
        source_format="safetensors",
        dropped_keys=dropped,
        config=config,
    )


# --- helpers ------------------------------------------------------------------------------------------------


def _split_generator_keys(
    tensors: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    kept = {k: v for k, v in tensors.items() if k.startswith(_GENERATOR_PREFIXES)}
    dropped = tuple(k for k in tensors if k not in kept)
    return kept, dropped


def _optional_int(file: Path, name: str, value: Any) -> int | None:
    value = safe_pickle.to_plain(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value <= 0:
        shown = safe_pickle.printable(repr(value), 60)
        raise CheckpointError(f"{file}: {name} is {shown}, expected a positive integer")
    return int(value)


# ----------------------------------------------------------------------------------------------------
# Building, saving, converting


def load_generator(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    neural_rendering_resolution: int | None = None,
    download: bool | None = None,
) -> TriPlaneGenerator:
    """Build a :class:`TriPlaneGenerator` from a checkpoint and load its weights (strictly).

    The module is returned in eval mode with ``requires_grad=False`` everywhere. ``latent_avg`` (w_dim,) is
    attached as a *non-persistent buffer* (it follows ``.to(device)``, it is not in ``state_dict()``): the
    file's ``latent_avg`` when it has one, else a copy of ``backbone.mapping.w_avg``.

    Args:
        path: a checkpoint file, or an official name (``eg3d-ffhq512-128``, ``triplanenet-ffhq512-128-pth``, ...)
            resolved by :func:`triplanenet.io.registry.resolve_checkpoint` to its cached download.
        neural_rendering_resolution: override; defaults to the file's value (NVIDIA pickles, our format) or, for
            TriPlaneNet ``.pth`` files, which store none, the super-resolution input side (128 for the 512² models,
            as TriPlaneNet renders).
        download: fetch a named checkpoint that is not cached yet (default: only under ``triplanenet --download``).

    Raises:
        CheckpointError: unreadable/unsafe file, a name not downloaded yet, or weights that do not match the
            architecture the file describes.
        ConfigError: the described architecture is not supported.
    """
    from triplanenet.eg3d.generator import TriPlaneGenerator
    from triplanenet.io.registry import resolve_checkpoint

    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {device!r} ({exc}); use e.g. 'cpu' or 'cuda'") from None
    file = resolve_checkpoint(path, download=download)
    raw = read_generator_checkpoint(file)
    try:
        config = raw.generator_config(neural_rendering_resolution)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    generator = TriPlaneGenerator(config)
    check_state_dict(generator.state_dict(), raw.state_dict, source=str(file))
    generator.load_state_dict(raw.state_dict, strict=True)
    latent_avg = raw.latent_avg if raw.latent_avg is not None else raw.state_dict["backbone.mapping.w_avg"]
    _attach_latent_avg(generator, _normalise_latent_avg(file, latent_avg, config.w_dim))
    generator.eval().requires_grad_(False)
    return generator.to(target)


def check_state_dict(
    expected: dict[str, torch.Tensor],
    found: dict[str, torch.Tensor],
    source: str = "checkpoint",
    what: str = "the generator architecture its config describes",
    advice: str = "the file is from a different model variant or its init_kwargs are wrong",
) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``found`` has exactly ``expected``'s keys/shapes.

    The message reads ``{source}: the weights do not fit {what} (<first mismatches>); {advice}``."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        check_tensor_values(expected, found, source)
        return
    parts = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape (file vs model)", mismatched),
    ):
        if items:
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            parts.append(f"{len(items)} {label}: {shown}")
    raise CheckpointError(f"{source}: the weights do not fit {what} ({'; '.join(parts)}); {advice}")


def check_tensor_values(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights whose values cannot be the model's: an integer, bool or complex tensor where the model has a
    float one, or NaN/inf values. Float16/bfloat16/float64 weights are accepted: loading converts them to the
    model's float32 (the bundled default model is stored as float16 on purpose). Costs one pass over the weights
    (about a second for 300 M values).

    Raises:
        CheckpointError: one line naming ``source`` and the first offending key.
    """
    for key, want in expected.items():
        tensor = found[key]
        if not want.is_floating_point():
            continue
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            dtype = getattr(tensor, "dtype", type(tensor).__name__)
            raise CheckpointError(
                f"{source}: weight {safe_pickle.printable(key, 80)} has dtype {dtype}, expected {want.dtype}; the "
                "file is damaged or not this model's weights"
            )
        if tensor.numel() and not bool(torch.isfinite(tensor).all()):
            kind = "only NaN/inf" if not bool(torch.isfinite(tensor).any()) else "NaN or inf"
            raise CheckpointError(
                f"{source}: weight {safe_pickle.printable(key, 80)} holds {kind} values; the file is damaged or "
                "came from a diverged training run, use another checkpoint"
            )


def checked_latent_avg(file: Path | str, latent_avg: object, shapes: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """``latent_avg`` read from a file as float32, after checking it is a finite float tensor of one of ``shapes``.

    Raises:
        CheckpointError: another type, dtype or shape, or NaN/inf values (the message names the file).
    """
    allowed = " or ".join(str(shape) for shape in shapes)
    if not isinstance(latent_avg, torch.Tensor) or not latent_avg.is_floating_point():
        found = latent_avg.dtype if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
        raise CheckpointError(f"{file}: latent_avg is {found}, expected a float tensor of shape {allowed}")
    if tuple(latent_avg.shape) not in shapes:
        raise CheckpointError(f"{file}: latent_avg has shape {tuple(latent_avg.shape)}, expected {allowed}")
    if not torch.isfinite(latent_avg).all():
        raise CheckpointError(f"{file}: latent_avg holds NaN or infinite values; the file is damaged")
    return latent_avg.detach().to(torch.float32).clone()


def _normalise_latent_avg(file: Path, latent_avg: torch.Tensor, w_dim: int) -> torch.Tensor:
    return checked_latent_avg(file, latent_avg, ((w_dim,), (1, w_dim))).reshape(w_dim)


def _attach_latent_avg(generator: torch.nn.Module, latent_avg: torch.Tensor) -> None:
    if LATENT_AVG_KEY in generator._buffers:
        generator._buffers[LATENT_AVG_KEY] = latent_avg
    elif hasattr(generator, LATENT_AVG_KEY):
        setattr(generator, LATENT_AVG_KEY, latent_avg)
    else:
        generator.register_buffer(LATENT_AVG_KEY, latent_avg, persistent=False)


def save_generator(
    generator: TriPlaneGenerator, path: str | os.PathLike[str], latent_avg: torch.Tensor | None = None
) -> Path:
    """Write ``generator`` (weights, config, optional ``latent_avg``) to ``*.safetensors``, atomically.

    ``latent_avg`` defaults to the generator's ``latent_avg`` attribute/buffer when it has one.

    Raises:
        CheckpointError: bad path (wrong extension, missing directory) or a write failure.
    """
    file = Path(path)
    if file.suffix != ".safetensors":
        raise CheckpointError(f"{file}: generators are saved as safetensors; use a path ending in .safetensors")
    if not file.parent.is_dir():
        raise CheckpointError(f"{file}: directory {file.parent} does not exist; create it first")
    config = getattr(generator, "config", None)
    if not isinstance(config, GeneratorConfig):
        raise ConfigError("save_generator needs a TriPlaneGenerator (a module with a GeneratorConfig .config)")
    if latent_avg is None:
        latent_avg = getattr(generator, LATENT_AVG_KEY, None)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in generator.state_dict().items()}
    if LATENT_AVG_KEY in tensors:
        raise CheckpointError(f"the generator's state dict already has a {LATENT_AVG_KEY!r} entry; cannot save it")
    if latent_avg is not None:
        tensors[LATENT_AVG_KEY] = _normalise_latent_avg(file, latent_avg, config.w_dim)
    metadata = {
        "format": SAFETENSORS_FORMAT,
        "format_version": SAFETENSORS_FORMAT_VERSION,
        "config": json.dumps(config.to_dict(), sort_keys=True),
    }
    _atomic_save_safetensors(file, tensors, metadata)
    return file


def _atomic_save_safetensors(file: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from triplanenet.io.atomic import OutputWriteError
    from triplanenet.io.safetensors_files import write_safetensors

    try:
        write_safetensors(file, tensors, metadata)
    except OutputWriteError as exc:
        raise CheckpointError(f"{exc}; check disk space/permissions") from None


def convert_generator(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], neural_rendering_resolution: int | None = None
) -> Path:
    """Convert an NVIDIA ``.pkl`` / TriPlaneNet ``.pth`` generator into our ``.safetensors`` format.

    The generator is built and strictly loaded first, so a file that converts is a file that loads.
    """
    generator = load_generator(src, neural_rendering_resolution=neural_rendering_resolution)
    return save_generator(generator, dst)
