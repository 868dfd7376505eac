"""The safe loader under attack: mutated pickles and torch zip checkpoints, and hostile numpy BUILD states.

Every input is loaded in one worker subprocess (started once for the module), so a segfault or an abort fails the
test and names the input instead of killing pytest. For every input the properties are:

* the worker survives (no segfault, no abort, no hang);
* the only errors are the project's one-line errors (``CheckpointError`` / ``ConfigError``) with a printable
  message, so no process memory and no control characters reach the terminal;
* nothing runs: an audit hook in the worker records process creation, ``exec``/``compile`` of code, imports of
  new modules, ``ctypes`` and sockets, and no such event may occur while an input is loaded.

Inputs: small pickles built here (numpy scalars, arrays and dtypes of every allowed kind, an NVIDIA-style network
pickle, a refused ``os.system`` payload), a torch zip checkpoint that needs the restricted fallback unpickler,
``tiny_official_G.pkl`` from the reference pack (skipped when absent), and pickles generated from a grammar of
numpy reductions with arbitrary BUILD states (the class of the out-of-bounds dtype attack).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import pickle
import pickletools
import select
import subprocess
import sys
import types
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture_path

_NP_MULTIARRAY = getattr(np, "_core", None) or np.core
_SCALAR = _NP_MULTIARRAY.multiarray.scalar
_RECONSTRUCT = _NP_MULTIARRAY.multiarray._reconstruct
_ALLOWED_ERRORS = ("CheckpointError", "ConfigError")
_TIMEOUT_S = 60.0
_SCALE = max(1, int(os.environ.get("TRIPLANENET_FUZZ_SCALE", "1") or "1"))
"""Multiplies every example count below (e.g. ``TRIPLANENET_FUZZ_SCALE=20`` for a deeper local run)."""

_WORKER_SOURCE = r"""
import io, json, os, sys, tempfile, traceback
from pathlib import Path

from triplanenet.errors import TriplaneNetError
from triplanenet.io import read_generator_checkpoint
from triplanenet.io.checkpoints import safe_torch_load
from triplanenet.io.safe_pickle import safe_load_pickle, to_plain

import triplanenet

WATCHED = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
           "ctypes.", "socket.", "exec", "compile", "code.__new__", "function.__new__")
# Code of installed modules (the standard library and site-packages lazily importing themselves, e.g. zipfile's
# cp437 codec) may run; any other code object, compiled source or process is an event.
INSTALLED = tuple(os.path.realpath(p) + os.sep for p in
                  {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(triplanenet.__file__)})
events = []
armed = [False]

def installed(filename):
    return isinstance(filename, str) and os.path.realpath(filename).startswith(INSTALLED)

def hook(event, args):
    if not armed[0] or not event.startswith(WATCHED):
        return
    if event == "exec" and installed(getattr(args[0], "co_filename", None)):
        return
    if event == "compile" and len(args) > 1 and installed(args[1]):
        return
    events.append(event + " " + repr(args)[:120])

def attempt(outcomes, call):
    try:
        value = call()
    except TriplaneNetError as exc:
        outcomes.append([type(exc).__name__, str(exc)])
    except BaseException as exc:
        where = " | ".join(f"{frame.filename}:{frame.lineno}" for frame in traceback.extract_tb(exc.__traceback__)[-3:])
        outcomes.append([type(exc).__name__, repr(exc)[:300] + " at " + where])
    else:
        outcomes.append(["ok", type(value).__name__])

def loads_plain(data):
    value = safe_load_pickle(io.BytesIO(data))
    to_plain(value)
    repr(value)
    return value

def run(kind, data, folder):
    outcomes = []
    if kind == "p":
        attempt(outcomes, lambda: loads_plain(data))
    path = folder / ("input.pkl" if kind == "p" else "input.pth")
    path.write_bytes(data)
    attempt(outcomes, lambda: read_generator_checkpoint(path))
    if kind == "z":
        attempt(outcomes, lambda: safe_torch_load(path))
    return outcomes

