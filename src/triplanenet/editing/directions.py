"""Editing directions in W: GANSpace principal components and user direction files.

* GANSpace (Härkönen et al. 2020): sample ``z ~ N(0, I)``, map to W with the generator's mapping network (camera
  conditioned with the frontal camera, which EG3D's ``c_gen_conditioning_zero`` may zero anyway), and take the
  principal components of the sampled ``w`` codes. Component k is a unit vector of W; its strength unit is the
  standard deviation of the samples along it, so ``strength 2`` moves two standard deviations.
* InterFaceGAN-style ``.npy`` files: one float array of shape ``(w_dim,)``, ``(1, w_dim)`` or ``(num_ws, w_dim)``
  (read with ``allow_pickle=False``); strength multiplies the stored vector as is.
* A direction bundle (``.safetensors``, format ``triplanenet-directions``) stores several named directions with their
  layer ranges and strength units; ``triplanenet directions`` writes the GANSpace components into one.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.io.atomic import atomic_path
from triplanenet.io.safetensors_files import read_safetensors, write_safetensors

DIRECTIONS_FORMAT = "triplanenet-directions"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


@dataclass
class Direction:
    """A direction in W (or per layer in W+).

    Attributes:
        name: short name (``pc0``, ``smile``, a file stem).
        vector: (w_dim,) for every layer alike, or (num_ws, w_dim) per layer; float32, finite.
        layers: ``(start, stop)`` — only W+ layers ``start <= i < stop`` move; None = all layers.
        scale: the strength unit: ``w_edit = w + strength · scale · vector`` (GANSpace: the samples' σ; files: 1).
    """

    name: str
    vector: torch.Tensor
    layers: tuple[int, int] | None = None
    scale: float = 1.0

    def delta(self, num_ws: int, strength: float, layers: tuple[int, int] | None = None) -> torch.Tensor:
        """(num_ws, w_dim) change of the W+ code for ``strength`` (``layers`` overrides the stored range)."""
        vector = self.vector.to(torch.float32)
        if vector.ndim == 1:
            vector = vector.unsqueeze(0).expand(num_ws, -1)
        elif vector.shape[0] != num_ws:
            raise ConfigError(
                f"direction {self.name!r} has {vector.shape[0]} layers but the generator has {num_ws} W+ layers; "
                "use a (w_dim,) direction or one made for this generator"
            )
        span = layers if layers is not None else self.layers
        mask = torch.ones(num_ws, 1, dtype=vector.dtype, device=vector.device)
        if span is not None:
            start, stop = check_layers(span, num_ws)
            mask.zero_()
            mask[start:stop] = 1.0
        return vector * mask * (float(strength) * float(self.scale))


def check_layers(layers: tuple[int, int] | list[int], num_ws: int) -> tuple[int, int]:
    """Validate a layer range ``(start, stop)`` with ``0 <= start < stop <= num_ws``."""
    if len(layers) != 2:
        raise ConfigError(f"a layer range needs two numbers (start, stop), got {list(layers)}")
    start, stop = int(layers[0]), int(layers[1])
    if not 0 <= start < stop <= num_ws:
        raise ConfigError(
            f"layer range {start}-{stop} is outside the generator's {num_ws} W+ layers: use 0 <= start < stop <= "
            f"{num_ws}"
        )
    return start, stop


def check_vector(array: np.ndarray | torch.Tensor, w_dim: int, num_ws: int | None, what: str) -> torch.Tensor:
    """Bring a direction array to (w_dim,) or (num_ws, w_dim) float32, checking shape and finiteness.

    Raises:
        CheckpointError: wrong dtype/shape, NaN/inf values or an all-zero vector (``what`` names the source).
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise CheckpointError(f"{what}: direction has dtype {array.dtype}; save a float array")
    shape = tuple(array.shape)
    layers = num_ws if num_ws is not None else "num_ws"
    allowed = f"({w_dim},), (1, {w_dim}) or ({layers}, {w_dim})"
    while array.ndim > 1 and array.shape[0] == 1:
        array = array[0]
    valid = array.ndim == 1 and array.shape[0] == w_dim
    valid = valid or (array.ndim == 2 and array.shape[1] == w_dim and (num_ws is None or array.shape[0] == num_ws))
    if not valid:
        raise CheckpointError(f"{what}: direction has shape {shape} but this generator needs {allowed}")
    if not np.isfinite(array).all():
        raise CheckpointError(f"{what}: direction contains NaN or infinite values")
    if not np.any(array):
        raise CheckpointError(f"{what}: direction is all zeros, so it would not change anything")
    return torch.from_numpy(np.array(array, dtype=np.float32))


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"direction name {name!r} is not allowed: use letters, digits, '_', '.', '+', '-'")
    return name


# ----------------------------------------------------------------------------------------------------------------
# User direction files (.npy)


