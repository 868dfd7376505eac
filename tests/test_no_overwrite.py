"""No input's results ever replace another's: ``invert`` output folders and ``preprocess`` crops in a dataset.

``invert`` names a folder by the input's stem, adds the extension when two inputs share a stem (``face.png`` +
``face.jpg``) and a path hash when that is not enough (``a/x.png`` + ``b/x.png``), and records folder -> input in
``summary.json``, which later runs into the same folder respect. ``preprocess`` into an existing dataset adds a crop
whose name is taken by another photo as ``<stem>_2.png`` (or replaces it with ``--overwrite``), and keeps
``dataset.json`` equal to the crops present even when Ctrl-C arrives mid-write. Face detection is replaced by a
stub here (the real detector is exercised in ``test_preprocess_cli.py``).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import triplanenet.preprocess.batch as batch_module
from triplanenet.cli.invert import OutputNames
from triplanenet.cli.main import app
from triplanenet.distributed.records import RECORD_DIR
from triplanenet.eg3d.camera import camera_label
from triplanenet.io.cameras import read_dataset_json

runner = CliRunner()


def _names(tmp_path: Path, *relative: str, previous: dict[str, str] | None = None) -> dict[str, str]:
    paths = [tmp_path / r for r in relative]
    names = OutputNames(paths, previous)
    return {r: names.name(p) for r, p in zip(relative, paths, strict=True)}


# ---------------------------------------------------------------------------------------------------------------
# invert: output folder names


def test_unique_stems_keep_their_name_and_clashes_get_the_extension(tmp_path: Path) -> None:
    assert _names(tmp_path, "a.png", "b.jpg") == {"a.png": "a", "b.jpg": "b"}
    assert _names(tmp_path, "face.png", "face.jpg", "other.png") == {
        "face.png": "face_png",
        "face.jpg": "face_jpg",
        "other.png": "other",
    }


def test_same_name_in_two_folders_gets_a_path_hash_in_any_order(tmp_path: Path) -> None:
    forward = _names(tmp_path, "a/x.png", "b/x.png")
    backward = _names(tmp_path, "b/x.png", "a/x.png")
    assert forward == backward  # the order the inputs were given in does not matter
    assert forward["a/x.png"] == "x_png"
    assert forward["b/x.png"].startswith("x_png_") and len(forward["b/x.png"]) == len("x_png_") + 8


def test_names_are_unique_case_insensitively_and_against_other_stems(tmp_path: Path) -> None:
    names = _names(tmp_path, "a/Face.png", "b/face.png", "face_png.gif")
    assert names["face_png.gif"] == "face_png"  # an unambiguous stem keeps its name
    assert len({n.lower() for n in names.values()}) == 3


def test_faces_never_take_another_inputs_name(tmp_path: Path) -> None:
    paths = [tmp_path / "x.png", tmp_path / "x_face0.png"]
    names = OutputNames(paths)
    faces = names.faces(paths[0], 2)
    assert faces[1] == "x_face1" and faces[0] != "x_face0" and faces[0].startswith("x_face0_")
    assert names.name(paths[1]) == "x_face0"


def test_a_name_recorded_for_another_input_by_an_earlier_run_is_not_reused(tmp_path: Path) -> None:
    previous = {"x": str((tmp_path / "a" / "x.png").resolve())}
    assert _names(tmp_path, "b/x.png", previous=previous)["b/x.png"] == "x_png"
    assert _names(tmp_path, "a/x.png", previous=previous)["a/x.png"] == "x"  # the same input may replace its own


def _photo(path: Path, color: tuple[int, int, int], yaw: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((64, 64, 3), color, dtype=np.uint8)).save(path)
    label = camera_label(torch.tensor([yaw]), torch.tensor([0.0]))[0]
    path.with_name(path.name + ".json").write_text(json.dumps({"label": label.tolist()}))


def _input_color(folder: Path) -> tuple[int, ...]:
    pixels = np.asarray(Image.open(folder / "input.png")).reshape(-1, 3).mean(0)
    return tuple(round(float(v)) for v in pixels)


def test_invert_writes_each_input_to_its_own_folder(tmp_path: Path) -> None:
    colors = {"face.png": (200, 30, 30), "face.jpg": (30, 200, 30), "a/x.png": (30, 30, 200), "b/x.png": (90, 90, 90)}
    for name, color in colors.items():
        _photo(tmp_path / "in" / name, color, 0.1)
    inputs = [str(tmp_path / "in" / name) for name in colors]
    out = tmp_path / "out"
    args = ["--preset", "tiny", "--device", "cpu", "--views", "0", "--out", str(out)]
    result = runner.invoke(app, ["invert", *inputs, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["inverted"]) == 4 and set(summary["outputs"]) == set(summary["inverted"])
    for folder, source in summary["outputs"].items():
        name = str(Path(source).relative_to((tmp_path / "in").resolve()))
        # JPEG and the tiny model's resize blur the colour a little; each folder holds its own input's colour.
        assert np.abs(np.subtract(_input_color(out / folder), colors[name])).max() <= 12, (folder, name)
    assert {"face_png", "face_jpg", "x_png"} <= set(summary["outputs"])

    # A later run with only b/x.png into the same folder leaves a/x.png's results alone.
    before = (out / "x_png" / "inversion.safetensors").read_bytes()
    b_input = str(tmp_path / "in" / "b" / "x.png")
    result = runner.invoke(app, ["invert", b_input, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (out / "x_png" / "inversion.safetensors").read_bytes() == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outputs"]["x_png"] == str((tmp_path / "in" / "a" / "x.png").resolve())
    (new_folder,) = summary["inverted"]
    assert new_folder != "x_png" and summary["outputs"][new_folder] == str(Path(b_input).resolve())


# ---------------------------------------------------------------------------------------------------------------
# preprocess: adding to an existing dataset


@pytest.fixture
def stub_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """One "face" per photo whose crop is the photo itself, resized: crops show which photo they came from."""
    label = camera_label(torch.tensor([0.2]), torch.tensor([0.0]))[0]

    def faces_in_photo(image: np.ndarray, **kwargs: Any) -> list[object]:
        return [object()]

    def crop_face(image: np.ndarray, face: object, **kwargs: Any) -> SimpleNamespace:
        crop = np.asarray(Image.fromarray(image).resize((32, 32)))
        return SimpleNamespace(aligned=SimpleNamespace(image=crop), label=label)

    monkeypatch.setattr(batch_module, "faces_in_photo", faces_in_photo)
    monkeypatch.setattr(batch_module, "crop_face", crop_face)
    monkeypatch.setattr(batch_module, "face_record", lambda result: {})


def _plain_photo(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((48, 48, 3), value, dtype=np.uint8)).save(path)
    return path


def _crop_value(path: Path) -> int:
    return int(np.asarray(Image.open(path)).mean().round())


def _assert_consistent(out: Path) -> None:
    """dataset.json lists exactly the crops present, and no temporary file is left."""
    labels = read_dataset_json(out / "dataset.json") if (out / "dataset.json").exists() else {}
    assert set(labels) == {p.name for p in out.glob("*.png")}
    # The completion records (for --resume) are the one hidden entry a finished run leaves.
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != RECORD_DIR]


def _preprocess(paths: list[Path], out: Path, **kwargs: Any) -> batch_module.PreprocessReport:
    return batch_module.preprocess_photos(paths, out, model=object(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.usefixtures("stub_detector")
def test_a_clashing_name_from_another_photo_is_added_under_a_new_name(tmp_path: Path) -> None:
    out = tmp_path / "data"
    first = _plain_photo(tmp_path / "a" / "x.png", 40)
    second = _plain_photo(tmp_path / "b" / "x.png", 200)
    _preprocess([first], out)
    report = _preprocess([second], out)
    assert report.outcomes[0].outputs == ["x_2.png"]
    assert "x.png already holds a crop of another photo; added as x_2.png" in report.outcomes[0].message
    assert _crop_value(out / "x.png") == 40 and _crop_value(out / "x_2.png") == 200
    _assert_consistent(out)

    # The same photo again replaces its own crop; no third copy appears.
    report = _preprocess([first, second], out)
    assert [o.outputs for o in report.outcomes] == [["x.png"], ["x_2.png"]]
    assert sorted(read_dataset_json(out / "dataset.json")) == ["x.png", "x_2.png"]

    # --overwrite replaces the crop of another photo (and says so).
    third = _plain_photo(tmp_path / "c" / "x.png", 120)
    report = _preprocess([third], out, overwrite=True)
    assert report.outcomes[0].outputs == ["x.png"] and "replaced the existing x.png" in report.outcomes[0].message
    assert _crop_value(out / "x.png") == 120
    sources = json.loads((out / "sources.json").read_text())["crops"]
    assert sources["x.png"]["path"] == str(third.resolve())
    _assert_consistent(out)


@pytest.mark.usefixtures("stub_detector")
def test_two_photos_with_one_name_in_one_run(tmp_path: Path) -> None:
    out = tmp_path / "data"
    report = _preprocess([_plain_photo(tmp_path / "a" / "x.png", 10), _plain_photo(tmp_path / "b" / "x.jpg", 90)], out)
    assert [o.outputs for o in report.outcomes] == [["x.png"], ["x_2.png"]]
    _assert_consistent(out)


@pytest.mark.usefixtures("stub_detector")
def test_ctrl_c_during_the_label_write_still_leaves_a_consistent_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data"
    photos = [_plain_photo(tmp_path / f"p{k}.png", 30 * k) for k in range(3)]
    real_write = batch_module._write_sources
    calls = []

    def write_then_interrupt(folder: Path, sources: dict[str, Any]) -> None:
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C while the second photo's labels are being written
            os.kill(os.getpid(), signal.SIGINT)
        real_write(folder, sources)

    monkeypatch.setattr(batch_module, "_write_sources", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _preprocess(photos, out)
    # The interrupted photo was completed (crop, label and source together), the third was never started.
    assert sorted(read_dataset_json(out / "dataset.json")) == ["p0.png", "p1.png"]
    _assert_consistent(out)

    monkeypatch.setattr(batch_module, "_write_sources", real_write)
    report = _preprocess(photos, out)  # re-running completes the dataset
    assert [o.outputs for o in report.outcomes] == [["p0.png"], ["p1.png"], ["p2.png"]]
    _assert_consistent(out)


@pytest.mark.usefixtures("stub_detector")
def test_ctrl_c_while_a_crop_is_written_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data"
    photos = [_plain_photo(tmp_path / f"p{k}.png", 30 * k) for k in range(2)]
    real_stage = batch_module._stage_png

    def stage_then_interrupt(folder: Path, name: str, image: np.ndarray) -> Path:
        if name == "p1.png":
            raise KeyboardInterrupt
        return real_stage(folder, name, image)

    monkeypatch.setattr(batch_module, "_stage_png", stage_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _preprocess(photos, out)
    assert sorted(read_dataset_json(out / "dataset.json")) == ["p0.png"]
    _assert_consistent(out)


@pytest.mark.usefixtures("stub_detector")
def test_leftovers_of_a_killed_run_are_cleaned_at_the_next_start(tmp_path: Path) -> None:
    out = tmp_path / "data"
    photo = _plain_photo(tmp_path / "p.png", 50)
    _preprocess([photo], out)
    # What kill -9 can leave: a staged crop and a temporary dataset.json, and a label whose crop was not renamed.
    (out / ".q.png.abcd1234.png").write_bytes(b"partial")
    (out / ".dataset.json.zz_99xyz.json").write_text("{")
    labels = json.loads((out / "dataset.json").read_text())
    labels["labels"].append(["q.png", labels["labels"][0][1]])
    (out / "dataset.json").write_text(json.dumps(labels))
    _preprocess([photo], out)
    assert sorted(read_dataset_json(out / "dataset.json")) == ["p.png"]
    _assert_consistent(out)


def test_preprocess_cli_notes_a_clash_and_overwrite_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_detector: None
) -> None:
    import triplanenet.preprocess.mtcnn as mtcnn_module

    monkeypatch.setattr(mtcnn_module, "load_mtcnn", lambda *args, **kwargs: object())
    out = tmp_path / "data"
    first = _plain_photo(tmp_path / "a" / "x.png", 40)
    second = _plain_photo(tmp_path / "b" / "x.png", 200)
    assert runner.invoke(app, ["preprocess", str(first), "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["preprocess", str(second), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0 and "added as x_2.png" in result.output
    result = runner.invoke(app, ["preprocess", str(second), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0
    assert _crop_value(out / "x.png") == 40  # the same photo as x_2.png: it replaces its own crop, not x.png
    third = _plain_photo(tmp_path / "c" / "x.png", 120)
    result = runner.invoke(app, ["preprocess", str(third), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0 and "replaced the existing x.png" in result.output
    assert _crop_value(out / "x.png") == 120
    _assert_consistent(out)
