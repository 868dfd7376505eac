"""Atomic file writing: write to a temporary file in the destination folder, then rename over the target."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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


def write_json_atomic(path: str | os.PathLike[str], data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as strict JSON (RFC 8259) atomically: NaN and ±inf, which ``json.dumps`` would write as
    the invalid tokens ``NaN``/``Infinity``, become ``null``; tuples become lists."""
    write_text_atomic(path, json.dumps(finite_json(data), indent=indent, allow_nan=False))


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (recursively through dicts, lists and tuples)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[list[int]]:
    """Hold Ctrl-C (SIGINT) back while the block runs, so that a group of writes finishes together; likewise
    SIGTERM while a Python handler is installed for it (:func:`termination_as_interrupt`).

    A signal that arrives meanwhile is delivered again when the block has finished, to the handler that was in
    place before (Python's default raises ``KeyboardInterrupt`` there; an ignored SIGINT stays ignored). When the
    block itself fails, its own error propagates instead. Yields the list of signals received so far. Outside the
    main thread, where Python cannot handle signals, the block runs unprotected.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    held = {
        signum: handler
        for signum, handler in previous.items()
        if callable(handler) or (signum == signal.SIGINT and handler == signal.SIG_DFL)
    }
    for signum in held:
        signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield received
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)
    for signum in dict.fromkeys(received):  # each kind of signal once, in the order they came
        handler = held[signum]
        if callable(handler):
            handler(signum, None)  # signal.default_int_handler raises KeyboardInterrupt
        else:  # SIGINT at SIG_DFL: the process would stop; stop it the Python way
            raise KeyboardInterrupt


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a batch scheduler's stop) like Ctrl-C while the block runs: it raises
    ``KeyboardInterrupt``, so that the code's interrupt handling (a training run's last save) happens too.

    Only where SIGTERM still has its default action and in the main thread; a handler someone else installed is
    left alone. The previous handler is back when the block ends.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}(?:\.[A-Za-z0-9]+)?")


def remove_stale_temporaries(folder: str | os.PathLike[str], targets: Iterable[str] | None = None) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` left in ``folder`` when its process was killed
    (``kill -9``, power loss) before the rename; returns them.

    Only names of the form ``.<target>.<8 random characters>[.<ext>]`` are touched, and only for ``targets``
    (e.g. ``{"last.pt"}``) when given. Call it when a run starts, before anything writes into ``folder``: two runs
    writing into one folder at the same time are not supported.
    """
    directory = Path(folder)
    wanted = None if targets is None else set(targets)
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY_NAME.fullmatch(entry.name)
        if match is None or (wanted is not None and match["target"] not in wanted) or not entry.is_file():
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed
