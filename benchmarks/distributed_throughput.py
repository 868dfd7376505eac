"""Throughput of the sharded commands at 1 and N processes (issue 23): ``invert`` with the bundled model and
``preprocess`` (MTCNN, alignment, pose), each run printing images/s.

Every run is a fresh command line: ``python -m triplanenet.cli.main ...`` for one process,
``python -m torch.distributed.run --standalone --nproc_per_node N -m triplanenet.cli.main ...`` for N. The
images/s figure is the command's own (inputs done by all ranks / wall time of the work loop: model loading,
imports and the process-group start-up are left out); the wall column is the whole command line, start-up
included. Runs of the configurations are interleaved, ``--repeats`` rounds, medians reported.

    OMP_NUM_THREADS=1 python benchmarks/distributed_throughput.py --images 48 --photos 24 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

RATE = re.compile(r"([0-9.]+) images/s")


def make_crops(folder: Path, count: int) -> None:
    """``count`` 128² crops of procedural-looking noise with cameras (what ``invert`` reads)."""
    import torch

    from triplanenet.eg3d.camera import camera_label
    from triplanenet.io.cameras import write_dataset_json

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    names = [f"img{i:04d}.png" for i in range(count)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(folder / name)
    labels = camera_label(torch.linspace(-0.5, 0.5, count), torch.zeros(count))
    write_dataset_json(folder / "dataset.json", {name: labels[i] for i, name in enumerate(names)})


def make_photos(folder: Path, count: int) -> None:
    """``count`` 640×480 photos of one face at varied places and sizes (what ``preprocess`` reads)."""
    from skimage.data import astronaut

    rng = np.random.default_rng(0)
    face = Image.fromarray(astronaut())
    folder.mkdir(parents=True)
    for index in range(count):
        side = int(rng.integers(220, 360))
        canvas = Image.new("RGB", (640, 480), tuple(int(v) for v in rng.integers(40, 200, 3)))
        tile = face.resize((side, side), Image.Resampling.LANCZOS)
        if index % 2:
            tile = tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        canvas.paste(tile, (int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))))
        canvas.save(folder / f"photo{index:04d}.jpg", quality=92)


def run(processes: int, threads: int, args: list[str]) -> tuple[float, float]:
    """(images/s printed by the command, wall seconds of the whole command line)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "COLUMNS": "200"}
    if processes == 1:
        command = [sys.executable, "-m", "triplanenet.cli.main", *args]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        command = [*launcher, "-m", "triplanenet.cli.main", *args]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    match = RATE.findall(" ".join(result.stderr.split()))
    if result.returncode != 0 or not match:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return float(match[-1]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48, help="crops for invert")
    parser.add_argument("--photos", type=int, default=24, help="photos for preprocess")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4, help="invert --batch-size")
    parser.add_argument(
        "--configs", default="1x1,1x2,2x1", help="processes x threads per process, comma-separated (e.g. 1x2)"
    )
    parser.add_argument("--commands", default="invert,preprocess")
    options = parser.parse_args()
    configs = [tuple(int(v) for v in item.split("x")) for item in options.configs.split(",")]
    root = Path(tempfile.mkdtemp(prefix="tpn-dist-bench-"))
    try:
        crops, photos = root / "crops", root / "photos"
        commands = options.commands.split(",")
        if "invert" in commands:
            make_crops(crops, options.images)
        if "preprocess" in commands:
            make_photos(photos, options.photos)
        results: dict[tuple[str, int, int], list[tuple[float, float]]] = {}
        for repeat in range(options.repeats):
            for command in commands:
                for processes, threads in configs:
                    out = root / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    if command == "invert":
                        args = ["invert", str(crops), "--out", str(out), "--device", "cpu", "--views", "0"]
                        args += ["--batch-size", str(options.batch_size)]
                    else:
                        args = ["preprocess", str(photos), "--out", str(out)]
                    rate, wall = run(processes, threads, args)
                    results.setdefault((command, processes, threads), []).append((rate, wall))
                    print(
                        f"round {repeat + 1} {command} {processes} process(es) x {threads} thread(s): "
                        f"{rate:.2f} images/s (command line {wall:.1f} s)",
                        flush=True,
                    )
        count = {"invert": options.images, "preprocess": options.photos}
        print(f"\n| command | images | processes × threads | images/s (median of {options.repeats}) | wall s |")
        print("|---|---:|---|---:|---:|")
        for (command, processes, threads), values in results.items():
            rate = statistics.median(v[0] for v in values)
            wall = statistics.median(v[1] for v in values)
            print(f"| {command} | {count[command]} | {processes} × {threads} | {rate:.2f} | {wall:.1f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
