"""Completion records: which inputs of an output folder are finished, verifiably, for ``--resume``.

When a command has written every output of one input, it writes ``<out>/.triplanenet-done/<hash of the input
key>.json`` (atomically, last):

```json
{"format": "triplanenet-completion/1", "input": "/abs/path/photo.png", "input_sha256": "…",
 "fingerprint": {…the options the outputs depend on…},
 "files": {"photo/reconstruction.png": {"size": 12345, "sha256": "…"}, …},
 "data": {…what the command needs to rebuild its merged files without redoing the input…}}
```

``--resume`` trusts a record only when it parses, names the same input, the input file still has the recorded
sha256, the options fingerprint is the same, and every listed file exists with the recorded size and sha256. A
missing, stale or damaged record (or output) means the input is done again. A process killed before the record
was renamed into place leaves no record, so a half-finished input is never skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from triplanenet.distributed.shard import shard
from triplanenet.distributed.world import World
from triplanenet.io.atomic import remove_stale_temporaries, write_json_atomic
from triplanenet.io.hashing import file_sha256

RECORD_DIR = ".triplanenet-done"
"""Folder (inside the output folder) that holds the records; hidden, so dataset loaders and globs skip it."""
FORMAT = "triplanenet-completion/1"


def _normal(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, default=str))


class CompletionRecords:
    """The completion records of one output folder.

    Args:
        root: the output folder; recorded file names are relative to it.
        fingerprint: the options the outputs depend on (a record written under other options is not trusted).
    """

    def __init__(self, root: str | os.PathLike[str], fingerprint: dict[str, Any]) -> None:
        self.root = Path(root)
        self.folder = self.root / RECORD_DIR
        self.fingerprint = _normal(fingerprint)

    def path(self, key: str) -> Path:
        """The record file of input ``key``."""
        return self.folder / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}.json"

    def clean(self) -> None:
        """Remove temporary files that a killed run left among the records (call before the run writes)."""
        remove_stale_temporaries(self.folder)

    def write(
        self,
        key: str,
        files: Iterable[str | os.PathLike[str]],
        data: dict[str, Any] | None = None,
        input_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """Record input ``key`` as complete with its output ``files`` (inside the root) and ``data``.

        ``input_file``: the file behind the key, whose sha256 is recorded (a changed input is done again).
        """
        entries: dict[str, dict[str, Any]] = {}
        for file in sorted({Path(f) for f in files}):
            relative = Path(os.path.relpath(file, self.root)).as_posix()
            entries[relative] = {"size": file.stat().st_size, "sha256": file_sha256(file)}
        record = {
            "format": FORMAT,
            "input": key,
            "input_sha256": None if input_file is None else file_sha256(input_file),
            "fingerprint": self.fingerprint,
            "files": entries,
            "data": _normal(data or {}),
        }
        write_json_atomic(self.path(key), record, indent=1)

    def read(self, key: str, input_file: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
        """The ``data`` of input ``key``'s record when the record and every file it lists check out, else None."""
        try:
            record = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("input") != key:
            return None
        if record.get("fingerprint") != self.fingerprint:
            return None
        files = record.get("files")
        data = record.get("data")
        if not isinstance(files, dict) or not isinstance(data, dict):
            return None
        try:
            if input_file is not None and record.get("input_sha256") != file_sha256(input_file):
                return None
            for relative, entry in files.items():
                file = self.root / relative
                if not isinstance(entry, dict) or not file.is_file() or file.stat().st_size != entry.get("size"):
                    return None
                if file_sha256(file) != entry.get("sha256"):
                    return None
        except OSError:
            return None
        return data

    def remove(self, key: str) -> None:
        """Forget input ``key`` (its outputs are about to be rewritten)."""
        self.path(key).unlink(missing_ok=True)


def verify_completed(
    world: World, records: CompletionRecords, keys: list[str], files: list[Path | None] | None = None
) -> dict[int, dict[str, Any]]:
    """Which inputs are complete (position -> record data), checked in parallel: each rank verifies its strided
    shard, then all ranks exchange what they found (a collective), so every rank gets the same answer."""
    mine = {
        index: data
        for index, key in shard(keys, world.rank, world.world_size)
        if (data := records.read(key, None if files is None else files[index])) is not None
    }
    found: dict[int, dict[str, Any]] = {}
    for part in world.all_gather(mine):
        found.update(part)
    return dict(sorted(found.items()))
