"""Content fingerprints of files."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike[str], block_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``block_size`` blocks (constant memory for multi-GB checkpoints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()
