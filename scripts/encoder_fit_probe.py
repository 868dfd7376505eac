"""Short encoder runs with the default model's recipe, to compare learning rates before the long encoder stage.

    python scripts/encoder_fit_probe.py --steps 200 --lr 1e-3 --lr 3e-3

Each run is `triplanenet train paper` with the overrides of ``scripts/train_default_model.py`` (the committed
generator and identity network, the training world) except: ``--steps`` steps, the second branch from half-way,
64 synthetic samples, validation at half-way and at the end, no checkpoints kept; ``lr_psp`` = ``lr_triplane`` =
each ``--lr``. Prints the validation MSE / LPIPS of both branches as a markdown table. Runs go to a temporary
folder.
"""

from __future__ import annotations

import argparse
import json
import runpy
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REPLACED = (
    "out=",
    "max_steps=",
    "val_every=",
    "save_every=",
    "synthetic_samples=",
    "add_triplanenet=",
    "stop_psp=",
    "log_every=",
    "image_every=",
    "lr_psp=",
    "lr_triplane=",
)


def main() -> None:
    from triplanenet.cli.train import run_training

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, action="append", help="learning rate of both branches (repeatable)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = runpy.run_path(str(ROOT / "scripts" / "train_default_model.py"), run_name="recipe")
    base = [item for item in recipe["ENCODER_OVERRIDES"] if not item.startswith(REPLACED)]
    half = max(1, args.steps // 2)
    print(f"{args.steps} steps (second branch from {half}), {args.threads} thread(s)")
    print("| lr | step | MSE first branch | MSE TriPlaneNet | LPIPS first branch | LPIPS TriPlaneNet | seconds |")
    print("|---|---|---|---|---|---|---|")
    for lr in args.lr or [1e-3]:
        with tempfile.TemporaryDirectory() as tmp:
            overrides = [
                *base,
                f"out={tmp}/run",
                f"max_steps={args.steps}",
                f"val_every={half}",
                f"save_every={10 * args.steps}",
                "synthetic_samples=64",
                f"add_triplanenet={half}",
                f"stop_psp={10 * args.steps}",
                f"log_every={half}",
                f"image_every={10 * args.steps}",
                f"lr_psp={lr}",
                f"lr_triplane={lr}",
            ]
            start = time.perf_counter()
            run_training("paper", overrides, resume=None, device_name="cpu")
            seconds = time.perf_counter() - start
            for entry in json.loads((Path(tmp) / "run" / "validation.json").read_text()):
                print(
                    f"| {lr:g} | {int(entry['step'])} | {entry['val/mse_psp']:.4f} | {entry['val/mse_final']:.4f} | "
                    f"{entry['val/lpips_psp']:.4f} | {entry['val/lpips_final']:.4f} | {seconds:.0f} |"
                )


if __name__ == "__main__":
    main()
