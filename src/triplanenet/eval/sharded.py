"""``eval`` split over ranks (``torchrun``) and resumable: the images of the evaluation set are sharded.

Each rank evaluates its images one at a time with :func:`~triplanenet.eval.protocol.evaluate` (every method on one
image; the per-method seed is set for each image, so an image's result does not depend on which others share its
rank) and stores the result as ``OUT/.triplanenet-eval/<hash of the image name>.safetensors`` (reconstructions and
novel views of every method, the novel-view ground truth) with a completion record holding the metric rows.
Rank 0 then reads every image's result in the set's order and writes the one report, so the tables do not depend
on the number of ranks (up to float rounding; ``s/image`` is a timing). ``--resume`` skips the images whose record
and tensors check out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from triplanenet.distributed.progress import JobProgress
from triplanenet.distributed.records import CompletionRecords, verify_completed
from triplanenet.distributed.shard import shard
from triplanenet.distributed.world import World
from triplanenet.errors import TriplaneNetError
from triplanenet.eval.protocol import EvalOptions, EvalResult, EvalSet, IdentityMetric, MethodResult, evaluate
from triplanenet.io.atomic import atomic_path

ITEMS_DIR = ".triplanenet-eval"
"""Folder (inside OUT) of the per-image result tensors."""


def _tensor_file(out: Path, name: str) -> Path:
    return out / ITEMS_DIR / f"{hashlib.sha256(name.encode('utf-8')).hexdigest()[:32]}.safetensors"


def _save(path: Path, result: EvalResult) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for index, method in enumerate(result.methods):
        tensors[f"{index}.reconstruction"] = method.reconstructions[0].contiguous()
        tensors[f"{index}.novel"] = method.novel[0].contiguous()
    if result.novel_truth is not None:
        tensors["novel_truth"] = result.novel_truth[0].contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def evaluate_sharded(
    world: World,
    model: Any,
    methods: Sequence[str],
    data: EvalSet,
    options: EvalOptions,
    identity: IdentityMetric | None,
    lpips: torch.nn.Module | None,
    out: Path,
    fingerprint: dict[str, Any],
    *,
    resume: bool = False,
    progress: Callable[[int], JobProgress],
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[EvalResult | None, JobProgress]:
    """Evaluate ``data`` over the ranks of ``world``; the merged result on rank 0 (None elsewhere), and the progress
    counter. Images whose evaluation fails with a :class:`~triplanenet.errors.TriplaneNetError` are reported and
    left out of the tables."""
    from safetensors.torch import load_file

    records = CompletionRecords(out, {"command": "eval", **fingerprint})
    if world.is_main:
        (out / ITEMS_DIR).mkdir(parents=True, exist_ok=True)
        records.clean()
    world.barrier()
    names = [item.name for item in data.items]
    finished = verify_completed(world, records, names) if resume else {}
    todo = [index for index in range(len(names)) if index not in finished]
    mine = [index for _, index in shard(todo, world.rank, world.world_size)]
    tracker = progress(len(finished))
    for index in [*mine, *([None] * (tracker.rounds(len(mine)) - len(mine)))]:
        failures: list[tuple[str, str]] = []
        if index is not None:
            item = data.items[index]
            records.remove(item.name)
            try:
                result = evaluate(model, methods, EvalSet(data.source, [item]), options, identity, lpips, log=log)
                path = _tensor_file(out, item.name)
                _save(path, result)
                rows = {m.method: m.rows[0] for m in result.methods}
                records.write(item.name, [path], {"rows": rows, "truth": result.novel_truth is not None})
            except TriplaneNetError as exc:
                failures.append((item.name, str(exc)))
        tracker.report(0 if index is None else 1, failures)
    world.barrier()  # every image's files are written
    if not world.is_main:
        return None, tracker
    kept, rows, tensors = [], [], []
    for item in data.items:
        record = records.read(item.name)
        if record is None:
            continue
        kept.append(item)
        rows.append(record["rows"])
        tensors.append(load_file(str(_tensor_file(out, item.name))))
    merged = [
        MethodResult(
            method,
            [row[method] for row in rows],
            torch.stack([t[f"{k}.reconstruction"] for t in tensors]) if tensors else torch.empty(0),
            torch.stack([t[f"{k}.novel"] for t in tensors]) if tensors else torch.empty(0),
        )
        for k, method in enumerate(methods)
    ]
    truth = torch.stack([t["novel_truth"] for t in tensors]) if tensors and "novel_truth" in tensors[0] else None
    result = EvalResult(
        data=EvalSet(data.source, kept),
        methods=merged,
        identity_network=identity.name if identity is not None else "none (no identity network available)",
        options=options,
        seconds=tracker.seconds,
        novel_truth=truth,
    )
    return result, tracker
