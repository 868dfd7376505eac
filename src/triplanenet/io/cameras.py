"""Camera files: EG3D ``dataset.json``, per-image label files and the in-the-wild ``cameras.json``.

Formats read (every label ends up as a (25,) float32 tensor, see :mod:`triplanenet.eg3d.camera`):

* ``dataset.json`` (EG3D / TriPlaneNet datasets): ``{"labels": [["img.png", [25 numbers]], ...]}``; names are
  paths relative to the dataset root with forward slashes. ``"labels"`` may also be an object
  ``{"img.png": [25 numbers]}``.
* a per-image file: ``{"label": [25 numbers]}``, a bare list of 25 numbers, or
  ``{"cam2world": 4×4, "intrinsics": 3×3}`` (normalised intrinsics).
* ``cameras.json`` written by the in-the-wild pipeline (``3dface2idr_mat.py``):
  ``{"img.png": {"pose": 4×4, "intrinsics": 3×3 in pixels}}``. It is normalised exactly like
  ``preprocess_face_cameras.py --mode orig``: the camera centre is rescaled to distance 2.7 from the origin
  (direction and rotation kept) and the intrinsics become ``fx = fy = 2985.29/700 = 4.2647``,
  ``cx = cy = 0.5`` (the official script overwrites them regardless of the pixel values, because its crop
  is fixed). ``mode="cor"`` rescales around ``(0, 0, 0.175)`` instead.

Every malformed file raises :class:`~triplanenet.errors.CameraError` with a one-line message that names
the file, the problem and the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import torch

from triplanenet import limits
from triplanenet.eg3d.camera import FFHQ_RADIUS, LABEL_DIM, find_label_problem
from triplanenet.errors import CameraError
from triplanenet.io.atomic import write_text_atomic

__all__ = [
    "CameraTable",
    "camera_for_image",
    "lookup_camera",
    "read_camera_file",
    "read_cameras_json",
    "read_dataset_json",
    "read_label_json",
    "write_dataset_json",
]

CameraTable = dict[str, torch.Tensor]
"""Image name (relative path, forward slashes) → (25,) float32 label."""

ITW_FOCAL_PX = 2985.29
"""Focal length (pixels at the 1024-px aligned image) written by ``3dface2idr_mat.py``."""
ITW_CROP_PX = 700.0
"""Centre-crop size of the in-the-wild pipeline; the normalised focal is ``ITW_FOCAL_PX / ITW_CROP_PX``."""
COR_CENTER = (0.0, 0.0, 0.175)
"""Centre used by ``preprocess_face_cameras.py --mode cor``."""


# ------------------------------------------------------------------------------------------------------------
# JSON helpers


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _load_json(path: Path) -> Any:
    """Parse a JSON file; every failure becomes a one-line CameraError naming the file. Files over
    :data:`~triplanenet.limits.CAMERA_FILE_BYTES` are refused before they are read."""
    try:
        size = path.stat().st_size
        if size > limits.CAMERA_FILE_BYTES.value():
            raise CameraError(
                f"camera file {path} is {size} bytes, over the limit of {limits.CAMERA_FILE_BYTES.value()}; set "
                f"{limits.CAMERA_FILE_BYTES.env} to raise it"
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CameraError(f"camera file {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise CameraError(f"camera file {path} is a directory; pass the .json file inside it") from None
    except OSError as exc:
        raise CameraError(f"cannot read camera file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CameraError(f"{path} is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8 JSON") from None
    if not text.strip():
        raise CameraError(f"{path} is empty; expected a JSON camera file")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise CameraError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; fix the file"
        ) from None
    except _DuplicateKey as exc:
        raise CameraError(f"{path} has the key {exc.key!r} twice; keep one entry per name") from None
    except RecursionError:
        raise CameraError(f"{path} nests lists or objects too deeply to be a camera file; fix the file") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise CameraError(f"{path} is not a usable JSON file ({str(exc)[:80]}); fix the file") from None


def _normalise_name(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _flat_numbers(value: Any, count: int, what: str) -> list[float]:
    """A JSON list of exactly ``count`` numbers (flat), else CameraError naming ``what``."""
    if value is None:
        raise CameraError(f"{what} is null; give a list of {count} numbers")
    if not isinstance(value, list):
        raise CameraError(f"{what} must be a list of {count} numbers, got {type(value).__name__}")
    if len(value) != count:
        nested = " (nested lists are not allowed)" if any(isinstance(v, list) for v in value) else ""
        raise CameraError(f"{what} has {len(value)} entries, expected {count}{nested}")
    for i, v in enumerate(value):
        if not _is_number(v):
            raise CameraError(f"{what}[{i}] is {json.dumps(v)[:40]}, expected a number")
    try:
        return [float(v) for v in value]
    except OverflowError:
        raise CameraError(f"{what} holds an integer too large for a number; fix the file") from None


def _matrix(value: Any, rows: int, cols: int, what: str) -> np.ndarray:
    """A JSON rows×cols matrix (nested lists; a flat list of rows·cols numbers is accepted too)."""
    if isinstance(value, list) and len(value) == rows * cols and all(_is_number(v) for v in value):
        return np.asarray(_flat_numbers(value, rows * cols, what), dtype=np.float64).reshape(rows, cols)
    if not isinstance(value, list) or len(value) != rows:
        got = f"{len(value)} rows" if isinstance(value, list) else type(value).__name__
        raise CameraError(f"{what} must be a {rows}×{cols} matrix (list of {rows} rows), got {got}")
    return np.asarray([_flat_numbers(row, cols, f"{what} row {i}") for i, row in enumerate(value)], dtype=np.float64)


def _check_rows(labels: np.ndarray, names: list[str], path: Path) -> torch.Tensor:
    """Validate (N, 25) float64 labels; raise naming the first bad entry; return float32."""
    t = torch.from_numpy(labels)
    problem = find_label_problem(t)
    if problem is not None:
        row, message = problem
        raise CameraError(f"{path}: camera of {names[row]!r}: {message}")
    return t.to(torch.float32)


# ------------------------------------------------------------------------------------------------------------
# Readers


def read_dataset_json(path: str | os.PathLike[str]) -> CameraTable:
    """Read an EG3D ``dataset.json`` into ``{name: (25,) float32}`` (file order kept).

    Accepts ``{"labels": [[name, [25 numbers]], ...]}`` (official) and ``{"labels": {name: [25 numbers]}}``.
    Names are normalised to forward slashes. Raises CameraError for bad JSON, a missing or null
    ``labels``, malformed entries, duplicate names and invalid cameras.
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or "labels" not in data:
        kind = "an object without 'labels'" if isinstance(data, dict) else type(data).__name__
        raise CameraError(
            f'{path} is not an EG3D dataset.json (expected {{"labels": [[name, [25 numbers]], ...]}}, got {kind})'
        )
    return _table_from_labels(data["labels"], path)