def load_direction_file(path: str | os.PathLike[str], w_dim: int, num_ws: int | None = None) -> Direction:
    """Read an InterFaceGAN-style ``.npy`` direction (never unpickles).

    Raises:
        CheckpointError: missing, unreadable, pickled/object array, ``.npz`` archive, bad shape or values.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"{file}: direction file not found; pass a .npy file saved with numpy.save")
    try:
        with open(file, "rb") as handle:
            magic = handle.read(6)
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read the direction file ({exc.strerror or exc})") from None
    if magic.startswith(b"PK"):
        raise CheckpointError(f"{file}: is an .npz archive; save the single direction array with numpy.save")
    if magic != b"\x93NUMPY":
        raise CheckpointError(f"{file}: not a readable .npy array (no NumPy header); save it with numpy.save")
    try:
        array = np.load(file, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise CheckpointError(
                f"{file}: the direction is a pickled object array, which is not loaded for safety; save a plain "
                "float array with numpy.save"
            ) from None
        raise CheckpointError(f"{file}: not a readable .npy array ({exc}); save it with numpy.save") from None
    except (OSError, EOFError) as exc:
        raise CheckpointError(f"{file}: not a readable .npy array ({exc}); save it with numpy.save") from None
    if not isinstance(array, np.ndarray):
        raise CheckpointError(f"{file}: not a single .npy array; save the direction with numpy.save")
    vector = check_vector(array, w_dim, num_ws, str(file))
    return Direction(name=check_name(re.sub(r"[^A-Za-z0-9_.+-]", "_", file.stem) or "direction"), vector=vector)


def save_direction_npy(path: str | os.PathLike[str], vector: torch.Tensor | np.ndarray) -> None:
    """Write a direction as a float32 ``.npy`` (atomic)."""
    array = vector.detach().cpu().numpy() if isinstance(vector, torch.Tensor) else np.asarray(vector)
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, array.astype(np.float32), allow_pickle=False)


# ----------------------------------------------------------------------------------------------------------------
# Bundles of named directions (.safetensors)


def save_directions(
    path: str | os.PathLike[str],
    directions: Mapping[str, Direction],
    extra: Mapping[str, torch.Tensor] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write named directions (with layer ranges and strength units) to a safetensors bundle (atomic)."""
    if not directions:
        raise ConfigError("no directions to save")
    tensors = {f"direction.{check_name(name)}": d.vector for name, d in directions.items()}
    for key, value in (extra or {}).items():
        tensors[f"extra.{key}"] = value
    info = {
        name: {"layers": list(d.layers) if d.layers else None, "scale": float(d.scale)}
        for name, d in directions.items()
    }
    meta = {**(metadata or {}), "format": DIRECTIONS_FORMAT, "directions": json.dumps(info)}
    write_safetensors(path, tensors, meta)


def load_directions(
    path: str | os.PathLike[str], w_dim: int | None = None, num_ws: int | None = None
) -> dict[str, Direction]:
    """Read a bundle written by :func:`save_directions`, checking every vector against (w_dim, num_ws) when given.

    Raises:
        CheckpointError: missing/corrupt file, another kind of file, or directions that do not fit the generator.
    """
    file = Path(path)
    fix = "write one with `triplanenet directions --out FILE`"
    tensors, metadata = read_safetensors(file, DIRECTIONS_FORMAT, "direction bundle", fix)
    try:
        info = json.loads(metadata.get("directions", "{}"))
    except json.JSONDecodeError:
        raise CheckpointError(f"{file}: the direction bundle's metadata is corrupt; {fix}") from None
    directions: dict[str, Direction] = {}
    for name, entry in info.items():
        key = f"direction.{name}"
        if key not in tensors or not isinstance(entry, dict):
            raise CheckpointError(f"{file}: direction {name!r} is listed but missing; {fix}")
        vector = tensors[key]
        # Without a generator to check against, the vector still has to be a finite float (w_dim,)/(n, w_dim) array.
        width = w_dim if w_dim is not None else int(vector.shape[-1]) if vector.ndim else -1
        vector = check_vector(vector, width, num_ws, f"{file} [{name}]")
        directions[name] = Direction(name=name, vector=vector, **_entry_fields(entry, f"{file} [{name}]", fix))
    if not directions:
        raise CheckpointError(f"{file}: the direction bundle is empty; {fix}")
    return directions


def _entry_fields(entry: dict[str, Any], what: str, fix: str) -> dict[str, Any]:
    """``layers`` (two ints or None) and ``scale`` (a finite positive float) of a bundle entry, checked."""
    layers, scale = entry.get("layers"), entry.get("scale", 1.0)
    valid_layers = layers is None or (
        isinstance(layers, list)
        and len(layers) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1024 for v in layers)
    )
    valid_scale = isinstance(scale, int | float) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0
    if not (valid_layers and valid_scale):
        raise CheckpointError(f"{what}: malformed entry (layers {layers!r}, scale {scale!r}); {fix}")
    return {"layers": None if layers is None else (layers[0], layers[1]), "scale": float(scale)}


