"""Shared pytest fixtures: where the official reference fixtures live, and how to build their weights.

Environment: TRIPLANENET_REFERENCE (the reference pack; default ../shared/reference), TRIPLANENET_REQUIRE_REFERENCE=1
(a missing reference file fails instead of skipping; .ci/run sets it), TRIPLANENET_PARITY_REPORT=1 (list the max |Δ|
of every tensor compared with :func:`assert_parity`). Every run that reads the pack ends with a "reference parity"
line: how many tests read it and how they ended.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

# A shell starts background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt handler; the
# Ctrl-C tests (and the processes they spawn, which inherit the disposition) would see nothing. Give the suite the
# normal handler wherever it was launched from.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
REQUIRE_REFERENCE = os.environ.get("TRIPLANENET_REQUIRE_REFERENCE", "") not in ("", "0")
"""CI sets TRIPLANENET_REQUIRE_REFERENCE=1: a missing reference file then fails the test instead of skipping it."""

# Which tests read the reference pack, so that the run can say how many parity tests actually ran. The helpers
# below note each read; a read made while a (possibly module-scoped) fixture is being set up also marks that
# fixture, so every later test that requests the cached fixture counts too.
_current_item: pytest.Item | None = None
_fixtures_in_setup: list[object] = []
_reference_fixturedefs: set[int] = set()
_REFERENCE_PROPERTY = "reference_pack"
_reference_outcomes: dict[str, int] = {"passed": 0, "failed": 0, "skipped": 0}
_reads_reference = pytest.StashKey[bool]()

PARITY_REPORT = os.environ.get("TRIPLANENET_PARITY_REPORT", "") not in ("", "0")
"""TRIPLANENET_PARITY_REPORT=1 prints, after the run, the max |Δ| of every tensor compared with assert_parity."""
_PARITY_PROPERTY = "parity_max_abs_delta"
_parity_rows: list[tuple[str, str, float, float, float]] = []  # (test id, tensor, max |Δ|, atol, rtol)


def _note_reference_use() -> None:
    if _current_item is not None:
        _current_item.stash[_reads_reference] = True
    _reference_fixturedefs.update(id(fixturedef) for fixturedef in _fixtures_in_setup)


def _missing_reference(what: str, path: Path) -> None:
    """Skip (default) or fail (TRIPLANENET_REQUIRE_REFERENCE=1) a test whose reference file is absent."""
    if REQUIRE_REFERENCE:
        origin = "from TRIPLANENET_REFERENCE" if os.environ.get("TRIPLANENET_REFERENCE") else "the default"
        pytest.fail(
            f"reference {what} {path.name} is missing: looked for {path} (reference pack directory {REFERENCE_DIR}, "
            f"{origin}). TRIPLANENET_REQUIRE_REFERENCE=1 makes this a failure; point TRIPLANENET_REFERENCE at the "
            "folder that holds fixtures/ and keys/, or unset TRIPLANENET_REQUIRE_REFERENCE to skip the parity tests.",
            pytrace=False,
        )
    pytest.skip(f"reference {what} {path.name} not available (set TRIPLANENET_REFERENCE)")


def assert_parity(name: str, actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float = 0.0) -> None:
    """``torch.testing.assert_close`` against a reference tensor that also records the max |Δ| for the report.

    The measured largest absolute difference is printed in the summary line of every run, and per tensor with
    TRIPLANENET_PARITY_REPORT=1 (the numbers quoted in README.md and docs/architecture.md come from there).
    """
    if actual.shape == expected.shape and actual.numel():
        delta = (actual.detach().double() - expected.detach().double()).abs().max().item()
    else:
        delta = float("nan")
    if _current_item is not None:
        _current_item.user_properties.append((_PARITY_PROPERTY, (name, delta, atol, rtol)))
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


def fixture_path(name: str) -> Path:
    """Path of a reference fixture; skips the test when the pack is absent (fails under the require variable)."""
    _note_reference_use()
    path = FIXTURES_DIR / name
    if not path.exists():
        _missing_reference("fixture", path)
    return path


def reference_file(relative: str) -> Path:
    """Path of any file in the reference pack (e.g. ``real_cameras/dataset.json``); skips when it is absent (fails
    under TRIPLANENET_REQUIRE_REFERENCE=1), like :func:`fixture_path`."""
    _note_reference_use()
    path = REFERENCE_DIR / relative
    if not path.exists():
        _missing_reference("file", path)
    return path


def load_fixture(name: str) -> dict:
    """Load a ``.pt`` fixture safely (tensors and plain containers only)."""
    return torch.load(fixture_path(name), map_location="cpu", weights_only=True)


def read_keys_tsv(name: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` from a reference ``keys/*.tsv`` dump; skips when absent (fails under the require variable)."""
    _note_reference_use()
    path = KEYS_DIR / name
    if not path.exists():
        _missing_reference("key list", path)
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    global _current_item
    _current_item = item
    try:
        return (yield)
    finally:
        _current_item = None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest):
    _fixtures_in_setup.append(fixturedef)
    try:
        return (yield)
    finally:
        _fixtures_in_setup.pop()


