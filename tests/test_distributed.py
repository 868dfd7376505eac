"""Sharded commands under ``torchrun`` (2 CPU processes, gloo) and ``--resume`` (issue 23).

The multi-process runs start ``python -m torch.distributed.run --standalone --nproc_per_node 2`` (torchrun; it picks
a free port) and compare with a single process started the same way with one thread. Inputs are tiny: 128² random
crops with cameras for ``invert`` / ``conf-maps`` (bundled model), two procedural heads for ``eval`` and four
astronaut photos for ``preprocess``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import needs_mtcnn
from triplanenet.cli.main import app
from triplanenet.distributed.progress import JobProgress
from triplanenet.distributed.records import RECORD_DIR, CompletionRecords
from triplanenet.distributed.shard import shard, shard_size, unshard
from triplanenet.distributed.world import World, world_from_env
from triplanenet.eg3d.camera import camera_label
from triplanenet.errors import ConfigError
from triplanenet.io.cameras import write_dataset_json

runner = CliRunner()

# One thread per process, as torchrun gives each worker; the single-process reference runs the same way, so float
# results can be compared exactly.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _single(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (no start-up cost), on one thread like each torchrun worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = runner.invoke(app, list(args), catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(args, result.exit_code, result.output, result.output)


def _torchrun(*args: str, script: Path | None = None) -> subprocess.CompletedProcess[str]:
    target = [str(script)] if script is not None else ["-m", "triplanenet.cli.main"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *target, *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)


def _flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def _crops(folder: Path, count: int, bad: bool = True) -> Path:
    """``count`` random 128² crops with cameras in dataset.json (and an unreadable one with ``bad``)."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    names = []
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(folder / f"img{index}.png")
        names.append(f"img{index}.png")
    if bad:
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        names.append("broken.png")
    yaws = torch.linspace(-0.4, 0.4, len(names))
    labels = camera_label(yaws, torch.zeros(len(names)))
    write_dataset_json(folder / "dataset.json", {name: labels[i] for i, name in enumerate(names)})
    return folder


def _visible_files(root: Path) -> dict[str, Path]:
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def _assert_same_invert_outputs(a: Path, b: Path) -> None:
    from safetensors import safe_open

    files_a, files_b = _visible_files(a), _visible_files(b)
    assert sorted(files_a) == sorted(files_b)
    for name, path in files_a.items():
        if path.suffix == ".safetensors":  # safetensors writes its metadata in a random order: compare contents
            with safe_open(path, "pt") as x, safe_open(files_b[name], "pt") as y:
                assert x.metadata() == y.metadata()
                assert sorted(x.keys()) == sorted(y.keys())
                for key in sorted(x.keys()):
                    assert torch.equal(x.get_tensor(key), y.get_tensor(key)), (name, key)
        else:
            assert path.read_bytes() == files_b[name].read_bytes(), name


# ---------------------------------------------------------------------------------------------------------------
# The parts


def test_shard_is_strided_deterministic_and_unshard_restores_the_order() -> None:
    items = [f"x{i}" for i in range(7)]
    parts = [shard(items, rank, 3) for rank in range(3)]
    assert parts[0] == [(0, "x0"), (3, "x3"), (6, "x6")] and parts[2] == [(2, "x2"), (5, "x5")]
    assert [len(p) for p in parts] == [shard_size(7, rank, 3) for rank in range(3)]
    assert unshard(reversed(parts)) == items
    assert shard(items, 0, 1) == list(enumerate(items))
    with pytest.raises(ValueError):
        shard(items, 3, 3)
    with pytest.raises(ValueError):
        unshard([parts[0], parts[0]])


