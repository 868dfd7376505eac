"""CPU timings of the official-size models with random weights (batch 1, float32, deterministic rendering).

Usage: python benchmarks/bench_cpu.py [--threads N] [--repeats R] [--json out.json]
Prints median seconds over R runs after one warm-up, plus peak RSS. Compare ratios only within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import torch

from triplanenet.eg3d.camera import camera_label
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict[str, float] = {}
    c = camera_label(torch.tensor([0.0]), torch.tensor([0.0]))
    with torch.inference_mode():
        generator = TriPlaneGenerator(GeneratorConfig.ffhq512()).eval()
        ws = torch.randn(1, generator.num_ws, 512)
        results["eg3d_synthesis_512_s"] = _median_seconds(
            lambda: generator.synthesis(ws, c, deterministic=True), args.repeats
        )
        model = TriPlaneNet(TriPlaneNetConfig.official(generator.config), generator=generator).eval()
        x = torch.rand(1, 3, 256, 256) * 2 - 1
        results["psp_encoder_s"] = _median_seconds(lambda: model.psp_encoder(x), args.repeats)
        x6 = torch.rand(1, 6, 256, 256) * 2 - 1
        results["triplane_encoder_s"] = _median_seconds(lambda: model.triplanenet_encoder(x6), args.repeats)
        results["inversion_48x48_s"] = _median_seconds(lambda: model(x, c, deterministic=True), args.repeats)
        generator.set_rendering(depth_resolution=96, depth_resolution_importance=96)
        results["inversion_96x96_s"] = _median_seconds(lambda: model(x, c, deterministic=True), args.repeats)
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "cpu": platform.processor(),
    }
    for key, value in results.items():
        print(f"{key:28s} {value:8.3f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
