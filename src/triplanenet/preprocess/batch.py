"""Batch in-the-wild preprocessing: photo files → aligned 512² crops + EG3D ``dataset.json`` + a per-file report.

What :func:`preprocess_photos` does for each input file:

1. :func:`read_photo` decodes it to uint8 RGB and applies the EXIF orientation tag (phone photos are often stored
   sideways with a rotation tag; EG3D's scripts ignore it, which makes MTCNN miss the face).
2. :func:`detect_faces_scaled` runs MTCNN on a copy whose longest side is at most ``max_detect_side`` pixels
   (default 1024: a 4000-pixel photo would otherwise spend seconds in the P-Net pyramid) and maps the boxes and
   landmarks back to full-resolution pixel coordinates, so the crop itself is cut from the full-resolution photo.
3. Faces below ``min_confidence`` are dropped; faces narrower than ``min_face_px`` (full-resolution pixels) are
   refused with a "too small" message (a 25-pixel face would be upsampled ~10× into the 512² crop).
4. :func:`~triplanenet.preprocess.align.align_face` + the ``pose_method`` camera estimator (:mod:`.pose_methods`) on the
   largest face (or on every face with ``all_faces``), unless a camera is supplied: an official ``dataset.json`` /
   ``cameras.json`` / per-image JSON (``cameras``), or a folder of Deep3DFaceRecon ``<stem>.mat`` outputs
   (``deep3d_dir``, see :func:`read_deep3d_mat`).

Outputs in ``out_dir``: ``<stem>.png`` (or ``<stem>_face<k>.png``, k = 0 for the largest face, with
``all_faces``), ``dataset.json`` in the official layout (merged with an existing one in ``out_dir``, so a folder
can be built in several runs) and ``preprocess_report.json`` (one entry per input file: ``status`` — ``ok``,
``no_face``, ``face_too_small``, ``not_an_image``, ``corrupt``, ``too_large``, ``bad_camera``, ``error`` — a
one-line ``message``, the written files and per-face box, score, landmarks, yaw/pitch/roll) and ``sources.json``
(which photo, by path and sha256, each crop came from: a later run never replaces the crop of a different photo
that happens to have the same name). The folder is a valid training dataset for
:class:`~triplanenet.data.dataset.FaceDataset` at every moment, also when a run is interrupted.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from triplanenet.errors import CameraError, ConfigError, TriplaneNetError
from triplanenet.io.cameras import camera_file_present, default_camera_files
from triplanenet.io.hashing import file_sha256
from triplanenet.io.images import CorruptImageError, ImageTooLargeError, NotAnImageError, read_photo
from triplanenet.preprocess import MIN_CONFIDENCE, PreprocessedFace
from triplanenet.preprocess.align import align_face
from triplanenet.preprocess.mtcnn import MTCNN, Face, NoFaceError, detect_faces, load_mtcnn
from triplanenet.preprocess.pose import PoseEstimate, camera_from_face_pose
from triplanenet.preprocess.pose_methods import DEFAULT_POSE_METHOD, PoseMethod, PoseNetworks, estimate_face_pose

__all__ = [
    "DEFAULT_MAX_DETECT_SIDE",
    "DEFAULT_MIN_FACE_PX",
    "AlignedPhoto",
    "CorruptImageError",
    "FaceTooSmallError",
    "ImageTooLargeError",
    "NotAnImageError",
    "PhotoOutcome",
    "PreprocessReport",
    "align_photo_for_inversion",
    "detect_faces_scaled",
    "faces_in_photo",
    "has_camera_source",
    "preprocess_photos",
    "read_deep3d_mat",
    "read_photo",
]

DEFAULT_MAX_DETECT_SIDE = 1024
"""Longest side of the copy MTCNN runs on; larger photos are downscaled for detection only."""
DEFAULT_MIN_FACE_PX = 32
"""Narrowest face box (full-resolution pixels) that is aligned; smaller ones raise :class:`FaceTooSmallError`."""

CameraMode = Literal["official", "lookat"]
PadMode = Literal["reflect", "edge", "constant"]


class FaceTooSmallError(NoFaceError):
    """Faces were found but all are too small to make a useful 512² crop."""


# ------------------------------------------------------------------------------------------------------------
# Detection on large photos


def detect_faces_scaled(
    image: np.ndarray,
    model: MTCNN | None = None,
    max_detect_side: int | None = DEFAULT_MAX_DETECT_SIDE,
) -> list[Face]:
    """MTCNN on a copy downscaled to at most ``max_detect_side`` pixels, results in full-resolution pixels.

    Pixel centres are at integers in both images, so a point maps as ``x_full = (x_small + 0.5) / s − 0.5``
    (``s`` the downscale factor); boxes are scaled the same way. ``max_detect_side`` None or 0: no downscaling.
    Faces come back sorted largest first, as :func:`~triplanenet.preprocess.mtcnn.detect_faces` returns them.
    """
    height, width = image.shape[:2]
    longest = max(height, width)
    if not max_detect_side or longest <= max_detect_side:
        return detect_faces(image, model=model)
    scale = max_detect_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    sx, sy = size[0] / width, size[1] / height
    faces = []
    for face in detect_faces(small, model=model):
        landmarks = np.stack(((face.landmarks[:, 0] + 0.5) / sx - 0.5, (face.landmarks[:, 1] + 0.5) / sy - 0.5), 1)
        box = face.box / np.array([sx, sy, sx, sy])
        faces.append(Face(box=box, score=face.score, landmarks=landmarks))
    return faces


def faces_in_photo(
    image: np.ndarray,
    *,
    all_faces: bool = False,
    model: MTCNN | None = None,
    min_confidence: float = MIN_CONFIDENCE,
    min_face_px: float = DEFAULT_MIN_FACE_PX,
    max_detect_side: int | None = DEFAULT_MAX_DETECT_SIDE,
    what: str = "image",
) -> list[Face]:
    """The face(s) to crop: the largest confident one, or all of them (largest first) with ``all_faces``.

    Raises:
        NoFaceError: no face above ``min_confidence``.
        FaceTooSmallError: faces were found but none is at least ``min_face_px`` wide.
    """
    found = detect_faces_scaled(image, model=model, max_detect_side=max_detect_side)
    confident = [face for face in found if face.score > min_confidence]
    if not confident:
        raise NoFaceError(
            f"{what}: no face found (MTCNN confidence > {min_confidence:g}); "
            "use a photo with one clearly visible face at least 20 px wide"
        )
    large = [face for face in confident if face.box[2] - face.box[0] >= min_face_px]
    if not large:
        width = confident[0].box[2] - confident[0].box[0]
        raise FaceTooSmallError(
            f"{what}: the largest face is only {width:.0f} px wide (need {min_face_px:g}); "
            "use a higher-resolution photo or a smaller --min-face-px"
        )
    return large if all_faces else large[:1]


# ------------------------------------------------------------------------------------------------------------
# Cameras supplied by the user


def read_deep3d_mat(path: str | os.PathLike[str], camera: CameraMode = "official") -> torch.Tensor:
    """EG3D label from a Deep3DFaceRecon coefficient file (``<name>.mat`` with ``angle`` (1, 3), ``trans`` (1, 3)).

    The conversion is EG3D's ``3dface2idr_mat.py`` + ``preprocess_face_cameras.py --mode orig``
    (:func:`~triplanenet.preprocess.pose.camera_from_face_pose`). The ``.mat`` must come from Deep3DFaceRecon run
    on the same photo; its pose refers to the face, so it applies to our crop of that face. Read with
    ``scipy.io.loadmat`` (no code in the file runs).

    Raises:
        CameraError: unreadable file, missing or malformed ``angle`` / ``trans``.
    """
    file = Path(path)
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy comes with scikit-image
        raise CameraError(f"{file}: reading Deep3DFaceRecon .mat files needs scipy; pip install scipy") from None
    try:
        data = loadmat(file)
    except FileNotFoundError:
        raise CameraError(f"{file}: Deep3DFaceRecon file not found; check --deep3d") from None
    except Exception as exc:  # scipy raises several types (ValueError, MatReadError, TypeError...)
        raise CameraError(f"{file}: not a readable .mat file ({exc}); re-run Deep3DFaceRecon") from None
    values = {}
    for key in ("angle", "trans"):
        if key not in data:
            raise CameraError(f"{file}: has no {key!r}; pass the coefficient .mat written by Deep3DFaceRecon test.py")
        array = np.asarray(data[key], dtype=np.float64).reshape(-1) if np.size(data[key]) == 3 else None
        if array is None or not np.isfinite(array).all():
            raise CameraError(f"{file}: {key!r} must be 3 finite numbers, got shape {np.shape(data[key])}")
        values[key] = array
    return camera_from_face_pose(values["angle"], values["trans"], camera=camera)


def has_camera_source(image_path: str | os.PathLike[str]) -> bool:
    """Whether :func:`~triplanenet.io.cameras.camera_for_image` would find a camera file for the image on its own
    (any of :func:`~triplanenet.io.cameras.default_camera_files` exists)."""
    return any(camera_file_present(path) for path in default_camera_files(image_path))


# ------------------------------------------------------------------------------------------------------------
# One photo


def crop_face(
    image: np.ndarray,
    face: Face,
    *,
    camera: CameraMode = "official",
    pad_mode: PadMode = "reflect",
    label: torch.Tensor | None = None,
    pose_method: PoseMethod = DEFAULT_POSE_METHOD,
) -> PreprocessedFace:
    """Align one detected face and estimate its camera (or keep ``label`` when the user supplied one).

    ``pose_method``: the camera estimator, ``"3ddfa"``, ``"mesh"`` or ``"mtcnn"``
    (:mod:`triplanenet.preprocess.pose_methods`)."""
    aligned = align_face(image, face.landmarks, pad_mode=pad_mode, keep_aligned=True)
    pose = estimate_face_pose(aligned, face.box, PoseNetworks.load(pose_method), camera=camera)
    if label is not None:
        from triplanenet.eg3d.camera import label_to_yaw_pitch, validate_label

        label = validate_label(label).reshape(25).to(torch.float32)
        yaw, pitch = label_to_yaw_pitch(label)
        pose = PoseEstimate(
            label=label,
            yaw=float(yaw),
            pitch=float(pitch),
            roll=float("nan"),
            angles=pose.angles,
            translation=pose.translation,
            reprojection_error=pose.reprojection_error,
        )
    return PreprocessedFace(face=face, aligned=aligned, pose=pose)


def face_record(result: PreprocessedFace) -> dict[str, Any]:
    """JSON-friendly summary of one preprocessed face (source-image coordinates, radians)."""

    def _round(values: np.ndarray) -> list[float]:
        return [round(float(v), 2) for v in np.asarray(values).reshape(-1)]

    return {
        "box": _round(result.face.box),
        "score": round(result.face.score, 4),
        "landmarks": [_round(point) for point in result.face.landmarks],
        "yaw": round(result.pose.yaw, 4),
        "pitch": round(result.pose.pitch, 4),
        "roll": None if not np.isfinite(result.pose.roll) else round(result.pose.roll, 4),
        "reprojection_error_px": round(result.pose.reprojection_error, 3),
    }


# ------------------------------------------------------------------------------------------------------------
# Batch


@dataclass
class PhotoOutcome:
    """What happened to one input file."""

    path: str
    status: str
    message: str = ""
    outputs: list[str] = field(default_factory=list)
    faces: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class PreprocessReport:
    """Result of :func:`preprocess_photos`."""

    out_dir: Path
    outcomes: list[PhotoOutcome]
    labels: dict[str, torch.Tensor]
    seconds: float

    @property
    def failed(self) -> list[PhotoOutcome]:
        return [o for o in self.outcomes if not o.ok]

    def to_json(self) -> dict[str, Any]:
        ok = [o for o in self.outcomes if o.ok]
        return {
            "ok": len(ok),
            "failed": len(self.outcomes) - len(ok),
            "crops": sum(len(o.outputs) for o in ok),
            "seconds": round(self.seconds, 3),
            "seconds_per_image": round(self.seconds / max(1, len(self.outcomes)), 3),
            "files": [
                {
                    "path": o.path,
                    "status": o.status,
                    "message": o.message,
                    "outputs": o.outputs,
                    "faces": o.faces,
                    "seconds": round(o.seconds, 3),
                }
                for o in self.outcomes
            ],
        }


def _status_of(exc: TriplaneNetError) -> str:
    if isinstance(exc, FaceTooSmallError):
        return "face_too_small"
    if isinstance(exc, NoFaceError):
        return "no_face"
    if isinstance(exc, NotAnImageError):
        return "not_an_image"
    if isinstance(exc, CorruptImageError):
        return "corrupt"
    if isinstance(exc, CameraError):
        return "bad_camera"
    if isinstance(exc, ImageTooLargeError):
        return "too_large"
    return "error"


SOURCES_FILE = "sources.json"
"""Which photo (absolute path, sha256 of its bytes) and which face each crop of the folder was made from. A later
run into the same folder uses it to tell a re-processed photo (its crop is replaced) from a different photo with the
same name (added under a new name, unless ``overwrite``)."""


def _existing_sources(out: Path, labels: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((out / SOURCES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    crops = data.get("crops") if isinstance(data, dict) else None
    if not isinstance(crops, dict):
        return {}
    return {name: record for name, record in crops.items() if name in labels and isinstance(record, dict)}


def _same_source(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    return a is not None and a.get("sha256") == b["sha256"] and a.get("face") == b["face"]


def _crop_name(
    stem: str,
    source: dict[str, Any],
    out: Path,
    labels: dict[str, torch.Tensor],
    sources: dict[str, dict[str, Any]],
    overwrite: bool,
    reserved: set[str],
) -> tuple[str, str]:
    """The file name for a new crop and a note for the report ("" when nothing special happened).

    ``<stem>.png`` unless the folder already holds a crop of that name made from another photo (or a file of that
    name whose origin is unknown): then ``<stem>_2.png``, ``<stem>_3.png``, ..., or the same name with
    ``overwrite``. Names in ``reserved`` (other crops of the same photo) are never used."""

    def taken(candidate: str) -> bool:
        return candidate in labels or candidate in reserved or (out / candidate).exists()

    name = f"{stem}.png"
    own = [
        n for n, s in sources.items() if _same_source(s, source) and re.fullmatch(rf"{re.escape(stem)}(_\d+)?\.png", n)
    ]
    for candidate in sorted(own, key=len):  # this photo is in the folder already (maybe renamed): replace its crop
        if candidate not in reserved:
            return candidate, ""
    if name not in reserved and not taken(name):
        return name, ""
    if overwrite and name not in reserved:
        return name, f"replaced the existing {name} (--overwrite)"
    k = 2
    while taken(f"{stem}_{k}.png"):
        k += 1
    new = f"{stem}_{k}.png"
    return new, f"{name} already holds a crop of another photo; added as {new} (--overwrite replaces it instead)"


def _stage_png(out: Path, name: str, image: np.ndarray) -> Path:
    """Write ``image`` to a hidden temporary file in ``out`` (skipped by the dataset loader) for
    :func:`_commit_crops` to rename into place."""
    from triplanenet.io.images import save_png

    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".png", dir=out)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_png(tmp, image)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _commit_crops(
    out: Path,
    staged: list[tuple[str, Path, torch.Tensor, dict[str, Any]]],
    labels: dict[str, torch.Tensor],
    sources: dict[str, dict[str, Any]],
) -> None:
    """Add staged crops (written to hidden temporary files) to the folder together with their labels.

    Ctrl-C is held back meanwhile, so ``dataset.json`` always lists exactly the crops present. The labels are
    written first: a process killed outright (``kill -9``) in between leaves a label without its image, which the
    next run drops (:func:`_existing_labels`), never an image without a label.
    """
    from triplanenet.io.atomic import interrupts_deferred
    from triplanenet.io.cameras import write_dataset_json

    with interrupts_deferred():
        for name, _, label, source in staged:
            labels[name] = label
            sources[name] = source
        write_dataset_json(out / "dataset.json", sorted(labels.items()))
        _write_sources(out, sources)
        for name, tmp, _, _ in staged:
            os.replace(tmp, out / name)


def _write_sources(out: Path, sources: dict[str, dict[str, Any]]) -> None:
    from triplanenet.io.atomic import write_text_atomic

    write_text_atomic(out / SOURCES_FILE, json.dumps({"crops": dict(sorted(sources.items()))}, indent=1))


def _existing_labels(dataset_json: Path) -> dict[str, torch.Tensor]:
    if not dataset_json.is_file():
        return {}
    from triplanenet.io.cameras import read_dataset_json

    labels = read_dataset_json(dataset_json)
    # Keep only entries whose image is still there (the loader refuses labels without images).
    return {name: label for name, label in labels.items() if (dataset_json.parent / name).is_file()}


def preprocess_photos(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    all_faces: bool = False,
    *,
    camera: CameraMode = "official",
    pad_mode: PadMode = "reflect",
    min_confidence: float = MIN_CONFIDENCE,
    min_face_px: float = DEFAULT_MIN_FACE_PX,
    max_detect_side: int | None = DEFAULT_MAX_DETECT_SIDE,
    cameras: str | os.PathLike[str] | None = None,
    deep3d_dir: str | os.PathLike[str] | None = None,
    model: MTCNN | None = None,
    on_file: Callable[[PhotoOutcome], None] | None = None,
    overwrite: bool = False,
    pose_method: PoseMethod = DEFAULT_POSE_METHOD,
) -> PreprocessReport:
    """Preprocess photo files into a training-ready folder (see the module docstring for the outputs).

    The folder stays consistent at every moment: each photo's crops and labels are added together (Ctrl-C is held
    back for that instant), so an interrupted run leaves a valid dataset that a re-run completes. A crop name
    already used in the folder by another photo (per ``sources.json``) gets a new name (``<stem>_2.png``) unless
    ``overwrite``; the same photo processed again replaces its own crop.

    Bad files never stop the batch: each gets a :class:`PhotoOutcome` with a status and a one-line message.

    Args:
        paths: image files.
        out_dir: output folder (created).
        all_faces: crop every face (``<stem>_face<k>.png``, largest first) instead of the largest one.
        camera: ``"official"`` (label keeps roll, like EG3D's) or ``"lookat"`` (roll-free).
        pad_mode: how pixels outside the photo are filled (``reflect``, ``edge``, ``constant`` = black as EG3D).
        min_confidence, min_face_px, max_detect_side: detection settings (see :func:`faces_in_photo`).
        cameras: official ``dataset.json`` / ``cameras.json`` / per-image JSON holding labels for the inputs
            (looked up by file name); used instead of the estimated pose for the largest face.
        deep3d_dir: folder with Deep3DFaceRecon ``<stem>.mat`` files for the inputs (see :func:`read_deep3d_mat`).
        model: MTCNN (loaded once when None).
        on_file: called after each file (progress bars).
        overwrite: replace an existing crop of the same name even when it was made from another photo.
        pose_method: camera estimator, ``"3ddfa"`` (default), ``"mesh"`` or ``"mtcnn"`` (:mod:`.pose_methods`).

    Raises:
        ConfigError: bad options (``all_faces`` with user cameras, both camera sources).
        CheckpointError: MTCNN weights missing.
    """
    if camera not in ("official", "lookat"):
        raise ConfigError(f"camera must be 'official' or 'lookat', got {camera!r}")
    PoseNetworks.load(pose_method)  # unknown method or missing weights: one error for the batch, not one per photo
    if pad_mode not in ("reflect", "edge", "constant"):
        raise ConfigError(f"pad mode must be 'reflect', 'edge' or 'constant', got {pad_mode!r}")
    if cameras is not None and deep3d_dir is not None:
        raise ConfigError("give either --cameras or --deep3d, not both")
    if all_faces and (cameras is not None or deep3d_dir is not None):
        raise ConfigError("--all-faces estimates each face's camera; it cannot be combined with --cameras/--deep3d")
    if deep3d_dir is not None and not Path(deep3d_dir).is_dir():
        raise ConfigError(f"--deep3d {deep3d_dir} is not a folder; pass the folder holding Deep3DFaceRecon .mat files")
    from triplanenet.io.atomic import remove_stale_temporaries
    from triplanenet.io.cameras import camera_for_image, write_dataset_json

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # crops and labels a killed earlier run was still writing
    if model is None:
        model = load_mtcnn()
    labels = _existing_labels(out / "dataset.json")
    sources = _existing_sources(out, labels)
    outcomes: list[PhotoOutcome] = []
    for raw in paths:
        path = Path(raw)
        t0 = time.perf_counter()
        outcome = PhotoOutcome(path=str(path), status="ok")
        try:
            image = read_photo(path)
            user_label = None
            if cameras is not None:
                user_label = camera_for_image(path, cameras)
            elif deep3d_dir is not None:
                user_label = read_deep3d_mat(Path(deep3d_dir) / f"{path.stem}.mat", camera=camera)
            faces = faces_in_photo(
                image,
                all_faces=all_faces,
                model=model,
                min_confidence=min_confidence,
                min_face_px=min_face_px,
                max_detect_side=max_detect_side,
                what=path.name,
            )
            results = [
                crop_face(image, f, camera=camera, pad_mode=pad_mode, label=user_label, pose_method=pose_method)
                for f in faces
            ]
            stems = [f"{path.stem}_face{k}" for k in range(len(results))] if all_faces else [path.stem]
            digest = file_sha256(path)
            notes = []
            staged: list[tuple[str, Path, torch.Tensor, dict[str, Any]]] = []
            try:
                for k, (stem, result) in enumerate(zip(stems, results, strict=True)):
                    source = {"path": str(path.resolve()), "sha256": digest, "face": k if all_faces else 0}
                    reserved = {entry[0] for entry in staged}
                    name, note = _crop_name(stem, source, out, labels, sources, overwrite, reserved)
                    notes += [note] if note else []
                    staged.append((name, _stage_png(out, name, result.aligned.image), result.label, source))
                    outcome.outputs.append(name)
                    outcome.faces.append(face_record(result))
                _commit_crops(out, staged, labels, sources)
            finally:
                for _, tmp, _, _ in staged:
                    tmp.unlink(missing_ok=True)
            if len(results) > 1 or (all_faces and len(results) == 1):
                notes.insert(0, f"{len(results)} face(s)")
            outcome.message = "; ".join(notes)
        except TriplaneNetError as exc:
            if isinstance(exc, ConfigError):
                raise
            outcome.status = _status_of(exc)
            message = str(exc)
            outcome.message = message if path.name in message else f"{path.name}: {message}"
        outcome.seconds = time.perf_counter() - t0
        outcomes.append(outcome)
        if on_file is not None:
            on_file(outcome)
    if labels:
        write_dataset_json(out / "dataset.json", sorted(labels.items()))
    report = PreprocessReport(out, outcomes, labels, time.perf_counter() - started)
    from triplanenet.io.atomic import write_json_atomic

    write_json_atomic(out / "preprocess_report.json", report.to_json())
    return report


# ------------------------------------------------------------------------------------------------------------
# Single photo for ``triplanenet invert``


@dataclass
class AlignedPhoto:
    """One face of a photo, aligned for inversion by :func:`align_photo_for_inversion`."""

    name: str
    image: torch.Tensor
    label: torch.Tensor
    note: str


def align_photo_for_inversion(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    all_faces: bool = False,
    camera: CameraMode = "official",
    pad_mode: PadMode = "reflect",
    face_names: Callable[[int], list[str]] | None = None,
    pose_method: PoseMethod = DEFAULT_POSE_METHOD,
) -> list[AlignedPhoto]:
    """Detect, align and pose an un-aligned photo for inversion; save each crop and camera in the output folder.

    For each face (the largest, or all with ``all_faces``: ``<stem>_face<k>``) writes
    ``out_dir/<name>/aligned.png`` (the 512² EG3D crop) and ``out_dir/<name>/camera.json``
    (``{"label": [25 numbers], "yaw", "pitch", "roll", ...}``, readable as a per-image camera file).

    Args:
        face_names: given the number of faces found, the folder names to use instead of the ones above (the
            caller keeps names unique across photos).

    Returns:
        One :class:`AlignedPhoto` per face: ``image`` (3, 512, 512) in [−1, 1], ``label`` (1, 25).

    Raises:
        InputImageError / NoFaceError: unreadable photo, no face, face too small.
    """
    from triplanenet.io.atomic import write_text_atomic
    from triplanenet.io.images import save_png

    file = Path(path)
    image = read_photo(file)
    faces = faces_in_photo(image, all_faces=all_faces, what=file.name)
    results = [crop_face(image, face, camera=camera, pad_mode=pad_mode, pose_method=pose_method) for face in faces]
    if face_names is not None:
        names = face_names(len(results))
    else:
        names = [f"{file.stem}_face{k}" for k in range(len(results))] if all_faces else [file.stem]
    aligned = []
    for name, result in zip(names, results, strict=True):
        folder = Path(out_dir) / name
        save_png(folder / "aligned.png", result.aligned.image)
        record = {"label": [float(np.float32(v)) for v in result.label.tolist()], "source": str(file)}
        record.update(face_record(result))
        write_text_atomic(folder / "camera.json", json.dumps(record, indent=1))
        note = (
            f"{file.name}: aligned face {len(aligned) + 1} of {len(results)} as {name} "
            f"(estimated camera yaw {result.pose.yaw:+.2f}, pitch {result.pose.pitch:+.2f} rad)"
        )
        aligned.append(AlignedPhoto(name, result.image_tensor(), result.label[None], note))
    return aligned
