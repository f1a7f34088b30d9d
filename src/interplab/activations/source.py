"""The protocol between activation producers (store, on-the-fly harvesting, tensors in memory)
and consumers (the dictionary trainer, evaluation).

A source yields batches as ``{site string: Tensor[batch, d]}`` (all sites of one batch come
from the same tokens). ``batches(batch_size, seed, start_batch)`` is deterministic in
``seed``, and ``start_batch`` skips ahead to exactly the batch a resumed run stops at — that is
how training resumes bit-exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from interplab.core.errors import InputError


@runtime_checkable
class BatchSource(Protocol):
    @property
    def sites(self) -> list[str]: ...

    def width(self, site: str) -> int: ...

    def batches(self, batch_size: int, seed: int = 0, start_batch: int = 0) -> Iterator[dict[str, Tensor]]: ...


class TensorSource:
    """Activations already in memory: ``{site: Tensor[n_tokens, d]}``, shuffled per epoch by seed.

    Batches run over epochs forever (the trainer decides how many steps); each epoch is a fresh
    permutation drawn from ``(seed, epoch)``; the last partial batch of an epoch is dropped.
    """

    def __init__(self, tensors: dict[str, Tensor], shuffle: bool = True) -> None:
        if not tensors:
            raise InputError("TensorSource needs at least one site's activations.")
        lengths = {s: t.shape[0] for s, t in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise InputError(f"All sites must hold the same number of tokens, got {lengths}.")
        self.tensors = tensors
        self.shuffle = shuffle
        self.n_tokens = next(iter(lengths.values()))

    @property
    def sites(self) -> list[str]:
        return list(self.tensors)

    def width(self, site: str) -> int:
        return self.tensors[site].shape[-1]

    def batches(self, batch_size: int, seed: int = 0, start_batch: int = 0) -> Iterator[dict[str, Tensor]]:
        per_epoch = self.n_tokens // batch_size
        if per_epoch == 0:
            raise InputError(f"batch_size {batch_size} exceeds the {self.n_tokens} tokens available.")
        index = start_batch
        while True:
            epoch, i = divmod(index, per_epoch)
            if self.shuffle:
                order = torch.randperm(self.n_tokens, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            else:
                order = torch.arange(self.n_tokens)
            rows = order[i * batch_size:(i + 1) * batch_size]
            yield {s: t[rows] for s, t in self.tensors.items()}
            index += 1
