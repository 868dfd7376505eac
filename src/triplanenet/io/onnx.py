"""A small, safe reader for ONNX model files: graph nodes (op, inputs, outputs, attributes) and initializers.

Only what is needed to convert a small float model into PyTorch is read. The file is a protocol-buffers message
decoded here from the wire format (no ``onnx`` or ``protobuf`` package): every length is checked against the
bytes that remain, nesting is bounded and sizes are limited, so a corrupt or hostile file ends in one
:class:`~triplanenet.errors.CheckpointError` line, never in an out-of-range read or a huge allocation. Nothing is
executed.

Facts used (the public ``onnx.proto``): ``ModelProto.graph`` is field 7; ``GraphProto`` has ``node`` (1),
``initializer`` (5), ``input`` (11), ``output`` (12); ``NodeProto`` has ``input`` (1), ``output`` (2), ``name`` (3),
``op_type`` (4), ``attribute`` (5); ``AttributeProto`` has ``name`` (1), ``f`` (2), ``i`` (3), ``s`` (4), ``t`` (5),
``floats`` (7), ``ints`` (8); ``TensorProto`` has ``dims`` (1), ``data_type`` (2), ``float_data`` (4),
``int32_data`` (5), ``int64_data`` (7), ``name`` (8), ``raw_data`` (9) (little-endian); ``ValueInfoProto.name`` is
field 1. Data types: 1 float32, 6 int32, 7 int64, 10 float16, 11 float64.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from triplanenet.errors import CheckpointError

__all__ = ["OnnxModel", "OnnxNode", "parse_onnx", "read_onnx"]

MAX_ONNX_BYTES = 256 * 1024 * 1024
"""Files larger than this are refused (3DDFA_V2's MobileNet is 13 MB)."""

_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    6: np.dtype("<i4"),
    7: np.dtype("<i8"),
    10: np.dtype("<f2"),
    11: np.dtype("<f8"),
}
AttributeValue = float | int | bytes | np.ndarray | tuple[float, ...] | tuple[int, ...]