def test_world_comes_from_torchrun_variables() -> None:
    assert world_from_env({}) == World()
    assert world_from_env({"WORLD_SIZE": "1", "RANK": "0"}) == World()
    world = world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (world.rank, world.world_size, world.local_rank, world.is_main, world.distributed) == (3, 4, 1, False, True)
    assert world.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert world.device(torch.device("cpu")) == torch.device("cpu")
    for env, message in [
        ({"WORLD_SIZE": "2"}, "RANK is not set"),
        ({"WORLD_SIZE": "two"}, "not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "outside WORLD_SIZE"),
        ({"WORLD_SIZE": "2", "RANK": "-1"}, "must not be negative"),
    ]:
        with pytest.raises(ConfigError, match=message) as info:
            world_from_env(env)
        assert "\n" not in str(info.value)


def test_a_world_of_one_counts_progress_without_a_process_group() -> None:
    seen: list[tuple[int, float]] = []
    failed = []
    tracker = JobProgress(
        World(), total=5, completed=2, on_update=lambda d, r: seen.append((d, r)), on_failure=failed.append
    )
    assert tracker.rounds(3) == 3
    tracker.report(2, [("a.png", "broken")])
    tracker.report(1)
    assert [d for d, _ in seen] == [4, 5] and tracker.processed == 3 and tracker.rate > 0
    assert [(f.rank, f.input, f.message) for f in failed] == [(0, "a.png", "broken")]


def test_completion_records_are_checked_against_the_files(tmp_path: Path) -> None:
    source = tmp_path / "photo.png"
    source.write_bytes(b"photo")
    (tmp_path / "out" / "photo").mkdir(parents=True)
    output = tmp_path / "out" / "photo" / "a.png"
    output.write_bytes(b"result")
    records = CompletionRecords(tmp_path / "out", {"method": "m", "views": (0.1,)})
    records.write("key", [output], {"inverted": ["photo"]}, input_file=source)
    assert records.read("key", source) == {"inverted": ["photo"]}
    assert records.read("other", source) is None
    assert CompletionRecords(tmp_path / "out", {"method": "other", "views": [0.1]}).read("key", source) is None
    output.write_bytes(b"resulT")  # same size, other content
    assert records.read("key", source) is None
    output.write_bytes(b"result")
    source.write_bytes(b"another photo")  # the input changed
    assert records.read("key", source) is None
    source.write_bytes(b"photo")
    assert records.read("key", source) is not None
    output.unlink()
    assert records.read("key", source) is None
    records.path("key").write_text("{")  # a damaged record
    assert records.read("key", source) is None


# ---------------------------------------------------------------------------------------------------------------
# Two processes give what one gives


def test_two_processes_invert_and_conf_maps_like_one(tmp_path: Path) -> None:
    inputs = _crops(tmp_path / "in", 5)
    common = ["--device", "cpu", "--batch-size", "1", "--views=-0.4,0.4"]
    one = _single("invert", str(inputs), "--out", str(tmp_path / "one"), *common)
    two = _torchrun("invert", str(inputs), "--out", str(tmp_path / "two"), *common)
    assert one.returncode == 1 and two.returncode != 0, two.stderr[-3000:]  # broken.png fails on purpose
    assert "Traceback" not in one.stderr
    # The failure is reported once, by rank 0, naming the rank that met it; the job went on.
    # (broken.png is first in sorted order, so rank 0 of the strided split has it.)
    assert two.stderr.count("failed broken.png") == 1, two.stderr[-3000:]
    assert "failed broken.png (rank 0):" in two.stderr
    assert "2 processes" in _flat(two.stderr)
    _assert_same_invert_outputs(tmp_path / "one", tmp_path / "two")
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["inverted"] == [f"img{i}" for i in range(5)] and list(summary["failed"]) == [
        str(inputs / "broken.png")
    ]
    assert len(list((tmp_path / "two" / RECORD_DIR).glob("*.json"))) == 5

    (inputs / "broken.png").unlink()  # conf-maps refuses a dataset with a missing image; the folder is a dataset
    write_dataset_json(
        inputs / "dataset.json", {f"img{i}.png": camera_label(torch.zeros(1), torch.zeros(1))[0] for i in range(5)}
    )
    single = tmp_path / "single"
    single.mkdir()
    for file in inputs.iterdir():
        (single / file.name).write_bytes(file.read_bytes())
    assert _single("conf-maps", str(single), "--batch-size", "1", "--device", "cpu").returncode == 0
    run = _torchrun("conf-maps", str(inputs), "--batch-size", "1", "--device", "cpu")
    assert run.returncode == 0, run.stderr[-3000:]
    maps = sorted(p.name for p in (inputs / "conf_map").iterdir())
    assert maps == [f"img{i}.npy" for i in range(5)]
    for name in maps:
        assert (inputs / "conf_map" / name).read_bytes() == (single / "conf_map" / name).read_bytes()


@needs_mtcnn
def test_two_processes_preprocess_the_same_dataset_as_one(tmp_path: Path) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    photos = tmp_path / "photos"
    photos.mkdir()
    face = Image.fromarray(skimage_data.astronaut()).resize((320, 320), Image.Resampling.LANCZOS)
    face.save(photos / "astro.png")
    face.save(photos / "astro.jpg", quality=90)  # same stem: the second one in input order becomes astro_2.png
    face.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "mirror.png")
    Image.fromarray(np.full((96, 96, 3), 90, np.uint8)).save(photos / "noface.png")
    one = _single("preprocess", str(photos), "--out", str(tmp_path / "one"))
    two = _torchrun("preprocess", str(photos), "--out", str(tmp_path / "two"))
    assert one.returncode == 1 and two.returncode != 0, two.stderr[-3000:]  # noface.png fails on purpose
    assert two.stderr.count("failed noface.png") == 1
    files_one, files_two = _visible_files(tmp_path / "one"), _visible_files(tmp_path / "two")
    assert (
        sorted(files_one)
        == sorted(files_two)
        == sorted(["astro.png", "astro_2.png", "mirror.png", "dataset.json", "sources.json", "preprocess_report.json"])
    )
    for name in ("astro.png", "astro_2.png", "mirror.png", "dataset.json", "sources.json"):
        assert files_one[name].read_bytes() == files_two[name].read_bytes(), name

    def report(path: Path) -> dict:
        data = json.loads(path.read_text())
        for key in ("seconds", "seconds_per_image"):
            data.pop(key)
        for entry in data["files"]:
            entry.pop("seconds")
        return data

    assert report(files_one["preprocess_report.json"]) == report(files_two["preprocess_report.json"])
    assert not (tmp_path / "two" / ".triplanenet-parts").exists()


