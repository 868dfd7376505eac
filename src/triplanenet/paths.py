"""Where the project keeps files it fetches: one cache folder, shared by the weight fetcher and the downloader."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TRIPLANENET_HOME"
"""Environment variable overriding :func:`triplanenet_home` (the cache of downloaded checkpoints)."""


def triplanenet_home() -> Path:
    """The project's cache folder: ``$TRIPLANENET_HOME`` if set (and non-empty), else ``~/.cache/triplanenet``.

    Official checkpoints fetched by ``triplanenet download`` live in ``<home>/<name>/``; the LPIPS weights go to
    :func:`triplanenet.weights.default_weights_dir`, which is this folder unless ``$TRIPLANENET_WEIGHTS`` says
    otherwise.
    """
    env = os.environ.get(HOME_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "triplanenet"
