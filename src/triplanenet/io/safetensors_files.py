"""Our safetensors files: tensors plus a ``format`` tag and JSON metadata, read and written in one place."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from triplanenet.errors import CheckpointError
from triplanenet.io.atomic import atomic_path


def read_safetensors(
    path: str | os.PathLike[str], expected_format: str, what: str, fix: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on CPU, metadata) of a file whose metadata ``format`` is ``expected_format``.

    Args:
        what: what the file should be, for messages (e.g. "TriPlaneNet model").
        fix: what the user should do when the file is missing or wrong (e.g. "reinstall triplanenet").

    Raises:
        CheckpointError: missing, truncated/corrupt, or another kind of file (one line, naming ``fix``).
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"{file}: {what} file not found; {fix}")
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{file}: the {what} file is truncated or corrupt ({message}); {fix}") from None
    if metadata.get("format") != expected_format:
        raise CheckpointError(
            f"{file}: is not a {what} file (format={metadata.get('format')!r}, expected {expected_format!r}); {fix}"
        )
    return tensors, metadata


def write_safetensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write contiguous CPU copies of ``tensors`` with ``metadata`` (must include ``format``), atomically."""
    data = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(data, str(tmp), metadata=metadata)
