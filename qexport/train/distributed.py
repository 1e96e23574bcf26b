"""torchrun support: the process group from torchrun's environment, sharding, reductions.

``qexport train`` under ``torchrun --nproc_per_node N`` wraps the model in PyTorch's
DistributedDataParallel (gloo on CPU, nccl when CUDA is there). Nothing here is a training
engine of its own: this module only reads torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK), opens and closes the process group, and sums a few metrics across ranks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True: we opened the process group, so we close it

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistContext":
        """Single process unless torchrun (or the caller) set WORLD_SIZE > 1."""
        if dist.is_available() and dist.is_initialized():
            world, rank = dist.get_world_size(), dist.get_rank()
            local = int(os.environ.get("LOCAL_RANK", rank))
            return cls(rank, world, local, _device(local, dist.get_backend() == "nccl"), owns_group=False)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        use_nccl = torch.cuda.is_available() and dist.is_nccl_available()
        device = _device(local, use_nccl)
        if use_nccl:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
        return cls(rank, dist.get_world_size(), local, device, owns_group=True)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    # ------------------------------------------------------------------ collectives
    def sum(self, *values: float) -> list[float]:
        """Element-wise sum of the values over ranks (float64), identity in one process."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().tolist()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather_bytes(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's uint8 tensor (of one length on every rank), e.g. RNG states."""
        if not self.enabled:
            return [t]
        src = t.to(self.device)
        out = [torch.empty_like(src) for _ in range(self.world)]
        dist.all_gather(out, src)
        return [o.cpu() for o in out]

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (an error message, a decision)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]


def _device(local_rank: int, cuda: bool) -> torch.device:
    return torch.device("cuda", local_rank) if cuda else torch.device("cpu")


def shard_order(order, rank: int, world: int, batch_size: int):
    """This rank's part of every global batch of ``order`` (a permutation, already cut to whole
    batches): the rank takes samples ``rank, rank + world, ...`` of each batch, so the ranks'
    batches together are exactly the single-process batch."""
    if world == 1:
        return order
    out = order.reshape(-1, batch_size)[:, rank::world]
    return out.reshape(-1)