def _table_from_labels(labels: Any, path: Path) -> CameraTable:
    if labels is None:
        raise CameraError(f'{path}: "labels" is null (an unlabelled dataset); TriPlaneNet needs one camera per image')
    if isinstance(labels, dict):
        entries = list(labels.items())
    elif isinstance(labels, list):
        entries = []
        for i, entry in enumerate(labels):
            if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str):
                raise CameraError(
                    f'{path}: labels[{i}] must be ["name.png", [25 numbers]], got {json.dumps(entry)[:60]}'
                )
            entries.append((entry[0], entry[1]))
    else:
        raise CameraError(f'{path}: "labels" must be a list of [name, label] pairs, got {type(labels).__name__}')
    if not entries:
        raise CameraError(f'{path}: "labels" is empty; add one [name, label] pair per image')
    names: list[str] = []
    rows: list[list[float]] = []
    seen: set[str] = set()
    for raw_name, label in entries:
        name = _normalise_name(raw_name)
        if not name:
            raise CameraError(f"{path}: a label has an empty image name; use the image's relative path")
        if name in seen:
            raise CameraError(f"{path}: {name!r} is listed twice; keep one label per image")
        seen.add(name)
        names.append(name)
        rows.append(_flat_numbers(label, LABEL_DIM, f"{path}: label of {name!r}"))
    t = _check_rows(np.asarray(rows, dtype=np.float64), names, path)
    return dict(zip(names, t.unbind(0), strict=True))