def main():
    folder = Path(tempfile.mkdtemp(prefix="loader-fuzz-"))
    sys.addaudithook(hook)
    stdin, stdout = sys.stdin.buffer, sys.stdout
    while True:
        header = stdin.read(9)
        if len(header) < 9:
            return
        kind, size = header[:1].decode(), int.from_bytes(header[1:], "little")
        data = stdin.read(size)
        armed[0] = kind != "w"  # "w": warm-up (first calls import what the loaders import lazily)
        events.clear()
        outcomes = run(kind.lower() if kind != "w" else "p", data, folder)
        armed[0] = False
        stdout.write(json.dumps({"outcomes": outcomes, "events": list(events)}) + "\n")
        stdout.flush()

main()
"""


class LoaderWorker:
    """A subprocess that loads inputs with the safe loaders and reports outcomes as JSON lines."""

    def __init__(self, source: str = _WORKER_SOURCE) -> None:
        self.source = source
        self.process: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "0"}
        process = subprocess.Popen(
            [sys.executable, "-c", self.source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.process = process
        return process

    def ask(self, kind: str, data: bytes) -> dict[str, Any]:
        """Outcomes for one input, or ``{"crash": returncode}`` when the worker died (it is restarted next time)."""
        process = self.process if self.process is not None and self.process.poll() is None else self._start()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(kind.encode() + len(data).to_bytes(8, "little") + data)
            process.stdin.flush()
        except BrokenPipeError:
            return {"crash": process.wait(timeout=10)}
        ready, _, _ = select.select([process.stdout], [], [], _TIMEOUT_S)
        line = process.stdout.readline() if ready else b""
        if not line:
            if not ready:
                process.kill()
                self.process = None
                return {"crash": "timeout"}
            self.process = None
            return {"crash": process.wait(timeout=10)}
        return json.loads(line)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def worker() -> Iterator[LoaderWorker]:
    loader = LoaderWorker()
    for seed in _small_pickle_seeds():  # import everything the loaders import lazily, before the hook is armed
        loader.ask("w", seed)
    loader.ask("z", _zip_seed())
    loader.ask("z", _zip_seed())
    yield loader
    loader.close()


def check(result: dict[str, Any], what: str) -> None:
    """The properties every input must satisfy (see the module docstring)."""
    assert "crash" not in result, f"the loader process died ({result['crash']}) on {what}"
    assert not result["events"], f"{what} made the loader run something: {result['events']}"
    for outcome, detail in result["outcomes"]:
        if outcome == "ok":
            continue
        assert outcome in _ALLOWED_ERRORS, f"{what} raised {outcome}: {detail}"
        assert detail.isprintable(), f"{what}: the error is not one printable line: {detail!r}"


# ---------------------------------------------------------------------------------------------------------------
# Seeds


@contextlib.contextmanager
def _fake_nvidia_modules() -> Iterator[types.SimpleNamespace]:
    """``torch_utils.persistence._reconstruct_persistent_obj`` and ``dnnlib.util.EasyDict`` as picklable names."""
    names = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
    saved = {name: sys.modules.get(name) for name in names}
    modules = {name: types.ModuleType(name) for name in names}

    def _reconstruct_persistent_obj(meta: dict[str, Any]) -> None:
        raise AssertionError("only used as a pickle reference")

    class EasyDict(dict):  # type: ignore[type-arg]
        pass

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    modules["dnnlib.util"].EasyDict = EasyDict  # type: ignore[attr-defined]
    sys.modules.update(modules)
    try:
        yield types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class _Persistent:
    def __init__(self, reconstruct: Any, class_name: str, state: dict[str, Any]) -> None:
        self.reconstruct = reconstruct
        self.meta = {"type": "class", "version": 6, "module_src": "raise SystemExit(3)", "class_name": class_name}
        self.meta["state"] = state

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.reconstruct, (self.meta,))


class _RunsShell:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


def _numpy_values() -> dict[str, Any]:
    return {
        "scalars": [np.float64(0.25), np.float32(-1.5), np.float16(2), np.int64(-7), np.uint8(200), np.bool_(True)],
        "complex": np.complex64(1 - 2j),
        "arrays": (
            np.arange(6, dtype=np.float32).reshape(2, 3),
            np.asfortranarray(np.arange(6, dtype=">i4").reshape(3, 2)),
            np.zeros((2, 0), dtype=np.uint16),
            np.array(3.5),
        ),
    }


def _network_pickle(protocol: int) -> bytes:
    with _fake_nvidia_modules() as fake:
        kwargs = fake.EasyDict(z_dim=np.int64(8), w_dim=8, rendering_kwargs=fake.EasyDict(ray_start=np.float64(2.25)))
        state = {
            "_parameters": collections.OrderedDict(weight=torch.nn.Parameter(torch.ones(2, 3))),
            "_buffers": collections.OrderedDict(w_avg=torch.zeros(8)),
            "_modules": collections.OrderedDict(),
            "_non_persistent_buffers_set": set(),
            "_init_kwargs": kwargs,
            "_init_args": (),
            "weight_gain": np.float64(0.125),
            "neural_rendering_resolution": np.int64(64),
        }
        g_ema = _Persistent(fake.reconstruct, "TriPlaneGenerator", state)
        return pickle.dumps({"G_ema": g_ema, "training_set_kwargs": fake.EasyDict(xflip=False)}, protocol=protocol)


def _small_pickle_seeds() -> list[bytes]:
    return [
        pickle.dumps(_numpy_values(), protocol=2),
        pickle.dumps(_numpy_values(), protocol=4),
        _network_pickle(2),
        _network_pickle(4),
        pickle.dumps({"G_ema": _RunsShell()}, protocol=4),
    ]


def _zip_seed() -> bytes:
    with _fake_nvidia_modules() as fake:
        buffer = io.BytesIO()
        kwargs = fake.EasyDict(z_dim=np.int64(8), rendering_kwargs={"ray_end": np.float32(3.3)})
        torch.save(
            {"G_ema": {"backbone.w": torch.ones(3)}, "init_kwargs": kwargs, "latent_avg": torch.zeros(8)}, buffer
        )
        return buffer.getvalue()


_SMALL_SEEDS = _small_pickle_seeds()
_ZIP_SEED = _zip_seed()


# ---------------------------------------------------------------------------------------------------------------
# Mutations


def _opcode_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte span of every opcode of ``data``."""
    positions = [pos for _, _, pos in pickletools.genops(data)]
    return list(zip(positions, [*positions[1:], len(data)], strict=True))


