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
import math
import pickle
import re
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
    """Readable class name of an unpickled object (placeholder-aware), printable for an error message."""
    if isinstance(obj, PersistentObject):
        return printable(obj.class_name)
    if isinstance(obj, InertObject):
        return printable(obj.qualified_name)
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


# --- numpy: rebuilt from checked plain data only ---------------------------------------------------------------
# A pickled numpy dtype is ``numpy.dtype(typestr, align, copy)`` followed by a BUILD whose state may carry field
# names, offsets, an item size and a sub-array. numpy trusts that state when it is applied to a real dtype: an
# offset beyond the item size makes scalars and arrays of that dtype read out of bounds (a crash, or process
# memory echoed back). So no numpy object is ever handed pickle data: ``numpy.dtype`` resolves to
# :class:`NumpyDtypeSpec`, which keeps a checked type string and byte order; scalars and arrays are then made by
# numpy's ordinary constructors from that spec and from byte strings of exactly the right length.

_NUMPY_TYPESTR = re.compile(r"b1|[iu](?:1|2|4|8)|f(?:2|4|8)|c(?:8|16)")
"""The dtypes a pickle may use: bool, (u)int8..64, float16/32/64, complex64/128 (no objects, strings, records,
datetimes or platform-sized long doubles)."""
_NUMPY_BYTEORDERS = ("<", ">", "|", "=")
_MAX_NUMPY_DIMS = 32


class NumpyDtypeSpec:
    """What a pickled ``numpy.dtype`` stood for, as checked plain data (never a live dtype built from the pickle).

    Attributes:
        typestr: a plain numeric type string such as ``'f4'`` (see ``_NUMPY_TYPESTR``).
        byteorder: ``'<'``, ``'>'``, ``'|'`` or ``'='``, from the pickled state (default native).
    """

    def __init__(self, typestr: str) -> None:
        self.typestr = typestr
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]).
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise CheckpointError("a numpy dtype in this pickle has a malformed state; the file is corrupt")
        version, byteorder, subarray, names, fields, elsize, alignment, flags = state[:8]
        metadata = state[8] if len(state) == 9 else None
        if any(part is not None for part in (subarray, names, fields, metadata)):
            raise CheckpointError(
                "this pickle contains a structured or sub-array numpy dtype; only plain numeric dtypes are supported"
            )
        if (
            type(version) is not int
            or version not in (3, 4)
            or byteorder not in _NUMPY_BYTEORDERS
            or (elsize, alignment) != (-1, -1)
            or type(flags) is not int
        ):
            raise CheckpointError("a numpy dtype in this pickle has an inconsistent state; the file is corrupt")
        self.byteorder = byteorder

    def dtype(self) -> np.dtype:
        """A fresh numpy dtype made from ``typestr`` and ``byteorder`` alone."""
        dtype = np.dtype(self.typestr)
        if self.byteorder in ("<", ">") and dtype.itemsize > 1:
            dtype = dtype.newbyteorder(self.byteorder)
        return dtype

    def __repr__(self) -> str:
        return f"NumpyDtypeSpec({self.byteorder}{self.typestr})"


def _numpy_dtype(*args: Any) -> NumpyDtypeSpec:
    if not 1 <= len(args) <= 3 or not isinstance(args[0], str) or not all(type(a) in (bool, int) for a in args[1:]):
        raise CheckpointError("a numpy dtype in this pickle has unexpected arguments; the file is corrupt")
    typestr = args[0]
    if typestr[:1] in ("O", "|O"):
        raise CheckpointError("this pickle contains a numpy array of Python objects; refusing to load it")
    if not _NUMPY_TYPESTR.fullmatch(typestr):
        raise CheckpointError(
            f"this pickle contains a numpy dtype {typestr[:16]!r}; only plain numeric dtypes (bool, int, uint, "
            "float, complex) are supported"
        )
    return NumpyDtypeSpec(typestr)


def _np_scalar(spec: Any, data: Any = None, *rest: Any) -> bool | int | float | complex:
    """A numpy scalar as the plain Python number it holds (``float``, ``int``, ``bool`` or ``complex``)."""
    if not isinstance(spec, NumpyDtypeSpec) or rest:
        raise CheckpointError("this pickle contains a numpy scalar of an unsupported dtype")
    dtype = spec.dtype()
    if not isinstance(data, bytes | bytearray) or len(data) != dtype.itemsize:
        raise CheckpointError("a numpy scalar in this pickle does not match its dtype's size; the file is corrupt")
    return np.frombuffer(bytes(data), dtype=dtype)[0].item()


