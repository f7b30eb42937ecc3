"""What the training loop and evaluation ask of the process group, as no-ops in one process.

The loop splits every global micro-batch between the ranks (`shard`), sums token counts and
losses (`all_sum`), agrees on a stop (`any_true`) and gathers RNG states and predictions to rank
0 (`gather`). Written as small functions over `torch.distributed` so the single-process path
stays the plain code it was, and every collective is called by every rank at the same place.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

#: how long a rank waits in a collective for the others (rank 0 alone saves a stage's state)
TIMEOUT_ENV = "HICL_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device_type: str) -> None:
    """Join the group torchrun describes in the environment: NCCL on CUDA, gloo on CPU."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend,
                            timeout=timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(items: list, of_rank: int | None = None) -> list:
    """This rank's contiguous slice of `items`, sizes differing by at most one (lower ranks larger)."""
    n, w = len(items), world()
    r = rank() if of_rank is None else of_rank
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return items[start:start + base + (1 if r < extra else 0)]


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over the ranks (float64, so token counts stay exact)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on one (a stop asked of rank 0 reaches all of them)."""
    if not active():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (JSON-able objects: RNG states, answers)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()
