"""Video: temporal smoothing of tracks, per-frame preprocessing, and ``triplanenet invert-video`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from conftest import needs_face_mesh, needs_mtcnn, needs_tddfa, spy_pose_estimators
from triplanenet.cli.main import app
from triplanenet.errors import ConfigError
from triplanenet.io.video import write_mp4
from triplanenet.preprocess.mtcnn import NoFaceError
from triplanenet.preprocess.video import prepare_video, smooth_track

runner = CliRunner()


# ------------------------------------------------------------------------------------------------------------
# smooth_track


def test_smoothing_reduces_jitter_on_a_known_track() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(60, dtype=np.float64)
    truth = np.stack((200 + 1.5 * t + 10 * np.sin(t / 9), 150 + 8 * np.cos(t / 13)), axis=1)
    noisy = truth + rng.normal(0, 2.0, truth.shape)
    smoothed = smooth_track(noisy, sigma=2.0)
    raw_error = np.sqrt(((noisy - truth) ** 2).mean())
    smooth_error = np.sqrt(((smoothed - truth) ** 2).mean())
    assert smooth_error < 0.6 * raw_error
    # Frame-to-frame jitter (second differences) drops much more.
    assert np.abs(np.diff(smoothed, 2, axis=0)).mean() < 0.3 * np.abs(np.diff(noisy, 2, axis=0)).mean()


def test_missing_frames_are_interpolated() -> None:
    t = np.arange(12, dtype=np.float64)
    track = np.stack((3 * t + 1, -2 * t), axis=1)
    valid = np.ones(12, dtype=bool)
    valid[[0, 5, 6, 11]] = False
    holes = track.copy()
    holes[~valid] = np.nan
    expected = track.copy()
    expected[0], expected[11] = track[1], track[10]  # ends are held, not extrapolated
    for sigma in (0.0, 1.5, 4.0):
        np.testing.assert_allclose(smooth_track(holes, valid, sigma), expected, atol=1e-6)
    with pytest.raises(NoFaceError, match="no frame"):
        smooth_track(holes, np.zeros(12, dtype=bool))
    with pytest.raises(ConfigError):
        smooth_track(holes, valid, -1.0)
    assert smooth_track(np.array([[4.0, 5.0]]), None, 2.0).tolist() == [[4.0, 5.0]]


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 30),
    st.floats(-5, 5),
    st.floats(-100, 100),
    st.floats(0.0, 6.0),
    st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_linear_motion_is_kept_exactly(
    length: int, slope: float, offset: float, sigma: float, mask: list[bool]
) -> None:
    """The local-linear filter neither lags nor shrinks steady motion, whatever frames are missing."""
    valid = np.array(mask[:length])
    if valid.sum() < 2:
        valid[0] = valid[-1] = True
    t = np.arange(length, dtype=np.float64)
    good = np.flatnonzero(valid)
    track = (offset + slope * t)[:, None]
    expected = (offset + slope * np.clip(t, good[0], good[-1]))[:, None]
    tolerance = 1e-6 * (1 + abs(offset) + abs(slope) * length)
    np.testing.assert_allclose(smooth_track(track, valid, sigma), expected, atol=tolerance)


# ------------------------------------------------------------------------------------------------------------
# Clips


def _clip(frames: int = 9, blank: tuple[int, ...] = (4,)) -> list[np.ndarray]:
    """The astronaut drifting right and down by ~1 px per frame; ``blank`` frames show no face."""
    astronaut = pytest.importorskip("skimage.data").astronaut()
    out = []
    for i in range(frames):
        frame = np.roll(astronaut, (i, 2 * i), axis=(0, 1))
        if i in blank:
            frame = np.full_like(astronaut, 90)
        out.append(np.ascontiguousarray(frame))
    return out


@needs_mtcnn
@needs_tddfa
def test_prepare_video_tracks_smooths_and_fills_gaps() -> None:
    clip = _clip()
    prepared = prepare_video(clip, smoothing=1.5)
    assert len(prepared) == 9
    assert prepared.detected.tolist() == [i != 4 for i in range(9)]
    assert prepared.input_tensor().shape == (9, 3, 256, 256) and prepared.labels.shape == (9, 25)
    assert prepared.input_tensor(slice(2, 4)).shape == (2, 3, 256, 256)
    assert prepared.crops.shape == (9, 256, 256, 3)
    # The missing frame's landmarks lie between its neighbours' (the face drifts steadily).
    gap = prepared.landmarks[4]
    np.testing.assert_allclose(gap, (prepared.landmarks[3] + prepared.landmarks[5]) / 2, atol=1.5)
    assert np.isnan(prepared.raw_landmarks[4]).all() and np.isnan(prepared.raw_yaw[4])
    # Smoothed landmarks follow the true motion (2 px right, 1 px down per frame).
    steps = np.diff(prepared.landmarks.mean(axis=1), axis=0)
    np.testing.assert_allclose(steps, np.tile([2.0, 1.0], (8, 1)), atol=0.6)
    # The head does not move, so the smoothed camera must not shake more than the per-frame estimates.
    raw = prepared.raw_yaw[prepared.detected]
    assert np.std(prepared.yaw) <= np.std(raw) + 1e-6
    assert np.isfinite(prepared.labels.numpy()).all()


@needs_mtcnn
@needs_tddfa
def test_prepare_video_without_faces_fails_clearly() -> None:
    blank = [np.full((128, 128, 3), 90, dtype=np.uint8)] * 3
    with pytest.raises(NoFaceError, match="no face found in any of its 3 frame"):
        prepare_video(blank)


@needs_mtcnn
@needs_tddfa
def test_invert_video_cli_end_to_end(tmp_path: Path) -> None:
    import imageio.v2 as imageio

    video = tmp_path / "clip.mp4"
    write_mp4(video, _clip(8, blank=(3,)), fps=10)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["invert-video", str(video), "--out", str(out), "--device", "cpu", "--batch-size", "3",
         "--yaw", "0.4", "--background", "white"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no face detected in 1 of 8 frame" in result.output
    info = json.loads((out / "frames.json").read_text())
    assert info["frames"] == 8 and info["detected_frames"] == 7 and len(info["per_frame"]) == 8
    assert [f["detected"] for f in info["per_frame"]] == [i != 3 for i in range(8)]
    assert info["frames_per_second"] > 0 and info["novel_view"] == {"yaw": 0.4, "pitch": 0.0}
    size = info["output_size"]
    for name, width in (
        ("reconstruction.mp4", size),
        ("novel_view.mp4", size),
        ("side_by_side.mp4", 3 * size),
        ("mask.mp4", size),
    ):
        with imageio.get_reader(out / name, format="FFMPEG") as reader:
            frames = [np.asarray(f) for f in reader]
        assert len(frames) == 8, name
        assert frames[0].shape == (size, width, 3), name
    assert not list(out.glob(".*")), "temporary files were left behind"

    # Bad inputs: a file that is not a video, a video without faces.
    (tmp_path / "notes.mp4").write_text("not a video")
    result = runner.invoke(app, ["invert-video", str(tmp_path / "notes.mp4"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "Traceback" not in result.output and "notes.mp4" in result.output
    write_mp4(tmp_path / "empty.mp4", [np.full((64, 64, 3), 90, dtype=np.uint8)] * 2, fps=5)
    result = runner.invoke(app, ["invert-video", str(tmp_path / "empty.mp4"), "--out", str(tmp_path / "y")])
    assert result.exit_code == 1 and "no face found" in result.output


@needs_mtcnn
@needs_tddfa
def test_invert_video_tiny_preset_with_options(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_mp4(video, _clip(6, blank=()), fps=10)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["invert-video", str(video), "--out", str(out), "--preset", "tiny", "--device", "cpu", "--max-frames", "4",
         "--stride", "1", "--smoothing", "0", "--camera", "lookat", "--fast", "bf16"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads((out / "frames.json").read_text())
    assert info["frames"] == 4 and not (out / "mask.mp4").exists() and info["fast_mode"] == "bf16"
    result = runner.invoke(app, ["invert-video", str(video), "--out", str(out), "--fast", "cuda_graphs"])
    assert result.exit_code == 1 and "CUDA" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["invert-video", str(video), "--out", str(out), "--background", "green"])
    assert result.exit_code == 1 and "--background" in result.output


# ------------------------------------------------------------------------------------------------------------
# --pose: the same camera estimator choice as preprocess / invert


@needs_mtcnn
@needs_tddfa
@needs_face_mesh
def test_prepare_video_pose_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    clip = _clip(5, blank=(2,))
    calls = spy_pose_estimators(monkeypatch)
    default = prepare_video(clip, smoothing=1.5)  # default: 3DDFA_V2, on the frames with a detected face only
    assert calls == {"3ddfa": 4, "mesh": 0, "mtcnn": 0} and default.pose == "3ddfa"
    mesh = prepare_video(clip, smoothing=1.5, pose="mesh")  # the face mesh: the same frames
    assert calls == {"3ddfa": 4, "mesh": 4, "mtcnn": 0} and mesh.pose == "mesh"
    five = prepare_video(clip, smoothing=1.5, pose="mtcnn")  # every frame, from its (interpolated) landmarks
    assert calls == {"3ddfa": 4, "mesh": 4, "mtcnn": 5} and five.pose == "mtcnn"
    for prepared in (default, mesh, five):
        assert np.isfinite(prepared.labels.numpy()).all() and np.isnan(prepared.raw_yaw[2])
        assert np.std(prepared.yaw) <= np.std(prepared.raw_yaw[prepared.detected]) + 1e-6
    for prepared in (default, mesh):  # the frame without a face gets its camera from its neighbours'
        assert abs(prepared.pitch[2] - (prepared.pitch[1] + prepared.pitch[3]) / 2) < 0.01
    assert not np.allclose(default.pitch, five.pitch, atol=1e-3)  # different estimators
    with pytest.raises(ConfigError, match="pose must be 3ddfa, mesh or mtcnn, got 'dlib'"):
        prepare_video(clip, pose="dlib")  # type: ignore[arg-type]


@needs_mtcnn
@needs_tddfa
def test_invert_video_pose_option_reaches_the_estimator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = tmp_path / "clip.mp4"
    write_mp4(video, _clip(3, blank=()), fps=10)
    calls = spy_pose_estimators(monkeypatch)
    args = ["invert-video", str(video), "--preset", "tiny", "--device", "cpu", "--smoothing", "0"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "default")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert calls == {"3ddfa": 3, "mesh": 0, "mtcnn": 0}  # the default is 3DDFA_V2, as for preprocess and invert
    assert json.loads((tmp_path / "default" / "frames.json").read_text())["pose"] == "3ddfa"
    result = runner.invoke(app, [*args, "--pose", "mtcnn", "--out", str(tmp_path / "five")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert calls == {"3ddfa": 3, "mesh": 0, "mtcnn": 3}
    assert json.loads((tmp_path / "five" / "frames.json").read_text())["pose"] == "mtcnn"


def test_invert_video_rejects_an_unknown_pose(tmp_path: Path) -> None:
    result = runner.invoke(app, ["invert-video", str(tmp_path / "clip.mp4"), "--pose", "dlib", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == ["error: --pose must be 3ddfa, mesh or mtcnn, got 'dlib'"]


@needs_mtcnn
def test_invert_video_without_pose_network_weights_fails_like_preprocess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIPLANENET_WEIGHTS", str(tmp_path / "no_weights"))
    video = tmp_path / "blank.mp4"
    write_mp4(video, [np.full((64, 64, 3), 90, dtype=np.uint8)] * 2, fps=5)
    Image.fromarray(np.full((64, 64, 3), 90, dtype=np.uint8)).save(tmp_path / "photo.png")
    for pose in ("3ddfa", "mesh"):
        result = runner.invoke(app, ["invert-video", str(video), "--pose", pose, "--out", str(tmp_path / "v")])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "run `triplanenet fetch-weights`" in result.output and len(result.output.strip().splitlines()) <= 3
        photo = ["preprocess", str(tmp_path / "photo.png"), "--pose", pose, "--out", str(tmp_path / "p")]
        expected = runner.invoke(app, photo)
        assert expected.exit_code == 1 and " ".join(result.output.split()) == " ".join(expected.output.split())
    # The 5-landmark estimator needs no network: the (faceless) clip fails for its own reason.
    result = runner.invoke(app, ["invert-video", str(video), "--pose", "mtcnn", "--out", str(tmp_path / "w")])
    assert result.exit_code == 1 and "fetch-weights" not in result.output and "no face found" in result.output
