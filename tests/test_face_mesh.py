"""Face-mesh camera estimator (issue 18): TFLite reader, converted network, flip equivariance, real-photo accuracy."""

from __future__ import annotations

import contextlib
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import assert_real_camera_accuracy, reference_file
from triplanenet.eg3d.camera import mirror_label
from triplanenet.errors import CheckpointError
from triplanenet.io.tflite import parse_tflite, read_tflite
from triplanenet.preprocess import face_mesh, mesh_pose
from triplanenet.weights import default_weights_dir

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _mesh_net() -> face_mesh.FaceMeshNet:
    try:
        return face_mesh.load_face_mesh()
    except CheckpointError as exc:
        pytest.skip(f"face-mesh weights not installed in {default_weights_dir()}: {exc}")


def _tflite_bytes() -> bytes:
    try:
        return face_mesh.find_face_mesh_tflite().read_bytes()
    except CheckpointError as exc:
        pytest.skip(str(exc))


# ------------------------------------------------------------------------------------------------------------
# TFLite reader


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a tflite file at all",
        b"\x00" * 4 + b"TFL3" + b"\x00" * 8,  # identifier, root offset 0 → vtable outside the file
        struct.pack("<I", 0xFFFFFF00) + b"TFL3" + b"\x00" * 24,  # root offset past the end
        struct.pack("<I", 12) + b"TFL3" + b"\x00" * 4 + struct.pack("<i", -1000) + b"\x00" * 8,  # bad vtable offset
    ],
)
def test_tflite_reader_rejects_corrupt_input(data: bytes) -> None:
    with pytest.raises(CheckpointError, match="not a valid TFLite model"):
        parse_tflite(data, "bad.tflite")


