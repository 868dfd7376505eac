"""A small, safe reader for TensorFlow Lite model files (``.tflite`` flatbuffers): graph ops and constant tensors.

Only what is needed to convert a small float model into PyTorch is read: operator codes, the first subgraph's
tensors (shape, type, name, constant data) and operators (inputs, outputs, builtin options as raw fields). Every
offset is bounds-checked before it is followed, recursion is bounded, and sizes are limited, so a corrupt or
hostile file ends in one :class:`~triplanenet.errors.CheckpointError` line and never in an out-of-range read, a
huge allocation or an endless loop. Nothing is executed and no TensorFlow code is needed.

Facts used (the public TFLite flatbuffer schema, ``schema.fbs``): the root table is ``Model`` (file identifier
``TFL3`` at bytes 4–8) with fields ``operator_codes`` (1), ``subgraphs`` (2), ``buffers`` (4); ``OperatorCode``
has ``deprecated_builtin_code`` (0, int8), ``custom_code`` (1), ``builtin_code`` (3, int32); ``SubGraph`` has
``tensors`` (0), ``inputs`` (1), ``outputs`` (2), ``operators`` (3); ``Tensor`` has ``shape`` (0), ``type`` (1),
``buffer`` (2), ``name`` (3); ``Operator`` has ``opcode_index`` (0), ``inputs`` (1), ``outputs`` (2),
``builtin_options`` (4, a table); ``Buffer`` has ``data`` (0, ubyte vector).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from triplanenet.errors import CheckpointError

__all__ = ["BUILTIN_OPS", "TFLiteModel", "TFLiteOperator", "TFLiteTensor", "parse_tflite", "read_tflite"]

MAX_TFLITE_BYTES = 256 * 1024 * 1024
"""Files larger than this are refused (the face mesh is 1.2 MB)."""
_MAX_ITEMS = 1_000_000

BUILTIN_OPS: dict[int, str] = {
    0: "ADD",
    1: "AVERAGE_POOL_2D",
    2: "CONCATENATION",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE",
    9: "FULLY_CONNECTED",
    14: "LOGISTIC",
    17: "MAX_POOL_2D",
    18: "MUL",
    19: "RELU",
    21: "RELU6",
    22: "RESHAPE",
    28: "TANH",
    34: "PAD",
    41: "SUB",
    54: "PRELU",
    60: "PADV2",
}
"""Builtin operator codes this reader names (others are reported as ``BUILTIN_<code>``)."""

_TYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f2"),
    2: np.dtype("<i4"),
    3: np.dtype("u1"),
    4: np.dtype("<i8"),
    9: np.dtype("i1"),
}


@dataclass(frozen=True)
class TFLiteTensor:
    """One tensor of the graph.

    Attributes:
        index: position in the subgraph's tensor list.
        name: tensor name from the file.
        shape: its shape.
        dtype: numpy dtype (float16 constants are kept as float16; see :meth:`TFLiteModel.constant`).
        data: the constant's values (shaped), or None for activations.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None


@dataclass(frozen=True)
class TFLiteOperator:
    """One operator: its builtin name, input/output tensor indices (−1 = absent) and raw option fields."""

    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[int, int] = field(default_factory=dict)
    """Scalar fields of ``builtin_options`` by field index (1-byte and 4-byte values read as ints)."""