def resolve_direction(spec: str, w_dim: int, num_ws: int, bundle: Mapping[str, Direction] | None = None) -> Direction:
    """A direction from a ``.npy`` path or a name in ``bundle``.

    Raises:
        ConfigError: an unknown name (the message lists the available ones).
        CheckpointError: a bad direction file.
    """
    if spec.lower().endswith(".npy") or os.sep in spec or Path(spec).is_file():
        return load_direction_file(spec, w_dim, num_ws)
    if bundle and spec in bundle:
        return bundle[spec]
    names = ", ".join(sorted(bundle, key=_natural)) if bundle else "none loaded"
    raise ConfigError(f"unknown direction {spec!r}: pass a .npy file or one of the named directions ({names})")


def _natural(name: str) -> tuple[str, int]:
    match = re.match(r"^(.*?)(\d+)$", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


# ----------------------------------------------------------------------------------------------------------------
# GANSpace


@dataclass
class GanSpace:
    """Principal components of sampled W codes.

    Attributes:
        mean: (w_dim,) mean of the samples.
        components: (K, w_dim) orthonormal rows, ordered by decreasing variance; sign chosen so that each row's
            largest-magnitude entry is positive (deterministic).
        stdev: (K,) standard deviation of the samples along each component (the strength unit).
        variance_ratio: (K,) fraction of the total variance explained by each component.
        samples: number of sampled codes.
        seed: seed of the z samples.
    """

    mean: torch.Tensor
    components: torch.Tensor
    stdev: torch.Tensor
    variance_ratio: torch.Tensor
    samples: int
    seed: int

    def directions(self, layers: tuple[int, int] | None = None, prefix: str = "pc") -> dict[str, Direction]:
        """Named directions ``pc0, pc1, ...`` (unit vectors, strength in σ), optionally limited to ``layers``."""
        return {
            f"{prefix}{k}": Direction(f"{prefix}{k}", self.components[k].clone(), layers, float(self.stdev[k]))
            for k in range(self.components.shape[0])
        }

    def save(self, path: str | os.PathLike[str], layers: tuple[int, int] | None = None) -> None:
        """Write the components as a direction bundle (plus the mean, σ and variance ratios)."""
        save_directions(
            path,
            self.directions(layers),
            extra={"ganspace_mean": self.mean, "ganspace_stdev": self.stdev, "ganspace_ratio": self.variance_ratio},
            metadata={"source": "ganspace", "samples": str(self.samples), "seed": str(self.seed)},
        )


@torch.no_grad()
def sample_w(
    generator: TriPlaneGenerator,
    count: int,
    seed: int = 0,
    camera: torch.Tensor | None = None,
    batch_size: int = 4096,
    truncation_psi: float = 1.0,
) -> torch.Tensor:
    """(count, w_dim) float32 codes ``w = mapping(z, c)`` for ``z ~ N(0, I)`` drawn from ``seed``.

    ``camera`` (1, 25) conditions the mapping (default: frontal camera at the generator's average radius).
    """
    from triplanenet.views import default_label

    device = generator.w_avg.device
    label = (default_label(generator) if camera is None else camera.reshape(1, 25)).to(device)
    rng = torch.Generator().manual_seed(int(seed))
    z_dim = generator.config.z_dim
    chunks = []
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        z = torch.randn(n, z_dim, generator=rng).to(device)
        chunks.append(generator.mapping(z, label.expand(n, -1), truncation_psi=truncation_psi)[:, 0].float())
    return torch.cat(chunks)


def compute_ganspace(
    generator: TriPlaneGenerator,
    samples: int = 10_000,
    components: int = 10,
    seed: int = 0,
    camera: torch.Tensor | None = None,
) -> GanSpace:
    """GANSpace: PCA (via SVD in float64) of ``samples`` sampled W codes, keeping ``components`` components.

    Raises:
        ConfigError: ``components`` not in 1..w_dim or fewer than ``components + 1`` samples.
    """
    w_dim = generator.config.w_dim
    if not 1 <= components <= w_dim:
        raise ConfigError(f"--components must be between 1 and w_dim={w_dim}, got {components}")
    if samples < components + 1:
        raise ConfigError(f"--samples must be at least components + 1 = {components + 1}, got {samples}")
    codes = sample_w(generator, samples, seed, camera).cpu().double()
    mean = codes.mean(dim=0)
    centred = codes - mean
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.square() / (samples - 1)
    total = variance.sum().clamp_min(1e-30)
    basis = vh[:components]
    peak = basis.abs().argmax(dim=1)
    signs = torch.sign(basis.gather(1, peak[:, None])).squeeze(1)
    signs[signs == 0] = 1.0
    basis = basis * signs[:, None]
    return GanSpace(
        mean=mean.float(),
        components=basis.float().contiguous(),
        stdev=variance[:components].sqrt().float(),
        variance_ratio=(variance[:components] / total).float(),
        samples=samples,
        seed=seed,
    )
