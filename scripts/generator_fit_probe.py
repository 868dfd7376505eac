"""Short generator fits on a few identities of the training world, to compare fit settings before a long run.

    python scripts/generator_fit_probe.py --identities 8 --steps 300 --lr 1.5e-3 --lr 5e-3 --lr 1e-2

Each setting fits the bundled default generator architecture (``default_generator_config``) from scratch on the
first ``--identities`` identities (all their views) of ``.cache/world/train`` (rendered by
``scripts/train_default_model.py world``), with the default model's fit settings except the learning rate and
without latent noise, and prints the loss terms of the last step and the mean of the last 50 steps as a markdown
table. Deterministic for a given setting and thread count.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WORLD_TRAIN = ROOT / ".cache" / "world" / "train"
TERMS = ("loss", "image_l1", "depth_l1", "mask_l1", "lpips")


def _subset(world, identities: int):
    keep = world.identity < identities
    return dataclasses.replace(
        world,
        images=world.images[keep],
        depth=world.depth[keep],
        mask=world.mask[keep],
        cameras=world.cameras[keep],
        identity=world.identity[keep],
        params=world.params[:identities],
        landmarks_2d=world.landmarks_2d[keep],
        names=[name for name, kept in zip(world.names, keep.tolist(), strict=True) if kept],
    )


def main() -> None:
    from triplanenet.synth.dataset import load_synth_world
    from triplanenet.train.fit_generator import FitConfig, default_generator_config, fit_generator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, action="append", help="generator learning rate (repeat to compare)")
    parser.add_argument(
        "--mapping-lr-multiplier", type=float, default=None, help="override the mapping network's lr multiplier"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (WORLD_TRAIN / "dataset.json").is_file():
        raise SystemExit(f"no training world at {WORLD_TRAIN}: run `python scripts/train_default_model.py world` first")
    world = _subset(load_synth_world(WORLD_TRAIN), args.identities)
    generator_config = default_generator_config()
    if args.mapping_lr_multiplier is not None:
        generator_config = dataclasses.replace(generator_config, mapping_lr_multiplier=args.mapping_lr_multiplier)
    rows = []
    for lr in args.lr or [FitConfig.lr]:
        fit = FitConfig(steps=args.steps, batch_size=8, lr=lr, latent_init="params", latent_noise=0.0, lpips_weight=0.5)
        start = time.perf_counter()
        _, _, history = fit_generator(world, fit, generator_config, log=lambda _m: None)
        seconds = time.perf_counter() - start
        last = history[-1]
        window = history[-50:]
        mean = {key: sum(h[key] for h in window) / len(window) for key in TERMS}
        rows.append((lr, last, mean, args.steps / seconds))
    print(
        f"{args.identities} identities x {len(world.identity) // args.identities} views, {args.steps} steps, "
        f"{args.threads} thread(s), mapping lr multiplier {generator_config.mapping_lr_multiplier:g}"
    )
    print("| lr | " + " | ".join(f"{t} (last / mean of last 50)" for t in TERMS) + " | steps/s |")
    print("|---" * (len(TERMS) + 2) + "|")
    for lr, last, mean, rate in rows:
        cells = " | ".join(f"{last[t]:.4f} / {mean[t]:.4f}" for t in TERMS)
        print(f"| {lr:g} | {cells} | {rate:.2f} |")


if __name__ == "__main__":
    main()
