"""Read NVIDIA network pickles (EG3D / StyleGAN ``.pkl`` snapshots) without running any code from the file.

An NVIDIA snapshot stores each network as a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta`` carries the *full Python source*
of the defining module; the official loader executes it. This module never does. :class:`RestrictedUnpickler`
resolves only an explicit allow-list of globals:

* tensor/storage rebuild helpers (storages go through ``torch.load(..., weights_only=True)``),
* ``collections.OrderedDict``, a few numpy scalar/array helpers (plain numeric dtypes only),
* ``dnnlib.util.EasyDict`` -> :class:`EasyDictData` (a plain ``dict`` subclass),
* ``torch_utils.persistence._reconstruct_persistent_obj`` -> a function returning :class:`PersistentObject`
  (class name + state), ignoring ``module_src``,
* classes of EG3D's ``training`` package and of ``torch.nn`` that are pickled by reference ->
  :class:`InertObject` placeholders that only record their constructor arguments and state.

Every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, unknown packages, ...) raises
:class:`~triplanenet.errors.CheckpointError` before anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np
import torch

from triplanenet.errors import CheckpointError

# Modules whose CapWords classes may be recreated as inert placeholders (they are pickled by reference only).
_PLACEHOLDER_PACKAGES = ("training.",)
# Non-persistent EG3D classes known to appear inside ``G_ema`` (the package rule above covers them too).
KNOWN_EG3D_CLASSES = (
    "training.triplane.OSGDecoder",
    "training.volumetric_rendering.renderer.ImportanceRenderer",
    "training.volumetric_rendering.ray_sampler.RaySampler",
    "training.volumetric_rendering.ray_marcher.MipRayMarcher2",
)


class EasyDictData(dict):  # type: ignore[type-arg]
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict (no attribute access, no code)."""

    def __setstate__(self, state: Any) -> None:
        # EasyDict keeps its data in the dict items; any leftover instance state is ignored on purpose.
        return None


class PersistentObject:
    """What ``_reconstruct_persistent_obj(meta)`` stood for: a persistent-class instance, not rebuilt.

    Attributes:
        class_name: ``meta['class_name']``, e.g. ``'TriPlaneGenerator'``.
        state: ``meta['state']``, the object's ``__dict__`` as pickled (for ``nn.Module``s: ``_parameters``,
            ``_buffers``, ``_modules``, ``_init_kwargs``, ...), or ``None``.
    """

    def __init__(self, class_name: str, state: dict[str, Any] | None) -> None:
        self.class_name = class_name
        self.state = state

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name!r})"


class InertObject:
    """Placeholder for a class pickled by reference; it records data and has no behaviour.

    Subclasses are created per qualified name by :func:`placeholder_class`; ``qualified_name`` says which.
    """

    qualified_name: ClassVar[str] = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        obj = super().__new__(cls)
        obj.__dict__["args"] = args
        obj.__dict__["kwargs"] = kwargs
        obj.__dict__["state"] = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Construction data was already recorded by __new__ (NEWOBJ only calls __new__, REDUCE calls both).
        return None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            merged = dict(state[0] or {})
            if isinstance(state[1], dict):
                merged.update(state[1])
            state = merged
        self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"InertObject({self.qualified_name!r})"


_PLACEHOLDERS: dict[str, type[InertObject]] = {}


def placeholder_class(qualified_name: str) -> type[InertObject]:
    """The (cached) inert placeholder class standing for ``qualified_name``."""
    cls = _PLACEHOLDERS.get(qualified_name)
    if cls is None:
        short = qualified_name.rsplit(".", 1)[-1]
        cls = type(short, (InertObject,), {"qualified_name": qualified_name, "__module__": __name__})
        _PLACEHOLDERS[qualified_name] = cls
    return cls


def module_state(obj: Any) -> dict[str, Any] | None:
    """The recorded ``__dict__`` of a :class:`PersistentObject` or :class:`InertObject` (None otherwise)."""
    if isinstance(obj, PersistentObject):
        return obj.state
    if isinstance(obj, InertObject):
        state = obj.__dict__.get("state")
        return state if isinstance(state, dict) else None
    return None


def object_class_name(obj: Any) -> str:
    """Readable class name of an unpickled object (placeholder-aware)."""
    if isinstance(obj, PersistentObject):
        return obj.class_name
    if isinstance(obj, InertObject):
        return obj.qualified_name
    return type(obj).__name__


class TypeReference:
    """A class named in the pickle only as data (e.g. the tensor type passed to a rebuild helper).

    Deliberately not callable: the pickle cannot instantiate the real class through it.
    """

    def __init__(self, qualified_name: str) -> None:
        self.qualified_name = qualified_name

    def __repr__(self) -> str:
        return f"TypeReference({self.qualified_name!r})"


NDARRAY = TypeReference("numpy.ndarray")


# ----------------------------------------------------------------------------------------------------
# Allowed callables. Each one is a small wrapper that checks its arguments before doing anything.


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise CheckpointError(
            "a persistent object in this pickle has unexpected metadata; the file is not a plain EG3D network pickle"
        )
    class_name = meta.get("class_name")
    state = meta.get("state")
    if not isinstance(class_name, str) or not (state is None or isinstance(state, dict)):
        raise CheckpointError("a persistent object in this pickle has a malformed class name or state")
    # meta['module_src'] (the embedded source code) is deliberately never read.
    return PersistentObject(class_name, state)


def _load_storage_bytes(data: Any) -> Any:
    if not isinstance(data, bytes | bytearray):
        raise CheckpointError("a tensor storage in this pickle is not stored as bytes")
    return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)


