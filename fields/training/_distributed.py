"""Data-parallel training over `torch.distributed`: each rank renders its share of a step's
views, gradients are summed across ranks, densification is decided by rank 0 and broadcast.

`DistContext.from_env()` joins the process group `torchrun` describes (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT): gloo for CPU tensors, NCCL for CUDA ones. A single process gets the
trivial context, whose collectives do nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from ._params import NAMES, GaussianParams


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> DistContext:
        """The context torchrun set up, or a single process when WORLD_SIZE is absent or 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(0, 1, device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
        rank = dist.get_rank()
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", rank))
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        return cls(rank, dist.get_world_size(), device)

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------------ collectives
    def sum_(self, t: Tensor) -> Tensor:
        """In-place sum over ranks (returns t)."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def sum_grads(self, params: GaussianParams) -> None:
        """Sum every parameter's gradient over ranks, in one flat buffer."""
        if not self.active:
            return
        grads = [
            params[k].grad if params[k].grad is not None else torch.zeros_like(params[k])
            for k in NAMES
        ]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for k, g in zip(NAMES, grads, strict=True):
            n = g.numel()
            params[k].grad = flat[offset : offset + n].view_as(g).clone()
            offset += n

    def broadcast_float(self, x: float) -> float:
        """Rank 0's value of x on every rank (time-driven schedules must agree)."""
        if not self.active:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self._comm_device)
        dist.broadcast(t, 0)
        return float(t)

    def broadcast_params(self, params: GaussianParams) -> None:
        """Make every rank's Gaussians and Adam moments rank 0's (after rank 0 densified)."""
        if not self.active:
            return
        n = torch.tensor([len(params)], dtype=torch.int64, device=self._comm_device)
        dist.broadcast(n, 0)
        count = int(n)

        def fetch(t: Tensor) -> Tensor:
            shape = (count, *t.shape[1:])
            out = t.detach().contiguous() if t.shape == shape else t.new_empty(shape)
            dist.broadcast(out, 0)
            return out

        params.update(lambda name, p: fetch(p), lambda name, v: fetch(v))

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")
