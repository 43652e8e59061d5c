"""Data-parallel setup for the trainers: torchrun / Ray Train / single process, same code.

`init_distributed()` joins the process group that torchrun describes in the environment
(WORLD_SIZE > 1: NCCL on CUDA, gloo on CPU) or uses the one already set up (Ray Train's
TorchTrainer does that before the training function runs); otherwise it is a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> cuda:<local_rank> when CUDA is there, else cpu; anything else as given."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join (or reuse) the default process group when there is more than one process."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev)
    return DistInfo(0, 1, 0, dev)


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (a one-element list when alone)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True on every rank when `flag` is True on some rank (e.g. a time budget ran out)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def sum_across(info: DistInfo, values: list[float]) -> list[float]:
    """Element-wise sum of `values` over ranks."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.tolist()