@st.composite
def _mutation(draw: st.DrawFn, data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """One opcode-level or byte-level change of ``data``."""
    kind = draw(st.sampled_from(["delete-op", "duplicate-op", "swap-ops", "splice-op", "op-byte", "arg-bytes", "byte"]))
    index = draw(st.integers(0, len(spans) - 2))
    start, end = spans[index]
    if kind == "delete-op":
        return data[:start] + data[end:]
    if kind == "duplicate-op":
        return data[:end] + data[start:end] + data[end:]
    if kind == "swap-ops":
        next_end = spans[index + 1][1]
        return data[:start] + data[end:next_end] + data[start:end] + data[next_end:]
    if kind == "splice-op":  # another opcode of the same pickle, inserted here
        other_start, other_end = spans[draw(st.integers(0, len(spans) - 1))]
        return data[:start] + data[other_start:other_end] + data[start:]
    if kind == "op-byte":
        return data[:start] + bytes([draw(st.integers(0, 255))]) + data[start + 1 :]
    if kind == "arg-bytes" and end - start > 1:  # overwrite (part of) the opcode's argument
        offset = draw(st.integers(start + 1, end - 1))
        patch = draw(st.binary(min_size=1, max_size=min(8, end - offset)))
        return data[:offset] + patch + data[offset + len(patch) :]
    position = draw(st.integers(0, len(data) - 1))
    return data[:position] + bytes([draw(st.integers(0, 255))]) + data[position + 1 :]


def _replace_member(archive: bytes, name: str, content: bytes) -> bytes:
    """``archive`` (a zip) with member ``name`` replaced, all CRCs valid (so the mutation reaches the unpickler)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info.filename, content if info.filename == name else source.read(info.filename))
    return out.getvalue()


_ZIP_PKL_NAME = next(n for n in zipfile.ZipFile(io.BytesIO(_ZIP_SEED)).namelist() if n.endswith("/data.pkl"))
_ZIP_PKL = zipfile.ZipFile(io.BytesIO(_ZIP_SEED)).read(_ZIP_PKL_NAME)


@st.composite
def _mutated_small_pickle(draw: st.DrawFn) -> bytes:
    seed = draw(st.sampled_from(_SMALL_SEEDS))
    data = seed
    for _ in range(draw(st.integers(1, 3))):
        try:
            spans = _opcode_spans(data)
        except Exception:  # an earlier mutation broke the opcode stream: mutate bytes from here on
            spans = [(0, 1), (1, len(data))]
        if len(spans) < 2:
            break
        data = draw(_mutation(data, spans))
    return data


@settings(max_examples=250 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mutated_small_pickle())
def test_mutated_pickles_only_raise_one_line_errors(worker: LoaderWorker, data: bytes) -> None:
    check(worker.ask("p", data), f"mutated pickle {data[:64]!r}...")


_ZIP_PKL_SPANS = _opcode_spans(_ZIP_PKL)


@settings(max_examples=60 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), whole_archive=st.booleans())
def test_mutated_torch_zip_checkpoints_only_raise_one_line_errors(
    worker: LoaderWorker, data: st.DataObject, whole_archive: bool
) -> None:
    if whole_archive:  # a damaged container (headers, CRCs, sizes)
        archive = data.draw(_mutation(_ZIP_SEED, [(0, 1), (1, len(_ZIP_SEED))]))
    else:  # a valid container whose data.pkl was mutated opcode by opcode
        archive = _replace_member(_ZIP_SEED, _ZIP_PKL_NAME, data.draw(_mutation(_ZIP_PKL, _ZIP_PKL_SPANS)))
    check(worker.ask("z", archive), "a mutated torch zip checkpoint")


@pytest.fixture(scope="module")
def official_pickle() -> tuple[bytes, list[tuple[int, int]]]:
    data = fixture_path("tiny_official_G.pkl").read_bytes()
    # Opcodes only (not the tensor payloads inside them): the mutations target the pickle's structure.
    return data, _opcode_spans(data)


@settings(max_examples=12 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_official_network_pickle_only_raises_one_line_errors(
    worker: LoaderWorker, official_pickle: tuple[bytes, list[tuple[int, int]]], data: st.DataObject
) -> None:
    original, spans = official_pickle
    check(worker.ask("p", data.draw(_mutation(original, spans))), "a mutated tiny_official_G.pkl")


# ---------------------------------------------------------------------------------------------------------------
# Hostile numpy reductions: every BUILD state the grammar can express


class _Dtype:
    """Pickles as ``numpy.dtype(typestr, False, True)`` followed by BUILD ``state`` (any value)."""

    def __init__(self, typestr: str, state: Any) -> None:
        self.typestr, self.state = typestr, state

    def __reduce__(self) -> tuple[Any, ...]:
        return (np.dtype, (self.typestr, False, True), self.state)

    def __repr__(self) -> str:
        return f"dtype({self.typestr!r}, state={self.state!r})"


class _Scalar:
    def __init__(self, dtype: Any, payload: Any, state: Any = None) -> None:
        self.dtype, self.payload, self.state = dtype, payload, state

    def __reduce__(self) -> tuple[Any, ...]:
        return (_SCALAR, (self.dtype, self.payload), self.state)

    def __repr__(self) -> str:
        return f"scalar({self.dtype!r}, {self.payload!r}, state={self.state!r})"


class _Array:
    def __init__(self, state: Any) -> None:
        self.state = state

    def __reduce__(self) -> tuple[Any, ...]:
        return (_RECONSTRUCT, (np.ndarray, (0,), b"b"), self.state)

    def __repr__(self) -> str:
        return f"array(state={self.state!r})"


_PLAIN_STATE = (3, "<", None, None, None, -1, -1, 0)
_TYPESTRS = ["V8", "V16", "V1", "f8", "f4", "i8", "u1", "b1", "c16", "O", "U4", "S3", "M8", "f16", ""]
_offsets = st.one_of(st.integers(-16, 64), st.sampled_from([1 << 20, 1 << 31, 1 << 40, -(1 << 31)]))
_sizes = st.one_of(st.sampled_from([-1, 0, 1, 8, 16]), _offsets)


@st.composite
def _dtype_state(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    """numpy's dtype state ``(version, byteorder, subarray, names, fields, elsize, alignment, flags)``, with the
    parts an attacker controls drawn freely (fields usually consistent with names, so numpy accepts them)."""
    if draw(st.integers(0, 9)) == 0:  # not a dtype state at all
        junk = st.dictionaries(st.sampled_from(["names", "fields", "itemsize", "__class__"]), _offsets, max_size=2)
        return draw(st.one_of(st.none(), st.tuples(st.integers(0, 4)), junk))
    names = draw(st.sampled_from([None, ("a",), ("a", "b"), ("a", 1)]))
    fields = None
    if names is not None or draw(st.integers(0, 3)) == 0:
        fields = {}
        for name in names or ("a",):
            if draw(st.integers(0, 5)):
                fields[name] = (draw(base), draw(_offsets), *draw(st.sampled_from([(), ("title",)])))
    subarray = draw(st.tuples(base, st.tuples(st.integers(-2, 1 << 20)))) if draw(st.integers(0, 4)) == 0 else None
    return (
        draw(st.sampled_from([3, 3, 4, 2])),
        draw(st.sampled_from(["|", "<", ">", "=", "x"])),
        subarray,
        names,
        fields,
        draw(_sizes),
        draw(st.sampled_from([1, -1, 8, 1 << 40])),
        draw(st.sampled_from([16, 0, 63, -1])),
    )


def _hostile_dtypes() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.builds(_Dtype, st.sampled_from(["u8", "f4", "V8", "i1"]), st.just(_PLAIN_STATE)),
        lambda inner: st.builds(_Dtype, st.sampled_from(_TYPESTRS), _dtype_state(inner)),
        max_leaves=3,
    )


_payloads = st.one_of(st.sampled_from([b"\0" * 8, b"\x01" * 16]), st.binary(max_size=24))
_hostile_values = st.one_of(
    st.builds(_Scalar, _hostile_dtypes(), _payloads, st.one_of(st.none(), st.integers(), st.binary())),
    st.builds(
        _Array,
        st.one_of(
            st.tuples(
                st.sampled_from([1, 0]),
                st.tuples(st.integers(-3, 6), st.integers(0, 1 << 40)).map(lambda t: t[:1] if t[1] > 99 else t),
                _hostile_dtypes(),
                st.sampled_from([False, True, 2]),
                st.one_of(_payloads, st.binary(max_size=96), st.lists(st.integers(), max_size=3)),
            ),
            st.tuples(st.just(1), st.tuples(st.integers(0, 4)), st.sampled_from([None, "f4", 3])),
        ),
    ),
    _hostile_dtypes(),
)


@settings(max_examples=200 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(_hostile_values, min_size=1, max_size=3), protocol=st.sampled_from([2, 4]))
def test_hostile_numpy_build_states_never_reach_numpy(worker: LoaderWorker, values: list[Any], protocol: int) -> None:
    check(worker.ask("p", pickle.dumps(values, protocol=protocol)), f"hostile numpy reductions {values!r}")


# ---------------------------------------------------------------------------------------------------------------
# The probe's attack, as a regression test: a dtype whose field lies beyond its item size


def _out_of_bounds_scalar(offset: int) -> _Scalar:
    state = (3, "|", None, ("a",), {"a": (_Dtype("u8", (3, "<", None, None, None, -1, -1, 0)), offset)}, 8, 1, 16)
    return _Scalar(_Dtype("V8", state), b"\0" * 8)


@pytest.mark.parametrize("offset", [16, 4096, 100_000_000, 1 << 40])
def test_a_dtype_field_beyond_the_item_size_is_refused_in_pkl_and_pth(worker: LoaderWorker, offset: int) -> None:
    result = worker.ask("p", pickle.dumps({"G_ema": _out_of_bounds_scalar(offset)}, protocol=4))
    check(result, f"the out-of-bounds dtype (offset {offset}) in a .pkl")
    assert [outcome for outcome, _ in result["outcomes"]] == ["CheckpointError", "CheckpointError"]
    assert "only plain numeric dtypes" in result["outcomes"][0][1]

    with _fake_nvidia_modules() as fake:  # an EasyDict makes torch's weights_only refuse: our fallback reads it
        buffer = io.BytesIO()
        torch.save({"G_ema": {}, "init_kwargs": fake.EasyDict(z=_out_of_bounds_scalar(offset))}, buffer)
    result = worker.ask("z", buffer.getvalue())
    check(result, f"the out-of-bounds dtype (offset {offset}) in a .pth")
    assert all(outcome == "CheckpointError" for outcome, _ in result["outcomes"]), result


def test_valid_numpy_values_load_as_plain_numbers_and_arrays() -> None:
    from triplanenet.io.safe_pickle import safe_load_pickle, to_plain

    for protocol in (2, 4):
        loaded = safe_load_pickle(io.BytesIO(pickle.dumps(_numpy_values(), protocol=protocol)))
        expected = _numpy_values()
        assert loaded["scalars"] == [0.25, -1.5, 2.0, -7, 200, True]
        assert [type(v) for v in loaded["scalars"]] == [float, float, float, int, int, bool]
        assert loaded["complex"] == 1 - 2j
        for got, want in zip(loaded["arrays"], expected["arrays"], strict=True):
            assert isinstance(got, np.ndarray) and got.shape == want.shape and np.array_equal(got, want)
            assert got.dtype.kind == want.dtype.kind and got.dtype.itemsize == want.dtype.itemsize
        assert loaded["arrays"][1].flags.f_contiguous
        assert to_plain({"a": loaded["scalars"]}) == {"a": [0.25, -1.5, 2.0, -7, 200, True]}


def test_to_plain_bounds_shared_references_and_refuses_record_scalars() -> None:
    from triplanenet.errors import CheckpointError
    from triplanenet.io.safe_pickle import to_plain

    node: list[Any] = [1]
    for _ in range(40):  # 2**40 paths through 80 lists
        node = [node, node]
    with pytest.raises(CheckpointError, match="more than"):
        to_plain(node)
    record = np.zeros(1, dtype=[("a", "u1")])[0]
    with pytest.raises(CheckpointError, match="not a number"):
        to_plain({"x": record})
    assert to_plain({"x": np.float32(0.5), "y": (np.int16(3),)}) == {"x": 0.5, "y": [3]}


def test_the_worker_reports_a_crash_instead_of_passing() -> None:
    """The harness itself: a worker that dies on an input is reported as a crash, and the next input restarts it."""
    crashing = LoaderWorker(source="import os, sys\nsys.stdin.buffer.read(9)\nos.abort()\n")
    assert crashing.ask("p", b"\x80\x04N.")["crash"] not in (0, None)
    assert crashing.ask("p", b"\x80\x04N.")["crash"] not in (0, None)
    crashing.close()
