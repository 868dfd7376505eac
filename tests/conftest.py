"""Shared pytest fixtures: where the official reference fixtures live, and how to build their weights."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one xdist worker per core; several torch threads per worker would oversubscribe the cores
    # (OpenMP threads spin while waiting, which slowed the suite several-fold on the 2-core CI machine).
    torch.set_num_threads(1)


def _reference_dir() -> Path:
    env = os.environ.get("TRIPLANENET_REFERENCE")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "reference"


REFERENCE_DIR = _reference_dir()
FIXTURES_DIR = REFERENCE_DIR / "fixtures"
KEYS_DIR = REFERENCE_DIR / "keys"


def fixture_path(name: str) -> Path:
    """Path of a reference fixture; skips the test cleanly when the reference pack is absent."""
    path = FIXTURES_DIR / name
    if not path.exists():
        pytest.skip(f"reference fixture {name} not available (set TRIPLANENET_REFERENCE)")
    return path


def load_fixture(name: str) -> dict:
    """Load a ``.pt`` fixture safely (tensors and plain containers only)."""
    return torch.load(fixture_path(name), map_location="cpu", weights_only=True)


def read_keys_tsv(name: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` from a reference ``keys/*.tsv`` dump; skips when absent."""
    path = KEYS_DIR / name
    if not path.exists():
        pytest.skip(f"reference key list {name} not available")
    shapes: dict[str, tuple[int, ...]] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape, *_ = line.split("\t")
        shapes[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return shapes


def fixture_weights() -> ModuleType:
    """The reference pack's ``weights.py`` (deterministic weights from key names), imported from ../shared."""
    path = fixture_path("weights.py")
    spec = importlib.util.spec_from_file_location("reference_fixture_weights", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fill_module(module: torch.nn.Module, seed: int = 1, prefix: str = "") -> None:
    """Overwrite every state-dict entry of ``module`` with the reference deterministic weights."""
    weights = fixture_weights()
    state = {
        key: weights.fill(prefix + key, tuple(value.shape), value.dtype, seed=seed)
        for key, value in module.state_dict().items()
    }
    module.load_state_dict(state, strict=True)


@pytest.fixture(autouse=True)
def _torch_determinism() -> None:
    torch.manual_seed(0)


def _mtcnn_available() -> bool:
    from triplanenet.errors import CheckpointError
    from triplanenet.preprocess.mtcnn import find_mtcnn_weights

    try:
        find_mtcnn_weights()
    except CheckpointError:
        return False
    return True


needs_mtcnn = pytest.mark.skipif(
    not _mtcnn_available(), reason="MTCNN weights missing: pip install --no-deps facenet-pytorch==2.6.0"
)
"""Skip marker for tests that run face detection (MTCNN weights come from the facenet-pytorch wheel)."""
