"""Who this process is in a ``torchrun`` job, the process group, and the collectives the sharded commands use.

``torchrun`` (``python -m torch.distributed.run``) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT`` for every worker it starts, on one machine or, with ``--nnodes`` and a rendezvous endpoint, on
several. Without them (or with ``WORLD_SIZE=1``) the process is a world of one and every collective below is a
local no-op, so a command runs the same code alone and under torchrun. The backend is ``nccl`` when the job runs
on CUDA GPUs (each rank on ``cuda:LOCAL_RANK``) and ``gloo`` on the CPU.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from triplanenet.errors import ConfigError

TIMEOUT_ENV = "TRIPLANENET_DIST_TIMEOUT_S"
"""Seconds a rank waits in a collective for the others (default 6 hours: a round of slow optimisation methods on
the CPU can take long, and a rank that failed outright is stopped by torchrun anyway)."""

_active: World | None = None
_joined = False


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    """``gloo`` or ``nccl`` once the process group is up; None for a world of one."""
    group: Any = field(default=None, compare=False, repr=False)
    """The gloo group the object collectives below use (with nccl a separate CPU group, so that counts and
    messages never go through the GPUs); None: the default group."""

    @property
    def distributed(self) -> bool:
        """Whether there are other processes to talk to."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the merged files, prints and draws the progress bar."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: ``cuda:LOCAL_RANK`` when the job runs on CUDA, else ``device`` unchanged."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    # Collectives: every rank must call the same ones in the same order.

    def all_gather(self, value: Any) -> list[Any]:
        """``value`` of every rank, in rank order (pickled; keep it small)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.group)
        return gathered

    def gather_to_main(self, value: Any) -> list[Any] | None:
        """``value`` of every rank on rank 0 (rank order); None on the other ranks."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0, group=self.group)
        return gathered

    def max_int(self, value: int) -> int:
        """The largest ``value`` over the ranks."""
        return max(self.all_gather(int(value)))

    def barrier(self) -> None:
        """Wait until every rank arrives here."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self.group)


def _env_int(env: Mapping[str, str], name: str, default: int | None) -> int:
    text = env.get(name)
    if text is None or text == "":
        if default is None:
            raise ConfigError(f"{name} is not set; launch with torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK")
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text[:40]!r} is not an integer; launch with torchrun") from None
    if value < 0:
        raise ConfigError(f"{name}={value} must not be negative")
    return value


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The world described by torchrun's environment variables (a world of one without them).

    Raises:
        ConfigError: a variable that is not a non-negative integer, ``WORLD_SIZE`` > 1 without ``RANK``, or a rank
            outside the world.
    """
    env = os.environ if env is None else env
    world_size = _env_int(env, "WORLD_SIZE", 1)
    if world_size <= 1:
        return World()
    rank = _env_int(env, "RANK", None)
    local_rank = _env_int(env, "LOCAL_RANK", rank)
    if rank >= world_size:
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    return World(rank=rank, world_size=world_size, local_rank=local_rank)


def _timeout() -> datetime.timedelta:
    text = os.environ.get(TIMEOUT_ENV, "21600")
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={text[:40]!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def process_group(device: torch.device | None = None) -> Iterator[World]:
    """Join the job's process group for the block (nothing to join for a world of one) and leave it afterwards.

    ``device``: where the command computes; a CUDA device selects ``nccl`` and this rank's GPU
    (``cuda:LOCAL_RANK``), anything else ``gloo``. A process group that is already up (a caller of the library did
    it) is used as it is and left up.
    """
    global _active, _joined
    world = world_from_env()
    if not world.distributed:
        yield world
        return
    import torch.distributed as dist

    use_cuda = device is not None and device.type == "cuda"
    backend = "nccl" if use_cuda else "gloo"
    owned = not dist.is_initialized()
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
    if owned:
        kwargs: dict[str, Any] = {}
        if use_cuda:
            kwargs["device_id"] = torch.device("cuda", world.local_rank)
        dist.init_process_group(
            backend=backend, rank=world.rank, world_size=world.world_size, timeout=_timeout(), **kwargs
        )
    else:
        backend = str(dist.get_backend())
    group = dist.new_group(backend="gloo") if backend == "nccl" else None
    world = World(world.rank, world.world_size, world.local_rank, backend, group)
    _active = world
    _joined = True
    try:
        yield world
    finally:
        _active = None
        if owned:
            dist.destroy_process_group()


def active_world() -> World | None:
    """The world of the process group entered with :func:`process_group`, while it is up (None otherwise)."""
    return _active


def joined_job() -> bool:
    """Whether this process has entered :func:`process_group` with other ranks (errors after that are its own)."""
    return _joined


def current_rank() -> tuple[int, int]:
    """(rank, world size) from the environment, without validating it (for messages; (0, 1) when unclear)."""
    try:
        world = world_from_env()
    except ConfigError:
        return 0, 1
    return world.rank, world.world_size
