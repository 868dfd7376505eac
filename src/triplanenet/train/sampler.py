"""Step-indexed, resumable batch sampling, with a batch size per training phase.

A :class:`BatchSchedule` lists the phases (first step, per-process batch size). Within a phase of global batch
``G`` (batch size × processes), an epoch is ``n // G`` steps over one permutation of the ``n`` items (the last
``n mod G`` items of the permutation are left out, as with ``drop_last``); a change of batch size starts a new epoch,
as the official code re-creates its data loader at each phase. Epochs are numbered across phases and epoch ``e`` uses
``randperm(n, seed + e)``, so the batch of step ``s`` is a pure function of (seed, schedule, s), computed in closed
form: resuming at any step continues the exact same data order with no sampler state to save. With one constant
batch size this is the plain ``epoch = s // steps_per_epoch`` order. With several processes, each global batch is
split evenly between ranks.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

from triplanenet.errors import ConfigError


@dataclass(frozen=True)
class BatchSchedule:
    """Per-process batch size by step: ``phases`` = ((first step, batch size), ...), the first phase at step 0.

    Build it with :meth:`from_changes`, which merges boundaries at the same step and phases of equal size.
    """

    phases: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        starts = [start for start, _ in self.phases]
        if not self.phases or starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)):
            raise ConfigError(f"batch phases must start at step 0 with increasing first steps, got {self.phases}")
        if any(size < 1 for _, size in self.phases):
            raise ConfigError(f"every phase needs a batch size >= 1, got {self.phases}")

    @classmethod
    def constant(cls, batch_size: int) -> BatchSchedule:
        return cls(((0, batch_size),))

    @classmethod
    def from_changes(cls, batch_size: int, changes: Sequence[tuple[int, int]]) -> BatchSchedule:
        """``batch_size`` from step 0, then each (step, size) in ``changes`` (ordered by step; at equal steps the
        later one wins)."""
        phases: list[tuple[int, int]] = [(0, batch_size)]
        for start, size in sorted(changes, key=lambda change: change[0]):
            if start == phases[-1][0]:
                phases[-1] = (start, size)
            else:
                phases.append((start, size))
        merged = [phases[0]]
        for start, size in phases[1:]:
            if size != merged[-1][1]:
                merged.append((start, size))
        return cls(tuple(merged))

    def phase_index(self, step: int) -> int:
        return bisect.bisect_right([start for start, _ in self.phases], step) - 1

    def at(self, step: int) -> int:
        """Per-process batch size of ``step``."""
        return self.phases[self.phase_index(step)][1]


class StepBatchSampler(Sampler[list[int]]):
    """Yields the index lists of steps ``start_step … max_steps - 1`` for one rank.

    Args:
        num_items: dataset size.
        batch_size: per-process batch size, constant or a :class:`BatchSchedule`.
        seed: base seed of the epoch permutations.
        start_step: first step to yield (resume point).
        max_steps: one past the last step.
        rank, world_size: this process and the number of processes (global batch = batch_size · world_size).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int | BatchSchedule,
        seed: int,
        start_step: int,
        max_steps: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_items = num_items
        self.schedule = batch_size if isinstance(batch_size, BatchSchedule) else BatchSchedule.constant(batch_size)
        self.seed = seed
        self.start_step = start_step
        self.max_steps = max_steps
        self.rank = rank
        self.world_size = world_size
        # Phases that start at or after max_steps never run: their batch size does not matter.
        largest = max(size for start, size in self.schedule.phases if start == 0 or start < max_steps) * world_size
        if num_items < largest:
            raise ValueError(f"the dataset has {num_items} items, fewer than one global batch ({largest})")
        self.steps_per_epoch = [num_items // (size * world_size) for _, size in self.schedule.phases]
        # Epochs used by the phases before each phase (a phase's last epoch may be partial).
        self.first_epoch = [0]
        phases = self.schedule.phases
        for index in range(len(phases) - 1):
            length = phases[index + 1][0] - phases[index][0]
            self.first_epoch.append(self.first_epoch[-1] + -(-length // self.steps_per_epoch[index]))

    def batch_position(self, step: int) -> tuple[int, int, int]:
        """(epoch, first position of the global batch in that epoch's permutation, per-process batch size)."""
        index = self.schedule.phase_index(step)
        start, size = self.schedule.phases[index]
        epoch, position = divmod(step - start, self.steps_per_epoch[index])
        return self.first_epoch[index] + epoch, position * size * self.world_size, size

    def __iter__(self) -> Iterator[list[int]]:
        cached_epoch, order = -1, torch.empty(0, dtype=torch.long)
        for step in range(self.start_step, self.max_steps):
            epoch, offset, size = self.batch_position(step)
            if epoch != cached_epoch:
                order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed + epoch))
                cached_epoch = epoch
            start = offset + self.rank * size
            yield order[start : start + size].tolist()

    def __len__(self) -> int:
        return max(self.max_steps - self.start_step, 0)
