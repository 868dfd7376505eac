"""A small identity (face-recognition) network for the procedural world, and its safetensors format.

No ArcFace-class weights exist offline, so the bundled default model ships an IR-SE network trained here on the
procedural identities (several views each) with a normalised-softmax margin loss (CosFace, s = 16, m = 0.2). It is
used for the identity loss and the identity metric in that world. Real photos need real ArcFace weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from triplanenet.encoders.config import IRSEBackboneConfig, IRSEConfig
from triplanenet.encoders.irse import IRSEBackbone
from triplanenet.io.safetensors_files import read_safetensors, write_safetensors
from triplanenet.losses.identity import PSP_FACE_CROP, scaled_crop

IDENTITY_FORMAT = "triplanenet-identity"


def default_identity_config() -> IRSEBackboneConfig:
    """IR-SE with (2, 2, 2, 2) units of (16, 32, 64, 64) channels on 64² face crops, 64-d embeddings."""
    body = IRSEConfig(units=(2, 2, 2, 2), channels=(16, 32, 64, 64))
    return IRSEBackboneConfig(body=body, input_size=64, embedding_dim=64, dropout=0.0)


def face_crops(images: torch.Tensor, size: int) -> torch.Tensor:
    """The identity loss's face crop (pSp's, scaled to the image size), resized to ``size``."""
    r0, r1, c0, c1 = scaled_crop(images.shape[-2], images.shape[-1], PSP_FACE_CROP)
    return F.adaptive_avg_pool2d(images[:, :, r0:r1, c0:c1], (size, size))


def train_identity_network(
    images: torch.Tensor,
    identity: torch.Tensor,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    config: IRSEBackboneConfig | None = None,
    log: Callable[[str], None] = print,
) -> IRSEBackbone:
    """Train on (N, 3, R, R) images in [-1, 1] with identity labels (N,); returns the network in eval mode."""
    cfg = config or default_identity_config()
    torch.manual_seed(seed)
    network = IRSEBackbone(cfg).train()
    classes = int(identity.max()) + 1
    centres = torch.nn.Parameter(F.normalize(torch.randn(classes, cfg.embedding_dim), dim=1))
    optimizer = torch.optim.Adam([*network.parameters(), centres], lr=lr)
    crops = face_crops(images, cfg.input_size)
    rng = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for step in range(steps):
        index = torch.randint(len(crops), (batch_size,), generator=rng)
        batch = crops[index]
        # Light augmentation: brightness/contrast jitter and horizontal shifts keep it from memorising pixels.
        gain = 1 + 0.2 * (torch.rand(batch_size, 1, 1, 1, generator=rng) - 0.5)
        bias = 0.2 * (torch.rand(batch_size, 1, 1, 1, generator=rng) - 0.5)
        shift = int(torch.randint(-2, 3, (1,), generator=rng))
        batch = torch.roll(batch * gain + bias, shifts=shift, dims=3)
        embeddings = network(batch)
        cosine = embeddings @ F.normalize(centres, dim=1).t()
        labels = identity[index]
        margin = F.one_hot(labels, classes) * 0.2
        loss = F.cross_entropy(16.0 * (cosine - margin), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step == 0:
            rate = (step + 1) / (time.perf_counter() - started)
            log(f"identity step {step + 1}/{steps}  loss {loss.item():.4f}  ({rate:.2f} steps/s)")
    return network.eval().requires_grad_(False)


@torch.no_grad()
def verification_scores(network: IRSEBackbone, images: torch.Tensor, identity: torch.Tensor) -> dict[str, float]:
    """Mean cosine of same-identity and different-identity pairs, and the pair-ranking AUC."""
    embeddings = network(face_crops(images, network.cfg.input_size))
    cosine = embeddings @ embeddings.t()
    same = identity[:, None] == identity[None, :]
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    positives, negatives = cosine[same & upper], cosine[~same & upper]
    auc = (positives[:, None] > negatives[None, :]).float().mean().item()
    return {"same_cosine": positives.mean().item(), "different_cosine": negatives.mean().item(), "auc": auc}


def save_identity_network(network: IRSEBackbone, path: str | os.PathLike[str]) -> None:
    metadata = {"format": IDENTITY_FORMAT, "config": json.dumps(dataclasses.asdict(network.cfg))}
    write_safetensors(path, network.state_dict(), metadata)


def load_identity_safetensors(path: str | os.PathLike[str]) -> IRSEBackbone:
    """Load a network written by :func:`save_identity_network` (frozen, eval)."""
    tensors, metadata = read_safetensors(path, IDENTITY_FORMAT, "identity network", "retrain or reinstall it")
    data = json.loads(metadata["config"])
    data["body"] = IRSEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["body"].items()})
    network = IRSEBackbone(IRSEBackboneConfig(**data))
    network.load_state_dict(tensors, strict=True)
    return network.eval().requires_grad_(False)
