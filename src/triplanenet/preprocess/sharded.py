"""``preprocess`` split over ranks (``torchrun``) and resumable: the same dataset folder as one process makes.

Each rank runs :func:`~triplanenet.preprocess.batch.preprocess_photos` on one photo at a time into a private part
folder (``OUT/.triplanenet-parts/<hash of the photo path>/``: crops, labels, sources, report). After each round
(one batch of photos per rank) rank 0 moves the round's parts into ``OUT`` in input order with the naming rules of
a single run (:func:`~triplanenet.preprocess.batch._crop_name`: ``<stem>_2.png`` for a name held by another photo,
the same photo replaces its own crop) and the same consistent commit (crops, ``dataset.json`` and ``sources.json``
together, Ctrl-C held back). The strided split makes every round a contiguous block of the input list, so commits
happen in the single-process order and ``dataset.json``, ``sources.json`` and the crops come out byte-identical
(``preprocess_report.json`` differs only in its timings).

Each committed photo gets a completion record (:mod:`triplanenet.distributed.records`): its crops with sizes and
sha256, its report entry and labels. ``--resume`` skips the photos whose record, crops and labels check out.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from triplanenet.distributed.progress import JobProgress
from triplanenet.distributed.records import CompletionRecords, verify_completed
from triplanenet.distributed.shard import shard
from triplanenet.distributed.world import World
from triplanenet.io.atomic import remove_stale_temporaries, write_json_atomic
from triplanenet.io.cameras import read_dataset_json, write_dataset_json
from triplanenet.preprocess.batch import (
    SOURCES_FILE,
    PhotoOutcome,
    PreprocessReport,
    _commit_crops,
    _crop_name,
    _existing_labels,
    _existing_sources,
    preprocess_photos,
)

PARTS_DIR = ".triplanenet-parts"
"""Folder (inside OUT) of the per-photo part folders that wait for rank 0 to commit them."""


def _key(path: Path) -> str:
    return str(path.resolve())


def _part(out: Path, path: Path) -> Path:
    return out / PARTS_DIR / hashlib.sha256(_key(path).encode("utf-8")).hexdigest()[:32]


def _outcome(data: dict[str, Any]) -> PhotoOutcome:
    fields = ("path", "status", "message", "outputs", "faces", "seconds")
    return PhotoOutcome(**{name: data[name] for name in fields if name in data})


def _commit_part(
    out: Path,
    part: Path,
    outcome: PhotoOutcome,
    labels: dict[str, Any],
    sources: dict[str, dict[str, Any]],
    overwrite: bool,
) -> PhotoOutcome:
    """Move one photo's crops from its part folder into ``out`` as a single run would have named them."""
    if not outcome.ok:
        return outcome
    part_labels = read_dataset_json(part / "dataset.json")
    part_sources = json.loads((part / SOURCES_FILE).read_text(encoding="utf-8"))["crops"]
    staged: list[tuple[str, Path, Any, dict[str, Any]]] = []
    notes = [outcome.message] if outcome.message else []
    for name in outcome.outputs:
        reserved = {entry[0] for entry in staged}
        final, note = _crop_name(Path(name).stem, part_sources[name], out, labels, sources, overwrite, reserved)
        notes += [note] if note else []
        staged.append((final, part / name, part_labels[name], part_sources[name]))
    _commit_crops(out, staged, labels, sources)
    return PhotoOutcome(
        outcome.path, outcome.status, "; ".join(notes), [entry[0] for entry in staged], outcome.faces, outcome.seconds
    )


def preprocess_sharded(
    world: World,
    paths: Sequence[Path],
    out: Path,
    options: dict[str, Any],
    *,
    overwrite: bool = False,
    resume: bool = False,
    model: Any = None,
    progress: Callable[[int], JobProgress],
    on_commit: Callable[[PhotoOutcome], None] | None = None,
) -> tuple[PreprocessReport | None, JobProgress]:
    """Preprocess ``paths`` into ``out`` over the ranks of ``world`` (see the module docstring).

    Args:
        options: keyword options of :func:`~triplanenet.preprocess.batch.preprocess_photos` (``all_faces``,
            ``camera``, ``pad_mode``, ``min_face_px``, ``max_detect_side``, ``cameras``, ``deep3d_dir``).
        progress: given the number of photos already complete, the job's progress counter.
        on_commit: rank 0: called for each photo as it is committed (notes about renamed crops).

    Returns:
        The report of the whole job on rank 0 (None on the other ranks), and the progress counter.
    """
    fingerprint = {"command": "preprocess", **{k: None if v is None else str(v) for k, v in options.items()}}
    records = CompletionRecords(out, fingerprint)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)  # crops and labels a killed run was still writing
        shutil.rmtree(out / PARTS_DIR, ignore_errors=True)  # parts of a killed run: their photos are redone
        records.clean()
    world.barrier()
    keys = [_key(Path(p)) for p in paths]
    finished: dict[int, dict[str, Any]] = {}
    if resume:
        present = _existing_labels(out / "dataset.json")
        finished = {
            index: data
            for index, data in verify_completed(world, records, keys, [Path(p) for p in paths]).items()
            if all(name in present for name in data.get("outcome", {}).get("outputs", []))
        }
    todo = [index for index in range(len(paths)) if index not in finished]
    mine = [index for _, index in shard(todo, world.rank, world.world_size)]
    labels = _existing_labels(out / "dataset.json") if world.is_main else {}
    sources = _existing_sources(out, labels) if world.is_main else {}
    outcomes: dict[int, PhotoOutcome] = {index: _outcome(data["outcome"]) for index, data in finished.items()}
    tracker = progress(len(finished))
    batch = 4  # photos per rank and round: a round ends with one gather and rank 0's commits
    for round_index in range(tracker.rounds(-(-len(mine) // batch))):
        chunk = mine[round_index * batch : (round_index + 1) * batch]
        done: list[tuple[int, dict[str, Any]]] = []
        failures: list[tuple[str, str]] = []
        for index in chunk:
            path = Path(paths[index])
            records.remove(keys[index])
            part = _part(out, path)
            shutil.rmtree(part, ignore_errors=True)
            outcome = preprocess_photos([path], part, model=model, **options).outcomes[0]
            if not outcome.ok:
                failures.append((path.name, f"{outcome.status}: {outcome.message}"))
            done.append((index, asdict(outcome)))
        tracker.report(len(chunk), failures)
        gathered = world.gather_to_main(done)
        if gathered is None:
            continue
        for index, data in sorted(item for part in gathered for item in part):
            path = Path(paths[index])
            part = _part(out, path)
            outcome = _commit_part(out, part, _outcome(data), labels, sources, overwrite)
            shutil.rmtree(part, ignore_errors=True)
            outcomes[index] = outcome
            if outcome.ok:
                record = {"outcome": asdict(outcome), "labels": {n: labels[n].tolist() for n in outcome.outputs}}
                records.write(keys[index], [out / name for name in outcome.outputs], record, input_file=path)
            if on_commit is not None:
                on_commit(outcome)
    if not world.is_main:
        return None, tracker
    shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
    if labels:
        write_dataset_json(out / "dataset.json", sorted(labels.items()))
    report = PreprocessReport(out, [outcomes[i] for i in sorted(outcomes)], labels, tracker.seconds)
    write_json_atomic(out / "preprocess_report.json", report.to_json())
    return report, tracker