def _is_storage(obj: Any) -> bool:
    return isinstance(obj, torch.storage.TypedStorage | torch.UntypedStorage)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool,
    backward_hooks: Any,
    metadata: Any = None,
) -> torch.Tensor:
    if not _is_storage(storage):
        raise CheckpointError("a tensor in this pickle does not reference a tensor storage")
    # Backward hooks and metadata are dropped: loading weights never needs them.
    return torch._utils._rebuild_tensor_v2(
        storage, storage_offset, tuple(size), tuple(stride), bool(requires_grad), collections.OrderedDict()
    )


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, *state: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise CheckpointError("a parameter in this pickle does not wrap a tensor")
    return torch.nn.Parameter(data, requires_grad=False)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    if func not in (_rebuild_tensor_v2, _rebuild_parameter) or not isinstance(args, tuple):
        raise CheckpointError("a tensor in this pickle is rebuilt by an unsupported function")
    result = func(*args)
    if not isinstance(result, torch.Tensor):
        raise CheckpointError("a tensor in this pickle did not rebuild to a tensor")
    return result  # the tensor subclass and its Python attributes are ignored


def _safe_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise CheckpointError("this pickle contains a numpy array of Python objects; refusing to load it")
    return dtype


def _numpy_multiarray() -> Any:
    core = getattr(np, "_core", None)
    return core.multiarray if core is not None else np.core.multiarray


def _np_scalar(dtype: Any, *args: Any) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise CheckpointError("this pickle contains a numpy scalar of an unsupported dtype")
    return _numpy_multiarray().scalar(dtype, *args)


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not NDARRAY:
        raise CheckpointError("this pickle contains an unsupported numpy array subclass")
    if isinstance(dtype, np.dtype) and dtype.hasobject:
        raise CheckpointError("this pickle contains a numpy array of Python objects; refusing to load it")
    return _numpy_multiarray()._reconstruct(np.ndarray, shape, dtype)


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise CheckpointError("this pickle contains an unsupported bytes encoding")
    return text.encode(encoding)


_TORCH_DTYPE_NAMES = frozenset(name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype))

_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch", "Tensor"): TypeReference("torch.Tensor"),
    ("torch.nn.parameter", "Parameter"): TypeReference("torch.nn.parameter.Parameter"),
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): EasyDictData,
    ("dnnlib", "EasyDict"): EasyDictData,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("_codecs", "encode"): _codecs_encode,
}


def _is_torch_nn_module_class(module: str, name: str) -> bool:
    if not module.startswith("torch.nn.modules.") or not name.isidentifier() or name.startswith("_"):
        return False
    candidate = getattr(torch.nn, name, None)
    return isinstance(candidate, type) and issubclass(candidate, torch.nn.Module)


def _is_placeholder_name(module: str, name: str) -> bool:
    if f"{module}.{name}" in KNOWN_EG3D_CLASSES:
        return True
    return (
        module.startswith(_PLACEHOLDER_PACKAGES)
        and all(part.isidentifier() for part in module.split("."))
        and name.isidentifier()
        and name[:1].isupper()
    )


def resolve_global(module: str, name: str, source: str = "this file") -> Any:
    """What the restricted unpickler substitutes for global ``module.name``.

    Raises:
        CheckpointError: the global is not on the allow-list.
    """
    allowed = _ALLOWED.get((module, name))
    if allowed is not None:
        return allowed
    if module == "torch" and name in _TORCH_DTYPE_NAMES:
        return getattr(torch, name)
    if _is_torch_nn_module_class(module, name) or _is_placeholder_name(module, name):
        return placeholder_class(f"{module}.{name}")
    raise CheckpointError(
        f"{source}: refuses to load global {module}.{name}: this file is not a plain EG3D network pickle "
        "(it would run code when unpickled); only load checkpoints from sources you trust, or convert them "
        "to .safetensors in a trusted environment"
    )


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` resolving globals through :func:`resolve_global`; refuses persistent ids."""

    def __init__(self, file: BinaryIO, source: str = "this file") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        return resolve_global(module, name, self.source)

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(
            f"{self.source}: the pickle references external data (persistent id); it is not a plain network pickle"
        )


def safe_load_pickle(file: str | Path | BinaryIO, source: str | None = None) -> Any:
    """Unpickle ``file`` with :class:`RestrictedUnpickler`.

    Raises:
        CheckpointError: a refused global, or a truncated / corrupt pickle.
    """
    if isinstance(file, str | Path):
        label = source or str(file)
        with open(file, "rb") as handle:
            return _load(handle, label)
    return _load(file, source or "this file")


def _load(handle: BinaryIO, label: str) -> Any:
    try:
        return RestrictedUnpickler(handle, label).load()
    except CheckpointError:
        raise
    except (EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"{label}: the pickle is truncated or corrupt ({short_message(exc)}); download the file again"
        ) from None
    except MemoryError:
        raise CheckpointError(f"{label}: the pickle is corrupt (it asks for more memory than available)") from None
    except Exception as exc:  # any other failure inside the (restricted) unpickling machinery means bad data
        raise CheckpointError(
            f"{label}: the pickle could not be read ({type(exc).__name__}: {short_message(exc)}); "
            "the file is corrupt or not an EG3D network pickle"
        ) from None


def short_message(exc: BaseException, limit: int = 160) -> str:
    """``str(exc)`` on one line, shortened to ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_plain(value: Any, _depth: int = 0) -> Any:
    """Recursively turn EasyDicts, OrderedDicts, tuples and numpy scalars into plain Python values."""
    if _depth > 50:
        raise CheckpointError("a configuration dict in this file is nested too deeply")
    if isinstance(value, dict):
        return {to_plain(k, _depth + 1): to_plain(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v, _depth + 1) for v in value]
    if isinstance(value, tuple):
        return [to_plain(v, _depth + 1) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
