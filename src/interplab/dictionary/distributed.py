"""Data-parallel and sharded training over ``torch.distributed`` (see docs/distributed.md).

Two modes, picked by ``TrainConfig.parallel`` when a process group exists (launched by
torchrun, or ``dist.is_initialized()`` already):

* ``ddp``: every rank holds every dictionary; rank r takes rows ``r::world`` of each global
  batch (so the ranks' rows together are exactly the single-process batch), and the gradients
  are averaged. Each dictionary's loss is a mean over its rows, so with equal rows per rank the
  average of the ranks' gradients is the gradient of the global mean.
* ``sharded``: dictionary i lives on rank ``i % world`` and sees the full batches; nothing is
  synchronised during training (many dictionaries, no communication).

Why an explicit all-reduce rather than ``nn.parallel.DistributedDataParallel``: the trainer
calls ``Dictionary.training_step``, not ``forward``, and DDP's reducer is armed only by its own
``forward``; several parameters get no gradient on some steps (AuxK only runs when latents are
dead, skip paths, thresholds), which DDP handles only with ``find_unused_parameters`` and its
extra graph walk. One flat all-reduce per dictionary per step after ``backward`` is simpler,
exact, and costs one extra copy of the gradients; DDP's overlap of communication with backward
buys little for a two-matmul model.

Buffers must stay identical on every rank, or the ranks' dictionaries drift apart: the firing
counter ``tokens_since_fired`` is made exactly what a single process would hold (a latent fired
if it fired on any rank; counters advance by the global batch), and any other floating buffer
that training changes (e.g. a BatchTopK threshold estimate) is averaged over ranks, which is
the mean of the per-rank estimates rather than the global-batch one. ``in_scale``/``out_scale``
are fixed before training and broadcast once with the weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from interplab.core.errors import ConfigError
from interplab.dictionary.base import Dictionary

log = logging.getLogger(__name__)

FIXED_BUFFERS = frozenset({"in_scale", "out_scale"})


@dataclass
class Parallel:
    """This process's place in the job: rank, world size, mode and device."""

    rank: int = 0
    world: int = 1
    mode: str = "ddp"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    created_group: bool = False

    @classmethod
    def setup(cls, mode: str, device: str = "auto") -> Parallel:
        """Join (or, under torchrun, create) the process group; a single process otherwise."""
        want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        created = False
        if not (dist.is_available() and dist.is_initialized()) and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dist.init_process_group(backend="nccl" if want_cuda else "gloo")
            created = True
        active = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if active else (0, 1)
        if want_cuda:
            local = int(os.environ.get("LOCAL_RANK", rank if active else 0))
            dev = torch.device(device if device.startswith("cuda:") else f"cuda:{local}")
            torch.cuda.set_device(dev)
        else:
            dev = torch.device("cpu")
        return cls(rank=rank, world=world, mode=mode, device=dev, created_group=created)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:
        return self.active and self.mode == "ddp"

    def owns(self, i: int) -> bool:
        """Whether this rank trains dictionary ``i``."""
        return not self.active or self.mode == "ddp" or i % self.world == self.rank

    def owner(self, i: int) -> int:
        return 0 if not self.active or self.mode == "ddp" else i % self.world

    def check_batch(self, batch_size: int) -> None:
        if self.ddp and batch_size % self.world:
            raise ConfigError(
                f"batch_size {batch_size} is not divisible by the {self.world} ranks; DDP needs equal rows "
                f"per rank so averaged gradients equal the global-batch gradient. Use a multiple of {self.world}."
            )

    def rows(self, t: Tensor) -> Tensor:
        """This rank's rows of a global batch (all of them outside DDP)."""
        return t[self.rank::self.world] if self.ddp else t

    # -- synchronisation (no-ops outside DDP) --------------------------------------------------
    @torch.no_grad()
    def broadcast_dictionary(self, d: Dictionary) -> None:
        if self.ddp:
            for t in list(d.parameters()) + list(d.buffers()):
                dist.broadcast(t.data, src=0)

    @torch.no_grad()
    def average_grads(self, d: Dictionary) -> None:
        if not self.ddp:
            return
        params = [p for p in d.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:  # no gradient this step on this rank: contributes zeros
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p))

    @torch.no_grad()
    def sync_buffers(self, d: Dictionary, local_rows: int, global_rows: int) -> None:
        """After ``update_firing`` on local rows: make the buffers what one process would hold."""
        if not self.ddp:
            return
        for name, buf in d.named_buffers():
            if name.rsplit(".", 1)[-1] in FIXED_BUFFERS:
                continue
            if name == "tokens_since_fired":
                # Each rank holds 0 (fired here) or old + local_rows; the min is 0 iff any rank fired.
                dist.all_reduce(buf, op=dist.ReduceOp.MIN)
                buf[buf != 0] += global_rows - local_rows
            elif buf.is_floating_point():
                dist.all_reduce(buf)
                buf /= self.world
            else:
                dist.broadcast(buf, src=0)

    def mean_metrics(self, values: dict[str, float]) -> dict[str, float]:
        """Average logged scalars over ranks (DDP; called only on logging steps)."""
        if not self.ddp or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, (t / self.world).tolist()))

    def min_over_ranks(self, t: Tensor) -> Tensor:
        """Elementwise minimum of ``t`` over all ranks, in place (``t`` itself in one process)."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t

    def gather(self, obj) -> list | None:
        """Every rank's ``obj`` on rank 0 (None elsewhere); ``[obj]`` in a single process."""
        if not self.active:
            return [obj]
        out = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.created_group:
            dist.destroy_process_group()
