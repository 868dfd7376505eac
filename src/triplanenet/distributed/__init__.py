"""Dataset-scale work over several processes and machines (``torchrun``): who this process is, how a list of inputs
is split between processes, one progress count for the whole job, and completion records for ``--resume``.

* :mod:`.world`: the rank and world size from torchrun's environment, the process group and the few collectives the
  commands need (gather to rank 0, all-gather, max).
* :mod:`.shard`: the deterministic split of an ordered input list and the merge back into that order.
* :mod:`.progress`: per-round counts and failures of every rank, gathered for one progress bar on rank 0.
* :mod:`.records`: per-input completion records (files with sizes and sha256) that ``--resume`` re-checks.

Nothing here imports the rest of the package except :mod:`triplanenet.errors` and :mod:`triplanenet.io.atomic` /
:mod:`triplanenet.io.hashing`; the commands in :mod:`triplanenet.cli` use it.
"""

from __future__ import annotations

from triplanenet.distributed.progress import JobProgress
from triplanenet.distributed.records import CompletionRecords
from triplanenet.distributed.shard import shard, unshard
from triplanenet.distributed.world import World, process_group, world_from_env

__all__ = ["CompletionRecords", "JobProgress", "World", "process_group", "shard", "unshard", "world_from_env"]