@dataclass(frozen=True)
class OnnxNode:
    """One graph node: ``op_type``, tensor names in and out, and its attributes (floats, ints, bytes, tensors,
    or tuples of floats / ints)."""

    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    name: str = ""
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class OnnxModel:
    """The main graph: nodes in file order (ONNX requires topological order), initializers by name, and the
    names of the graph's inputs and outputs."""

    nodes: tuple[OnnxNode, ...]
    initializers: dict[str, np.ndarray]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class _Fields:
    """Decode one protobuf message into ``{field number: [values]}`` (varints as int, fixed64/32 as raw bytes,
    length-delimited fields as bytes)."""

    def __init__(self, data: bytes, what: str) -> None:
        self.what = what
        self.fields: dict[int, list[int | bytes]] = {}
        pos, end = 0, len(data)
        while pos < end:
            key, pos = self._varint(data, pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise self.fail("a field numbered 0")
            if wire == 0:
                value, pos = self._varint(data, pos)
            elif wire == 1:
                value, pos = self._take(data, pos, 8)
            elif wire == 2:
                size, pos = self._varint(data, pos)
                value, pos = self._take(data, pos, size)
            elif wire == 5:
                value, pos = self._take(data, pos, 4)
            else:
                raise self.fail(f"wire type {wire}")
            self.fields.setdefault(number, []).append(value)

    def fail(self, why: str) -> CheckpointError:
        return CheckpointError(f"{self.what}: not a readable ONNX file ({why})")

    def _varint(self, data: bytes, pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= len(data):
                raise self.fail("truncated")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7
            if shift > 63:
                raise self.fail("an over-long number")

    def _take(self, data: bytes, pos: int, size: int) -> tuple[bytes, int]:
        if size > len(data) - pos:
            raise self.fail("truncated")
        return data[pos : pos + size], pos + size

    def messages(self, number: int) -> list[bytes]:
        values = self.fields.get(number, [])
        if not all(isinstance(v, bytes) for v in values):
            raise self.fail(f"field {number} is not a message")
        return values  # type: ignore[return-value]

    def text(self, number: int) -> str:
        values = self.messages(number)
        try:
            return values[-1].decode() if values else ""
        except UnicodeDecodeError:
            raise self.fail(f"field {number} is not text") from None

    def texts(self, number: int) -> tuple[str, ...]:
        try:
            return tuple(v.decode() for v in self.messages(number))
        except UnicodeDecodeError:
            raise self.fail(f"field {number} is not text") from None

    def integer(self, number: int, default: int = 0) -> int:
        values = self.fields.get(number)
        if not values:
            return default
        if not isinstance(values[-1], int):
            raise self.fail(f"field {number} is not an integer")
        return _signed(values[-1])

    def integers(self, number: int) -> tuple[int, ...]:
        """A repeated int64 field, packed (one length-delimited run of varints) or not."""
        out: list[int] = []
        for value in self.fields.get(number, []):
            if isinstance(value, int):
                out.append(_signed(value))
                continue
            pos = 0
            while pos < len(value):
                item, pos = self._varint(value, pos)
                out.append(_signed(item))
        return tuple(out)

    def floats(self, number: int) -> tuple[float, ...]:
        """A repeated float field, packed or not."""
        out: list[float] = []
        for value in self.fields.get(number, []):
            if isinstance(value, int) or len(value) % 4:
                raise self.fail(f"field {number} is not a list of floats")
            out.extend(struct.unpack(f"<{len(value) // 4}f", value))
        return tuple(out)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _tensor(data: bytes, what: str) -> tuple[str, np.ndarray]:
    message = _Fields(data, what)
    name = message.text(8)
    dims = message.integers(1)
    dtype = _DTYPES.get(message.integer(2))
    if dtype is None:
        raise message.fail(f"tensor {name!r} has data type {message.integer(2)}, which this reader does not handle")
    if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.float64)) > MAX_ONNX_BYTES:
        raise message.fail(f"tensor {name!r} has dimensions {dims}")
    count = int(np.prod(dims, dtype=np.int64))
    raw = message.messages(9)
    if raw:
        if len(raw[-1]) != count * dtype.itemsize:
            raise message.fail(f"tensor {name!r} holds {len(raw[-1])} bytes for dimensions {dims}")
        values = np.frombuffer(raw[-1], dtype=dtype)
    elif dtype.kind == "f" and dtype.itemsize == 4:
        values = np.asarray(message.floats(4), dtype=dtype)
    elif dtype.kind == "i":
        values = np.asarray(message.integers(7 if dtype.itemsize == 8 else 5), dtype=dtype)
    else:
        raise message.fail(f"tensor {name!r} keeps its data outside raw_data")
    if values.size != count:
        raise message.fail(f"tensor {name!r} holds {values.size} values for dimensions {dims}")
    return name, values.reshape(dims).copy()


def _attribute(data: bytes, what: str) -> tuple[str, AttributeValue]:
    message = _Fields(data, what)
    name = message.text(1)
    if 2 in message.fields:
        return name, message.floats(2)[0]
    if 3 in message.fields:
        return name, message.integer(3)
    if 4 in message.fields:
        return name, message.messages(4)[-1]
    if 5 in message.fields:
        return name, _tensor(message.messages(5)[-1], what)[1]
    if 7 in message.fields:
        return name, message.floats(7)
    return name, message.integers(8)


def parse_onnx(data: bytes, what: str = "onnx file") -> OnnxModel:
    """Decode ONNX model bytes.

    Raises:
        CheckpointError: not an ONNX model (no graph), truncated or malformed, or too large.
    """
    if len(data) > MAX_ONNX_BYTES:
        raise CheckpointError(f"{what}: {len(data)} bytes is larger than any ONNX file this reader accepts")
    model = _Fields(data, what)
    graphs = model.messages(7)
    if not graphs:
        raise model.fail("no graph")
    graph = _Fields(graphs[-1], what)
    nodes = []
    for raw in graph.messages(1):
        node = _Fields(raw, what)
        attributes = dict(_attribute(a, what) for a in node.messages(5))
        nodes.append(OnnxNode(node.text(4), node.texts(1), node.texts(2), node.text(3), attributes))
    initializers = dict(_tensor(raw, what) for raw in graph.messages(5))
    inputs = tuple(_Fields(raw, what).text(1) for raw in graph.messages(11))
    outputs = tuple(_Fields(raw, what).text(1) for raw in graph.messages(12))
    return OnnxModel(tuple(nodes), initializers, inputs, outputs)


def read_onnx(path: str | Path) -> OnnxModel:
    """:func:`parse_onnx` of a file.

    Raises:
        CheckpointError: unreadable or not an ONNX model.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_onnx(data, str(path))
