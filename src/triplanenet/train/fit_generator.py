"""Fit a small EG3D generator to the procedural heads world by multi-view regression (an auto-decoder).

Each identity k gets a learnable latent z_k (initialised from N(0, I)); the generator maps it (camera conditioning
off) through the real EG3D pipeline — mapping, W+, StyleGAN2 tri-planes, volume rendering, super-resolution — and
is trained with L1 on the final and raw images, L1 on depth (foreground) and on the accumulated opacity (mask)
against the ground truth of every view. Latents receive small Gaussian noise during training, so that nearby codes
give similar heads and random z ~ N(0, I) land in a region the generator has learned. After fitting, ``w_avg`` is
the mean w of the identity latents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from triplanenet.eg3d.config import GeneratorConfig, RenderingConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.synth.dataset import SynthWorld


def default_generator_config() -> GeneratorConfig:
    """Architecture of the bundled default generator: 128² images, 64² tri-planes of 16 channels, 10 ws."""
    return GeneratorConfig(
        z_dim=128,
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


@dataclass(frozen=True)
class FitConfig:
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1.5e-3
    lr_latent: float = 1e-2
    latent_noise: float = 0.05
    raw_weight: float = 1.0
    depth_weight: float = 1.0
    mask_weight: float = 0.5
    seed: int = 0
    log_every: int = 50


def _downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.adaptive_avg_pool2d(x, (size, size))


def fit_generator(
    world: SynthWorld,
    config: FitConfig,
    generator_config: GeneratorConfig | None = None,
    log: Callable[[str], None] = print,
) -> tuple[TriPlaneGenerator, torch.Tensor, list[dict[str, float]]]:
    """Returns the fitted generator (eval mode, ``w_avg`` set), the identity latents (K, z_dim) and the loss log."""
    gcfg = generator_config or default_generator_config()
    torch.manual_seed(config.seed)
    generator = TriPlaneGenerator(gcfg).train()
    identities = int(world.identity.max()) + 1
    latents = torch.nn.Parameter(torch.randn(identities, gcfg.z_dim))
    optimizer = torch.optim.Adam(
        [{"params": generator.parameters(), "lr": config.lr}, {"params": [latents], "lr": config.lr_latent}],
        betas=(0.9, 0.99),
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps, eta_min=config.lr * 0.05)
    rng = torch.Generator().manual_seed(config.seed)
    raw_size = gcfg.neural_rendering_resolution
    images = F.interpolate(world.images, size=(gcfg.img_resolution,) * 2, mode="area")
    raw_images = _downsample(world.images, raw_size)
    masks = _downsample(world.mask, raw_size)
    depths = _downsample(world.depth * world.mask, raw_size) / masks.clamp_min(1e-6)
    depth_valid = (masks > 0.99).float()
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for step in range(config.steps):
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
        loss = (
            image_loss
            + config.raw_weight * raw_loss
            + config.depth_weight * depth_loss
            + config.mask_weight * mask_loss
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
        }
        history.append(entry)
        if (step + 1) % config.log_every == 0 or step == 0:
            rate = (step + 1) / (time.perf_counter() - started)
            log(
                f"step {step + 1}/{config.steps}  loss {entry['loss']:.4f}  image {entry['image_l1']:.4f}  "
                f"depth {entry['depth_l1']:.4f}  mask {entry['mask_l1']:.4f}  ({rate:.2f} steps/s)"
            )
    generator.eval().requires_grad_(False)
    with torch.no_grad():
        zero_camera = torch.zeros(identities, gcfg.c_dim)
        w_mean = generator.mapping(latents.detach(), zero_camera)[:, 0].mean(dim=0)
        generator.backbone.mapping.w_avg.copy_(w_mean)
    return generator, latents.detach(), history