@dataclass(frozen=True)
class TFLiteModel:
    """The first subgraph of a ``.tflite`` file."""

    tensors: tuple[TFLiteTensor, ...]
    operators: tuple[TFLiteOperator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def constant(self, index: int) -> np.ndarray:
        """Float32 value of a constant tensor, following a DEQUANTIZE (float16 → float32) if it produced it."""
        tensor = self.tensors[index]
        for _ in range(4):  # a few DEQUANTIZE hops at most (a cycle in a corrupt file ends here)
            if tensor.data is not None:
                return tensor.data.astype(np.float32)
            producer = next((op for op in self.operators if op.op == "DEQUANTIZE" and tensor.index in op.outputs), None)
            if producer is None or not producer.inputs or producer.inputs[0] < 0:
                break
            tensor = self.tensors[producer.inputs[0]]
        raise CheckpointError(f"tensor {self.tensors[index].name!r} is not a constant")


class _Reader:
    """Bounds-checked flatbuffer access."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what

    def fail(self, why: str) -> CheckpointError:
        return CheckpointError(f"{self.what}: not a valid TFLite model ({why})")

    def _unpack(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise self.fail(f"offset {pos} outside the file")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def u32(self, pos: int) -> int:
        return self._unpack("<I", pos)

    def table_field(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table``, or None when absent."""
        vtable = table - self._unpack("<i", table)
        vsize = self._unpack("<H", vtable)
        if vsize < 4 or vsize % 2:
            raise self.fail("bad vtable")
        slot = 4 + 2 * index
        if slot + 2 > vsize:
            return None
        offset = self._unpack("<H", vtable + slot)
        return table + offset if offset else None

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = self.table_field(table, index)
        return default if pos is None else self._unpack(fmt, pos)

    def indirect(self, pos: int) -> int:
        target = pos + self.u32(pos)
        if target >= len(self.data):
            raise self.fail("offset past the end")
        return target

    def vector(self, table: int, index: int) -> tuple[int, int] | None:
        """``(start of elements, length)`` of a vector field, or None."""
        pos = self.table_field(table, index)
        if pos is None:
            return None
        start = self.indirect(pos)
        length = self.u32(start)
        if length > _MAX_ITEMS:
            raise self.fail("vector too long")
        return start + 4, length

    def tables(self, table: int, index: int) -> list[int]:
        vec = self.vector(table, index)
        if vec is None:
            return []
        start, length = vec
        return [self.indirect(start + 4 * k) for k in range(length)]

    def ints(self, table: int, index: int) -> tuple[int, ...]:
        vec = self.vector(table, index)
        if vec is None:
            return ()
        start, length = vec
        if start + 4 * length > len(self.data):
            raise self.fail("vector past the end")
        return tuple(struct.unpack_from(f"<{length}i", self.data, start))

    def bytes_field(self, table: int, index: int) -> bytes:
        vec = self.vector(table, index)
        if vec is None:
            return b""
        start, length = vec
        if start + length > len(self.data):
            raise self.fail("data past the end")
        return self.data[start : start + length]


def parse_tflite(data: bytes, what: str = "tflite file") -> TFLiteModel:
    """Parse TFLite flatbuffer bytes (first subgraph only).

    Raises:
        CheckpointError: not a TFLite flatbuffer, or a corrupt one.
    """
    reader = _Reader(data, what)
    if len(data) < 16 or data[4:8] != b"TFL3":
        raise reader.fail("missing the TFL3 file identifier")
    if len(data) > MAX_TFLITE_BYTES:
        raise reader.fail("file too large")
    try:
        model = reader.indirect(0)
        codes = []
        for table in reader.tables(model, 1):
            code = max(reader.scalar(table, 0, "<b"), reader.scalar(table, 3, "<i"))
            codes.append(BUILTIN_OPS.get(code, f"BUILTIN_{code}"))
        buffers = [reader.bytes_field(table, 0) for table in reader.tables(model, 4)]
        subgraphs = reader.tables(model, 2)
        if not subgraphs:
            raise reader.fail("no subgraph")
        graph = subgraphs[0]
        tensors = []
        for index, table in enumerate(reader.tables(graph, 0)):
            shape = reader.ints(table, 0)
            if any(s < 0 for s in shape) or len(shape) > 8:
                raise reader.fail(f"bad shape {shape}")
            type_code = reader.scalar(table, 1, "<b")
            name_vec = reader.bytes_field(table, 3)
            name = name_vec.decode("utf-8", "replace")
            buffer_index = reader.scalar(table, 2, "<I")
            dtype = _TYPES.get(type_code)
            raw = buffers[buffer_index] if 0 < buffer_index < len(buffers) else b""
            value = None
            if raw:
                if dtype is None:
                    raise reader.fail(f"tensor {name!r} has unsupported type {type_code}")
                count = int(np.prod(shape)) if shape else 1
                if count * dtype.itemsize != len(raw):
                    raise reader.fail(f"tensor {name!r}: {len(raw)} bytes for shape {shape}")
                value = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
            tensors.append(TFLiteTensor(index, name, tuple(shape), dtype or np.dtype("u1"), value))
        operators = []
        for table in reader.tables(graph, 3):
            opcode = reader.scalar(table, 0, "<I")
            if opcode >= len(codes):
                raise reader.fail(f"operator code {opcode} out of range")
            inputs, outputs = reader.ints(table, 1), reader.ints(table, 2)
            if any(i >= len(tensors) or i < -1 for i in (*inputs, *outputs)):
                raise reader.fail("operator refers to a missing tensor")
            options: dict[int, int] = {}
            pos = reader.table_field(table, 4)
            if pos is not None:
                opt = reader.indirect(pos)
                for k in range(8):
                    field_pos = reader.table_field(opt, k)
                    if field_pos is not None:
                        options[k] = _option_value(reader, codes[opcode], k, field_pos)
            operators.append(TFLiteOperator(codes[opcode], inputs, outputs, options))
        graph_inputs, graph_outputs = reader.ints(graph, 1), reader.ints(graph, 2)
    except struct.error as exc:  # pragma: no cover - every read is bounds-checked first
        raise reader.fail(str(exc)) from None
    return TFLiteModel(tuple(tensors), tuple(operators), graph_inputs, graph_outputs)


# Byte-sized option fields (enums) per op; the others are int32. (schema.fbs: Padding and ActivationFunctionType
# are byte enums.)
_BYTE_FIELDS: dict[str, set[int]] = {
    "CONV_2D": {0, 3},
    "DEPTHWISE_CONV_2D": {0, 4},
    "MAX_POOL_2D": {0, 5},
    "AVERAGE_POOL_2D": {0, 5},
    "ADD": {0},
    "MUL": {0},
    "SUB": {0},
    "CONCATENATION": {1},
}


def _option_value(reader: _Reader, op: str, index: int, pos: int) -> int:
    if index in _BYTE_FIELDS.get(op, set()):
        return reader._unpack("<b", pos)
    return reader._unpack("<i", pos)


def read_tflite(path: str | Path) -> TFLiteModel:
    """Read and parse a ``.tflite`` file (see :func:`parse_tflite`)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TFLITE_BYTES:
            raise CheckpointError(f"{path}: not a valid TFLite model (file too large)")
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_tflite(data, str(path))
