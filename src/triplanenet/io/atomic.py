"""Atomic file writing: write to a temporary file in the destination folder, then rename over the target."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from triplanenet.errors import TriplaneNetError


class OutputWriteError(TriplaneNetError):
    """An output file could not be written (disk full, permissions, missing folder)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on failure it is removed.

    The temporary name keeps ``path``'s extension (or ``suffix``) so that writers that infer the format from the
    extension still work.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.",
            suffix=suffix if suffix is not None else target.suffix,
            dir=target.parent,
        )
        os.close(fd)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {target}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp (and some writers, e.g. safetensors) create 0600 files; give outputs the permissions a normal
        # open() would (0666 minus umask). Done after writing because a writer may have replaced the file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))
