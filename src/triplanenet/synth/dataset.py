"""Datasets of procedural heads in the official layout (PNG images + ``dataset.json``) plus ground truth.

Besides the images, each folder holds ``ground_truth.pt`` (read with ``weights_only=True``): identity vectors,
identity index per image, cameras, depth maps, masks and 2D/3D landmarks, so that training, evaluation and the demo
can compare against the truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from triplanenet.io.atomic import atomic_path, write_text_atomic
from triplanenet.io.cameras import write_dataset_json
from triplanenet.io.images import save_image
from triplanenet.synth.params import HeadParams
from triplanenet.synth.render import render_heads, sample_cameras

GROUND_TRUTH = "ground_truth.pt"
MANIFEST = "synth_manifest.json"


@dataclass
class SynthWorld:
    """Tensors of a procedural dataset (N images of K identities)."""

    images: torch.Tensor  # (N, 3, R, R) in [-1, 1]
    depth: torch.Tensor  # (N, 1, R, R) distance along rays; background = ray_end
    mask: torch.Tensor  # (N, 1, R, R) in {0, 1}
    cameras: torch.Tensor  # (N, 25)
    identity: torch.Tensor  # (N,) int64 index into params
    params: torch.Tensor  # (K, PARAM_DIM) identity vectors
    landmarks_2d: torch.Tensor  # (N, 5, 2) pixels
    names: list[str]


def build_synth_dataset(
    out_dir: str | Path,
    identities: int,
    views: int,
    resolution: int = 128,
    seed: int = 0,
    yaw_std: float = 0.3,
    pitch_std: float = 0.1,
    batch_size: int = 16,
) -> Path:
    """Render ``identities × views`` images (random FFHQ-like poses) to ``out_dir``; reused when already built."""
    folder = Path(out_dir)
    manifest = {
        "identities": identities,
        "views": views,
        "resolution": resolution,
        "seed": seed,
        "yaw_std": yaw_std,
        "pitch_std": pitch_std,
    }
    if (folder / MANIFEST).is_file() and json.loads((folder / MANIFEST).read_text()) == manifest:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(seed)
    params = HeadParams.sample(rng, identities)
    identity = torch.arange(identities).repeat_interleave(views)
    cameras = sample_cameras(rng, identities * views, yaw_std=yaw_std, pitch_std=pitch_std)
    parts: dict[str, list[torch.Tensor]] = {"depth": [], "mask": [], "landmarks_2d": []}
    labels: dict[str, torch.Tensor] = {}
    names: list[str] = []
    for start in range(0, len(identity), batch_size):
        index = identity[start : start + batch_size]
        sample = render_heads(params[index], cameras[start : start + batch_size], resolution=resolution)
        for offset in range(len(index)):
            number = start + offset
            name = f"id{int(index[offset]):05d}_v{number % views:02d}.png"
            save_image(folder / name, sample.image[offset])
            labels[name] = cameras[number]
            names.append(name)
        parts["depth"].append(sample.depth.half())
        parts["mask"].append(sample.mask.bool())
        parts["landmarks_2d"].append(sample.landmarks_2d)
    truth = {
        "names": names,
        "identity": identity,
        "params": params.vector,
        "cameras": cameras,
        **{key: torch.cat(value) for key, value in parts.items()},
    }
    with atomic_path(folder / GROUND_TRUTH) as tmp:
        torch.save(truth, tmp)
    write_dataset_json(folder / "dataset.json", labels)
    write_text_atomic(folder / MANIFEST, json.dumps(manifest))
    return folder


GROUND_TRUTH_KEYS = ("names", "identity", "params", "cameras", "depth", "mask", "landmarks_2d")


def read_ground_truth(path: str | Path) -> dict:
    """The ``ground_truth.pt`` dictionary written by :func:`build_synth_dataset` (read with ``weights_only=True``).

    Raises:
        CheckpointError: missing, corrupt, or not a ground-truth file (keys missing).
    """
    from triplanenet.errors import CheckpointError

    file = Path(path)
    try:
        truth = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{file}: file not found") from None
    except Exception as exc:  # corrupt zip, pickle refused by weights_only, truncated file, ...
        raise CheckpointError(f"{file}: unreadable ground truth ({type(exc).__name__}); rebuild the world") from None
    missing = [key for key in GROUND_TRUTH_KEYS if not isinstance(truth, dict) or key not in truth]
    if missing:
        raise CheckpointError(f"{file}: not a ground-truth file (missing {', '.join(missing)}); rebuild the world")
    return truth


def load_synth_world(folder: str | Path) -> SynthWorld:
    """Images and ground truth of a folder written by :func:`build_synth_dataset`."""
    from triplanenet.io.images import load_image

    folder = Path(folder)
    truth = read_ground_truth(folder / GROUND_TRUTH)
    images = torch.stack([load_image(folder / name) for name in truth["names"]])
    return SynthWorld(
        images=images,
        depth=truth["depth"].float(),
        mask=truth["mask"].float(),
        cameras=truth["cameras"],
        identity=truth["identity"],
        params=truth["params"],
        landmarks_2d=truth["landmarks_2d"],
        names=list(truth["names"]),
    )