@needs_mtcnn
def test_two_processes_invert_raw_photos_with_the_pose_option_on_every_rank(tmp_path: Path) -> None:
    from triplanenet.io.cameras import read_label_json
    from triplanenet.preprocess.batch import preprocess_photos

    skimage_data = pytest.importorskip("skimage.data")
    photos = tmp_path / "photos"
    photos.mkdir()
    face = Image.fromarray(skimage_data.astronaut()).resize((320, 320), Image.Resampling.LANCZOS)
    face.save(photos / "astro.png")  # rank 0
    face.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "mirror.png")  # rank 1
    out = tmp_path / "out"
    args = ["invert", str(photos), "--out", str(out), "--preset", "tiny", "--device", "cpu", "--batch-size", "1"]
    two = _torchrun(*args, "--views", "0", "--pose", "mtcnn")
    assert two.returncode == 0, two.stderr[-3000:]
    # Each rank aligned its photo with the 5-landmark fit: the cameras are those of `preprocess --pose mtcnn`.
    expected = preprocess_photos(sorted(photos.iterdir()), tmp_path / "prep", pose_method="mtcnn").labels
    for name in ("astro", "mirror"):
        torch.testing.assert_close(read_label_json(out / name / "camera.json"), expected[f"{name}.png"])
    records = [json.loads(r.read_text()) for r in sorted((out / RECORD_DIR).glob("*.json"))]
    assert len(records) == 2 and all(r["fingerprint"]["pose"] == "mtcnn" for r in records)
    for rank, expected in (("0", True), ("1", False)):  # a bad value: one line, from rank 0 only
        env = {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank}
        result = runner.invoke(app, [*args, "--pose", "dlib"], env=env, catch_exceptions=False)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert ("error: --pose must be 3ddfa, mesh or mtcnn, got 'dlib'" in result.output) is expected, result.output