def _label_from_object(data: Any, path: Path) -> torch.Tensor | None:
    """A per-image label from parsed JSON, or None when ``data`` is not a per-image format."""
    if isinstance(data, list) and (len(data) == LABEL_DIM or all(_is_number(v) for v in data)):
        row = _flat_numbers(data, LABEL_DIM, f"{path}: label")
    elif isinstance(data, dict) and "label" in data:
        row = _flat_numbers(data["label"], LABEL_DIM, f'{path}: "label"')
    elif isinstance(data, dict) and ("cam2world" in data or "intrinsics" in data) and "pose" not in data:
        for key in ("cam2world", "intrinsics"):
            if key not in data:
                raise CameraError(f'{path}: has no "{key}"; give both "cam2world" (4×4) and "intrinsics"')
        e = _matrix(data["cam2world"], 4, 4, f'{path}: "cam2world"')
        k = _matrix(data["intrinsics"], 3, 3, f'{path}: "intrinsics"')
        row = [*e.reshape(-1).tolist(), *k.reshape(-1).tolist()]
    else:
        return None
    return _check_rows(np.asarray([row], dtype=np.float64), [path.name], path)[0]


def read_label_json(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read a per-image camera file into a (25,) float32 label.

    Formats: ``{"label": [25 numbers]}``, a bare list of 25 numbers, or
    ``{"cam2world": [[4×4]], "intrinsics": [[3×3]]}`` with normalised intrinsics.
    """
    path = Path(path)
    label = _label_from_object(_load_json(path), path)
    if label is None:
        raise CameraError(
            f'{path} is not a camera label file; write {{"label": [25 numbers]}} or '
            '{"cam2world": 4×4, "intrinsics": 3×3}'
        )
    return label


def read_cameras_json(path: str | os.PathLike[str], mode: Literal["orig", "cor"] = "orig") -> CameraTable:
    """Read the in-the-wild ``cameras.json`` (``{name: {"pose": 4×4, "intrinsics": 3×3 px}}``) as labels.

    Normalised like ``preprocess_face_cameras.py``: ``mode="orig"`` (the one the pipeline uses) rescales the
    camera centre to distance :data:`FFHQ_RADIUS` from the origin; ``mode="cor"`` puts it at distance 2.7
    from ``(0, 0, 0.175)`` along the same direction. The rotation is kept. The intrinsics must have zero
    skew and a last row ``(0, 0, 1)``; they are replaced by ``fx = fy = 2985.29/700``, ``cx = cy = 0.5``.
    """
    path = Path(path)
    if mode not in ("orig", "cor"):
        raise CameraError(f"unknown cameras.json mode {mode!r}; use 'orig' (EG3D's choice) or 'cor'")
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise CameraError(
            f'{path} is not an in-the-wild cameras.json (expected {{"img.png": {{"pose": 4×4, '
            '"intrinsics": 3×3}}, ...}})'
        )
    return _table_from_cameras(data, path, mode)


def _table_from_cameras(data: dict[str, Any], path: Path, mode: str) -> CameraTable:
    names: list[str] = []
    rows: list[list[float]] = []
    centre = np.asarray(COR_CENTER if mode == "cor" else (0.0, 0.0, 0.0), dtype=np.float64)
    for raw_name, entry in data.items():
        name = _normalise_name(raw_name)
        what = f"{path}: {name!r}"
        if not isinstance(entry, dict):
            raise CameraError(f'{what} must be an object with "pose" and "intrinsics"')
        for key in ("pose", "intrinsics"):
            if key not in entry or entry[key] is None:
                raise CameraError(f'{what} has no "{key}"; re-run 3dface2idr_mat.py for this image')
        pose = _matrix(entry["pose"], 4, 4, f'{what} "pose"')
        k = _matrix(entry["intrinsics"], 3, 3, f'{what} "intrinsics"')
        if not np.isfinite(pose).all() or not np.isfinite(k).all():
            raise CameraError(f"{what} has NaN/inf in its pose or intrinsics; re-run the pose estimation")
        if k[0, 1] != 0 or k[1, 0] != 0 or k[2].tolist() != [0.0, 0.0, 1.0] or k[0, 0] <= 0 or k[1, 1] <= 0:
            raise CameraError(f'{what} "intrinsics" must be [[f, 0, cx], [0, f, cy], [0, 0, 1]] with f > 0 (pixels)')
        offset = pose[:3, 3] - centre
        dist = float(np.linalg.norm(offset))
        if not dist > 1e-8:
            raise CameraError(f'{what} "pose" puts the camera at the centre; it cannot be rescaled to 2.7')
        pose = pose.copy()
        pose[:3, 3] = offset / dist * FFHQ_RADIUS + centre
        k_norm = np.array(
            [[ITW_FOCAL_PX / ITW_CROP_PX, 0.0, 0.5], [0.0, ITW_FOCAL_PX / ITW_CROP_PX, 0.5], [0.0, 0.0, 1.0]]
        )
        names.append(name)
        rows.append([*pose.reshape(-1).tolist(), *k_norm.reshape(-1).tolist()])
    t = _check_rows(np.asarray(rows, dtype=np.float64), names, path)
    return dict(zip(names, t.unbind(0), strict=True))


def _is_cameras_json(data: Any) -> bool:
    return isinstance(data, dict) and bool(data) and all(isinstance(v, dict) and "pose" in v for v in data.values())


def read_camera_file(path: str | os.PathLike[str]) -> CameraTable:
    """Read any supported camera file into ``{name: (25,) label}``, detecting the format.

    ``dataset.json`` (has ``"labels"``) and ``cameras.json`` (objects with ``"pose"``) give one entry per
    image; a per-image file gives one entry named after the file's stem (``img.json`` → ``"img"``,
    ``img.png.json`` → ``"img.png"``), which :func:`lookup_camera` matches by stem.
    """
    return _read_any(Path(path))[0]


def _read_any(path: Path) -> tuple[CameraTable, bool]:
    """``(table, is_single_label_file)`` for any supported camera file."""
    data = _load_json(path)
    if isinstance(data, dict) and "labels" in data:
        return _table_from_labels(data["labels"], path), False
    if _is_cameras_json(data):
        return _table_from_cameras(data, path, "orig"), False
    label = _label_from_object(data, path)
    if label is not None:
        return {path.stem: label}, True
    raise CameraError(
        f"{path} is not a known camera file; use an EG3D dataset.json "
        '({"labels": [[name, [25 numbers]]]}), an in-the-wild cameras.json or {"label": [25 numbers]}'
    )


# ------------------------------------------------------------------------------------------------------------
# Lookup


def _strip_suffix(parts: tuple[str, ...]) -> tuple[str, ...]:
    if not parts:
        return parts
    return (*parts[:-1], PurePosixPath(parts[-1]).stem)


def _common_tail(key: tuple[str, ...], path: tuple[str, ...]) -> tuple[int, bool]:
    """(number of equal trailing components, whether that is all of ``key``)."""
    n = 0
    while n < min(len(key), len(path)) and key[-1 - n] == path[-1 - n]:
        n += 1
    return n, n == len(key)


def lookup_camera(
    cameras: Mapping[str, torch.Tensor],
    image_path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    source: str = "the camera file",
) -> torch.Tensor:
    """The label of ``image_path`` in a :data:`CameraTable`.

    Matching, first hit wins: the path relative to ``root`` (when given) or as given; else the key sharing
    the most trailing path components with the image path, at least the file name (``sub/img.png`` for
    ``/data/sub/img.png``; on a tie a key matched completely beats one matched only partly); else the
    same on names without extension (``img`` ↔ ``img.jpg``, ``frame1.png`` ↔ ``frame1.jpg``). Two equally
    good matches raise CameraError (ambiguous), as does no match.
    """
    image = Path(image_path)
    if not cameras:
        raise CameraError(f"{source} has no cameras; cannot find one for {image.name}")
    candidates = []
    if root is not None:
        with contextlib.suppress(ValueError):  # image outside root: fall back to the other rules
            candidates.append(image.resolve().relative_to(Path(root).resolve()).as_posix())
    candidates.append(_normalise_name(str(image_path)))
    for cand in candidates:
        if cand in cameras:
            return cameras[cand]
    parts = PurePosixPath(_normalise_name(str(image_path))).parts
    parts = tuple(p for p in parts if p not in ("", ".", "/"))
    if not parts:
        raise CameraError(f"empty image path; cannot look up a camera in {source}")
    for strip in (False, True):
        target = _strip_suffix(parts) if strip else parts
        # cheap pre-filter on the last component, so that big tables (FFHQ: 140k) stay fast
        last = target[-1]
        names = (
            [k for k in cameras if os.path.splitext(k.rpartition("/")[2])[0] == last]
            if strip
            else [k for k in cameras if k.rpartition("/")[2] == last]
        )
        scores: dict[str, tuple[int, bool]] = {}
        for key in names:
            kparts = tuple(p for p in PurePosixPath(key).parts if p not in ("", ".", "/"))
            score = _common_tail(_strip_suffix(kparts) if strip else kparts, target)
            if score[0]:
                scores[key] = score
        if scores:
            best = max(scores.values())
            winners = sorted(k for k, score in scores.items() if score == best)
            if len(winners) > 1:
                shown = ", ".join(repr(w) for w in winners[:3])
                raise CameraError(
                    f"{image.name} matches several cameras in {source} ({shown}); "
                    "pass the dataset root so the relative path decides"
                )
            return cameras[winners[0]]
    example = next(iter(cameras))
    raise CameraError(
        f"no camera for {image.name} in {source} ({len(cameras)} entries, e.g. {example!r}); "
        "add a label for it or check the image name"
    )


def camera_file_present(path: Path) -> bool:
    """Whether ``path`` is there at all: a file, but also a directory or a (broken or looping) link, which
    :func:`camera_for_image` reports instead of silently looking elsewhere."""
    try:
        return path.is_symlink() or path.exists()
    except OSError:
        return True


def default_camera_files(image_path: str | os.PathLike[str]) -> tuple[Path, Path, Path, Path, Path]:
    """Where :func:`camera_for_image` looks without a camera file, in order: ``<image>.json``, ``<image stem>.json``,
    ``dataset.json`` in the image's folder, then in its parent, ``cameras.json`` in the image's folder."""
    image = Path(image_path)
    return (
        image.with_name(image.name + ".json"),
        image.with_suffix(".json"),
        image.parent / "dataset.json",
        image.parent.parent / "dataset.json",
        image.parent / "cameras.json",
    )


def camera_for_image(
    image_path: str | os.PathLike[str],
    camera_file: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> torch.Tensor:
    """Find the (25,) label of one image.

    With ``camera_file``: a per-image file is used as is; a dataset.json / cameras.json is searched with
    :func:`lookup_camera`. Without: the first existing of ``<image>.json``, ``<image stem>.json``,
    ``dataset.json`` in the image's folder or its parent, ``cameras.json`` in the image's folder.
    """
    image = Path(image_path)
    try:
        return _camera_for_image(image, camera_file, root)
    except CameraError:
        raise
    except (RecursionError, ValueError, OverflowError, TypeError) as exc:
        raise CameraError(f"cannot read the camera of {image.name}: {str(exc)[:100]}; fix its camera file") from None


def _camera_for_image(
    image: Path, camera_file: str | os.PathLike[str] | None, root: str | os.PathLike[str] | None
) -> torch.Tensor:
    if camera_file is not None:
        path = Path(camera_file)
        table, single = _read_any(path)
        if single:
            return next(iter(table.values()))
        return lookup_camera(table, image, root=root if root is not None else path.parent, source=str(path))
    sidecar, stem_sidecar, dataset_here, dataset_above, itw = default_camera_files(image)
    for side in (sidecar, stem_sidecar):
        if camera_file_present(side):
            return read_label_json(side)
    for table_path in (dataset_here, dataset_above):
        if camera_file_present(table_path):
            table = read_dataset_json(table_path)
            return lookup_camera(table, image, root=table_path.parent, source=str(table_path))
    if camera_file_present(itw):
        return lookup_camera(read_cameras_json(itw), image, root=image.parent, source=str(itw))
    raise CameraError(
        f"no camera found for {image}: put an EG3D dataset.json next to it (see the in-the-wild "
        f'preprocessing), a sidecar {image.stem}.json with {{"label": [25 numbers]}}, or pass a camera file'
    )


# ------------------------------------------------------------------------------------------------------------
# Writer


def _short_float(x: float) -> float:
    """Shortest decimal that reads back as the same float32 (labels are float32 everywhere)."""
    return float(str(np.float32(x)))


def write_dataset_json(
    path: str | os.PathLike[str],
    labels: Mapping[str, Any] | Iterable[tuple[str, Any]],
) -> None:
    """Write an EG3D ``dataset.json`` (``{"labels": [[name, [25 numbers]], ...]}``) atomically.

    Args:
        path: output file; its folder is created if needed.
        labels: ``{name: label}`` or ``(name, label)`` pairs; each label is (25,) or (1, 25) numbers. Names
            are written with forward slashes, in the given order. Numbers are written with the shortest
            decimal that reads back as the same float32.

    Raises:
        CameraError: an invalid label, duplicate or empty name, or no labels at all.
    """
    path = Path(path)
    items = list(labels.items()) if isinstance(labels, Mapping) else list(labels)
    if not items:
        raise CameraError(f"no labels to write to {path}; give at least one (name, label) pair")
    names: list[str] = []
    seen: set[str] = set()
    rows: list[np.ndarray] = []
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2 or not isinstance(item[0], str):
            raise CameraError(f"labels for {path} must be (name, label) pairs, got {type(item).__name__}")
        name = _normalise_name(item[0])
        if not name:
            raise CameraError(f"a label for {path} has an empty image name")
        if name in seen:
            raise CameraError(f"{name!r} appears twice in the labels for {path}; keep one per image")
        seen.add(name)
        value = item[1]
        arr = value.detach().to("cpu", torch.float64).numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if arr.dtype == object or arr.dtype.kind not in "iuf":
            raise CameraError(f"label of {name!r} for {path} must be 25 numbers")
        arr = arr.astype(np.float64).reshape(-1) if arr.shape in ((LABEL_DIM,), (1, LABEL_DIM)) else arr
        if arr.shape != (LABEL_DIM,):
            raise CameraError(f"label of {name!r} for {path} has shape {arr.shape}, expected (25,)")
        names.append(name)
        rows.append(arr)
    _check_rows(np.stack(rows), names, path)
    payload = {"labels": [[n, [_short_float(v) for v in r.tolist()]] for n, r in zip(names, rows, strict=True)]}
    text = json.dumps(payload, allow_nan=False)
    write_text_atomic(path, text)
