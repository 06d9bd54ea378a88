"""Data-parallel training under torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment).

Convention: the global batch is the spec's batch_size. Every rank draws the same seeded
permutation of the training set (the sampler of DistributedSampler, written here so that it
can resume mid-epoch and never pads); each global batch is split across ranks by stride,
rank r taking examples r, r + K, r + 2K, ... of it. Each rank weights its loss (Trainer.
_objective) so that DistributedDataParallel's gradient average equals the gradient of the
global batch's loss, batch mean or batch sum, even for a last batch that does not split evenly.
Only rank 0 writes checkpoints, metrics and plots."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from dslc.errors import DslcError


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, index: Any) -> Any:
        """This rank's part of a global batch of example indices."""
        return index[self.rank :: self.size]

    def sum(self, values: list[float], device: Any) -> list[float]:
        if not self.distributed:
            return values
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool, device: Any) -> bool:
        """True on every rank when any rank says so (signals reach ranks at different steps)."""
        return self.sum([float(flag)], device)[0] > 0

    def from_main(self, obj: Any) -> Any:
        """Rank 0's value of `obj`, on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init(device: str) -> World:
    """Join the process group torchrun set up; a single process needs nothing."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if device == "cuda" else "gloo"
    try:
        dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as err:
        raise DslcError(f"cannot join the torchrun process group ({backend}): {err}") from None
    return world


def wrap(model: Any, world: World, device: Any) -> Any:
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def close(world: World, wait: bool = True) -> None:
    """Leave the process group. `wait`: first wait until every process is done (rank 0 writes
    the last checkpoint and the ONNX file after the others finish): a process that tears its
    gloo connections down while a peer still uses them can abort at exit ("terminate called
    without an active exception", seen once in CI)."""
    if world.distributed:
        import torch.distributed as dist

        if wait:
            dist.barrier()
        dist.destroy_process_group()
