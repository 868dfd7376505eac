"""Training/validation data: the official TriPlaneNet / EG3D face dataset layout, and a deterministic loader.

Layout (reference §4, §9.4), a folder or an EG3D ``.zip`` (``dataset_tool.py`` output, same tree inside)::

    root/
    ├── dataset.json             {"labels": [["img.png", [25 floats]], ...]}  (names relative to root)
    ├── img.png                  any size; resized to ``resolution``
    ├── sub/img2.png             sub-folders allowed (the name in dataset.json is then "sub/img2.png")
    └── conf_map/img.npy         optional, float32 (H, W) (the official maps are (256, 256)), one per image
                                 stem; only read with ``confidence_maps=True`` (TriPlaneNet v2)

Every image file under ``root`` (extensions :data:`IMAGE_EXTENSIONS`; hidden files, ``__MACOSX`` and the
``conf_map`` folder skipped) must have exactly one label in ``dataset.json`` and every label must name an
existing image, like EG3D's ``ImageFolderDataset`` (which sorts the file names and fails on a missing label).
FFHQ-style offline mirrors (``img_mirror.png`` with a flipped label) are ordinary images here.

What :class:`FaceDataset` checks when it is built (cheap: file listing, labels, conf-map existence, the header
of the first conf map) and what it checks when an item is loaded (image decoding, each conf map's shape, dtype
and values) all raise :class:`DatasetError` or, for a malformed ``dataset.json``,
:class:`~triplanenet.errors.CameraError`, with a one-line message naming the problem and the fix.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from triplanenet.eg3d.camera import mirror_label
from triplanenet.errors import CameraError, ConfigError, InputImageError, TriplaneNetError
from triplanenet.io.cameras import read_dataset_json
from triplanenet.io.images import load_image, resize_image

__all__ = [
    "CONF_MAP_DIR",
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "FaceDataset",
    "make_loader",
    "split_group",
    "split_names",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
"""File extensions (lower case) treated as dataset images."""
CONF_MAP_DIR = "conf_map"
"""Folder (relative to the dataset root) holding ``<image stem>.npy`` confidence maps."""
_MIRROR_SUFFIX = "_mirror"
_SHOWN = 3  # how many offending names an error message lists


class DatasetError(TriplaneNetError):
    """A training/validation dataset is missing, incomplete or malformed."""


# ------------------------------------------------------------------------------------------------------------
# Splits


def split_group(name: str) -> str:
    """The key that decides a file's split: its relative path without extension and without a trailing
    ``_mirror`` (so ``img.png`` and its offline mirror ``img_mirror.png`` always land in the same split)."""
    stem = _strip_extension(name)
    return stem[: -len(_MIRROR_SUFFIX)] if stem.endswith(_MIRROR_SUFFIX) else stem


def _unit_hash(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_names(names: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split file names into ``(train, val)`` by a seeded SHA-256 hash of :func:`split_group`.

    A group is in ``val`` when its hash (a uniform number in [0, 1)) is below ``val_fraction``, so a file's split
    depends only on its own name and the seed (adding files never moves others) and the val share is about
    ``val_fraction``. When ``val_fraction > 0`` selects nothing but there are at least two groups, the group with
    the smallest hash goes to ``val``. Order within each list follows ``names``.

    Raises:
        ConfigError: ``val_fraction`` outside [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}; use split='all' for everything")
    hashes = {group: _unit_hash(group, seed) for group in {split_group(n) for n in names}}
    val_groups = {g for g, h in hashes.items() if h < val_fraction}
    if val_fraction > 0 and not val_groups and len(hashes) > 1:
        val_groups = {min(hashes, key=lambda g: (hashes[g], g))}
    train = [n for n in names if split_group(n) not in val_groups]
    val = [n for n in names if split_group(n) in val_groups]
    return train, val


# ------------------------------------------------------------------------------------------------------------
# File access: a folder or a zip


def _strip_extension(name: str) -> str:
    path = PurePosixPath(name)
    return str(path.with_suffix("")) if path.suffix else name


def _skipped(parts: Sequence[str]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or (len(parts) > 1 and parts[0] == CONF_MAP_DIR)


def _shown(names: Sequence[str]) -> str:
    text = ", ".join(repr(n) for n in names[:_SHOWN])
    return text + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


class _Source:
    """Read-only access to the files of a dataset folder or zip, by relative POSIX name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.is_zip = root.is_file()
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = -1
        if self.is_zip:
            if root.suffix.lower() != ".zip":
                raise DatasetError(f"{root} is a file, not a dataset folder or .zip; pass the folder with dataset.json")
            try:
                with zipfile.ZipFile(root) as handle:
                    self.files = {n for n in handle.namelist() if not n.endswith("/")}
            except (zipfile.BadZipFile, OSError) as exc:
                raise DatasetError(f"{root} is not a readable zip ({exc}); re-create it or unpack it") from None
        else:
            self.files = set()
            for folder, dirs, names in os.walk(root):
                rel = Path(folder).relative_to(root)
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in names:
                    self.files.add((rel / name).as_posix())

    def where(self, name: str) -> str:
        return f"{self.root}:{name}" if self.is_zip else str(self.root / name)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_zip": None, "_zip_pid": -1}

    def _handle(self) -> zipfile.ZipFile:
        # One handle per process: a handle inherited through fork shares its file offset with the parent.
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.root)
            self._zip_pid = os.getpid()
        return self._zip

    def close(self) -> None:
        if self._zip is not None and self._zip_pid == os.getpid():
            self._zip.close()
        self._zip = None

    def read(self, name: str) -> bytes:
        try:
            if self.is_zip:
                return self._handle().read(name)
            return (self.root / name).read_bytes()
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise DatasetError(f"cannot read {self.where(name)} ({reason}); check the dataset files") from None

    def open(self, name: str) -> IO[bytes]:
        """A binary file object (caller closes it)."""
        try:
            if self.is_zip:
                return self._handle().open(name)
            return open(self.root / name, "rb")
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise DatasetError(f"cannot read {self.where(name)} ({reason}); check the dataset files") from None


