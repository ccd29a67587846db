"""Process-group helpers in the spirit of detectron2's `utils/comm.py`: every one is a no-op in one process.

`torchrun` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (also across nodes);
`init_distributed()` reads them, so the same entry point runs alone or under torchrun.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all ranks (no-op in one process)."""
    if is_distributed() and get_world_size() > 1:
        dist.barrier()


def init_distributed(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment; return whether there is one.

    `backend` defaults to NCCL when CUDA is available, else gloo. Without WORLD_SIZE > 1 nothing happens.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(get_local_rank())
    dist.init_process_group(backend=backend)
    return True


def destroy_distributed() -> None:
    if is_distributed():
        # Leave together: rank 0 hosts the rendezvous store, and a rank still tearing down its gloo threads
        # after rank 0 exited can abort ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks in place and return it (unchanged in one process)."""
    if is_distributed() and get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """A list with every rank's `obj`, indexed by rank (`[obj]` in one process)."""
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (`obj` itself in one process)."""
    if not is_distributed() or get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
