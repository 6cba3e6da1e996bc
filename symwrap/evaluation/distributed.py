"""Distributed evaluation under ``torchrun``: shard the data, all-reduce the counts, rank 0 writes.

``torchrun --nproc_per_node=N -m symwrap eval ...`` (or ``--nnodes``/``--rdzv-endpoint`` for several
machines) sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; the process group uses NCCL on GPUs and gloo on CPUs.
Each rank evaluates the indices ``rank, rank + N, rank + 2N, ...`` (:class:`ShardSampler`, no padding, so no
image is counted twice) and the integer counts are summed exactly, so the numbers equal a single-process run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Sampler

__all__ = ["DistributedContext", "ShardSampler", "init_distributed"]


@dataclass
class DistributedContext:
    """This process's place in the run (``world_size == 1`` for a plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the ranks (returns it unchanged for a single process)."""
        if self.world_size == 1:
            return tensor
        backend = dist.get_backend()
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        reduced = tensor.to(device).clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced.to(tensor.device)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment (nothing to do without it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        owns = True
    return DistributedContext(rank, world_size, local_rank, owns)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of ``range(size)``, from batch ``start_batch`` on.

    Unlike ``torch.utils.data.DistributedSampler`` it never pads a shard with repeated indices, so the summed
    counts are exactly those of one process; ranks whose shard is shorter simply run out first.
    """

    def __init__(self, size: int, rank: int, world_size: int, *, start: int = 0) -> None:
        self.indices = list(range(rank, size, world_size))[start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def steps_per_rank(size: int, world_size: int, batch_size: int) -> int:
    """Batches of the longest shard: every rank takes part in this many checkpoints."""
    longest = -(-size // world_size)
    return -(-longest // batch_size)
