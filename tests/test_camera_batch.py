"""One malformed camera file skips its image; the rest of an ``invert`` batch goes on (issue 21).

Sidecar JSON files that nest too deeply, hold a 5000-digit or a float-overflowing integer, have the wrong length,
hold NaN, are a directory or a symlink loop are each reported in one line for their image; the good image is still
inverted and the command exits 1 at the end. Runs on the tiny preset, as ``tests/test_cli.py`` does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from triplanenet.eg3d.camera import camera_label
from triplanenet.errors import CameraError
from triplanenet.io.cameras import camera_for_image

runner = CliRunner()

LABEL = camera_label(torch.tensor([0.2]), torch.tensor([0.0]))[0].tolist()


def _bad_sidecars(folder: Path) -> dict[str, str]:
    """Write one image per malformed sidecar; return image name -> a word its error must contain."""
    cases: dict[str, str] = {}

    def text(name: str, content: str, needle: str) -> None:
        (folder / f"{name}.json").write_text(content)
        cases[name] = needle

    text("deep", "[" * 100_000 + "]" * 100_000, "deeply")
    text("digits", '{"label": [' + "9" * 5000 + "]}", "digits")
    text("bigint", json.dumps({"label": [10**400, *LABEL[1:]]}), "too large")
    text("short", json.dumps({"label": LABEL[:24]}), "24 entries")
    text("nan", '{"label": [NaN' + "".join(f", {v}" for v in LABEL[1:]) + "]}", "nan.json")
    (folder / "dir.json").mkdir()
    cases["dir"] = "directory"
    os.symlink(folder / "loop.json", folder / "loop.json")
    cases["loop"] = "loop.json"
    return cases


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(path)


def test_malformed_sidecars_are_camera_errors(tmp_path: Path) -> None:
    for name, needle in _bad_sidecars(tmp_path).items():
        _image(tmp_path / f"{name}.png", 0)
        with pytest.raises(CameraError) as info:
            camera_for_image(tmp_path / f"{name}.png")
        text = str(info.value)
        assert "\n" not in text and needle in text, (name, text)


def test_invert_skips_images_with_bad_camera_files_and_inverts_the_rest(tmp_path: Path) -> None:
    from triplanenet.cli.main import app

    inputs = tmp_path / "in"
    inputs.mkdir()
    cases = _bad_sidecars(inputs)
    for i, name in enumerate([*cases, "good"]):
        _image(inputs / f"{name}.png", i)
    (inputs / "good.json").write_text(json.dumps({"label": LABEL}))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["invert", str(inputs), "--preset", "tiny", "--views", "0", "--out", str(out), "--device", "cpu"],
        catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inverted"] == ["good"]
    failed = {Path(p).stem: message for p, message in summary["failed"].items()}
    assert set(failed) == set(cases)
    for name, needle in cases.items():
        assert "\n" not in failed[name] and needle in failed[name], (name, failed[name])
    assert (out / "good" / "inversion.safetensors").is_file()
