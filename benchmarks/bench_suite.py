"""Benchmark suite: encode / render / full inversion / training step, per fast mode, JSON + markdown.

Thin script over :mod:`triplanenet.bench` (same as ``triplanenet bench``). Examples::

    python benchmarks/bench_suite.py --preset tiny --repeats 1 --batch-sizes 1,2          # CI smoke test
    python benchmarks/bench_suite.py --preset ffhq --batch-sizes 1,8,32 --modes fp32,bf16,fp16,compile,cuda_graphs \\
        --device cuda --out outputs/bench_gpu
"""

from __future__ import annotations

import argparse

from triplanenet.bench import PRESETS, WORKLOADS, BenchConfig, run_benchmark
from triplanenet.perf import tune_cpu_allocator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="tiny")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--modes", default="fp32", help="comma-separated, parts joined by '+', e.g. fp32,bf16,compile")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--depth-samples", type=int, default=None)
    parser.add_argument("--out", default="outputs/bench")
    parser.add_argument("--stem", default="bench", help="file name stem of the .json and .md outputs")
    parser.add_argument("--default-allocator", action="store_true", help="skip perf.tune_cpu_allocator")
    args = parser.parse_args()
    if not args.default_allocator:
        tune_cpu_allocator()  # as the triplanenet command does
    config = BenchConfig(
        preset=args.preset,
        batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",") if b.strip()),
        repeats=args.repeats,
        warmup=args.warmup,
        modes=tuple(m for m in args.modes.split(",") if m.strip()),
        workloads=tuple(w for w in args.workloads.split(",") if w.strip()),
        device=args.device,
        threads=args.threads,
        depth_samples=args.depth_samples,
    )
    report = run_benchmark(config, log=print)
    json_path, md_path = report.write(args.out, stem=args.stem)
    print(report.to_markdown())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