def _read_labels(source: _Source) -> dict[str, torch.Tensor]:
    if "dataset.json" not in source.files:
        raise DatasetError(
            f'{source.root} has no dataset.json; add the camera labels ({{"labels": [[name, [25 floats]], ...]}}, '
            "written by the in-the-wild preprocessing) at the dataset root"
        )
    if not source.is_zip:
        return read_dataset_json(source.root / "dataset.json")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dataset.json"
        path.write_bytes(source.read("dataset.json"))
        try:
            return read_dataset_json(path)
        except CameraError as exc:
            raise CameraError(str(exc).replace(str(path), source.where("dataset.json"))) from None


def _npy_header(handle: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(shape), np.dtype(dtype)


def _conf_problem(shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    if dtype != np.float32:
        return f"has dtype {dtype}, expected float32"
    if len(shape) != 2 or min(shape) < 1:
        return f"has shape {shape}, expected (H, W) such as (256, 256)"
    return None


def _check_side(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer (e.g. 256), got {value!r}")


# ------------------------------------------------------------------------------------------------------------
# Dataset


class FaceDataset(Dataset):
    """Aligned face images with EG3D cameras (TriPlaneNet training data), from a folder or an EG3D zip.

    Args:
        root: dataset folder (or ``.zip``) holding ``dataset.json``; see the module docstring for the layout.
        resolution: side R of the returned images (and confidence maps); images of any size are resized.
        full_resolution: also return ``image_full``, the image at this side (the generator's output resolution:
            the real images of v2's discriminator), or None.
        mirror: also return the horizontally flipped image and the mirrored camera (TriPlaneNet v2).
        confidence_maps: also return the confidence maps ``conf_map/<image stem>.npy`` (TriPlaneNet v2); the
            conf maps of all images must exist.
        split: ``"all"``, ``"train"`` or ``"val"``.
        val_fraction: share of images (approximately, by hash; see :func:`split_names`) that form ``"val"``.
        val_names: an explicit validation list instead of ``val_fraction``: names as in ``dataset.json``
            (``"img.png"``) or without extension (``"img"``). Offline mirrors follow their original
            (``img_mirror.png`` goes wherever ``img.png`` goes).
        seed: seed of the hash split.
        antialias: antialias when shrinking (as :func:`~triplanenet.io.images.resize_image`). ``False`` gives the
            plain bilinear resize of the official training code (torchvision 0.12 tensor ``Resize``); for a
            512→256 image that is a 2×2 box average.

    Items are dicts:

    * ``image``: (3, R, R) float32 in [-1, 1]; ``camera``: (25,) float32 label; ``name``: the file name relative
      to the root, without extension (the official ``fname``).
    * with ``full_resolution``: ``image_full`` (3, F, F) float32 in [-1, 1], the same image resized to F.
    * with ``mirror``: ``image_mirror`` (``image`` flipped left-right) and ``camera_mirror``
      (:func:`~triplanenet.eg3d.camera.mirror_label` of ``camera``).
    * with ``confidence_maps``: ``confidence`` (1, R, R) float32 σ ≥ 0 as stored (the un-mirrored map; larger
      means less confident) and, with ``mirror`` too, ``confidence_mirror`` (it flipped left-right, the map the
      v2 mirror loss uses).

    Raises:
        DatasetError: missing folder or ``dataset.json``, labels without images or images without labels,
            missing or malformed conf maps, an empty split; on loading, an unreadable image or conf map.
        CameraError: a malformed ``dataset.json``.
        ConfigError: invalid arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        resolution: int = 256,
        mirror: bool = False,
        confidence_maps: bool = False,
        split: Literal["train", "val", "all"] = "all",
        val_fraction: float = 0.0,
        val_names: Sequence[str] | None = None,
        seed: int = 0,
        antialias: bool = True,
        full_resolution: int | None = None,
    ) -> None:
        _check_side("resolution", resolution)
        if full_resolution is not None:
            _check_side("full_resolution", full_resolution)
        if split not in ("train", "val", "all"):
            raise ConfigError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}; use split='all' for everything")
        if val_names is not None and val_fraction:
            raise ConfigError("give either val_fraction or val_names, not both")
        if isinstance(val_names, str):
            raise ConfigError("val_names must be a list of names, not a single string")
        self.root = Path(root)
        self.resolution = resolution
        self.full_resolution = full_resolution
        self.mirror = bool(mirror)
        self.confidence_maps = bool(confidence_maps)
        self.split = split
        self.antialias = bool(antialias)

        if not self.root.exists():
            raise DatasetError(f"dataset {self.root} does not exist; pass the folder (or .zip) that holds dataset.json")
        self._source = _Source(self.root)
        labels = _read_labels(self._source)
        images = sorted(
            n
            for n in self._source.files
            if PurePosixPath(n).suffix.lower() in IMAGE_EXTENSIONS and not _skipped(PurePosixPath(n).parts)
        )
        self._check_pairing(labels, images)

        if split == "all":
            chosen = images
        else:
            if val_names is not None:
                train, val = self._explicit_split(images, val_names)
            else:
                train, val = split_names(images, val_fraction, seed)
            chosen = train if split == "train" else val
        if not chosen:
            how = "val_names" if val_names is not None else f"val_fraction={val_fraction}"
            raise DatasetError(
                f"the {split!r} split of {self.root} is empty ({len(images)} images, {how}); "
                "adjust val_fraction / val_names or use split='all'"
            )
        self.files: list[str] = chosen
        """Relative file names (as in dataset.json) of the items, sorted."""
        self.names: list[str] = [_strip_extension(n) for n in chosen]
        """Item names: the file names without extension."""
        self.cameras: torch.Tensor = torch.stack([labels[n] for n in chosen]).to(torch.float32).contiguous()
        """(N, 25) float32 labels of the items."""
        self._conf_files: list[str] = self._find_conf_maps(chosen) if self.confidence_maps else []
        self._source.close()

    # -- construction helpers -------------------------------------------------------------------------------

    def _check_pairing(self, labels: dict[str, torch.Tensor], images: list[str]) -> None:
        image_set = set(images)
        missing = [n for n in labels if n not in image_set]
        if missing:
            not_images = [n for n in missing if n in self._source.files]
            detail = (
                f" ({_shown(not_images)} exist but are not {'/'.join(sorted(IMAGE_EXTENSIONS))} files)"
                if (not_images)
                else ""
            )
            raise DatasetError(
                f"dataset.json lists {len(missing)} image(s) not found in {self.root}: {_shown(missing)}{detail}; "
                "add the files or remove their labels"
            )
        unlabelled = [n for n in images if n not in labels]
        if unlabelled:
            raise DatasetError(
                f"{len(unlabelled)} image(s) in {self.root} have no camera in dataset.json: {_shown(unlabelled)}; "
                "add their labels (re-run the preprocessing) or move them out of the dataset folder"
            )

    def _explicit_split(self, images: list[str], val_names: Sequence[str]) -> tuple[list[str], list[str]]:
        by_file = set(images)
        by_stem = {_strip_extension(n): n for n in images}
        groups: set[str] = set()
        unknown = []
        for raw in val_names:
            name = str(raw).replace("\\", "/")
            file = name if name in by_file else by_stem.get(name)
            if file is None:
                unknown.append(name)
            else:
                groups.add(split_group(file))
        if unknown:
            raise DatasetError(
                f"{len(unknown)} val_names are not images of {self.root}: {_shown(unknown)}; "
                "use names as written in dataset.json"
            )
        train = [n for n in images if split_group(n) not in groups]
        val = [n for n in images if split_group(n) in groups]
        return train, val

    def _find_conf_maps(self, files: list[str]) -> list[str]:
        conf = [f"{CONF_MAP_DIR}/{PurePosixPath(n).stem}.npy" for n in files]
        first_user: dict[str, str] = {}
        for file, path in zip(files, conf, strict=True):
            if path in first_user:
                raise DatasetError(
                    f"{first_user[path]!r} and {file!r} share the stem, so both would use {path}; "
                    "rename one of the images (conf maps are looked up by file stem)"
                )
            first_user[path] = file
        missing = [p for p in conf if p not in self._source.files]
        if missing:
            raise DatasetError(
                f"{len(missing)} confidence map(s) missing in {self.root}: {_shown(missing)}; "
                "run the preprocessing with --conf_map, or train without confidence maps"
            )
        with self._source.open(conf[0]) as handle:
            try:
                shape, dtype = _npy_header(handle)
            except ValueError as exc:
                raise DatasetError(f"{self._source.where(conf[0])} is not a .npy array ({exc}); re-export it") from None
        problem = _conf_problem(shape, dtype)
        if problem is not None:
            raise DatasetError(f"confidence map {self._source.where(conf[0])} {problem}; re-export it with conf_map.py")
        return conf

    # -- loading ---------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.files)

    def _resize(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        size = self.resolution if size is None else size
        if x.shape[-2:] == (size, size):
            return x
        if self.antialias:
            return resize_image(x, size)
        return torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]

    def _load_image(self, file: str) -> torch.Tensor:
        where = self._source.where(file)
        source: Any = io.BytesIO(self._source.read(file)) if self._source.is_zip else self.root / file
        try:
            image = load_image(source)
        except InputImageError as exc:
            message = str(exc)
            prefix = f"{source}: "
            reason = message[len(prefix) :] if message.startswith(prefix) else message
            raise DatasetError(
                f"dataset image {where} is unreadable ({reason}); replace it or remove it and its label"
            ) from None
        return image

    def _load_conf(self, index: int) -> torch.Tensor:
        path = self._conf_files[index]
        where = self._source.where(path)
        try:
            array = np.load(io.BytesIO(self._source.read(path)), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DatasetError(f"confidence map {where} is not a readable .npy array ({exc}); re-export it") from None
        problem = _conf_problem(tuple(array.shape), array.dtype)
        if problem is not None:
            raise DatasetError(f"confidence map {where} {problem}; re-export it with conf_map.py")
        if not np.isfinite(array).all() or (array < 0).any():
            raise DatasetError(f"confidence map {where} has NaN/inf or negative values; re-export it with conf_map.py")
        return self._resize(torch.from_numpy(np.ascontiguousarray(array))[None])

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One item (see the class docstring). ``index`` in ``[0, len)``; negative indices count from the end."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        index = index % len(self)
        file = self.files[index]
        loaded = self._load_image(file)
        image = self._resize(loaded)
        camera = self.cameras[index].clone()
        item: dict[str, Any] = {"image": image, "camera": camera, "name": self.names[index]}
        if self.full_resolution is not None:
            item["image_full"] = self._resize(loaded, self.full_resolution)
        if self.mirror:
            item["image_mirror"] = image.flip(-1)
            item["camera_mirror"] = mirror_label(camera)
        if self.confidence_maps:
            conf = self._load_conf(index)
            item["confidence"] = conf
            if self.mirror:
                item["confidence_mirror"] = conf.flip(-1)
        return item

    def close(self) -> None:
        """Close the zip handle of this process (it reopens on the next read)."""
        self._source.close()

    def __repr__(self) -> str:
        extras = [k for k, on in (("mirror", self.mirror), ("confidence_maps", self.confidence_maps)) if on]
        return (
            f"FaceDataset({str(self.root)!r}, {len(self)} images, split={self.split!r}, "
            f"resolution={self.resolution}{''.join(', ' + e for e in extras)})"
        )


# ------------------------------------------------------------------------------------------------------------
# Loader


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from its torch seed (itself drawn from the generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = True,
    distributed: bool = False,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader whose order and worker seeds depend only on ``seed`` (and the epoch).

    Without ``distributed``, shuffling uses a ``torch.Generator`` seeded with ``seed``; each new epoch (each new
    iterator) continues that generator, so the sequence of epochs is reproducible. Worker processes seed torch,
    numpy and ``random`` from the same generator. With ``distributed``, a ``DistributedSampler(shuffle, seed,
    drop_last)`` splits the data over ``world_size`` ranks (default: the initialised process group); call
    ``loader.sampler.set_epoch(epoch)`` before each epoch to reshuffle.

    Raises:
        ConfigError: bad batch size / worker count, or ``distributed`` without a process group or rank/world_size.
        DatasetError: ``drop_last`` with fewer (per-rank) items than one batch, or an empty dataset.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers must be an integer ≥ 0, got {workers!r}")
    size = len(dataset)  # type: ignore[arg-type]
    if size == 0:
        raise DatasetError("the dataset is empty; nothing to load")
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler: DistributedSampler | None = None
    per_rank = size
    if distributed:
        if world_size is None or rank is None:
            if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                raise ConfigError(
                    "distributed=True needs an initialised torch.distributed process group (or pass rank and "
                    "world_size)"
                )
            world_size = torch.distributed.get_world_size() if world_size is None else world_size
            rank = torch.distributed.get_rank() if rank is None else rank
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        per_rank = len(sampler)
    if drop_last and per_rank < batch_size:
        raise DatasetError(
            f"only {per_rank} item(s) per process for batch size {batch_size} with drop_last: no batch would be "
            "produced; lower the batch size or add data"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=_seed_worker,
        persistent_workers=persistent_workers and workers > 0,
    )
