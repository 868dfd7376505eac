"""Fit a small EG3D generator to the procedural heads world by multi-view regression (an auto-decoder).

Each identity k gets a learnable latent z_k, initialised from N(0, I) or (``latent_init="params"``) from its own
procedural parameters, standardised over the training identities (the texture-noise seed left out): the generator
then starts from codes that already say who is who, converges far faster, and a random z ~ N(0, I) reads as a
random set of parameters, i.e. a plausible head. The generator maps it (camera conditioning
off) through the real EG3D pipeline — mapping, W+, StyleGAN2 tri-planes, volume rendering, super-resolution — and
is trained with L1 on the final and raw images, L1 on depth (foreground) and on the accumulated opacity (mask)
against the ground truth of every view, optionally with LPIPS on the final image for sharper facial features.
Latents receive small Gaussian noise during training, so that nearby codes give similar heads and random
z ~ N(0, I) land in a region the generator has learned. After fitting, ``w_avg`` is the mean w of the identity
latents.

Long fits are resumable: with ``state_path`` set, the whole training state (weights, latents, optimiser, schedule,
random generator, loss log) is written atomically every ``save_every`` steps and read back on the next call, so a
killed run continues exactly where its last save left it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from triplanenet.eg3d.config import GeneratorConfig, RenderingConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.io.atomic import atomic_path
from triplanenet.synth.dataset import SynthWorld
from triplanenet.synth.params import FIELDS, PARAM_DIM


def default_generator_config() -> GeneratorConfig:
    """Architecture of the bundled default generator: 128² images, 64² tri-planes of 16 channels, 10 ws.

    z has one dimension per procedural identity parameter except the texture seed (:data:`IDENTITY_CODE_DIM`), so
    that the codes can start from the parameters (``FitConfig.latent_init="params"``).
    """
    return GeneratorConfig(
        z_dim=IDENTITY_CODE_DIM,
        w_dim=128,
        img_resolution=128,
        backbone_resolution=64,
        triplane_channels=16,
        channel_base=2048,
        channel_max=128,
        sr_channels=(64, 32),
        decoder_hidden_dim=64,
        neural_rendering_resolution=32,
        rendering=RenderingConfig(depth_resolution=16, depth_resolution_importance=16, c_gen_conditioning_zero=True),
    )


def _column_of(name: str) -> int:
    """First column of the parameter field ``name`` in an identity vector."""
    names = [f.name for f in FIELDS]
    return sum(f.size for f in FIELDS[: names.index(name)])


_SEED_COLUMN = _column_of("texture_seed")
IDENTITY_CODE_DIM: int = PARAM_DIM - 1
"""Length of an identity code made from procedural parameters: every parameter but the texture-noise seed."""


def identity_codes(params: torch.Tensor) -> torch.Tensor:
    """Standardised identity parameters (K, PARAM_DIM) -> codes (K, IDENTITY_CODE_DIM): the texture seed (an
    arbitrary integer) is dropped and every other column is shifted and scaled to mean 0, std 1 over the K rows
    (constant columns stay 0)."""
    keep = torch.cat([params[:, :_SEED_COLUMN], params[:, _SEED_COLUMN + 1 :]], dim=1).float()
    spread = keep.std(dim=0, unbiased=False)
    return (keep - keep.mean(dim=0)) / torch.where(spread > 1e-8, spread, torch.ones_like(spread))


@dataclass(frozen=True)
class FitConfig:
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1.5e-3
    lr_latent: float = 1e-2
    latent_init: Literal["random", "params"] = "random"
    latent_noise: float = 0.05
    raw_weight: float = 1.0
    depth_weight: float = 1.0
    mask_weight: float = 0.5
    lpips_weight: float = 0.0
    seed: int = 0
    log_every: int = 50
    save_every: int = 250


def _downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.adaptive_avg_pool2d(x, (size, size))


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, config: FitConfig) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file gets the same one-line answer
        raise CheckpointError(f"cannot resume the generator fit from {path} ({exc}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("config") != asdict(config):
        raise CheckpointError(
            f"{path} was written by a generator fit with other settings; delete it to start over, or use its settings"
        )
    return state


def fit_generator(
    world: SynthWorld,
    config: FitConfig,
    generator_config: GeneratorConfig | None = None,
    log: Callable[[str], None] = print,
    state_path: str | os.PathLike[str] | None = None,
) -> tuple[TriPlaneGenerator, torch.Tensor, list[dict[str, float]]]:
    """Returns the fitted generator (eval mode, ``w_avg`` set), the identity latents (K, z_dim) and the loss log.

    With ``state_path``, the training state is saved there every ``config.save_every`` steps and a run resumes from
    it (the settings must be the same; the result is then identical to an uninterrupted run).
    """
    gcfg = generator_config or default_generator_config()
    torch.manual_seed(config.seed)
    generator = TriPlaneGenerator(gcfg).train()
    identities = int(world.identity.max()) + 1
    if config.latent_init == "params":
        if gcfg.z_dim != IDENTITY_CODE_DIM:
            raise ConfigError(f"latent_init='params' needs z_dim = {IDENTITY_CODE_DIM}, the generator has {gcfg.z_dim}")
        latents = torch.nn.Parameter(identity_codes(world.params[:identities]))
    else:
        latents = torch.nn.Parameter(torch.randn(identities, gcfg.z_dim))
    optimizer = torch.optim.Adam(
        [{"params": generator.parameters(), "lr": config.lr}, {"params": [latents], "lr": config.lr_latent}],
        betas=(0.9, 0.99),
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps, eta_min=config.lr * 0.05)
    rng = torch.Generator().manual_seed(config.seed)
    perceptual = None
    if config.lpips_weight > 0:
        from triplanenet.losses.lpips import LPIPS

        perceptual = LPIPS.from_file()
    history: list[dict[str, float]] = []
    first_step = 0
    state_file = Path(state_path) if state_path is not None else None
    if state_file is not None and state_file.is_file():
        state = _load_state(state_file, config)
        generator.load_state_dict(state["generator"])
        with torch.no_grad():
            latents.copy_(state["latents"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        rng.set_state(state["rng"])
        history = [dict(zip(state["history_keys"], row, strict=True)) for row in state["history"].tolist()]
        first_step = int(state["step"])
        log(f"resuming the generator fit at step {first_step}/{config.steps} from {state_file}")
    raw_size = gcfg.neural_rendering_resolution
    images = F.interpolate(world.images, size=(gcfg.img_resolution,) * 2, mode="area")
    raw_images = _downsample(world.images, raw_size)
    masks = _downsample(world.mask, raw_size)
    depths = _downsample(world.depth * world.mask, raw_size) / masks.clamp_min(1e-6)
    depth_valid = (masks > 0.99).float()
    started = time.perf_counter()
    for step in range(first_step, config.steps):
        index = torch.randint(len(world.identity), (config.batch_size,), generator=rng)
        z = latents[world.identity[index]]
        z = z + config.latent_noise * torch.randn(z.shape, generator=rng)
        camera = world.cameras[index]
        ws = generator.mapping(z, camera)
        out = generator.synthesis(ws, camera, noise_mode="const", generator=rng)
        image_loss = F.l1_loss(out.image, images[index])
        raw_loss = F.l1_loss(out.image_raw, raw_images[index])
        depth_loss = (torch.abs(out.image_depth - depths[index]) * depth_valid[index]).mean()
        mask_loss = F.l1_loss(out.weight_sum, masks[index])
        lpips_loss = perceptual(out.image, images[index]) if perceptual is not None else image_loss.new_zeros(())
        loss = (
            image_loss
            + config.raw_weight * raw_loss
            + config.depth_weight * depth_loss
            + config.mask_weight * mask_loss
            + config.lpips_weight * lpips_loss
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the generator fit diverged at step {step + 1} (loss {loss.item()})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(generator.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        entry = {
            "step": step + 1,
            "loss": loss.item(),
            "image_l1": image_loss.item(),
            "raw_l1": raw_loss.item(),
            "depth_l1": depth_loss.item(),
            "mask_l1": mask_loss.item(),
            "lpips": lpips_loss.item(),
        }
        history.append(entry)
        if (step + 1) % config.log_every == 0 or step == first_step:
            rate = (step + 1 - first_step) / (time.perf_counter() - started)
            log(
                f"step {step + 1}/{config.steps}  loss {entry['loss']:.4f}  image {entry['image_l1']:.4f}  "
                f"depth {entry['depth_l1']:.4f}  mask {entry['mask_l1']:.4f}  lpips {entry['lpips']:.4f}  "
                f"({rate:.2f} steps/s)"
            )
        if state_file is not None and ((step + 1) % config.save_every == 0 or step + 1 == config.steps):
            keys = list(history[0])
            _save_state(
                state_file,
                {
                    "config": asdict(config),
                    "step": step + 1,
                    "generator": generator.state_dict(),
                    "latents": latents.detach().clone(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "rng": rng.get_state(),
                    "history_keys": keys,
                    "history": torch.tensor([[h[k] for k in keys] for h in history], dtype=torch.float64),
                },
            )
    generator.eval().requires_grad_(False)
    with torch.no_grad():
        zero_camera = torch.zeros(identities, gcfg.c_dim)
        w_mean = generator.mapping(latents.detach(), zero_camera)[:, 0].mean(dim=0)
        generator.backbone.mapping.w_avg.copy_(w_mean)
    return generator, latents.detach(), history
