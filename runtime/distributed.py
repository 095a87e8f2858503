"""Many devices: the process group that ``torchrun`` describes, and the few collectives training needs.

``torchrun --nproc-per-node K -m augflow_dsl train SPEC`` sets RANK, LOCAL_RANK, WORLD_SIZE and the
rendezvous address; :func:`setup` joins the group with NCCL on CUDA and gloo on CPU (as the torch
docs advise) and pins each process to its local GPU. A plain ``augflow-dsl train`` is world size 1
and never touches ``torch.distributed``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device: str = "cpu") -> World:
    """Join the process group torchrun describes (world size 1 when not under torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is available on this machine")
        dev = torch.device("cuda", local if size > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return World(rank, local, size, dev)


def teardown(world: World, synchronize: bool = False) -> None:
    """Leave the process group. ``synchronize`` (a rank that finished cleanly) first waits for
    the other ranks, so that no rank tears its connections down while a peer still uses them
    (a gloo rank that exited early was seen to abort its peer, "terminate called without an
    active exception"); gloo's monitored barrier gives up after 5 minutes instead of hanging
    when a peer died."""
    if not (world.distributed and dist.is_initialized()):
        return
    if synchronize:
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(minutes=5))
            else:
                dist.barrier()
        except RuntimeError:  # a peer is gone: nothing left to wait for
            pass
    dist.destroy_process_group()


def broadcast_state(module: torch.nn.Module, world: World) -> None:
    """Every parameter and buffer from rank 0 to all ranks (after rank 0's data-dependent init)."""
    if not world.distributed:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def all_mean(t: torch.Tensor, world: World) -> torch.Tensor:
    """The mean over ranks of a tensor (metrics); identity at world size 1."""
    if not world.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world.size


def any_rank(flag: bool, world: World) -> bool:
    """True when ``flag`` is true on any rank (a signal seen by one rank stops all of them)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_float(value: float | None, world: World) -> float | None:
    """Rank 0's ``value`` on every rank (the other ranks pass None)."""
    if not world.distributed:
        return value
    t = torch.tensor([float("nan") if value is None else value], dtype=torch.float64, device=world.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def gather_objects(obj, world: World) -> list:
    """Every rank's ``obj`` (e.g. RNG states), on every rank."""
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


__all__ = ["World", "all_mean", "any_rank", "barrier", "broadcast_float", "broadcast_state", "gather_objects", "setup", "teardown"]
