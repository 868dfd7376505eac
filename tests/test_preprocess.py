"""In-the-wild preprocessing: MTCNN detection, EG3D alignment and pose → camera label.

Real-photo checks use ``skimage.data.astronaut()`` (512², one frontal, smiling face). Reference numbers from
``/work/shared/reference/offline_weights.md`` (facenet-pytorch's own MTCNN on the same photo): box
[181, 62, 268, 172], eyes (205, 102) and (247, 104).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import needs_mtcnn
from triplanenet.eg3d.camera import camera_label, label_to_yaw_pitch, mirror_label, validate_label
from triplanenet.errors import CheckpointError, InputImageError, TriplaneNetError
from triplanenet.preprocess import (
    LM3D_STD,
    TEMPLATE_LANDMARKS_512,
    Face,
    NoFaceError,
    PreprocessedFace,
    align_face,
    apply_affine,
    batched_nms,
    detect_faces,
    estimate_pose,
    nms,
    preprocess_face,
)
from triplanenet.preprocess.mtcnn import find_mtcnn_weights, load_mtcnn, to_rgb_tensor
from triplanenet.preprocess.pose import POSE_TEMPLATE, camera_from_face_pose, project_template

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def flipped(astronaut: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(astronaut[:, ::-1])


@pytest.fixture(scope="module")
def astronaut_faces(astronaut: np.ndarray) -> list[Face]:
    return detect_faces(astronaut)


@pytest.fixture(scope="module")
def flipped_faces(flipped: np.ndarray) -> list[Face]:
    return detect_faces(flipped)


def _preprocess(image: np.ndarray, face: Face) -> PreprocessedFace:
    """What preprocess_face does after detection (detection is cached by the fixtures: it is the slow part)."""
    aligned = align_face(image, face.landmarks)
    return PreprocessedFace(face=face, aligned=aligned, pose=estimate_pose(aligned.landmarks))


@pytest.fixture(scope="module")
def astronaut_result(astronaut: np.ndarray, astronaut_faces: list[Face]) -> PreprocessedFace:
    return _preprocess(astronaut, astronaut_faces[0])


@pytest.fixture(scope="module")
def flipped_result(flipped: np.ndarray, flipped_faces: list[Face]) -> PreprocessedFace:
    return _preprocess(flipped, flipped_faces[0])


# ------------------------------------------------------------------------------------------------------------
# NMS against a brute-force reference


def _overlap(a: list[float], b: list[float], mode: str) -> float:
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    iw = max(min(a[2], b[2]) - max(a[0], b[0]) + 1, 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]) + 1, 0.0)
    inter = iw * ih
    return inter / (min(area_a, area_b) if mode == "min" else area_a + area_b - inter)


def _brute_nms(boxes: list[list[float]], scores: list[float], threshold: float, mode: str) -> list[int]:
    """Keep a box iff it overlaps no already-kept, higher-ranked box by more than the threshold."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], -i))
    kept: list[int] = []
    for i in order:
        if all(_overlap(boxes[i], boxes[j], mode) <= threshold for j in kept):
            kept.append(i)
    return kept


_box = st.tuples(
    st.floats(0, 60, allow_nan=False), st.floats(0, 60, allow_nan=False), st.floats(1, 40), st.floats(1, 40)
).map(lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])


@settings(max_examples=60, deadline=None)
@given(
    boxes=st.lists(_box, min_size=0, max_size=25),
    threshold=st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.95]),
    mode=st.sampled_from(["union", "min"]),
    data=st.data(),
)
def test_nms_matches_brute_force(boxes: list[list[float]], threshold: float, mode: str, data: st.DataObject) -> None:
    scores = data.draw(st.lists(st.floats(0, 1), min_size=len(boxes), max_size=len(boxes)))
    keep = nms(
        torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
        torch.tensor(scores, dtype=torch.float64),
        threshold,
        mode,
    )
    assert keep.tolist() == _brute_nms(boxes, scores, threshold, mode)