class PickledArray(np.ndarray):
    """A numpy array being unpickled: BUILD reaches :meth:`__setstate__`, which checks the shape, the dtype spec
    and the byte count before numpy sees any of it. Behaves as an ordinary ``numpy.ndarray`` afterwards."""

    def __setstate__(self, state: Any) -> None:
        # numpy's array state: ([version,] shape, dtype, is_fortran, raw bytes).
        if not isinstance(state, tuple) or len(state) not in (4, 5) or (len(state) == 5 and type(state[0]) is not int):
            raise CheckpointError("a numpy array in this pickle has a malformed state; the file is corrupt")
        shape, spec, is_fortran, raw = state[-4:]
        if not isinstance(spec, NumpyDtypeSpec):
            raise CheckpointError("a numpy array in this pickle has an unsupported dtype")
        if (
            not isinstance(shape, tuple)
            or len(shape) > _MAX_NUMPY_DIMS
            or not all(type(n) is int and n >= 0 for n in shape)
            or type(is_fortran) is not bool
        ):
            raise CheckpointError("a numpy array in this pickle has a malformed shape; the file is corrupt")
        dtype = spec.dtype()
        if not isinstance(raw, bytes | bytearray) or len(raw) != math.prod(shape) * dtype.itemsize:
            raise CheckpointError("a numpy array in this pickle does not hold as many bytes as its shape needs")
        super().__setstate__((1, shape, dtype, is_fortran, bytes(raw)))


def _np_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not NDARRAY:
        raise CheckpointError("this pickle contains an unsupported numpy array subclass")
    # numpy pickles an empty placeholder here (shape (0,), typecode b'b'); the real content comes with BUILD.
    return np.ndarray.__new__(PickledArray, (0,), np.uint8)


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise CheckpointError("this pickle contains an unsupported bytes encoding")
    return text.encode(encoding)


def _empty_bytes(*args: Any) -> bytes:
    # Protocol 2 writes an empty bytes object (e.g. the data of an empty numpy array) as a call of bytes().
    if args:
        raise CheckpointError("this pickle calls bytes() with arguments; only the empty bytes object is supported")
    return b""


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
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("_codecs", "encode"): _codecs_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
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
        f"{source}: refuses to load global {printable(f'{module}.{name}', 120)}: this file is not a plain EG3D "
        "network pickle "
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
    """``str(exc)`` on one printable line, shortened to ``limit`` characters."""
    return printable(str(exc), limit)


def printable(value: Any, limit: int = 80) -> str:
    """``str(value)`` as one printable line for an error message: whitespace runs become one space, other
    control characters become ``\\xNN`` escapes (a file's text never reaches the terminal raw), at most ``limit``
    characters."""
    text = " ".join(str(value).split())
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


MAX_PLAIN_NODES = 100_000
"""How many values :func:`to_plain` visits at most: a pickle can share one list many times over (a DAG of 50
levels would otherwise mean 2**50 visits)."""


def to_plain(value: Any, _depth: int = 0, _budget: list[int] | None = None) -> Any:
    """Recursively turn EasyDicts, OrderedDicts, tuples and numpy scalars into plain Python values.

    Numpy scalars are converted only when their dtype is a plain number (no records or sub-arrays, whose layout
    could point outside the value). The loader itself never yields numpy scalars; this covers other callers.

    Raises:
        CheckpointError: nesting deeper than 50, more than :data:`MAX_PLAIN_NODES` values, or a numpy scalar of
            another dtype.
    """
    budget = [MAX_PLAIN_NODES] if _budget is None else _budget
    budget[0] -= 1
    if budget[0] < 0:
        raise CheckpointError(f"a configuration dict in this file holds more than {MAX_PLAIN_NODES} values")
    if _depth > 50:
        raise CheckpointError("a configuration dict in this file is nested too deeply")
    if isinstance(value, dict):
        return {to_plain(k, _depth + 1, budget): to_plain(v, _depth + 1, budget) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v, _depth + 1, budget) for v in value]
    if isinstance(value, NumpyDtypeSpec):
        return value.dtype().str
    if isinstance(value, np.generic):
        dtype = value.dtype
        if dtype.kind not in "biufc" or dtype.names is not None or dtype.subdtype is not None:
            raise CheckpointError(f"a configuration value in this file is a numpy {dtype.kind!r} scalar, not a number")
        return value.item()
    return value
