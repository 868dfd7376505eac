"""Every inversion method on the same held-out procedural heads with the bundled default model: MSE, LPIPS, time.

Usage: python benchmarks/compare_inverters.py [--heads N] [--steps-scale S] [--methods a,b] [--threads T]
       [--out table.md]

Heads are the demo's held-out identities (``HeadParams.sample`` seeded 900,000) at the demo poses, rendered at the
generator's output resolution (128² for the default model). MSE is measured at the encoder input resolution
(renders and targets average-pooled, images in [-1, 1]); LPIPS-alex at the full output resolution; time is the
wall-clock seconds of ``invert`` per image (includes per-image set-up such as the W statistics). ``--steps-scale``
multiplies every optimisation step count of the paper defaults (1.0 = the paper defaults).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from triplanenet.demo import DEMO_POSES, DEMO_SEED, load_default_model
from triplanenet.eg3d.camera import camera_label
from triplanenet.errors import CheckpointError
from triplanenet.inverters import METHOD_NAMES, build_inverter, scaled_step_options
from triplanenet.io.atomic import write_text_atomic
from triplanenet.losses.lpips import LPIPS
from triplanenet.synth.params import HeadParams
from triplanenet.synth.render import render_heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps-scale", type=float, default=1.0)
    parser.add_argument("--methods", default=",".join(METHOD_NAMES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]

    model = load_default_model("cpu")
    size = model.config.generator.img_resolution
    poses = [DEMO_POSES[i % len(DEMO_POSES)] for i in range(args.heads)]
    cameras = camera_label(torch.tensor([p[0] for p in poses]), torch.tensor([p[1] for p in poses]))
    truth = render_heads(HeadParams.sample(torch.Generator().manual_seed(DEMO_SEED), args.heads), cameras, size)
    try:
        lpips = LPIPS.from_file()
    except CheckpointError:
        lpips = None

    rows = []
    for name in methods:
        steps = scaled_step_options(name, args.steps_scale)
        inverter = build_inverter(name, model, **steps)
        mses, lpipses, seconds = [], [], []
        for index in range(args.heads):
            started = time.perf_counter()
            inversion = inverter.invert(truth.image[index], cameras[index])
            seconds.append(time.perf_counter() - started)
            with torch.no_grad():
                image = inversion.render().image
                target = truth.image[index : index + 1]
                mses.append(float(((model.pool_to_input(image) - model.pool_to_input(target)) ** 2).mean()))
                if lpips is not None:
                    lpipses.append(float(lpips(image, target)))
        row = {
            "method": name,
            "steps": ", ".join(f"{key}={value}" for key, value in steps.items()) or "feed-forward",
            "MSE": statistics.mean(mses),
            "LPIPS": statistics.mean(lpipses) if lpipses else float("nan"),
            "s/image": statistics.mean(seconds),
        }
        rows.append(row)
        summary = f"MSE {row['MSE']:.4f}  LPIPS {row['LPIPS']:.4f}  {row['s/image']:.2f} s/image"
        print(f"{name:24s} {summary}  ({row['steps']})", flush=True)

    lines = [
        f"Default model, {args.heads} held-out procedural heads (seed {DEMO_SEED}), steps × {args.steps_scale:g}, "
        f"CPU {platform.processor() or platform.machine()}, {args.threads} thread(s).",
        "",
        "| method | steps | MSE ↓ | LPIPS ↓ | s / image |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['steps']} | {row['MSE']:.4f} | {row['LPIPS']:.4f} | {row['s/image']:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    if args.out:
        write_text_atomic(args.out, table)


if __name__ == "__main__":
    main()
