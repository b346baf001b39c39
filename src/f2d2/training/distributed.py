"""Data-parallel training: one process per GPU (NCCL) or per CPU task (gloo), or just this process.

Set up from the standard ``torch.distributed`` environment variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), which torchrun exports and ``f2d2 submit --tasks-per-node N`` exports
through submitit. Every rank holds the same parameters (same seed, same warm start, then a broadcast
from rank 0 to be sure); each draws its own share of the global batch from its own generator, and the
gradients are averaged once per step, so an optimizer step sees the gradient of the global batch.
Gradients are reduced by hand (not through ``DistributedDataParallel``) because the objectives call
the network through ``velocity`` and ``torch.func.jvp``, which a DDP wrapper's hooks do not see.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Group:
    """This process's place in the job: ``rank`` of ``world`` processes (world = 1: no communication)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sync_step(
        self, params: Iterable[torch.nn.Parameter], terms: dict[str, torch.Tensor], flag: bool
    ) -> tuple[dict[str, float], bool]:
        """After ``backward``: average the gradients and the loss terms over the ranks, and OR ``flag``.

        One all-reduce of one flat buffer. Returns the averaged terms as floats and whether any rank
        raised the flag. Parameters without a gradient are left alone (the same on every rank).
        """
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        if self.world == 1:
            return dict(zip(terms, values.tolist())), flag
        grads = [p.grad for p in params if p.grad is not None]
        device = values.device if not grads else grads[0].device
        flag_t = torch.tensor([float(flag)], device=device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [values.to(device), flag_t])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        averaged = flat[offset : offset + len(values)].tolist()
        return dict(zip(terms, averaged)), bool(flat[-1] > 0)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on rank 0 (other ranks get an empty list)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out or []

    def broadcast_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Copy rank 0's values into ``tensors`` on every rank."""
        if self.world > 1:
            for t in tensors:
                dist.broadcast(t, src=0)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_from_env(device_type: str) -> Group:
    """Join the process group described by the environment (NCCL for CUDA, else gloo); a lone process
    (no WORLD_SIZE or WORLD_SIZE=1) gets ``Group()`` and nothing is initialised."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world)
    return Group(rank=rank, world=world, local_rank=local_rank)


def shutdown(group: Group) -> None:
    if group.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
