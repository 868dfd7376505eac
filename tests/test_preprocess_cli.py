"""``triplanenet preprocess`` / ``conf-maps`` / ``invert`` on un-aligned photos, end to end through the CLI.

Inputs are built from ``skimage.data.astronaut()`` (one frontal face): a two-face canvas, a face too small to
use, a face-free image, a 4000² upscale, EXIF-rotated JPEGs, a truncated JPEG and a text file named ``.jpg``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import needs_face_mesh, needs_mtcnn, needs_tddfa, spy_pose_estimators
from triplanenet.cli.main import app
from triplanenet.distributed.records import RECORD_DIR
from triplanenet.eg3d.camera import camera_label
from triplanenet.errors import CameraError
from triplanenet.io.cameras import read_dataset_json, read_label_json, write_dataset_json

skimage_data = pytest.importorskip("skimage.data")
runner = CliRunner()


pytestmark = needs_mtcnn


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _exif_jpeg(path: Path, image: Image.Image, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=95)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    upright = Image.fromarray(astronaut)
    upright.save(folder / "astro.png")
    upright.save(folder / "astro_jpeg.jpg", quality=95)
    # Stored sideways with the EXIF tag that tells viewers how to turn it upright (6: rotate 90° clockwise to view,
    # 8: rotate 90° counter-clockwise to view).
    _exif_jpeg(folder / "exif6.jpg", upright.transpose(Image.Transpose.ROTATE_90), 6)
    _exif_jpeg(folder / "exif8.jpg", upright.transpose(Image.Transpose.ROTATE_270), 8)
    canvas = np.full((600, 1400, 3), 60, dtype=np.uint8)
    canvas[40:552, 20:532] = astronaut
    canvas[100:480, 800:1180] = np.asarray(upright.resize((380, 380), Image.Resampling.LANCZOS))
    Image.fromarray(canvas).save(folder / "two.png")
    tiny = np.full((400, 400, 3), 120, dtype=np.uint8)
    tiny[100:228, 100:228] = np.asarray(upright.resize((128, 128), Image.Resampling.LANCZOS))  # face ~21 px
    Image.fromarray(tiny).save(folder / "tiny.png")
    yy, xx = np.mgrid[0:256, 0:256]
    noface = np.stack(((xx % 256), (yy % 256), ((xx + yy) // 2) % 256), axis=-1).astype(np.uint8)
    Image.fromarray(noface).save(folder / "noface.png")
    upright.resize((4000, 4000), Image.Resampling.BILINEAR).save(folder / "huge.jpg", quality=85)
    data = (folder / "astro_jpeg.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.jpg").write_text("this is not a photo\n")
    return folder


ALL = [
    "astro.png",
    "astro_jpeg.jpg",
    "exif6.jpg",
    "exif8.jpg",
    "two.png",
    "tiny.png",
    "noface.png",
    "huge.jpg",
    "truncated.jpg",
    "notes.jpg",
]


@pytest.fixture(scope="module")
def batch(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, dict]:
    out = tmp_path_factory.mktemp("prep") / "out"
    result = _run("preprocess", *[str(photos / n) for n in ALL], "--out", str(out))
    report = json.loads((out / "preprocess_report.json").read_text())
    return out, result, report


def _entry(report: dict, name: str) -> dict:
    (entry,) = [f for f in report["files"] if Path(f["path"]).name == name]
    return entry


def test_batch_continues_past_bad_files_and_reports_each(batch: tuple[Path, object, dict]) -> None:
    out, result, report = batch
    assert result.exit_code == 1, result.output  # some inputs fail on purpose
    assert "Traceback" not in result.output
    status = {Path(f["path"]).name: f["status"] for f in report["files"]}
    assert status == {
        "astro.png": "ok",
        "astro_jpeg.jpg": "ok",
        "exif6.jpg": "ok",
        "exif8.jpg": "ok",
        "two.png": "ok",
        "tiny.png": "face_too_small",
        "noface.png": "no_face",
        "huge.jpg": "ok",
        "truncated.jpg": "corrupt",
        "notes.jpg": "not_an_image",
    }
    for name in ("tiny.png", "noface.png", "truncated.jpg", "notes.jpg"):
        message = _entry(report, name)["message"]
        assert name in message and "\n" not in message
        assert name in result.output  # one line per failure on the console
    assert report["ok"] == 6 and report["failed"] == 4

    # Crops + an official-layout dataset.json that the training loader accepts.
    labels = read_dataset_json(out / "dataset.json")
    assert sorted(labels) == sorted(["astro.png", "astro_jpeg.png", "exif6.png", "exif8.png", "two.png", "huge.png"])
    for name in labels:
        assert np.asarray(Image.open(out / name)).shape == (512, 512, 3)
    from triplanenet.data.dataset import FaceDataset

    assert len(FaceDataset(out)) == 6
    leftovers = [p for p in out.glob(".*") if p.name != RECORD_DIR]  # the records are kept for --resume
    assert not leftovers, "temporary files were left behind"
    assert len(list((out / RECORD_DIR).glob("*.json"))) == 6  # one completion record per committed photo


def test_exif_rotation_is_honoured(batch: tuple[Path, object, dict]) -> None:
    out, _, report = batch
    upright = _entry(report, "astro_jpeg.jpg")["faces"][0]
    for name in ("exif6.jpg", "exif8.jpg"):
        face = _entry(report, name)["faces"][0]
        # Landmarks in the upright frame (same JPEG quality; only rotation and JPEG block alignment differ).
        np.testing.assert_allclose(face["landmarks"], upright["landmarks"], atol=2.0)
        assert abs(face["yaw"] - upright["yaw"]) < 0.03 and abs(face["pitch"] - upright["pitch"]) < 0.03
        assert abs(face["roll"] - upright["roll"]) < 0.03
        diff = np.abs(
            np.asarray(Image.open(out / name.replace(".jpg", ".png")), dtype=np.float64)
            - np.asarray(Image.open(out / "astro_jpeg.png"), dtype=np.float64)
        )
        assert diff.mean() < 6.0


def test_huge_photo_is_detected_downscaled_and_cropped_at_full_resolution(batch: tuple[Path, object, dict]) -> None:
    out, _, report = batch
    small = _entry(report, "astro.png")["faces"][0]
    huge = _entry(report, "huge.jpg")["faces"][0]
    scale = 4000 / 512
    expected = (np.asarray(small["landmarks"]) + 0.5) * scale - 0.5
    face_width = (small["box"][2] - small["box"][0]) * scale
    assert np.abs(np.asarray(huge["landmarks"]) - expected).max() < 0.06 * face_width
    assert abs(huge["yaw"] - small["yaw"]) < 0.05
    diff = np.abs(
        np.asarray(Image.open(out / "huge.png"), dtype=np.float64)
        - np.asarray(Image.open(out / "astro.png"), dtype=np.float64)
    )
    assert diff.mean() < 20.0  # same framing (an 8× upscale is blurrier, so not identical)


def test_two_faces_largest_by_default_all_with_flag(
    batch: tuple[Path, object, dict], photos: Path, tmp_path: Path
) -> None:
    _, _, report = batch
    default = _entry(report, "two.png")["faces"]
    assert len(default) == 1 and default[0]["box"][0] < 600  # the full-size face on the left
    out = tmp_path / "all"
    result = _run("preprocess", str(photos / "two.png"), "--out", str(out), "--all-faces", "--pad-mode", "constant")
    assert result.exit_code == 0, result.output
    faces = _entry(json.loads((out / "preprocess_report.json").read_text()), "two.png")["faces"]
    assert len(faces) == 2
    widths = [f["box"][2] - f["box"][0] for f in faces]
    assert widths[0] > widths[1] and faces[1]["box"][0] > 700
    assert sorted(read_dataset_json(out / "dataset.json")) == ["two_face0.png", "two_face1.png"]


def test_user_cameras_and_deep3d_mat(photos: Path, tmp_path: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    from triplanenet.preprocess.batch import read_deep3d_mat
    from triplanenet.preprocess.pose import camera_from_face_pose

    # An official dataset.json for the photos: its label is kept, not re-estimated.
    label = camera_label(torch.tensor([0.3]), torch.tensor([-0.1]))[0]
    cams = tmp_path / "cams" / "dataset.json"
    write_dataset_json(cams, {"astro.png": label})
    out = tmp_path / "with_cams"
    result = _run("preprocess", str(photos / "astro.png"), "--out", str(out), "--cameras", str(cams))
    assert result.exit_code == 0, result.output
    torch.testing.assert_close(read_dataset_json(out / "dataset.json")["astro.png"], label)

    # Deep3DFaceRecon coefficient files (angle, trans as (1, 3) arrays, like its test.py writes).
    deep = tmp_path / "deep3d"
    deep.mkdir()
    angle, trans = np.array([[0.05, -0.3, 0.02]]), np.array([[0.01, 0.1, 0.2]])
    scipy_io.savemat(deep / "astro.mat", {"angle": angle, "trans": trans, "id": np.zeros((1, 80))})
    expected = camera_from_face_pose(angle[0], trans[0])
    torch.testing.assert_close(read_deep3d_mat(deep / "astro.mat"), expected)
    out = tmp_path / "with_mat"
    result = _run(
        "preprocess", str(photos / "astro.png"), str(photos / "exif6.jpg"), "--out", str(out), "--deep3d", str(deep)
    )
    assert result.exit_code == 1  # exif6 has no .mat
    report = json.loads((out / "preprocess_report.json").read_text())
    assert _entry(report, "exif6.jpg")["status"] == "bad_camera"
    torch.testing.assert_close(read_dataset_json(out / "dataset.json")["astro.png"], expected)
    (deep / "bad.mat").write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(CameraError, match=r"bad\.mat"):
        read_deep3d_mat(deep / "bad.mat")
    scipy_io.savemat(deep / "noangle.mat", {"trans": trans})
    with pytest.raises(CameraError, match="angle"):
        read_deep3d_mat(deep / "noangle.mat")


def test_options_are_validated(photos: Path, tmp_path: Path) -> None:
    result = _run("preprocess", str(photos / "astro.png"), "--out", str(tmp_path / "o"), "--pad-mode", "wrap")
    assert result.exit_code == 1 and "--pad-mode" in result.output
    result = _run("preprocess", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    # A small face is accepted when the user lowers the threshold.
    result = _run("preprocess", str(photos / "tiny.png"), "--out", str(tmp_path / "t"), "--min-face-px", "16")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t" / "tiny.png").is_file()


def test_conf_maps_in_official_layout(batch: tuple[Path, object, dict]) -> None:
    from triplanenet.data.dataset import FaceDataset
    from triplanenet.losses.confnet import load_conf_map

    out, _, _ = batch
    result = _run("conf-maps", str(out), "--device", "cpu", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    maps = sorted(p.name for p in (out / "conf_map").iterdir())
    assert maps == sorted(["astro.npy", "astro_jpeg.npy", "exif6.npy", "exif8.npy", "two.npy", "huge.npy"])
    sigma = load_conf_map(out / "conf_map" / "astro.npy")
    assert sigma.shape == (256, 256) and sigma.dtype == np.float32 and (sigma > 0).all()
    item = FaceDataset(out, confidence_maps=True, mirror=True)[0]
    assert item["confidence"].shape == (1, 256, 256)
    torch.testing.assert_close(item["confidence_mirror"], item["confidence"].flip(-1))
    result = _run("conf-maps", str(out), "--device", "cpu")
    assert result.exit_code == 0 and "0 confidence map(s)" in result.output  # --skip-existing by default
    result = _run("conf-maps", str(out.parent / "missing"), "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_invert_aligns_unaligned_photos(photos: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("astro_jpeg.jpg", "two.png", "noface.png"):
        (inputs / name).write_bytes((photos / name).read_bytes())
    out = tmp_path / "out"
    result = _run("invert", str(inputs), "--preset", "tiny", "--out", str(out), "--device", "cpu", "--views", "0")
    assert result.exit_code == 1, result.output  # noface.png fails, the others go on
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["inverted"]) == ["astro_jpeg", "two"]
    assert [Path(p).name for p in summary["failed"]] == ["noface.png"]
    folder = out / "astro_jpeg"
    assert np.asarray(Image.open(folder / "aligned.png")).shape == (512, 512, 3)
    label = read_label_json(folder / "camera.json")
    assert label.shape == (25,)
    assert (folder / "reconstruction.png").is_file()

    out = tmp_path / "all"  # no model option: the bundled default model
    result = _run("invert", str(inputs / "two.png"), "--all-faces", "--out", str(out), "--views", "0")
    assert result.exit_code == 0, result.output
    assert "2 face(s) found" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["inverted"]) == ["two_face0", "two_face1"] and summary["method"] == "triplanenet"
    assert (out / "two_face1" / "aligned.png").is_file()


@needs_tddfa
@needs_face_mesh
def test_pose_option_reaches_the_estimator_in_preprocess_and_invert(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = spy_pose_estimators(monkeypatch)
    photo = str(photos / "astro_jpeg.jpg")
    assert _run("preprocess", photo, "--out", str(tmp_path / "p_3ddfa")).exit_code == 0
    assert calls == {"3ddfa": 1, "mesh": 0, "mtcnn": 0}  # default: 3DDFA_V2
    assert _run("preprocess", photo, "--pose", "mesh", "--out", str(tmp_path / "p_mesh")).exit_code == 0
    assert _run("preprocess", photo, "--pose", "mtcnn", "--out", str(tmp_path / "p_five")).exit_code == 0
    assert calls == {"3ddfa": 1, "mesh": 1, "mtcnn": 1}
    result = _run("preprocess", photo, "--pose", "dlib", "--out", str(tmp_path / "p_bad"))
    assert result.exit_code == 1 and "--pose must be 3ddfa, mesh or mtcnn, got 'dlib'" in result.output

    calls.update({"3ddfa": 0, "mesh": 0, "mtcnn": 0})
    out = tmp_path / "inv"
    args = ["invert", photo, "--preset", "tiny", "--device", "cpu", "--views", "0", "--out", str(out)]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    assert calls == {"3ddfa": 1, "mesh": 0, "mtcnn": 0}  # default: 3DDFA_V2, as preprocess
    default_label = read_label_json(out / "astro_jpeg" / "camera.json")
    expected = read_dataset_json(tmp_path / "p_3ddfa" / "dataset.json")["astro_jpeg.png"]
    torch.testing.assert_close(default_label, expected)
    # Another estimator is another option set: --resume redoes the photo with it (and records it).
    result = _run(*args, "--pose", "mtcnn", "--resume")
    assert result.exit_code == 0, result.output
    assert calls == {"3ddfa": 1, "mesh": 0, "mtcnn": 1} and "already complete" not in result.output
    five_label = read_label_json(out / "astro_jpeg" / "camera.json")
    torch.testing.assert_close(five_label, read_dataset_json(tmp_path / "p_five" / "dataset.json")["astro_jpeg.png"])
    assert not torch.allclose(default_label, five_label, atol=1e-3)
    (record,) = (out / RECORD_DIR).glob("*.json")
    assert json.loads(record.read_text())["fingerprint"]["pose"] == "mtcnn"
    result = _run(*args, "--pose", "mtcnn", "--resume")  # same options: nothing to redo
    assert result.exit_code == 0 and calls == {"3ddfa": 1, "mesh": 0, "mtcnn": 1}
    assert "1 already complete (--resume)" in " ".join(result.output.split())


def test_invert_without_pose_network_weights(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPLANENET_WEIGHTS", str(tmp_path / "no_weights"))
    photo = str(photos / "astro_jpeg.jpg")
    args = ["invert", photo, "--preset", "tiny", "--device", "cpu", "--views", "0"]
    for pose, network in (("3ddfa", "3DDFA_V2 head-pose weights not found"), ("mesh", "face-mesh weights not found")):
        result = _run(*args, "--pose", pose, "--out", str(tmp_path / pose))
        assert result.exit_code == 1 and "Traceback" not in result.output
        output = " ".join(result.output.split())
        assert network in output and "run `triplanenet fetch-weights`" in output
    result = _run(*args, "--pose", "mtcnn", "--out", str(tmp_path / "five"))  # needs no face mesh
    assert result.exit_code == 0, result.output
    assert (tmp_path / "five" / "astro_jpeg" / "camera.json").is_file()


def test_too_large_photo_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import triplanenet.io.images as images_module
    import triplanenet.preprocess.batch as batch_module

    Image.fromarray(np.zeros((100, 120, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(images_module, "MAX_PIXELS", 10_000)
    report = batch_module.preprocess_photos([tmp_path / "big.png"], tmp_path / "out")
    assert [o.status for o in report.outcomes] == ["too_large"]
    assert "big.png" in report.outcomes[0].message and "downscale" in report.outcomes[0].message
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_conf_maps_skip_an_unreadable_image_and_go_on(tmp_path: Path) -> None:
    from triplanenet.eg3d.camera import camera_label
    from triplanenet.io.cameras import write_dataset_json

    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "b.png").write_bytes(b"not a png at all")
    label = camera_label(0.1, 0.0)[0].tolist()
    write_dataset_json(tmp_path / "dataset.json", {f"{name}.png": label for name in ("a", "b", "c")})
    result = _run("conf-maps", str(tmp_path), "--device", "cpu", "--batch-size", "2")
    assert result.exit_code == 1, result.output
    assert "skipped dataset image" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in (tmp_path / "conf_map").iterdir()) == ["a.npy", "c.npy"]