def test_two_processes_evaluate_like_one(tmp_path: Path) -> None:
    args = ["eval", "--method", "triplanenet", "--heads", "2", "--no-mesh-ad", "--yaws=-0.4,0.4", "--device", "cpu"]
    one = _single(*args, "--out", str(tmp_path / "one"))
    two = _torchrun(*args, "--out", str(tmp_path / "two"))
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]

    def rows(path: Path) -> list[dict[str, str]]:
        import csv

        return list(csv.DictReader(path.open()))

    for name in ("metrics.csv", "per_image.csv"):
        a, b = rows(tmp_path / "one" / name), rows(tmp_path / "two" / name)
        assert [list(r) for r in a] == [list(r) for r in b]
        for row_a, row_b in zip(a, b, strict=True):
            for key, value in row_a.items():
                if key in ("method", "image"):
                    assert value == row_b[key]
                elif key != "s/image":
                    assert float(value) == pytest.approx(float(row_b[key]), rel=1e-5, abs=1e-6), (name, key)
    for name in ("comparison.png", "novel_views.png"):
        image_a = np.asarray(Image.open(tmp_path / "one" / name), dtype=np.int16)
        image_b = np.asarray(Image.open(tmp_path / "two" / name), dtype=np.int16)
        assert np.abs(image_a - image_b).max() <= 1, name


# ---------------------------------------------------------------------------------------------------------------
# Resume


KILLER = """
import os
from triplanenet.distributed import records

_write = records.CompletionRecords.write


def write(self, *args, **kwargs):
    _write(self, *args, **kwargs)
    if os.environ.get("RANK") == "1":
        os._exit(3)  # rank 1 dies right after completing its first input


records.CompletionRecords.write = write
from triplanenet.cli.main import app

app(prog_name="triplanenet")
"""


def test_a_run_with_a_crashed_rank_resumes_without_redoing_finished_inputs(tmp_path: Path) -> None:
    inputs = _crops(tmp_path / "in", 8, bad=False)
    out = tmp_path / "out"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    args = ["invert", str(inputs), "--out", str(out), "--device", "cpu", "--batch-size", "1", "--views", "0"]
    crashed = _torchrun(*args, script=script)
    assert crashed.returncode != 0
    records = sorted((out / RECORD_DIR).glob("*.json"))
    finished = {json.loads(r.read_text())["input"]: json.loads(r.read_text()) for r in records}
    assert str((inputs / "img1.png").resolve()) in finished  # rank 1's first input
    assert 1 <= len(finished) < 8
    stamps = {name: (out / name).stat().st_mtime_ns for record in finished.values() for name in record["files"]}
    resumed = _torchrun(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(finished)} already complete (--resume)" in _flat(resumed.stderr)
    assert f"{8 - len(finished)} image(s) in" in _flat(resumed.stderr)
    for name, stamp in stamps.items():
        assert (out / name).stat().st_mtime_ns == stamp, f"{name} was written again"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inverted"] == [f"img{i}" for i in range(8)] and summary["failed"] == {}
    assert len(list((out / RECORD_DIR).glob("*.json"))) == 8
    reference = _single(*args[:3], str(tmp_path / "reference"), *args[4:])
    assert reference.returncode == 0
    _assert_same_invert_outputs(tmp_path / "reference", out)


