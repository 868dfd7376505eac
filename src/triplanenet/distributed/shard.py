"""The deterministic split of an ordered input list over ranks, and the merge of per-rank results back into order.

The split is **strided**: rank ``r`` of ``n`` takes the items at positions ``r, r + n, r + 2n, ...`` of the list
(the command's input list: folders expanded to their files in sorted order, as a single process reads them). Sorted
inputs of similar size then spread evenly, and every rank gets at most one item more than another. Results carry
their position, so :func:`unshard` restores the single-process order whatever the number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def shard(items: Sequence[T], rank: int, world_size: int) -> list[tuple[int, T]]:
    """The ``(position, item)`` pairs of ``items`` that ``rank`` of ``world_size`` processes works on (strided)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return [(index, items[index]) for index in range(rank, len(items), world_size)]


def shard_size(count: int, rank: int, world_size: int) -> int:
    """How many of ``count`` items :func:`shard` gives ``rank``."""
    return len(range(rank, count, world_size))


def unshard(parts: Iterable[Iterable[tuple[int, T]]]) -> list[T]:
    """Per-rank ``(position, result)`` lists merged into one list in position order.

    Raises:
        ValueError: two results claim the same position.
    """
    merged: dict[int, T] = {}
    for part in parts:
        for index, value in part:
            if index in merged:
                raise ValueError(f"two ranks returned a result for input {index}")
            merged[index] = value
    return [merged[index] for index in sorted(merged)]
