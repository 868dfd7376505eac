"""One progress count for a job split over ranks: every rank reports after each round, rank 0 shows the sum.

A sharded command works in **rounds** (one item batch per round). After each round every rank calls
:meth:`JobProgress.report` with how many inputs it finished and which failed; rank 0 receives them all (one
``gather`` per round) and updates its bar and prints each failure once, naming the rank. Ranks with less work keep
calling :meth:`report` with zero until the last round (:meth:`JobProgress.rounds` agrees on the count up front), so
the collectives always pair up and nobody waits forever for a rank that has finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from triplanenet.distributed.world import World


@dataclass(frozen=True)
class Failure:
    """An input that failed on ``rank``, with a one-line ``message``."""

    rank: int
    input: str
    message: str


class JobProgress:
    """Done/total and images/s of the whole job, on rank 0.

    Args:
        world: the job's world.
        total: inputs of the whole job (resumed ones included).
        completed: inputs already complete before this run (``--resume``); not counted in the rate.
        on_update: rank 0 only: called with (completed, images per second) after each round.
        on_failure: rank 0 only: called once per failed input, in rank order within a round.
    """

    def __init__(
        self,
        world: World,
        total: int,
        completed: int = 0,
        on_update: Callable[[int, float], None] | None = None,
        on_failure: Callable[[Failure], None] | None = None,
    ) -> None:
        self.world = world
        self.total = total
        self.completed = completed
        self.resumed = completed
        self.failures: list[Failure] = []
        """Every failure reported so far (rank 0 only)."""
        self._on_update = on_update
        self._on_failure = on_failure
        self._started = time.perf_counter()

    def rounds(self, local_rounds: int) -> int:
        """The number of rounds every rank runs: the most any rank needs (a collective)."""
        return self.world.max_int(local_rounds)

    def report(self, done: int, failures: list[tuple[str, str]] | None = None) -> None:
        """End of a round on this rank: ``done`` inputs finished (failed ones included) and the ``(input, message)``
        of those that failed. A collective: every rank calls it once per round."""
        gathered = self.world.gather_to_main((int(done), list(failures or [])))
        if gathered is None:
            return
        for rank, (count, failed) in enumerate(gathered):
            self.completed += count
            for name, message in failed:
                failure = Failure(rank, name, message)
                self.failures.append(failure)
                if self._on_failure is not None:
                    self._on_failure(failure)
        if self._on_update is not None:
            self._on_update(self.completed, self.rate)

    @property
    def processed(self) -> int:
        """Inputs this run worked on (resumed ones left out)."""
        return self.completed - self.resumed

    @property
    def seconds(self) -> float:
        """Wall-clock seconds since the job started."""
        return time.perf_counter() - self._started

    @property
    def rate(self) -> float:
        """Inputs per second of this run (all ranks together)."""
        return self.processed / max(self.seconds, 1e-9)