@settings(max_examples=40, deadline=None)
@given(boxes=st.lists(_box, min_size=1, max_size=25), data=st.data())
def test_batched_nms_is_nms_per_group(boxes: list[list[float]], data: st.DataObject) -> None:
    n = len(boxes)
    scores = data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    groups = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    keep = batched_nms(
        torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64), torch.tensor(groups), 0.5
    ).tolist()
    expected: set[int] = set()
    for g in set(groups):
        members = [i for i in range(n) if groups[i] == g]
        local = _brute_nms([boxes[i] for i in members], [scores[i] for i in members], 0.5, "union")
        expected.update(members[i] for i in local)
    assert set(keep) == expected and len(keep) == len(expected)
    assert [scores[i] for i in keep] == sorted((scores[i] for i in keep), reverse=True)


def test_nms_edge_cases() -> None:
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.long
    same = torch.tensor([[0.0, 0, 10, 10]] * 3)
    assert nms(same, torch.tensor([0.2, 0.9, 0.5]), 0.5).tolist() == [1]
    # "min" suppresses a box nested inside a better one, "union" keeps it.
    nested = torch.tensor([[0.0, 0, 99, 99], [10.0, 10, 29, 29]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(nested, scores, 0.7, "union").tolist() == [0, 1]
    assert nms(nested, scores, 0.7, "min").tolist() == [0]


# ------------------------------------------------------------------------------------------------------------
# Detection on a real photo


@needs_mtcnn
def test_mtcnn_weights_keys() -> None:
    model = load_mtcnn()
    folder = find_mtcnn_weights()
    for name in ("pnet", "rnet", "onet"):
        state = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
        assert set(state) == set(getattr(model, name).state_dict())
    assert sum(p.numel() for p in model.pnet.parameters()) == 6632
    assert sum(p.numel() for p in model.rnet.parameters()) == 100178
    assert sum(p.numel() for p in model.onet.parameters()) == 389040


@needs_mtcnn
def test_astronaut_one_face_with_landmarks(astronaut_faces: list[Face]) -> None:
    faces = astronaut_faces
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.99
    # facenet-pytorch's MTCNN on this photo: box [181, 62, 268, 172] (measured here: 179.5, 61.2, 267.2, 172.0).
    np.testing.assert_allclose(face.box, [181, 62, 268, 172], atol=3.0)
    lm = face.landmarks
    left_eye, right_eye, nose, mouth_left, mouth_right = lm
    # Eyes (205, 102) / (247, 104) per facenet-pytorch; measured here (204.5, 100.8) / (246.8, 102.9).
    np.testing.assert_allclose(left_eye, [205, 102], atol=2.5)
    np.testing.assert_allclose(right_eye, [247, 104], atol=2.5)
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]  # "left" = image left
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert left_eye[0] < nose[0] < right_eye[0]
    x1, y1, x2, y2 = face.box
    assert ((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)).all()
    assert set(face.keypoints()) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}


@needs_mtcnn
def test_flipped_photo_gives_mirrored_landmarks(
    astronaut: np.ndarray, astronaut_faces: list[Face], flipped_faces: list[Face]
) -> None:
    face, flipped = astronaut_faces[0], flipped_faces[0]
    assert len(flipped_faces) == 1
    width = astronaut.shape[1]
    mirrored = np.stack((width - 1 - face.landmarks[:, 0], face.landmarks[:, 1]), axis=1)[[1, 0, 2, 4, 3]]
    # Measured: max difference 1.5 px (MTCNN is not exactly mirror-symmetric).
    np.testing.assert_allclose(flipped.landmarks, mirrored, atol=3.0)


@needs_mtcnn
@pytest.mark.parametrize("name", ["coffee", "noise"])
def test_no_face_raises_clear_error(name: str) -> None:
    image = (
        skimage_data.coffee()
        if name == "coffee"
        else np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    )
    with pytest.raises(NoFaceError) as info:
        preprocess_face(image, what=f"{name}.png")
    message = str(info.value)
    assert isinstance(info.value, TriplaneNetError) and isinstance(info.value, InputImageError)
    assert "\n" not in message and message.startswith(f"{name}.png: no face found")


