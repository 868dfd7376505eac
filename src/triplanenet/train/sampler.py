"""Step-indexed, resumable batch sampling.

The batch of step ``s`` is a pure function of (seed, s): epoch ``e = s // steps_per_epoch`` uses the permutation
``randperm(n, seed + e)``. Resuming at any step therefore continues the exact same data order, with no sampler state
to save. With several processes, each global batch is split evenly between ranks.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Yields the index lists of steps ``start_step … max_steps - 1`` for one rank.

    Args:
        num_items: dataset size.
        batch_size: per-process batch size.
        seed: base seed of the epoch permutations.
        start_step: first step to yield (resume point).
        max_steps: one past the last step.
        rank, world_size: this process and the number of processes (global batch = batch_size · world_size).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        start_step: int,
        max_steps: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.max_steps = max_steps
        self.rank = rank
        self.world_size = world_size
        self.global_batch = batch_size * world_size
        if num_items < self.global_batch:
            raise ValueError(f"the dataset has {num_items} items, fewer than one global batch ({self.global_batch})")
        self.steps_per_epoch = num_items // self.global_batch

    def __iter__(self) -> Iterator[list[int]]:
        cached_epoch, order = -1, torch.empty(0, dtype=torch.long)
        for step in range(self.start_step, self.max_steps):
            epoch, position = divmod(step, self.steps_per_epoch)
            if epoch != cached_epoch:
                order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed + epoch))
                cached_epoch = epoch
            start = position * self.global_batch + self.rank * self.batch_size
            yield order[start : start + self.batch_size].tolist()

    def __len__(self) -> int:
        return max(self.max_steps - self.start_step, 0)
