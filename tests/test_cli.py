"""End-to-end CLI runs on the tiny random-weight models, as a user would type them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from triplanenet.cli.main import app
from triplanenet.eg3d.camera import camera_label
from triplanenet.io.cameras import write_dataset_json
from triplanenet.io.mesh import read_ply_counts

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_lists_commands() -> None:
    result = _run("--help")
    assert result.exit_code == 0
    assert "generate" in result.output and "invert" in result.output


def test_generate_writes_views_depth_mesh_and_video(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    result = _run(
        "generate", "--preset", "tiny", "--seeds", "0-1", "--views=-0.3,0,0.3", "--mesh", "--video",
        "--frames", "6", "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for seed in ("0000", "0001"):
        image = np.asarray(Image.open(out / f"seed{seed}_yaw+0.30.png"))
        assert image.shape == (128, 128, 3)
        depth = np.load(out / f"seed{seed}_yaw+0.00_depth.npy")
        assert depth.shape == (32, 32) and np.isfinite(depth).all()
        assert 2.25 <= depth.min() <= depth.max() <= 3.3 + 1.05 / 11
        strip = np.asarray(Image.open(out / f"seed{seed}_views.png"))
        assert strip.shape == (128, 3 * 128, 3)
        vertices, faces = read_ply_counts(out / f"seed{seed}.ply")
        assert vertices > 100 and faces > 100
        assert (out / f"seed{seed}_orbit.mp4").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    assert not list(out.glob(".*")), "temporary files were left behind"


def test_generate_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert _run("generate", "--seeds", "3", "--views", "0", "--out", str(tmp_path / name)).exit_code == 0
    a = np.asarray(Image.open(tmp_path / "a" / "seed0003_yaw+0.00.png"))
    b = np.asarray(Image.open(tmp_path / "b" / "seed0003_yaw+0.00.png"))
    assert np.array_equal(a, b)


def test_generate_samples_the_bundled_generator(tmp_path: Path) -> None:
    from triplanenet.bundled import load_default_model

    result = _run("generate", "--generator", "bundled", "--seeds", "0", "--views", "0", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(tmp_path / "o" / "seed0000_yaw+0.00.png"))
    size = load_default_model("cpu").decoder.config.img_resolution
    assert image.shape == (size, size, 3) and image.std() > 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "x-1"], "cannot parse seeds"),
        (["--views", "a,b"], "cannot parse views"),
        (["--preset", "huge"], "unknown preset"),
        (["--generator", "/nonexistent/G.pkl"], "no such file"),
        (["--mesh-format", "stl"], "mesh-format"),
    ],
)
def test_generate_user_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = _run("generate", "--out", str(tmp_path / "o"), *args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def _write_inputs(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (128, 128), dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 255, (128, 128, 4), dtype=np.uint8)).save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (128, 128), dtype=np.uint16)).save(folder / "deep16.png")
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(folder / "nocamera.png")
    Image.fromarray(rng.integers(0, 255, (100, 160, 3), dtype=np.uint8)).save(folder / "wide.png")
    label = camera_label(torch.tensor([0.2]), torch.tensor([0.0]))[0]
    names = ["rgb.png", "gray.png", "rgba.png", "deep16.png", "cmyk.jpg", "broken.png", "wide.png"]
    write_dataset_json(folder / "dataset.json", {name: label for name in names})


def test_invert_end_to_end_and_bad_images(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    _write_inputs(inputs)
    out = tmp_path / "out"
    result = _run(
        "invert", str(inputs), "--preset", "tiny", "--mesh", "--mesh-resolution", "32", "--video",
        "--frames", "4", "--views=-0.5,0.5",
        "--out", str(out), "--device", "cpu", "--batch-size", "3",
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # some inputs are bad on purpose
    assert "Traceback" not in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["inverted"]) == ["cmyk", "deep16", "gray", "rgb", "rgba"]
    assert {Path(p).name for p in summary["failed"]} == {"broken.png", "nocamera.png", "wide.png"}
    folder = out / "rgb"
    for name in ("input.png", "reconstruction.png", "depth.png", "depth.npy", "novel_views.png", "comparison.png"):
        assert (folder / name).is_file(), name
    assert np.asarray(Image.open(folder / "novel_views.png")).shape == (128, 256, 3)
    assert read_ply_counts(folder / "mesh.ply")[1] > 0
    assert (folder / "orbit.mp4").stat().st_size > 1000

    # A re-loaded inversion renders the same reconstruction.
    from triplanenet.inversion import Inversion
    from triplanenet.io.images import tensor_to_uint8
    from triplanenet.model import TriPlaneNet, TriPlaneNetConfig

    torch.manual_seed(0)
    model = TriPlaneNet(TriPlaneNetConfig.tiny()).eval()
    inversion = Inversion.load(folder / "inversion.safetensors", model.decoder)
    rerendered = tensor_to_uint8(inversion.render().image[0])
    assert np.array_equal(rerendered, np.asarray(Image.open(folder / "reconstruction.png")))


def test_invert_takes_at_most_one_model_source(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    _write_inputs(inputs)
    model = tmp_path / "ours.safetensors"
    result = _run("invert", str(inputs / "rgb.png"), "--model", str(model), "--preset", "tiny", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "choose one model source, not --model and --preset" in result.output
    result = _run("invert", str(inputs / "rgb.png"), "--generator", str(model), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1 and "--generator goes with --checkpoint" in result.output
    result = _run("invert", str(tmp_path / "empty_missing"), "--preset", "tiny", "--out", str(tmp_path / "o"))
    assert result.exit_code == 1


def test_invert_rejects_an_unknown_pose(tmp_path: Path) -> None:
    result = _run("invert", str(tmp_path / "photo.jpg"), "--pose", "dlib", "--out", str(tmp_path / "o"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == ["error: --pose must be 3ddfa, mesh or mtcnn, got 'dlib'"]
    result = _run("preprocess", str(tmp_path / "photo.jpg"), "--pose", "dlib", "--out", str(tmp_path / "p"))
    assert result.exit_code == 1 and result.output.strip() == "error: --pose must be 3ddfa, mesh or mtcnn, got 'dlib'"


def test_convert_official_pickle_then_generate(tmp_path: Path) -> None:
    from conftest import fixture_path

    source = fixture_path("tiny_official_G.pkl")
    converted = tmp_path / "tiny.safetensors"
    assert _run("convert", str(source), str(converted)).exit_code == 0
    result = _run("generate", "-g", str(converted), "--seeds", "0", "--views", "0", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(tmp_path / "o" / "seed0000_yaw+0.00.png")).shape == (512, 512, 3)
    bad = _run("convert", str(tmp_path / "missing.pkl"), str(tmp_path / "x.safetensors"))
    assert bad.exit_code == 1 and "no such file" in bad.output


@pytest.mark.parametrize(
    "command",
    [
        ["demo", "--heads", "1"],
        ["generate", "--preset", "tiny", "--seeds", "0"],
        ["eval", "--method", "w+-pred", "--heads", "1"],
        ["bench", "--preset", "tiny", "--repeats", "1", "--batch-sizes", "1", "--workloads", "render"],
        ["invert", "photo.png", "--preset", "tiny"],
        ["preprocess", "photo.png"],
        ["invert-video", "clip.mp4"],
        ["ablate", "symmetry"],
    ],
)
def test_an_output_folder_that_is_a_file_is_refused_before_any_work(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("keep me")
    for out, message in ((blocker, "is a file; give a folder"), (blocker / "sub", "is a file, not a folder")):
        result = _run(*command, "--out", str(out))
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
    assert blocker.read_text() == "keep me"


def test_an_unwritable_output_folder_is_refused(tmp_path: Path, monkeypatch) -> None:
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Permission bits do not bind root (CI runs as root), so the OS answer for this one folder is simulated.
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode))
    result = _run("generate", "--preset", "tiny", "--seeds", "0", "--out", str(locked / "new"))
    assert result.exit_code == 1 and "cannot write into" in result.output and "Traceback" not in result.output
    assert not (locked / "new").exists()


def test_os_errors_become_one_line_messages_with_advice(tmp_path: Path, monkeypatch) -> None:
    import errno

    from triplanenet.cli import generate as generate_module

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "summary.json"))

    monkeypatch.setattr(generate_module, "write_text_atomic", disk_full)
    result = _run("generate", "--preset", "tiny", "--seeds", "0", "--views", "0", "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "No space left on device" in result.output and "free some disk space" in result.output
    assert "Traceback" not in result.output


def test_bench_refuses_bad_thread_and_sample_counts(tmp_path: Path) -> None:
    for args, message in (
        (["--threads", "0"], "threads must be at least 1"),
        (["--depth-samples", "2"], "depth samples must be at least 4"),
        (["--batch-sizes", "a"], "like 1,8,32"),
    ):
        result = _run("bench", "--preset", "tiny", "--out", str(tmp_path / "b"), *args)
        assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "b").exists()


def test_train_refuses_an_out_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "run"
    blocker.write_text("keep me")
    result = _run("train", "tiny", "-O", f"out={blocker}", "--device", "cpu")
    assert result.exit_code == 1 and "out " in result.output and "is a file" in result.output
    assert blocker.read_text() == "keep me"


def test_invert_fast_mode_and_its_errors(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    _write_inputs(inputs)
    args = ["invert", str(inputs / "rgb.png"), "--preset", "tiny", "--device", "cpu", "--views", "0"]
    result = _run(*args, "--fast", "bf16", "--out", str(tmp_path / "fast"))
    assert result.exit_code == 0, result.output
    fast = np.asarray(Image.open(tmp_path / "fast" / "rgb" / "reconstruction.png")).astype(int)
    assert _run(*args, "--out", str(tmp_path / "exact")).exit_code == 0
    exact = np.asarray(Image.open(tmp_path / "exact" / "rgb" / "reconstruction.png")).astype(int)
    assert np.abs(fast - exact).mean() < 3.0  # bf16 encoders: close to, not equal to, the fp32 result
    for extra, message in (
        (["--fast", "fp16"], "fp16 autocast is only supported on CUDA"),
        (["--fast", "turbo"], "unknown fast-mode part 'turbo'"),
        (["--fast", "bf16", "--method", "w-opt"], "--fast applies to the feed-forward methods"),
    ):
        result = _run(*args, *extra, "--out", str(tmp_path / "bad"))
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