def test_tflite_reader_rejects_truncated_and_mangled_real_file(tmp_path: Path) -> None:
    data = _tflite_bytes()
    for cut in (16, 1000, len(data) // 2, len(data) - 100):  # (the last bytes are unreferenced padding)
        with pytest.raises(CheckpointError, match="not a valid TFLite model"):
            parse_tflite(data[:cut], "cut.tflite")
    rng = np.random.default_rng(0)
    for _ in range(20):  # random byte flips: either a clean error or a parse, never another exception
        mangled = bytearray(data)
        for pos in rng.integers(8, len(data), size=32):
            mangled[pos] = int(rng.integers(0, 256))
        with contextlib.suppress(CheckpointError):
            parse_tflite(bytes(mangled), "mangled.tflite")
    missing = tmp_path / "missing.tflite"
    with pytest.raises(CheckpointError, match="cannot read"):
        read_tflite(missing)


def test_tflite_graph_and_conversion() -> None:
    data = _tflite_bytes()
    graph = parse_tflite(data)
    ops = [op.op for op in graph.operators]
    assert ops.count("CONV_2D") == 25 and ops.count("DEPTHWISE_CONV_2D") == 20 and ops.count("DEQUANTIZE") == 113
    assert graph.tensors[graph.inputs[0]].shape == (1, 192, 192, 3)
    assert [graph.tensors[i].shape for i in graph.outputs] == [(1, 1, 1, 1404), (1, 1, 1, 1)]
    state = face_mesh.convert_face_mesh_tflite(data)
    expected = face_mesh.FaceMeshNet().state_dict()
    assert set(state) == set(expected)
    assert all(state[k].shape == expected[k].shape and state[k].dtype == torch.float32 for k in expected)
    # float16 constants were widened exactly: the stem kernel equals the file's float16 values.
    stem = next(t for t in graph.tensors if t.name == "conv2d_1/Kernel")
    assert stem.dtype == np.float16
    torch.testing.assert_close(state["stem.weight"], torch.from_numpy(stem.data.astype(np.float32)).permute(0, 3, 1, 2))
    with pytest.raises(CheckpointError, match="not MediaPipe's face_landmark"):
        face_mesh.convert_face_mesh_tflite(_tiny_tflite(), "other.tflite")


def _tiny_tflite() -> bytes:
    """A valid but unrelated TFLite flatbuffer: a Model with one empty subgraph and no tensors."""
    # Layout: [root uoffset][TFL3][vtable model][table model][vec subgraphs][vtable sg][table sg]
    out = bytearray()
    out += struct.pack("<I", 0) + b"TFL3"
    vt_model = len(out)
    out += struct.pack("<HHHHH", 10, 8, 0, 0, 4)  # fields: version, operator_codes, subgraphs @ +4
    out += b"\x00\x00"
    table_model = len(out)
    out += struct.pack("<i", table_model - vt_model)
    subgraphs_field = len(out)
    out += struct.pack("<I", 0)
    vec = len(out)
    out += struct.pack("<I", 1) + struct.pack("<I", 0)
    vt_sg = len(out)
    out += struct.pack("<HH", 4, 4)
    table_sg = len(out)
    out += struct.pack("<i", table_sg - vt_sg)
    struct.pack_into("<I", out, 0, table_model)
    struct.pack_into("<I", out, subgraphs_field, vec - subgraphs_field)
    struct.pack_into("<I", out, vec + 4, table_sg - (vec + 4))
    return bytes(out)


def test_tiny_tflite_parses() -> None:
    graph = parse_tflite(_tiny_tflite())
    assert graph.tensors == () and graph.operators == ()


def test_dequantize_cycle_is_an_error_not_a_hang() -> None:
    from triplanenet.io.tflite import TFLiteModel, TFLiteOperator, TFLiteTensor

    tensor = TFLiteTensor(0, "a", (1,), np.dtype("<f4"), None)
    graph = TFLiteModel((tensor,), (TFLiteOperator("DEQUANTIZE", (0,), (0,)),), (), ())
    with pytest.raises(CheckpointError, match="not a constant"):
        graph.constant(0)


# ------------------------------------------------------------------------------------------------------------
# Weights: missing / fetched


def test_missing_face_mesh_weights_give_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match="run `triplanenet fetch-weights`"):
        face_mesh.load_face_mesh(tmp_path)
    import typer

    from triplanenet.cli.preprocess import preprocess

    monkeypatch.setenv("TRIPLANENET_WEIGHTS", str(tmp_path))
    photo = tmp_path / "face.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photo)
    app = typer.Typer()
    app.command()(preprocess)
    app.command("other")(lambda: None)
    try:
        from triplanenet.preprocess.mtcnn import load_mtcnn

        load_mtcnn()
    except CheckpointError:
        pytest.skip("MTCNN weights not installed")
    result = CliRunner().invoke(app, ["preprocess", str(photo), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "run `triplanenet fetch-weights`" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3
    # The 5-landmark estimator does not need the face mesh: the (faceless) photo fails for its own reason.
    result = CliRunner().invoke(app, ["preprocess", str(photo), "--pose", "mtcnn", "--out", str(tmp_path / "o2")])
    assert result.exit_code == 1 and "fetch-weights" not in result.output and "no face" in result.output


def test_fetch_face_mesh_weights_roundtrip(tmp_path: Path) -> None:
    _tflite_bytes()  # skips when mediapipe is not installed
    source = face_mesh.find_face_mesh_tflite()
    path = face_mesh.fetch_face_mesh_weights(tmp_path, tflite=source)
    net = face_mesh.load_face_mesh(tmp_path)
    x = torch.rand(1, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    points, logit = net(x)
    assert points.shape == (1, 468, 3) and logit.shape == (1,) and torch.isfinite(points).all()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"x" * 100)
    with pytest.raises(CheckpointError, match="sha256"):
        face_mesh.fetch_face_mesh_weights(tmp_path / "other", tflite=bad)
    assert path.name == face_mesh.FACE_MESH_FILENAME


# ------------------------------------------------------------------------------------------------------------
# Geometry: canonical model, mirror symmetry


def test_canonical_face_and_mirror_index() -> None:
    points = mesh_pose.canonical_face()
    index = mesh_pose.mirror_index()
    assert points.shape == (468, 3)
    np.testing.assert_allclose(points[index] * [-1, 1, 1], points, atol=1e-5)
    assert index[33] == 263 and index[61] == 291 and index[4] == 4


def test_fit_is_exactly_mirror_equivariant() -> None:
    rng = np.random.default_rng(1)
    mesh = _synthetic_mesh(yaw=0.35, pitch=-0.12, roll=0.08) + rng.normal(0, 0.7, (468, 3))
    mirrored = mesh[mesh_pose.mirror_index()].copy()
    mirrored[:, 0] = 511 - mirrored[:, 0]
    a = mesh_pose.fit_mesh_pose(mesh)
    b = mesh_pose.fit_mesh_pose(mirrored)
    torch.testing.assert_close(b.label, mirror_label(a.label), atol=2e-5, rtol=0)
    assert b.yaw == pytest.approx(-a.yaw, abs=1e-5) and b.roll == pytest.approx(-a.roll, abs=1e-5)


def test_fit_recovers_a_synthetic_pose() -> None:
    """Projecting the (calibrated) canonical face with a known pose, distance and face proportions (height and depth
    relative to width) and fitting it back gives that pose."""
    cases = ((0.0, 0.0, 0.0, 0.0, 1.0, 1.0), (0.6, 0.1, -0.1, -0.5, 0.85, 1.1), (-0.9, -0.2, 0.15, 0.3, 1.1, 0.9))
    for yaw, pitch, roll, tz, height, depth in cases:
        fit = mesh_pose.fit_mesh_pose(_synthetic_mesh(yaw, pitch, roll, tz, height, depth))
        assert fit.angles == pytest.approx([pitch, yaw, roll], abs=1e-6)
        assert fit.translation[2] == pytest.approx(tz, abs=1e-5)
        assert fit.reprojection_error < 1e-4


def _synthetic_mesh(
    yaw: float, pitch: float, roll: float, tz: float = 0.0, height: float = 1.0, depth: float = 1.0
) -> np.ndarray:
    template = torch.as_tensor(mesh_pose._template(mesh_pose.PITCH_OFFSET))
    params = torch.tensor([pitch, yaw, roll, 0.0, 0.0, tz, height, depth], dtype=torch.float64)
    projected = mesh_pose._project(params, template, 4.2647 * 512, 255.5)
    return projected.numpy() + np.array([0.0, 0.0, 40.0])  # the network's z has an arbitrary origin


# ------------------------------------------------------------------------------------------------------------
# Real photos with official cameras (reference pack)


def _real_photos() -> tuple[Path, list[tuple[str, list[float]]]]:
    dataset = reference_file("real_cameras/dataset.json")
    return dataset.parent, json.loads(dataset.read_text())["labels"]


def test_network_landmarks_land_on_the_face() -> None:
    """The mesh's eyes / nose / mouth agree with MTCNN's 5 points on the 12 real photos (and the face logit is high)."""
    from triplanenet.preprocess import detect_faces

    net = _mesh_net()
    folder, labels = _real_photos()
    distances = []
    for name, _ in labels:
        image = np.asarray(Image.open(folder / name).convert("RGB"))
        face = detect_faces(image)[0]
        mesh = mesh_pose.face_mesh_landmarks(image, face.landmarks, net)
        eye_distance = float(np.linalg.norm(face.landmarks[1] - face.landmarks[0]))
        distances.append(np.linalg.norm(mesh_pose.five_points(mesh)[:, :2] - face.landmarks, axis=1) / eye_distance)
    distances_arr = np.stack(distances)
    # Measured: median 0.045, max 0.26 eye distances (the profile photo's hidden eye and MTCNN's mouth corners).
    assert np.median(distances_arr) < 0.08
    assert distances_arr.max() < 0.3


def test_mirrored_photo_gives_mirrored_camera() -> None:
    from triplanenet.preprocess import preprocess_face

    _mesh_net()
    folder, _ = _real_photos()
    # MTCNN is not exactly mirror-equivariant, so the crops can differ; the mesh and fit are exact. goae_3's mirror
    # keeps the crop (measured yaw difference 0.03°); the mirrored 60° profile goae_11 is re-aligned 8 % larger and
    # 29 px away, which alone moves the camera (measured 1.08°; re-cropping the unmirrored photo 8 % larger and 8 px
    # to the side moves it 0.6°).
    for name, yaw_tolerance in (("goae_3.jpg", 1.0), ("goae_11.jpg", 1.5)):
        image = np.asarray(Image.open(folder / name).convert("RGB"))
        a = preprocess_face(image, pose="mesh")
        b = preprocess_face(np.ascontiguousarray(image[:, ::-1]), pose="mesh")
        assert math.degrees(abs(b.pose.yaw + a.pose.yaw)) < yaw_tolerance
        assert math.degrees(abs(b.pose.pitch - a.pose.pitch)) < 1.0
        assert math.degrees(abs(b.pose.roll + a.pose.roll)) < 1.0


def test_exactly_mirrored_crop_gives_exactly_mirrored_mesh() -> None:
    net = _mesh_net()
    folder, _ = _real_photos()
    image = np.asarray(Image.open(folder / "goae_6.jpg").convert("RGB"))
    from triplanenet.preprocess import detect_faces

    lm = detect_faces(image)[0].landmarks
    mirrored_lm = lm[[1, 0, 2, 4, 3]].copy()
    mirrored_lm[:, 0] = 511 - mirrored_lm[:, 0]
    a = mesh_pose.face_mesh_landmarks(image, lm, net)
    b = mesh_pose.face_mesh_landmarks(np.ascontiguousarray(image[:, ::-1]), mirrored_lm, net)
    back = b[mesh_pose.mirror_index()].copy()
    back[:, 0] = 511 - back[:, 0]
    np.testing.assert_allclose(back, a, atol=0.05)


def test_realigning_an_official_crop_keeps_it() -> None:
    from triplanenet.preprocess import preprocess_face

    _mesh_net()
    folder, labels = _real_photos()
    for name, _ in labels:
        image = np.asarray(Image.open(folder / name).convert("RGB"))
        result = preprocess_face(image, pose="mesh")
        transform = result.aligned.transform
        scale = math.sqrt(abs(float(np.linalg.det(transform[:, :2]))))
        centre = np.array([255.5, 255.5])
        shift = float(np.linalg.norm(transform[:, :2] @ centre + transform[:, 2] - centre))
        assert shift <= 2.0 and abs(scale - 1.0) <= 0.01, name
        assert np.array_equal(result.aligned.image, image)


def test_camera_accuracy_on_real_photos_with_official_cameras() -> None:
    """Our cameras vs the official EG3D ones on the 12 shared photos (docs/cameras.md has the per-photo table)."""
    _mesh_net()
    # Measured (docs/cameras.md): yaw 1.56, pitch 2.44, rotation 3.51, roll 0.61 degrees (the same leave-one-out).
    assert_real_camera_accuracy("mesh", {"yaw_mae": 1.65, "pitch_mae": 2.55, "rotation_mae": 3.65, "roll_mae": 0.7})
