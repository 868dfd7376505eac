"""Video preprocessing: frames → per-frame aligned crops and cameras, temporally smoothed.

Steps (:func:`prepare_video`):

1. Frames are read with imageio's ffmpeg reader (:func:`read_video`; the ffmpeg binary comes with
   ``imageio-ffmpeg``), optionally every ``stride``-th frame and at most ``max_frames``.
2. MTCNN runs on every frame (downscaled for detection like the photo batch, see
   :func:`~triplanenet.preprocess.batch.detect_faces_scaled`). One face is tracked: the largest face of the first
   frame that has one, then in each frame the face whose box centre is closest to the previous tracked box (in
   units of the box size; a jump of more than one box size counts as a missed detection).
3. The 10 landmark coordinates are smoothed over time with :func:`smooth_track`, a Gaussian-weighted local
   *linear* regression (a Savitzky–Golay-style filter of order 1 with Gaussian weights): it removes per-frame
   jitter without lagging behind or flattening steady motion, and frames without a detection get their value from
   the fit to their neighbours (interpolation). No frame with a face at all raises :class:`NoFaceError`.
4. Every frame is aligned with its smoothed landmarks (EG3D recipe) and posed with the same estimator as
   ``preprocess`` / ``invert`` (``pose``: ``"3ddfa"``, the default, 3DDFA_V2's head-pose regressor on the frame's
   detected face box; ``"mesh"`` the 468-point face mesh fit; ``"mtcnn"`` the 5-landmark mean face; see
   :mod:`~triplanenet.preprocess.pose_methods`); the pose parameters (face angles, unwrapped, and translation) are
   smoothed again with the same filter and turned into EG3D labels, so the camera does not shake either. With
   ``"3ddfa"`` and ``"mesh"`` only frames with a detected face are posed and the others take their pose from the
   smoothed fit to their neighbours (a network on a frame without a face would give noise); with ``"mtcnn"`` every
   frame is posed from its (interpolated) landmarks.

``smoothing`` is the Gaussian's standard deviation in frames (0 = off: raw per-frame values, missing frames still
interpolated).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from triplanenet.errors import ConfigError, InputImageError
from triplanenet.preprocess.align import AlignedFace, align_face
from triplanenet.preprocess.mtcnn import MTCNN, Face, NoFaceError, load_mtcnn
from triplanenet.preprocess.pose import camera_from_face_pose
from triplanenet.preprocess.pose_methods import DEFAULT_POSE_METHOD, PoseMethod, PoseNetworks, estimate_face_pose

__all__ = ["PreparedVideo", "prepare_video", "read_video", "smooth_track", "track_faces"]

VideoSource = str | os.PathLike[str] | Sequence[np.ndarray]


def _open_reader(path: Path) -> Any:  # an imageio reader
    import imageio.v2 as imageio

    if not path.is_file():
        raise InputImageError(f"{path}: video file not found")
    try:
        return imageio.get_reader(path, format="FFMPEG")
    except Exception as exc:  # imageio/ffmpeg raise OSError, RuntimeError, IndexError... for unreadable files
        raise InputImageError(f"{path}: not a readable video ({str(exc).splitlines()[0][:120]})") from None


def read_video(
    source: VideoSource, max_frames: int | None = None, stride: int = 1
) -> tuple[Iterator[np.ndarray], float]:
    """Frame iterator ((H, W, 3) uint8 RGB) and frames per second (after ``stride``).

    ``source`` may also be a list of frames (fps 25 then). Raises :class:`InputImageError` for unreadable files.
    """
    if stride < 1 or (max_frames is not None and max_frames < 1):
        raise ConfigError(f"stride and max_frames must be >= 1, got {stride} and {max_frames}")
    if not isinstance(source, str | os.PathLike):
        frames = list(source)[::stride][:max_frames]
        return iter([np.ascontiguousarray(f[..., :3]) for f in frames]), 25.0 / stride
    path = Path(source)
    reader = _open_reader(path)
    try:
        fps = float(reader.get_meta_data().get("fps") or 25.0) / stride
    except Exception as exc:  # broken container metadata
        reader.close()
        raise InputImageError(f"{path}: not a readable video ({str(exc).splitlines()[0][:120]})") from None

    def frames() -> Iterator[np.ndarray]:
        count = 0
        try:
            for index, frame in enumerate(reader):
                if index % stride:
                    continue
                yield np.ascontiguousarray(np.asarray(frame)[..., :3])
                count += 1
                if max_frames is not None and count >= max_frames:
                    break
        except Exception as exc:
            if count == 0:
                raise InputImageError(f"{path}: cannot decode video frames ({exc})") from None
            # A damaged tail: keep the frames read so far.
        finally:
            reader.close()

    return frames(), fps


def smooth_track(values: np.ndarray, valid: np.ndarray | None = None, sigma: float = 2.0) -> np.ndarray:
    """Smooth a (T, D) track over time and fill its invalid frames.

    Each output frame is the value at ``t`` of a weighted least-squares line fitted to the valid frames, weights
    ``exp(−(τ − t)² / 2σ²)``. This keeps linear motion exactly (no lag, no shrinking at the ends of the clip) and
    averages out jitter over about ±2σ frames. Invalid frames (``valid`` False) take no part in the fits, so their
    output is interpolated from their neighbours (linearly when ``sigma`` is 0 or the gap is far wider than σ);
    invalid frames before the first / after the last valid one hold that frame's value (no extrapolation).

    Args:
        values: (T, D) float array (values of invalid frames are ignored; they may be NaN).
        valid: (T,) bool, default all True.
        sigma: Gaussian standard deviation in frames; 0 disables smoothing (only the filling is done).

    Returns:
        (T, D) float64.

    Raises:
        NoFaceError: no valid frame.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        return smooth_track(x[:, None], valid, sigma)[:, 0]
    length = x.shape[0]
    ok = np.ones(length, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if ok.shape != (length,):
        raise ConfigError(f"valid must have shape ({length},), got {ok.shape}")
    if sigma < 0:
        raise ConfigError(f"smoothing must be >= 0 frames, got {sigma}")
    if not ok.any():
        raise NoFaceError("no frame has a face; nothing to track")
    t = np.arange(length, dtype=np.float64)
    good = np.flatnonzero(ok)
    filled = np.stack([np.interp(t, good.astype(np.float64), x[good, d]) for d in range(x.shape[1])], axis=1)
    if sigma < 1e-3 or good.size < 2:
        return filled
    diff = t[:, None] - t[None, :]  # (output frame, source frame)
    weights = np.exp(-0.5 * (diff / sigma) ** 2) * ok[None, :]
    s0 = weights.sum(1)
    s1 = (weights * -diff).sum(1)  # τ − t
    s2 = (weights * diff * diff).sum(1)
    det = s0 * s2 - s1 * s1
    data = np.where(ok[:, None], x, 0.0)
    m0 = weights @ data
    m1 = (weights * -diff) @ data
    stable = (det > 1e-9 * np.maximum(s0, 1e-300) ** 2) & (s0 > 1e-12)
    # Intercept of the weighted line: (s2·m0 − s1·m1) / det.
    with np.errstate(divide="ignore", invalid="ignore"):
        fitted = (s2[:, None] * m0 - s1[:, None] * m1) / det[:, None]
    fitted = np.where(stable[:, None], fitted, filled)
    # Before the first and after the last valid frame: hold the nearest fitted value (no extrapolation).
    fitted[: good[0]] = fitted[good[0]]
    fitted[good[-1] + 1 :] = fitted[good[-1]]
    return fitted


def _closest(faces: list[Face], previous: np.ndarray | None) -> Face | None:
    if not faces:
        return None
    if previous is None:
        return faces[0]
    centre = (previous[:2] + previous[2:]) / 2
    size = max(float(previous[2] - previous[0]), 1.0)
    dist = [float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)) / size for f in faces]
    best = int(np.argmin(dist))
    return faces[best] if dist[best] <= 1.0 else None


