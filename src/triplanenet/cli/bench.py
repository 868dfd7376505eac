"""``triplanenet bench``: latency, throughput, memory and fast-mode accuracy, written as JSON + markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from triplanenet.cli.common import console, output_folder, parse_int_ranges, resolve_device, user_errors


@user_errors
def bench(
    preset: Annotated[
        str,
        typer.Option(
            help="Model: tiny (random, seconds) | default (bundled) | ffhq (random) | tiny-v2 | ffhq-v2 (v2 layouts)."
        ),
    ] = "tiny",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Comma-separated batch sizes.")] = "1,8,32",
    repeats: Annotated[int, typer.Option(help="Timed rounds (each round runs every mode once).")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed calls per mode first (the first is reported).")] = 1,
    modes: Annotated[
        str,
        typer.Option(
            help="Comma-separated fast modes, parts joined by '+': fp32 bf16 fp16 compile channels_last cuda_graphs "
            "(fp32 always runs as the reference)."
        ),
    ] = "fp32",
    workloads: Annotated[str, typer.Option(help="Comma-separated: encode,render,invert,train_step.")] = (
        "encode,render,invert,train_step"
    ),
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | auto")] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch.set_num_threads for the run.")] = None,
    depth_samples: Annotated[int | None, typer.Option(help="Override coarse = fine samples per ray.")] = None,
    points_per_chunk: Annotated[
        int | None, typer.Option(help="Renderer points per chunk (default: 2^18 on the CPU, 2^22 on CUDA).")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Benchmark this model instead of a preset (ours, official v1/v2 with --generator, trained)."),
    ] = None,
    generator: Annotated[Path | None, typer.Option(help="EG3D generator of an official --checkpoint.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for bench.json and bench.md.")] = Path(
        "outputs/bench"
    ),
) -> None:
    """Benchmark encode, render, full inversion and a training step (medians over interleaved rounds)."""
    output_folder(out)
    from triplanenet.bench import BenchConfig, run_benchmark

    config = BenchConfig(
        preset=preset,
        batch_sizes=tuple(parse_int_ranges(batch_sizes, "batch sizes", "1,8,32")),
        repeats=repeats,
        warmup=warmup,
        modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
        workloads=tuple(w.strip() for w in workloads.split(",") if w.strip()),
        device=str(resolve_device(device)),
        threads=threads,
        depth_samples=depth_samples,
        points_per_chunk=points_per_chunk,
        checkpoint=None if checkpoint is None else str(checkpoint),
        generator=None if generator is None else str(generator),
    )
    report = run_benchmark(config, log=lambda line: console.print(line, highlight=False))
    json_path, md_path = report.write(out)
    console.print(report.to_markdown(), highlight=False, soft_wrap=True)
    console.print(f"wrote [bold]{json_path}[/] and [bold]{md_path}[/]")
