"""CLI side of the sharded commands (``invert``, ``preprocess``, ``eval``, ``conf-maps`` under ``torchrun``): the one
progress bar of rank 0, failure lines that name their rank, and the closing throughput line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.progress import Progress

from triplanenet.cli.common import console, progress
from triplanenet.distributed.progress import Failure, JobProgress
from triplanenet.distributed.world import World


def rank_tag(world: World, rank: int | None = None) -> str:
    """`` (rank k)`` in a job of several processes, else nothing."""
    return f" (rank {world.rank if rank is None else rank})" if world.distributed else ""


@contextlib.contextmanager
def job_progress(
    world: World, description: str, total: int, completed: int = 0, verb: str = "failed"
) -> Iterator[tuple[JobProgress, Progress | None]]:
    """A :class:`JobProgress` whose counts drive one rich bar (done/total, images/s) on rank 0, and that bar (None
    on the other ranks); each failure is printed once there as ``<verb> <input> (rank k): <message>`` (``<verb>
    (rank k) <message>`` for a failure reported without an input name)."""
    bar = progress(rate=True) if world.is_main else None
    with bar if bar is not None else contextlib.nullcontext():
        task = bar.add_task(description, total=total, completed=completed, rate=0.0) if bar is not None else None

        def on_update(done: int, rate: float) -> None:
            if bar is not None and task is not None:
                bar.update(task, completed=done, rate=rate)

        def on_failure(failure: Failure) -> None:
            tag = rank_tag(world, failure.rank)
            where = f" {failure.input}{tag}:" if failure.input else tag
            console.print(
                f"[red]{verb}[/]{where} {failure.message}",
                highlight=False,
                soft_wrap=True,
            )

        yield JobProgress(world, total, completed, on_update, on_failure), bar


def throughput(tracker: JobProgress, world: World) -> str:
    """``N image(s) in S s (R images/s[, P processes][, K resumed])`` for the closing line."""
    parts = [f"{tracker.rate:.2f} images/s"]
    if world.distributed:
        parts.append(f"{world.world_size} processes")
    if tracker.resumed:
        parts.append(f"{tracker.resumed} already complete (--resume)")
    return f"{tracker.processed} image(s) in {tracker.seconds:.1f} s ({', '.join(parts)})"