def track_faces(
    frames: Iterable[np.ndarray],
    model: MTCNN | None = None,
    min_confidence: float = 0.9,
    max_detect_side: int | None = 1024,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detect and track one face through the frames.

    Returns:
        ``(landmarks (T, 5, 2), boxes (T, 4), detected (T,) bool)``; rows of undetected frames are NaN.
    """
    from triplanenet.preprocess.batch import detect_faces_scaled

    if model is None:
        model = load_mtcnn()
    landmarks: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    detected: list[bool] = []
    previous: np.ndarray | None = None
    for frame in frames:
        found = [f for f in detect_faces_scaled(frame, model, max_detect_side) if f.score > min_confidence]
        face = _closest(found, previous)
        if face is None:
            landmarks.append(np.full((5, 2), np.nan))
            boxes.append(np.full(4, np.nan))
            detected.append(False)
            continue
        landmarks.append(face.landmarks)
        boxes.append(face.box)
        detected.append(True)
        previous = face.box
    if not landmarks:
        return np.zeros((0, 5, 2)), np.zeros((0, 4)), np.zeros(0, dtype=bool)
    return np.stack(landmarks), np.stack(boxes), np.array(detected, dtype=bool)


@dataclass
class PreparedVideo:
    """Per-frame network inputs and cameras of a clip (T frames).

    Attributes:
        crops: (T, 256, 256, 3) uint8 aligned crops (the encoder inputs; :meth:`input_tensor` converts them).
        labels: (T, 25) float32 EG3D cameras after smoothing.
        raw_yaw, raw_pitch: (T,) per-frame pose before the camera smoothing (radians, NaN where no face).
        yaw, pitch: (T,) pose of ``labels``.
        detected: (T,) bool, whether MTCNN found the face in that frame (others are interpolated).
        pose: the camera estimator used (``"3ddfa"``, ``"mesh"`` or ``"mtcnn"``).
        landmarks: (T, 5, 2) smoothed landmarks in frame pixels; raw_landmarks: as detected (NaN if missed).
        boxes: (T, 4) detected boxes (NaN if missed).
        fps: frames per second of ``inputs``.
        frame_size: (H, W) of the source frames.
    """

    crops: np.ndarray
    labels: torch.Tensor
    raw_yaw: np.ndarray
    raw_pitch: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    detected: np.ndarray
    landmarks: np.ndarray
    raw_landmarks: np.ndarray
    boxes: np.ndarray
    fps: float
    frame_size: tuple[int, int]
    pose: str = DEFAULT_POSE_METHOD

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    def input_tensor(self, frames: slice | None = None) -> torch.Tensor:
        """(N, 3, 256, 256) float32 encoder inputs in [−1, 1] for ``frames`` (default all)."""
        crops = self.crops if frames is None else self.crops[frames]
        return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def prepare_video(
    source: VideoSource,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    smoothing: float = 2.0,
    camera: Literal["official", "lookat"] = "official",
    pad_mode: Literal["reflect", "edge", "constant"] = "reflect",
    model: MTCNN | None = None,
    min_confidence: float = 0.9,
    pose: PoseMethod = DEFAULT_POSE_METHOD,
    networks: PoseNetworks | None = None,
) -> PreparedVideo:
    """Read, track, smooth, align and pose a clip (see the module docstring).

    Args:
        pose: camera estimator, ``"3ddfa"`` (default), ``"mesh"`` or ``"mtcnn"``, as ``preprocess --pose``.
        networks: the estimator's network (:meth:`PoseNetworks.load`; loaded when None).

    Raises:
        InputImageError: unreadable video or no frames; NoFaceError when no frame has a face.
        ConfigError: unknown ``camera`` or ``pose``.
        CheckpointError: the estimator's weights are missing (run ``triplanenet fetch-weights``).
    """
    from triplanenet.eg3d.camera import label_to_yaw_pitch

    if camera not in ("official", "lookat"):
        raise ConfigError(f"camera must be 'official' or 'lookat', got {camera!r}")
    if networks is None or networks.method != pose:
        networks = PoseNetworks.load(pose)  # unknown method or missing weights: one error before any frame is read
    # Two passes over the file (detect, then align with the smoothed landmarks) keep one frame in memory at a time.
    iterator, fps = read_video(source, max_frames=max_frames, stride=stride)
    name = Path(source).name if isinstance(source, str | os.PathLike) else "video"
    raw, boxes, detected = track_faces(iterator, model=model, min_confidence=min_confidence)
    count = len(detected)
    if count == 0:
        raise InputImageError(f"{name}: the video has no frames")
    if not detected.any():
        raise NoFaceError(f"{name}: no face found in any of its {count} frame(s)")
    smooth = smooth_track(raw.reshape(count, 10), detected, smoothing).reshape(count, 5, 2)

    aligned: list[AlignedFace] = []
    angles = np.zeros((count, 3))
    trans = np.zeros((count, 3))
    raw_yaw = np.full(count, np.nan)
    raw_pitch = np.full(count, np.nan)
    frame_size = (0, 0)
    iterator, _ = read_video(source, max_frames=max_frames, stride=stride)
    for index, frame in enumerate(iterator):
        if index >= count:
            break
        frame_size = (int(frame.shape[0]), int(frame.shape[1]))
        crop = align_face(frame, smooth[index], pad_mode=pad_mode)
        aligned.append(crop)
        if pose != "mtcnn" and not detected[index]:
            continue  # posed from its neighbours below
        estimate = estimate_face_pose(crop, boxes[index], networks, camera="official")
        angles[index], trans[index] = estimate.angles, estimate.translation
        if detected[index]:
            raw_yaw[index], raw_pitch[index] = estimate.yaw, estimate.pitch
    if len(aligned) != count:
        raise InputImageError(f"{name}: the video changed while it was read ({len(aligned)} of {count} frames)")
    posed = detected if pose != "mtcnn" else np.ones(count, dtype=bool)
    angles[posed] = np.unwrap(angles[posed], axis=0)
    angles = smooth_track(angles, posed, smoothing)
    trans = smooth_track(trans, posed, smoothing)
    labels = torch.stack([camera_from_face_pose(a, t, camera=camera) for a, t in zip(angles, trans, strict=True)])
    yaw, pitch = label_to_yaw_pitch(labels)
    return PreparedVideo(
        crops=np.stack([c.image_input for c in aligned]),
        labels=labels.to(torch.float32),
        raw_yaw=raw_yaw,
        raw_pitch=raw_pitch,
        yaw=yaw.double().numpy(),
        pitch=pitch.double().numpy(),
        detected=detected,
        landmarks=smooth,
        raw_landmarks=raw,
        boxes=boxes,
        fps=fps,
        frame_size=frame_size,
        pose=pose,
    )
