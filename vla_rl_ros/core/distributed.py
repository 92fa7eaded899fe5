"""Data-parallel training under ``torchrun`` (torch.distributed), for ``train-bc`` and ``train-rl``.

``torchrun --nproc-per-node N $(which vla-rl-ros) train-bc …`` runs the same command in N processes
(``WORLD_SIZE`` / ``RANK`` set by torchrun); :func:`init_distributed` joins them (gloo: training
here runs on the CPU). Every rank draws the same global minibatch from the same seeded generator
and works on its share (rows ``rank::world``); losses are divided by the *global* normaliser and
gradients summed across ranks, so a step equals the single-process step on the same global batch
(up to float summation order: ``tests/core/test_distributed.py``). Rank 0 alone validates, logs and
writes checkpoints; the others return ``None``. Without torchrun, :class:`Dist` is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items):
        """This rank's share of a global batch (every ``world``-th item from ``rank``)."""
        return items[self.rank::self.world]

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over the ranks (a no-op alone); differentiable use is not needed."""
        if self.world > 1:
            import torch.distributed as dist

            t = t.detach().clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def max(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum of ``t`` over the ranks (a no-op alone)."""
        if self.world > 1:
            import torch.distributed as dist

            t = t.detach().clone()
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def sum_grads(self, params) -> None:
        """Every gradient summed over the ranks, in one all-reduce of a flat buffer (one call per
        parameter tensor costs gloo a round trip each)."""
        if self.world > 1:
            import torch.distributed as dist
            from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

            grads = [p.grad for p in params if p.grad is not None]
            flat = _flatten_dense_tensors(grads)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for g, summed in zip(grads, _unflatten_dense_tensors(flat, grads)):
                g.copy_(summed)

    def broadcast_params(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere (every rank starts from the same weights)."""
        if self.world > 1:
            import torch.distributed as dist

            with torch.no_grad():
                for t in list(module.parameters()) + list(module.buffers()):
                    dist.broadcast(t.data, src=0)

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


def init_distributed() -> Dist:
    """Join the torchrun group when ``WORLD_SIZE`` > 1 (gloo), else the single-process no-op."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Dist(dist.get_rank(), dist.get_world_size())