@needs_mtcnn
def test_detector_input_types(astronaut: np.ndarray) -> None:
    small = astronaut[40:240, 140:320]
    reference = to_rgb_tensor(small)
    assert reference.shape == (3, 200, 180) and reference.dtype == torch.float32
    as_float = torch.from_numpy(small.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
    torch.testing.assert_close(to_rgb_tensor(as_float), reference, atol=1e-4, rtol=0)
    torch.testing.assert_close(to_rgb_tensor(Image.fromarray(small)), reference)
    rgba = np.concatenate((small, np.zeros_like(small[..., :1])), axis=-1)
    torch.testing.assert_close(to_rgb_tensor(torch.from_numpy(rgba)), reference)
    gray = to_rgb_tensor(small[..., 0])
    assert gray.shape == (3, 200, 180) and torch.equal(gray[0], gray[2])
    for bad in (small.astype(np.float32), np.zeros((4, 4, 4, 3), dtype=np.uint8), "photo.png"):
        with pytest.raises(InputImageError):
            to_rgb_tensor(bad)
    faces = detect_faces(torch.from_numpy(small.copy()))
    assert len(faces) == 1 and faces[0].score > 0.99
    assert detect_faces(np.zeros((8, 8, 3), dtype=np.uint8)) == []  # smaller than the 12-px P-Net window


def test_missing_or_bad_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="facenet-pytorch"):
        find_mtcnn_weights(tmp_path)
    for name in ("pnet", "rnet", "onet"):
        torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / f"{name}.pt")
    with pytest.raises(CheckpointError, match="keys or shapes"):
        load_mtcnn(tmp_path)


# ------------------------------------------------------------------------------------------------------------
# Alignment


def _frontal_landmarks(scale: float, centre: tuple[float, float]) -> np.ndarray:
    return np.stack((centre[0] + scale * LM3D_STD[:, 0], centre[1] - scale * LM3D_STD[:, 1]), axis=1)


@pytest.mark.parametrize("scale", [20.0, 50.0, 160.0])
def test_alignment_puts_frontal_template_at_fixed_positions(scale: float) -> None:
    image = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    landmarks = _frontal_landmarks(scale, (180.0, 140.0))
    aligned = align_face(image, landmarks)
    assert aligned.image.shape == (512, 512, 3) and aligned.image.dtype == np.uint8
    assert aligned.image_input.shape == (256, 256, 3) and aligned.image_input.dtype == np.uint8
    assert aligned.scale == pytest.approx(scale, rel=1e-9)
    # EG3D's crop is centred 0.5·k resized pixels (k = 300 / scale) above the template origin (the official
    # code flips y with H − 1 − y but centres with H / 2), plus int() truncations of under one resized pixel.
    k = 300.0 / scale
    expected = TEMPLATE_LANDMARKS_512 + np.array([0.5, -0.5]) * k * 512 / 700
    np.testing.assert_allclose(aligned.landmarks, expected, atol=1.0)
    # The 256² transform is the 512² one followed by a 2× reduction (pixel centres at integers).
    np.testing.assert_allclose(
        apply_affine(aligned.transform_input, landmarks),
        (aligned.landmarks + 0.5) / 2 - 0.5,
        atol=1e-9,
    )


def test_alignment_transform_matches_pixels() -> None:
    image = np.full((300, 400, 3), 60, dtype=np.uint8)
    dot = (205, 120)
    image[dot[1] - 1 : dot[1] + 2, dot[0] - 1 : dot[0] + 2] = 255
    aligned = align_face(image, _frontal_landmarks(60.0, (190.0, 150.0)))
    brightness = aligned.image.astype(np.float64).mean(-1) - 60
    weight = np.clip(brightness, 0, None) * (brightness > 40)
    ys, xs = np.mgrid[:512, :512]
    centroid = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
    np.testing.assert_allclose(centroid, apply_affine(aligned.transform, np.array([dot], float))[0], atol=0.6)


