"""Camera files: dataset.json, per-image label files, in-the-wild cameras.json, lookup, atomic writer."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from triplanenet.eg3d.camera import FFHQ_FOCAL, camera_label, mirror_label, split_label
from triplanenet.errors import CameraError
from triplanenet.io.cameras import (
    camera_for_image,
    lookup_camera,
    read_camera_file,
    read_cameras_json,
    read_dataset_json,
    read_label_json,
    write_dataset_json,
)

# Label of TriPlaneNet's example_dataset/example.png (a real Deep3DFaceRecon pose, normalised with
# preprocess_face_cameras.py --mode orig): not an exact look-at camera, rotation orthonormal to ~1e-7.
EXAMPLE_LABEL = [
    0.8435825705528259, 0.02724546752870083, -0.5363078713417053, 1.3778492316290978,
    -0.03162774816155434, -0.994457483291626, -0.10026904195547104, 0.2747316674283031,
    -0.5360673069953918, 0.10154742002487183, -0.8380453586578369, 2.3056569575310135,
    0.0, 0.0, 0.0, 1.0, 4.2647, 0.0, 0.5, 0.0, 4.2647, 0.5, 0.0, 0.0, 1.0,
]  # fmt: skip


def _label(yaw: float = 0.2, pitch: float = -0.1) -> list[float]:
    return camera_label(yaw, pitch)[0].tolist()


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _raises(path: Path, reader: object, match: str) -> str:
    with pytest.raises(CameraError, match=match) as info:
        reader(path)  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message, message
    assert path.name in message, message
    return message


# ------------------------------------------------------------------------------------------------------------
# dataset.json


def test_read_official_dataset_json(tmp_path: Path) -> None:
    path = _write(tmp_path / "dataset.json", {"labels": [["example.png", EXAMPLE_LABEL]]})
    table = read_dataset_json(path)
    assert list(table) == ["example.png"]
    c = table["example.png"]
    assert c.shape == (25,) and c.dtype == torch.float32
    torch.testing.assert_close(c, torch.tensor(EXAMPLE_LABEL, dtype=torch.float32), atol=0, rtol=0)
    assert split_label(c)[0][:3, 3].norm().item() == pytest.approx(2.7, abs=1e-5)


def test_dataset_json_order_dict_form_and_names(tmp_path: Path) -> None:
    labels = [["b/img_1.png", _label(0.1)], ["a\\img_0.png", _label(-0.1)], ["./c.png", _label(0.0)]]
    table = read_dataset_json(_write(tmp_path / "dataset.json", {"labels": labels}))
    assert list(table) == ["b/img_1.png", "a/img_0.png", "c.png"]
    as_dict = read_dataset_json(_write(tmp_path / "d2.json", {"labels": {n: v for n, v in labels}}))
    for key in table:
        assert torch.equal(table[key], as_dict[key])


def test_write_then_read_roundtrip(tmp_path: Path) -> None:
    labels = {
        "img_0.png": camera_label(0.3, -0.2)[0],
        "sub\\img_1.png": camera_label(-0.4, 0.1)[0].double().numpy(),
        "img_1_mirror.png": mirror_label(camera_label(-0.4, 0.1))[0].tolist(),
        "example.png": EXAMPLE_LABEL,
    }
    out = tmp_path / "new" / "dataset.json"
    write_dataset_json(out, labels)
    data = json.loads(out.read_text())
    assert [n for n, _ in data["labels"]] == ["img_0.png", "sub/img_1.png", "img_1_mirror.png", "example.png"]
    assert data["labels"][3][1][16] == FFHQ_FOCAL  # shortest float32 decimal: 4.2647, not 4.264699935913086
    back = read_dataset_json(out)
    for name, value in labels.items():
        expected = torch.as_tensor(np.asarray(value, dtype=np.float32))
        assert torch.equal(back[name.replace("\\", "/")], expected)
    assert sorted(p.name for p in out.parent.iterdir()) == ["dataset.json"]  # no temp files left
    assert out.stat().st_mode & 0o777 == 0o644


def test_write_pairs_and_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "dataset.json"
    write_dataset_json(out, [("a.png", _label(0.1))])
    write_dataset_json(out, [("b.png", _label(0.2)), ("c.png", torch.tensor([_label(0.3)]))])
    assert list(read_dataset_json(out)) == ["b.png", "c.png"]


def test_write_rejects_bad_labels_and_keeps_old_file(tmp_path: Path) -> None:
    out = tmp_path / "dataset.json"
    write_dataset_json(out, {"a.png": _label()})
    before = out.read_bytes()
    bad = _label()
    bad[5] = float("nan")
    with pytest.raises(CameraError, match=r"dataset.json: camera of 'b.png': NaN/inf at index 5"):
        write_dataset_json(out, {"a.png": _label(), "b.png": bad})
    with pytest.raises(CameraError, match="twice"):
        write_dataset_json(out, [("a.png", _label()), ("a.png", _label())])
    with pytest.raises(CameraError, match=r"shape \(24,\)"):
        write_dataset_json(out, {"a.png": _label()[:24]})
    with pytest.raises(CameraError, match="no labels"):
        write_dataset_json(out, {})
    with pytest.raises(CameraError, match="25 numbers"):
        write_dataset_json(out, {"a.png": ["x"] * 25})
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json"]


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z0-9_]{1,8}(/[a-z0-9_]{1,8})?\.png", fullmatch=True),
            st.floats(-1.5, 1.5),
            st.floats(-1.0, 1.0),
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda t: t[0],
    )
)
def test_roundtrip_property(entries: list[tuple[str, float, float]]) -> None:
    labels = {name: camera_label(yaw, pitch)[0] for name, yaw, pitch in entries}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dataset.json"
        write_dataset_json(out, labels)
        back = read_dataset_json(out)
    assert list(back) == list(labels)
    for name, label in labels.items():
        assert torch.equal(back[name], label)


# ------------------------------------------------------------------------------------------------------------
# Malformed dataset.json


def test_bad_json_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text('{"labels": [\n  ["a.png", [1, 2,]]\n]}')
    msg = _raises(path, read_dataset_json, "not valid JSON")
    assert "line 2, column" in msg


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"images": []}, "not an EG3D dataset.json"),
        ([["a.png", EXAMPLE_LABEL]], "not an EG3D dataset.json"),
        ({"labels": None}, "null"),
        ({"labels": []}, "empty"),
        ({"labels": "a.png"}, "list of \\[name, label\\] pairs"),
        ({"labels": [["a.png"]]}, r"labels\[0\] must be"),
        ({"labels": [[3, EXAMPLE_LABEL]]}, r"labels\[0\] must be"),
        ({"labels": [["a.png", None]]}, "'a.png' is null"),
        ({"labels": [["a.png", EXAMPLE_LABEL[:24]]]}, "has 24 entries, expected 25"),
        ({"labels": [["a.png", [*EXAMPLE_LABEL, 1.0]]]}, "has 26 entries, expected 25"),
        ({"labels": [["a.png", [EXAMPLE_LABEL[:16], EXAMPLE_LABEL[16:]]]]}, "nested"),
        ({"labels": [["a.png", ["1.0", *EXAMPLE_LABEL[1:]]]]}, r"\[0\] is \"1.0\", expected a number"),
        ({"labels": [["a.png", [True, *EXAMPLE_LABEL[1:]]]]}, "expected a number"),
        ({"labels": [["a.png", EXAMPLE_LABEL], ["a.png", EXAMPLE_LABEL]]}, "listed twice"),
        ({"labels": [["", EXAMPLE_LABEL]]}, "empty image name"),
    ],
)
def test_malformed_dataset_json(tmp_path: Path, content: object, match: str) -> None:
    _raises(_write(tmp_path / "dataset.json", content), read_dataset_json, match)


def test_nan_literal_and_bad_cameras_in_dataset_json(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    good = json.dumps(EXAMPLE_LABEL)
    path.write_text('{"labels": [["ok.png", ' + good + '], ["b.png", [NaN' + good[good.index(",") :] + "]]}")
    msg = _raises(path, read_dataset_json, "NaN/inf at index 0")
    assert "'b.png'" in msg

    scaled = [v * 2 if i in (0, 1, 2) else v for i, v in enumerate(EXAMPLE_LABEL)]
    _raises(_write(path, {"labels": [["s.png", scaled]]}), read_dataset_json, "not orthonormal")

    e = np.asarray(EXAMPLE_LABEL[:16]).reshape(4, 4)
    e[:3, 0] *= -1
    reflected = [*e.reshape(-1).tolist(), *EXAMPLE_LABEL[16:]]
    _raises(_write(path, {"labels": [["r.png", reflected]]}), read_dataset_json, "det -1")

    pixels = list(EXAMPLE_LABEL)
    pixels[16], pixels[18], pixels[20], pixels[21] = 2985.29, 512.0, 2985.29, 512.0
    _raises(_write(path, {"labels": [["p.png", pixels]]}), read_dataset_json, "looks like pixels")

    zero_focal = list(EXAMPLE_LABEL)
    zero_focal[20] = 0.0
    _raises(_write(path, {"labels": [["f.png", zero_focal]]}), read_dataset_json, "focal length")


def test_unreadable_files(tmp_path: Path) -> None:
    _raises(tmp_path / "missing.json", read_dataset_json, "does not exist")
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    _raises(empty, read_dataset_json, "is empty")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b'{"labels": "\xff\xfe"}')
    _raises(binary, read_dataset_json, "not UTF-8")
    folder = tmp_path / "folder.json"
    folder.mkdir()
    _raises(folder, read_dataset_json, "is a directory")
    dup = tmp_path / "dup.json"
    dup.write_text('{"labels": {"a.png": ' + json.dumps(EXAMPLE_LABEL) + ', "a.png": [1]}}')
    _raises(dup, read_dataset_json, "'a.png' twice")


# ------------------------------------------------------------------------------------------------------------
# Per-image label files


def test_per_image_formats(tmp_path: Path) -> None:
    c = camera_label(0.25, 0.05)[0]
    e, k = split_label(c)
    files = {
        "label.json": {"label": c.tolist()},
        "bare.json": c.tolist(),
        "matrices.json": {"cam2world": e.tolist(), "intrinsics": k.tolist()},
        "flat_matrices.json": {"cam2world": e.reshape(-1).tolist(), "intrinsics": k.reshape(-1).tolist()},
    }
    for name, content in files.items():
        got = read_label_json(_write(tmp_path / name, content))
        assert got.shape == (25,) and torch.equal(got, c), name


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"label": EXAMPLE_LABEL[:20]}, "has 20 entries"),
        ({"label": None}, "is null"),
        ({"label": "frontal"}, "must be a list of 25 numbers"),
        (EXAMPLE_LABEL[:10], "has 10 entries"),
        ({"cam2world": [[1, 0, 0, 0]] * 4}, 'no "intrinsics"'),
        ({"cam2world": [[1, 0, 0]] * 3, "intrinsics": [[1, 0, 0.5]] * 3}, r"4×4 matrix"),
        ({"cam2world": np.eye(4).tolist(), "intrinsics": [[1, 0, 0.5], [0, 1]]}, r"must be a 3×3|row 1"),
        ({"camera": 1}, "not a camera label file"),
    ],
)
def test_malformed_per_image_file(tmp_path: Path, content: object, match: str) -> None:
    _raises(_write(tmp_path / "img.json", content), read_label_json, match)


def test_per_image_invalid_rotation(tmp_path: Path) -> None:
    e = np.eye(4)
    e[0, 0] = -1.0  # det −1
    e[2, 3] = -2.7
    content = {"cam2world": e.tolist(), "intrinsics": [[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]]}
    _raises(_write(tmp_path / "img.json", content), read_label_json, "det -1")


# ------------------------------------------------------------------------------------------------------------
# In-the-wild cameras.json


def _itw_entry(yaw: float, pitch: float, scale: float) -> dict:
    """A cameras.json entry like 3dface2idr_mat.py writes: unnormalised radius, pixel intrinsics."""
    e = split_label(camera_label(yaw, pitch, pivot=(0.0, 0.02, 0.1)))[0][0].double()
    e[:3, 3] *= scale
    k = [[2985.29, 0.0, 512.0], [0.0, 2985.29, 512.0], [0.0, 0.0, 1.0]]
    return {"intrinsics": k, "pose": e.tolist()}


def test_cameras_json_orig_normalisation(tmp_path: Path) -> None:
    data = {"a.png": _itw_entry(0.3, -0.1, 1.07), "b.png": _itw_entry(-0.5, 0.2, 0.93)}
    path = _write(tmp_path / "cameras.json", data)
    table = read_cameras_json(path)
    assert list(table) == ["a.png", "b.png"]
    for name, entry in data.items():
        pose = np.asarray(entry["pose"])
        expected_t = pose[:3, 3] / np.linalg.norm(pose[:3, 3]) * 2.7  # fix_pose_orig
        e, k = split_label(table[name])
        np.testing.assert_allclose(e[:3, 3].numpy(), expected_t, atol=1e-6)
        np.testing.assert_allclose(e[:3, :3].numpy(), pose[:3, :3], atol=1e-7)
        expected_k = np.array([[2985.29 / 700, 0, 0.5], [0, 2985.29 / 700, 0.5], [0, 0, 1]], dtype=np.float32)
        np.testing.assert_array_equal(k.numpy(), expected_k)
    assert read_camera_file(path).keys() == table.keys()  # auto-detected


def test_cameras_json_cor_mode(tmp_path: Path) -> None:
    path = _write(tmp_path / "cameras.json", {"a.png": _itw_entry(0.2, 0.0, 1.1)})
    e = split_label(read_cameras_json(path, mode="cor")["a.png"])[0]
    centre = torch.tensor([0.0, 0.0, 0.175])
    assert (e[:3, 3] - centre).norm().item() == pytest.approx(2.7, abs=1e-5)
    with pytest.raises(CameraError, match=r"unknown cameras\.json mode"):
        read_cameras_json(path, mode="simplify")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d["a.png"].pop("pose"), 'no "pose"'),
        (lambda d: d["a.png"].__setitem__("intrinsics", None), 'no "intrinsics"'),
        (lambda d: d["a.png"]["pose"].pop(), "4×4 matrix"),
        (lambda d: d["a.png"]["intrinsics"][0].__setitem__(1, 3.0), "must be \\[\\[f, 0, cx\\]"),
        (lambda d: d["a.png"]["intrinsics"][0].__setitem__(0, -1.0), "f > 0"),
        (lambda d: d["a.png"]["pose"][0].__setitem__(3, math.inf), "NaN/inf"),
        (lambda d: [d["a.png"]["pose"][i].__setitem__(3, 0.0) for i in range(3)], "at the centre"),
        (lambda d: d["a.png"]["pose"][0].__setitem__(0, 3.0), "not orthonormal"),
        (lambda d: d.__setitem__("b.png", [1, 2, 3]), 'object with "pose"'),
    ],
)
def test_malformed_cameras_json(tmp_path: Path, mutate: object, match: str) -> None:
    data = {"a.png": _itw_entry(0.3, 0.0, 1.0)}
    mutate(data)  # type: ignore[operator]
    path = tmp_path / "cameras.json"
    path.write_text(json.dumps(data, allow_nan=True))
    _raises(path, read_cameras_json, match)


def test_cameras_json_not_an_object(tmp_path: Path) -> None:
    _raises(_write(tmp_path / "cameras.json", [1, 2]), read_cameras_json, "not an in-the-wild cameras.json")


# ------------------------------------------------------------------------------------------------------------
# Lookup


def _table() -> dict[str, torch.Tensor]:
    return {
        "img_0.png": camera_label(0.0, 0.0)[0],
        "sub/img_0.png": camera_label(0.1, 0.0)[0],
        "other/img_0.png": camera_label(0.2, 0.0)[0],
        "frame1.png": camera_label(0.3, 0.0)[0],
        "x/frame2.png": camera_label(0.4, 0.0)[0],
    }


def test_lookup_rules(tmp_path: Path) -> None:
    table = _table()
    assert torch.equal(lookup_camera(table, "img_0.png"), table["img_0.png"])
    in_sub = tmp_path / "sub" / "img_0.png"
    assert torch.equal(lookup_camera(table, in_sub, root=tmp_path), table["sub/img_0.png"])
    # no root: the key matching the most trailing components wins
    assert torch.equal(lookup_camera(table, "/data/set/other/img_0.png"), table["other/img_0.png"])
    assert torch.equal(lookup_camera(table, "/data/set/img_0.png"), table["img_0.png"])
    # file name and stem
    assert torch.equal(lookup_camera(table, "/elsewhere/frame2.png"), table["x/frame2.png"])
    assert torch.equal(lookup_camera(table, "/elsewhere/frame1.jpg"), table["frame1.png"])
    assert torch.equal(lookup_camera({"frame1": table["frame1.png"]}, "a/frame1.png"), table["frame1.png"])
    assert torch.equal(lookup_camera(table, "C:\\data\\sub\\img_0.png"), table["sub/img_0.png"])


def test_lookup_failures() -> None:
    table = _table()
    with pytest.raises(CameraError, match=r"no camera for missing\.png in ds\.json") as info:
        lookup_camera(table, "/a/missing.png", source="ds.json")
    assert "\n" not in str(info.value)
    ambiguous = {"a/img.png": table["img_0.png"], "b/img.png": table["frame1.png"]}
    with pytest.raises(CameraError, match="matches several cameras"):
        lookup_camera(ambiguous, "/c/img.png")
    with pytest.raises(CameraError, match="matches several cameras"):
        lookup_camera({"img.png": table["img_0.png"], "img.jpg": table["frame1.png"]}, "img.webp")
    with pytest.raises(CameraError, match="has no cameras"):
        lookup_camera({}, "img.png")


def test_camera_for_image_search_order(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "sub").mkdir(parents=True)
    write_dataset_json(root / "dataset.json", {"a.png": _label(0.1), "sub/b.png": _label(0.2)})
    assert torch.equal(camera_for_image(root / "a.png"), camera_label(0.1, -0.1)[0])
    assert torch.equal(camera_for_image(root / "sub" / "b.png"), camera_label(0.2, -0.1)[0])  # parent dataset
    # a sidecar beats dataset.json
    _write(root / "a.json", {"label": _label(0.5)})
    assert torch.equal(camera_for_image(root / "a.png"), camera_label(0.5, -0.1)[0])
    _write(root / "sub" / "b.png.json", _label(0.6))
    assert torch.equal(camera_for_image(root / "sub" / "b.png"), camera_label(0.6, -0.1)[0])
    # explicit files
    single = _write(tmp_path / "cam.json", {"label": _label(0.7)})
    assert torch.equal(camera_for_image(tmp_path / "any.png", single), camera_label(0.7, -0.1)[0])
    assert torch.equal(camera_for_image(root / "a.png", root / "dataset.json"), camera_label(0.1, -0.1)[0])
    # in-the-wild cameras.json in the image folder
    itw = tmp_path / "itw"
    itw.mkdir()
    _write(itw / "cameras.json", {"face.png": _itw_entry(0.3, 0.0, 1.0)})
    got = camera_for_image(itw / "face.png")
    assert split_label(got)[0][:3, 3].norm().item() == pytest.approx(2.7, abs=1e-5)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    with pytest.raises(CameraError, match="no camera found for") as info:
        camera_for_image(lonely / "x.png")
    assert "x.json" in str(info.value) and "\n" not in str(info.value)


def test_read_camera_file_detects_formats(tmp_path: Path) -> None:
    ds = _write(tmp_path / "dataset.json", {"labels": [["a.png", _label()]]})
    assert list(read_camera_file(ds)) == ["a.png"]
    single = _write(tmp_path / "a.png.json", {"label": _label()})
    assert list(read_camera_file(single)) == ["a.png"]
    _raises(_write(tmp_path / "odd.json", {"foo": 1}), read_camera_file, "not a known camera file")


def test_camera_files_over_the_size_limit_are_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    path = _write(tmp_path / "dataset.json", {"labels": [[f"{i}.png", _label()] for i in range(50)]})
    assert read_dataset_json(path)
    monkeypatch.setenv("TRIPLANENET_MAX_CAMERA_FILE_BYTES", "100")
    message = _raises(path, read_dataset_json, "over the limit of 100")
    assert "TRIPLANENET_MAX_CAMERA_FILE_BYTES" in message
