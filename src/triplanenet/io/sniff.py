"""Tell checkpoint containers apart by their structure (never by the extension, never by one byte).

* ``zip`` (``torch.save`` since PyTorch 1.6): the zip local-file or end-of-archive magic, ``PK\\x03\\x04`` /
  ``PK\\x05\\x06``.
* ``safetensors``: a little-endian unsigned 64-bit header length N (2 <= N <= :data:`MAX_SAFETENSORS_HEADER`, and
  the file holds at least 8 + N bytes) followed by exactly N bytes that parse as one JSON object.
* ``pickle`` (NVIDIA network pickles; pre-zip ``torch.save`` files, whose first pickle is a magic number): the
  PROTO opcode ``0x80`` followed by a protocol number from 2 to 5.

The safetensors test comes first and is decisive: a header length whose low byte is ``0x80`` (one file in 256)
looks like a pickle's first byte, but only a real header is followed by its JSON. A pickle never passes the
safetensors test, because its bytes 2..7 give a header length far beyond the bound.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO, Literal

FileFormat = Literal["zip", "safetensors", "pickle"]

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
"""The largest safetensors JSON header accepted (the ``safetensors`` library's own limit is the same 100 MB)."""
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
PICKLE_PROTOCOLS = range(2, 6)


def sniff_format(path: str | os.PathLike[str]) -> FileFormat | None:
    """The container format of ``path`` (``'zip'``, ``'safetensors'``, ``'pickle'``), or ``None`` when it is none
    of them (also for an empty file).

    Raises:
        OSError: the file cannot be opened or read.
    """
    file = Path(path)
    size = file.stat().st_size
    with open(file, "rb") as handle:
        head = handle.read(9)
        if head[:4] in ZIP_MAGIC:
            return "zip"
        if _is_safetensors_header(handle, head, size):
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS:
        return "pickle"
    return None


def _is_safetensors_header(handle: BinaryIO, head: bytes, size: int) -> bool:
    """Whether ``head`` (the first 9 bytes) starts a safetensors header, reading the header from ``handle``."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    length = int.from_bytes(head[:8], "little")
    if not 2 <= length <= min(MAX_SAFETENSORS_HEADER, size - 8):
        return False
    handle.seek(8)
    text = handle.read(length)
    if len(text) != length:
        return False
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(header, dict)
