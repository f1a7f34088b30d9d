"""A mixing buffer: turns a stream of activations in corpus order into shuffled batches.

Consecutive rows of a harvest are the positions of one context, strongly correlated; a
dictionary trained on them in order sees one document at a time. The buffer (as in SAELens'
``ActivationsStore`` and sparsify) fills up to ``buffer_tokens`` rows, permutes them, hands out
the first half as batches, keeps the rest, and refills. Deterministic in its generator.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from interplab.core.errors import InputError


def mix(stream: Iterable[dict[str, Tensor]], buffer_tokens: int, batch_size: int,
        generator: torch.Generator) -> Iterator[dict[str, Tensor]]:
    """Shuffled batches ``{site: [batch_size, d]}`` from chunks ``{site: [n, d]}`` of a stream.

    When the stream ends, what is left in the buffer is shuffled and handed out too (the last
    partial batch is dropped).
    """
    if batch_size < 1 or buffer_tokens < 2 * batch_size:
        raise InputError(
            f"The shuffle buffer ({buffer_tokens} rows) must hold at least two batches of "
            f"{batch_size} rows, and batch_size must be >= 1."
        )
    it = iter(stream)
    buffer: dict[str, Tensor] | None = None
    ended = False
    while True:
        pieces = [] if buffer is None else [buffer]
        size = 0 if buffer is None else _rows(buffer)
        while size < buffer_tokens and not ended:
            chunk = next(it, None)
            if chunk is None:
                ended = True
                break
            pieces.append(chunk)
            size += _rows(chunk)
        if not pieces or size < batch_size:
            return
        buffer = {s: torch.cat([p[s] for p in pieces]) for s in pieces[0]}
        perm = torch.randperm(size, generator=generator)
        buffer = {s: t[perm] for s, t in buffer.items()}
        n_out = size if ended else max(size // 2 // batch_size, 1) * batch_size
        n_out -= n_out % batch_size
        for b in range(0, n_out, batch_size):
            yield {s: t[b:b + batch_size] for s, t in buffer.items()}
        buffer = {s: t[n_out:] for s, t in buffer.items()}
        if ended:
            return


def _rows(chunk: dict[str, Tensor]) -> int:
    return next(iter(chunk.values())).shape[0]
