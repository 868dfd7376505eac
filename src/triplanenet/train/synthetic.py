"""EG3D synthetic training samples (paper supplement, "Dataset Details").

``n`` latent codes are drawn with no truncation (ψ = 1); each sample gets a camera drawn from the real training
poses, mirrored with probability 1/2; the mapping is conditioned on that camera (EG3D's generator pose conditioning)
and the sample is rendered from it. The result is written in the official dataset layout (PNG images +
``dataset.json``) so it mixes with real data through the ordinary dataset class, and is reused when it already exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from triplanenet.eg3d.camera import mirror_label
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.io.atomic import write_text_atomic
from triplanenet.io.cameras import write_dataset_json
from triplanenet.io.images import save_image

MANIFEST = "synthetic.json"


@torch.no_grad()
def generate_synthetic_dataset(
    generator: TriPlaneGenerator,
    cameras: torch.Tensor,
    count: int,
    out_dir: str | Path,
    seed: int = 0,
    batch_size: int = 8,
) -> Path:
    """Write ``count`` EG3D samples to ``out_dir`` (images + dataset.json); returns the folder.

    Args:
        cameras: (N, 25) training-set labels to draw poses from.
    """
    folder = Path(out_dir)
    manifest = {"count": count, "seed": seed, "psi": 1.0, "config": generator.config.to_dict()}
    manifest_path = folder / MANIFEST
    if manifest_path.is_file() and json.loads(manifest_path.read_text()) == manifest:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    labels: dict[str, torch.Tensor] = {}
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        picks = torch.randint(len(cameras), (n,), generator=rng)
        flips = torch.rand(n, generator=rng) < 0.5
        camera = cameras[picks].clone()
        camera[flips] = mirror_label(camera[flips])
        z = torch.randn(n, generator.config.z_dim, generator=rng)
        ws = generator.mapping(z.to(device), camera.to(device), truncation_psi=1.0)
        images = generator.synthesis(ws, camera.to(device), deterministic=True).image
        for offset in range(n):
            name = f"eg3d_{start + offset:07d}.png"
            save_image(folder / name, images[offset])
            labels[name] = camera[offset]
    write_dataset_json(folder / "dataset.json", labels)
    write_text_atomic(manifest_path, json.dumps(manifest))
    return folder