def _reads_reference_pack(item: pytest.Item) -> bool:
    if item.stash.get(_reads_reference, False):
        return True
    info = getattr(item, "_fixtureinfo", None)  # the fixtures the test requests, transitively
    definitions = info.name2fixturedefs.values() if info is not None else ()
    return any(id(fixturedef) in _reference_fixturedefs for chain in definitions for fixturedef in chain)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if _reads_reference_pack(item):
        # user_properties travel with the report from pytest-xdist workers to the controller that prints the summary.
        report.user_properties.append((_REFERENCE_PROPERTY, True))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        for name, value in report.user_properties:
            if name == _PARITY_PROPERTY:
                tensor, delta, atol, rtol = value
                _parity_rows.append((report.nodeid, tensor, delta, atol, rtol))
    if not any(name == _REFERENCE_PROPERTY for name, _ in report.user_properties):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _reference_outcomes[report.outcome] += 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    total = sum(_reference_outcomes.values())
    if total == 0 and not REQUIRE_REFERENCE:
        return
    passed, failed, skipped = (_reference_outcomes[k] for k in ("passed", "failed", "skipped"))
    state = "found" if REFERENCE_DIR.is_dir() else "NOT FOUND"
    hint = "; set TRIPLANENET_REQUIRE_REFERENCE=1 to fail instead of skip" if skipped and not REQUIRE_REFERENCE else ""
    terminalreporter.write_line(
        f"reference parity: {total} tests read the reference pack "
        f"(passed {passed}, failed {failed}, skipped {skipped}); pack {REFERENCE_DIR} {state}{hint}",
        bold=True,
        red=failed > 0 or (REQUIRE_REFERENCE and passed == 0),
    )
    if not _parity_rows:
        return
    # The headline leaves out summary statistics (sums over millions of values carry a relative tolerance only).
    values = [row for row in _parity_rows if "stats" not in row[1]] or _parity_rows
    worst = max(values, key=lambda row: row[2] if row[2] == row[2] else float("inf"))
    terminalreporter.write_line(
        f"reference parity: {len(_parity_rows)} tensor comparisons, largest max |Δ| {worst[2]:.3g} ({worst[1]}, "
        f"{worst[0]})" + ("" if PARITY_REPORT else "; TRIPLANENET_PARITY_REPORT=1 lists every one")
    )
    if PARITY_REPORT:
        terminalreporter.write_line("max |Δ|    atol     rtol     test :: tensor")
        for nodeid, tensor, delta, atol, rtol in sorted(_parity_rows):
            terminalreporter.write_line(f"{delta:<10.3g} {atol:<8.0e} {rtol:<8.0e} {nodeid} :: {tensor}")


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


def _face_mesh_available() -> bool:
    from triplanenet.preprocess.face_mesh import FACE_MESH_FILENAME
    from triplanenet.weights import default_weights_dir

    return (default_weights_dir() / FACE_MESH_FILENAME).is_file()


def _tddfa_available() -> bool:
    from triplanenet.preprocess.tddfa import TDDFA_FILENAME
    from triplanenet.weights import default_weights_dir

    return (default_weights_dir() / TDDFA_FILENAME).is_file()


needs_face_mesh = pytest.mark.skipif(
    not _face_mesh_available(), reason="face-mesh weights missing: run `triplanenet fetch-weights`"
)
"""Skip marker for tests that pose faces with the ``--pose mesh`` estimator (``face_mesh.safetensors``)."""
needs_tddfa = pytest.mark.skipif(
    not _tddfa_available(), reason="3DDFA_V2 weights missing: run `triplanenet fetch-weights`"
)
"""Skip marker for tests that pose faces with the default ``--pose 3ddfa`` estimator (``tddfa_mb1.safetensors``)."""


def spy_pose_estimators(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the calls of each camera estimator (``3ddfa``, ``mesh``, ``mtcnn``) as
    :func:`~triplanenet.preprocess.pose_methods.estimate_face_pose` reaches them; the real estimators still run."""
    import triplanenet.preprocess.mesh_pose as mesh_pose
    import triplanenet.preprocess.pose_methods as pose_methods
    import triplanenet.preprocess.tddfa_pose as tddfa_pose

    calls = {"3ddfa": 0, "mesh": 0, "mtcnn": 0}
    for name, module, function in (
        ("3ddfa", tddfa_pose, "estimate_pose_tddfa"),
        ("mesh", mesh_pose, "estimate_pose_mesh"),
        ("mtcnn", pose_methods, "estimate_pose"),
    ):
        real = getattr(module, function)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, function, counted)
    return calls


@pytest.fixture
def fake_persistent(monkeypatch: pytest.MonkeyPatch) -> type:
    """A class that pickles exactly like an NVIDIA persistent object (``_reconstruct_persistent_obj(meta)``)."""
    package = ModuleType("torch_utils")
    persistence = ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta: dict[str, Any]) -> None:
        raise AssertionError("only used as a pickle reference")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    package.persistence = persistence  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_utils", package)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", persistence)

    class FakePersistent:
        def __init__(self, class_name: str, state: dict[str, Any], module_src: str = "") -> None:
            self.meta = {
                "type": "class",
                "version": 6,
                "module_src": module_src,
                "class_name": class_name,
                "state": state,
            }

        def __reduce__(self) -> tuple[Any, ...]:
            return (_reconstruct_persistent_obj, (self.meta,))

    return FakePersistent


def assert_real_camera_accuracy(pose: str, limits: dict[str, float]) -> None:
    """The ``pose`` estimator's MAEs (degrees) against the official cameras of the reference pack's 12 real photos,
    as ``benchmarks/real_cameras.py`` prints them, are each below ``limits[name]`` (``yaw_mae``, ``pitch_mae``,
    ``rotation_mae``, ``roll_mae``). Skips without the pack, like :func:`reference_file`."""
    folder = reference_file("real_cameras/dataset.json").parent
    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        import real_cameras
    finally:
        sys.path.remove(benchmarks)
    measured = real_cameras.summary(real_cameras.evaluate(folder, pose))
    above = {name: round(measured[name], 3) for name, limit in limits.items() if not measured[name] < limit}
    assert not above, f"--pose {pose}: {above} not below {limits}"