def test_resume_in_one_process_redoes_exactly_the_damaged_inputs(tmp_path: Path) -> None:
    inputs = _crops(tmp_path / "in", 4, bad=False)
    out = tmp_path / "out"
    args = ["invert", str(inputs), "--out", str(out), "--device", "cpu", "--views", "0", "--resume"]
    first = runner.invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    (out / "img1" / "depth.npy").unlink()  # a file of img1 is missing
    with (out / "img2" / "reconstruction.png").open("r+b") as handle:  # img2's image is damaged in place
        handle.seek(60)
        handle.write(b"\0\0\0\0")
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("img[03]/*")}
    second = runner.invoke(app, args, catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert "2 image(s) in" in _flat(second.output) and "2 already complete (--resume)" in _flat(second.output)
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    assert (out / "img1" / "depth.npy").is_file()
    assert json.loads((out / "summary.json").read_text())["inverted"] == [f"img{i}" for i in range(4)]
    # Other options: nothing is complete for them.
    third = runner.invoke(app, [*args, "--views", "0.3"], catch_exceptions=False)
    assert third.exit_code == 0 and "4 image(s) in" in _flat(third.output), third.output


@needs_mtcnn
def test_preprocess_resume_keeps_committed_photos(tmp_path: Path) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    photos = tmp_path / "photos"
    photos.mkdir()
    face = Image.fromarray(skimage_data.astronaut()).resize((320, 320), Image.Resampling.LANCZOS)
    face.save(photos / "a.png")
    face.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "b.png")
    out = tmp_path / "out"
    args = ["preprocess", str(photos), "--out", str(out), "--resume"]
    assert runner.invoke(app, args, catch_exceptions=False).exit_code == 0
    dataset = (out / "dataset.json").read_bytes()
    stamp = (out / "a.png").stat().st_mtime_ns
    (out / "b.png").unlink()  # as if the run had died before b's crop was committed
    again = runner.invoke(app, args, catch_exceptions=False)
    assert again.exit_code == 0 and "1 already complete (--resume)" in _flat(again.output), again.output
    assert (out / "a.png").stat().st_mtime_ns == stamp
    assert (out / "dataset.json").read_bytes() == dataset and (out / "b.png").is_file()
    report = json.loads((out / "preprocess_report.json").read_text())
    assert [Path(f["path"]).name for f in report["files"]] == ["a.png", "b.png"] and report["ok"] == 2


def test_eval_resume_keeps_the_images_already_evaluated(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["eval", "--method", "w+-pred", "--heads", "2", "--no-mesh-ad", "--yaws", "0.4", "--device", "cpu"]
    first = _single(*args, "--out", str(out), "--resume")
    assert first.returncode == 0, first.stdout
    metrics = (out / "per_image.csv").read_text()
    stored = sorted((out / ".triplanenet-eval").glob("*.safetensors"))
    assert len(stored) == 2
    stamp = stored[0].stat().st_mtime_ns
    stored[1].write_bytes(stored[1].read_bytes()[:-8])  # one image's stored result is damaged
    again = _single(*args, "--out", str(out), "--resume")
    assert again.returncode == 0 and "1 already complete (--resume)" in _flat(again.stdout), again.stdout
    assert stored[0].stat().st_mtime_ns == stamp

    def without_timing(text: str) -> list[list[str]]:
        return [line.split(",")[:-1] for line in text.splitlines()]  # s/image is the last column

    assert without_timing((out / "per_image.csv").read_text()) == without_timing(metrics)


def test_a_command_line_error_is_printed_once_by_rank_0(tmp_path: Path) -> None:
    args = ["invert", str(tmp_path / "missing.png"), "--batch-size", "0", "--out", str(tmp_path / "o")]
    for rank, expected in (("0", True), ("1", False)):
        env = {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank}
        result = runner.invoke(app, args, env=env, catch_exceptions=False)
        assert result.exit_code == 1
        assert ("error: --batch-size and --frames must be >= 1" in result.output) is expected, result.output
        assert "Traceback" not in result.output