def test_alignment_padding_modes() -> None:
    image = np.full((120, 160, 3), 200, dtype=np.uint8)
    landmarks = _frontal_landmarks(40.0, (30.0, 40.0))  # face near the top-left corner: the crop leaves the photo
    reflect = align_face(image, landmarks, pad_mode="reflect").image
    black = align_face(image, landmarks, pad_mode="constant").image
    edge = align_face(image, landmarks, pad_mode="edge").image
    assert reflect.min() >= 199 and edge.min() >= 199  # a flat photo stays flat
    assert black[0, 0].max() == 0 and black[-1, -1].min() >= 199
    with pytest.raises(InputImageError):
        align_face(image, np.zeros((4, 2)))
    with pytest.raises(InputImageError):
        align_face(image, np.zeros((5, 2)))


@needs_mtcnn
def test_astronaut_alignment(astronaut_result: PreprocessedFace) -> None:
    aligned = astronaut_result.aligned
    assert aligned.image.shape == (512, 512, 3) and aligned.image_input.shape == (256, 256, 3)
    assert astronaut_result.input_tensor().shape == (3, 256, 256)
    assert astronaut_result.image_tensor().abs().max() <= 1.0
    # Measured: eyes 16–23 px lower, nose 34 px lower and mouth corners up to 20 px wider than the frontal
    # mean-face positions (broad smile; the affine fit trades them off); the largest distance is 33.7 px.
    distance = np.linalg.norm(aligned.landmarks - TEMPLATE_LANDMARKS_512, axis=1)
    assert distance.max() < 40.0
    np.testing.assert_allclose(
        aligned.landmarks, apply_affine(aligned.transform, astronaut_result.face.landmarks), atol=1e-9
    )


# ------------------------------------------------------------------------------------------------------------
# Pose and camera label


@pytest.mark.parametrize(
    ("alpha", "beta", "gamma"), [(0.0, 0.0, 0.0), (0.15, -0.5, 0.1), (-0.25, 0.7, -0.2), (0.3, 0.3, 0.0)]
)
def test_pose_recovers_exact_template_projection(alpha: float, beta: float, gamma: float) -> None:
    params = torch.tensor([alpha, beta, gamma, 0.02, -0.03, 0.05], dtype=torch.float64)
    landmarks = project_template(params, torch.tensor(POSE_TEMPLATE), 4.2647 * 512, 255.5).numpy()
    pose = estimate_pose(landmarks)
    np.testing.assert_allclose(pose.angles, params[:3].numpy(), atol=1e-5)
    np.testing.assert_allclose(pose.translation, params[3:].numpy(), atol=1e-4)
    assert pose.reprojection_error < 1e-3
    label = validate_label(pose.label)[0]
    torch.testing.assert_close(label, camera_from_face_pose(params[:3], params[3:]), atol=1e-4, rtol=0)
    assert label[:16].reshape(4, 4)[:3, 3].norm().item() == pytest.approx(2.7, abs=1e-5)
    assert label[16:].tolist() == pytest.approx([4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1])
    # The camera moves opposite to the head: EG3D yaw has the sign of −β and pitch of −α (up to the small
    # "submission" offsets of the camera centre); roll has the sign of γ (combined yaw and pitch alone give some
    # roll relative to the look-at camera: −0.09 for α = β = 0.3).
    for camera_angle, face_angle in ((pose.yaw, -beta), (pose.pitch, -alpha), (pose.roll, gamma)):
        if abs(face_angle) > 0.05:
            assert camera_angle * face_angle > 0
        else:
            assert abs(camera_angle) < 0.15
    lookat = estimate_pose(landmarks, camera="lookat")
    torch.testing.assert_close(lookat.label, camera_label(pose.yaw, pose.pitch)[0], atol=1e-5, rtol=0)


def test_pose_mirror_symmetry_on_exact_landmarks() -> None:
    params = torch.tensor([0.1, -0.4, 0.15, 0.0, 0.0, 0.05], dtype=torch.float64)
    landmarks = project_template(params, torch.tensor(POSE_TEMPLATE), 4.2647 * 512, 255.5).numpy()
    mirrored = np.stack((511 - landmarks[:, 0], landmarks[:, 1]), axis=1)[[1, 0, 2, 4, 3]]
    pose, pose_m = estimate_pose(landmarks), estimate_pose(mirrored)
    # The pose template is exactly mirror symmetric, so the fit is mirror-equivariant (up to the solver).
    assert pose_m.yaw == pytest.approx(-pose.yaw, abs=1e-4)
    assert pose_m.pitch == pytest.approx(pose.pitch, abs=1e-4)
    assert pose_m.roll == pytest.approx(-pose.roll, abs=1e-4)
    torch.testing.assert_close(pose_m.label, mirror_label(pose.label), atol=1e-4, rtol=0)


def test_pose_rejects_bad_landmarks() -> None:
    with pytest.raises(InputImageError):
        estimate_pose(np.zeros((4, 2)))
    with pytest.raises(InputImageError):
        estimate_pose(np.full((5, 2), np.nan))


@needs_mtcnn
def test_astronaut_camera_near_frontal(astronaut_result: PreprocessedFace) -> None:
    pose = astronaut_result.pose
    # Measured: yaw −0.009, pitch −0.088, roll −0.052 rad (3DDFA_V2 on the same photo: roll −3.2° = −0.056).
    assert abs(pose.yaw) < 0.1 and abs(pose.pitch) < 0.35 and abs(pose.roll) < 0.1
    label = validate_label(pose.label)[0]
    yaw, pitch = label_to_yaw_pitch(label)
    assert float(yaw) == pytest.approx(pose.yaw) and float(pitch) == pytest.approx(pose.pitch)
    forward = label[:16].reshape(4, 4)[:3, 2]
    assert forward[2] < -0.95  # looking at the face along world −z


@needs_mtcnn
def test_flipped_astronaut_gives_mirrored_camera(
    astronaut_result: PreprocessedFace, flipped_result: PreprocessedFace
) -> None:
    pose, pose_f = astronaut_result.pose, flipped_result.pose
    # Measured: yaw −0.0087 vs −0.0064 (|sum| 0.015), pitch −0.0875 vs −0.0856, roll −0.052 vs +0.038,
    # max |label_flip − mirror(label)| = 0.041 (camera x; MTCNN's landmarks are not exactly mirror symmetric).
    assert pose_f.yaw == pytest.approx(-pose.yaw, abs=0.03)
    assert pose_f.pitch == pytest.approx(pose.pitch, abs=0.03)
    assert pose_f.roll == pytest.approx(-pose.roll, abs=0.03)
    torch.testing.assert_close(pose_f.label, mirror_label(pose.label), atol=0.08, rtol=0)


# ------------------------------------------------------------------------------------------------------------
# Pose sweep on procedural heads with known cameras


@needs_mtcnn
def test_pose_sweep_on_synthetic_heads() -> None:
    """Procedural heads (``triplanenet.synth``) rendered at known cameras → detect → align → pose."""
    synth = pytest.importorskip("triplanenet.synth")
    yaws = torch.tensor([-0.6, -0.3, 0.0, 0.3, 0.6, 0.0, 0.0])
    pitches = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, -0.25, 0.25])
    sample = synth.render_heads(synth.HeadParams.default(), camera_label(yaws, pitches), resolution=128, background=0.4)
    images = ((sample.image.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    est_yaw, est_pitch = [], []
    for image in images:
        pose = preprocess_face(image).pose
        est_yaw.append(pose.yaw)
        est_pitch.append(pose.pitch)
    yaw_err = np.degrees(np.array(est_yaw) - yaws.numpy())
    pitch_err = np.degrees(np.array(est_pitch) - pitches.numpy())
    print("yaw error (deg):", np.round(yaw_err, 1), "pitch error (deg):", np.round(pitch_err, 1))
    # Measured (default head, 128², 2026-11-26): yaw errors [0.6 3.8 1.4 −7.4 −5.8 −0.8 0.4] deg (within 7.4 deg),
    # pitch errors −6.2 … −19.7 deg. The procedural head is not the BFM mean face (its nose sits lower between eyes
    # and mouth), so pitch carries an offset; the yaw accuracy and both orderings must hold.
    assert np.abs(yaw_err).max() < 15.0
    assert np.all(np.diff(est_yaw[:5]) > 0)  # yaw sweep ordered
    assert est_pitch[5] < est_pitch[2] < est_pitch[6]  # pitch sweep ordered
    assert abs(pitch_err.mean()) < 25.0
