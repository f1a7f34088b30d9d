"""Activations computed while training: the model runs on packed contexts, a mixing buffer
shuffles the rows, and batches come out as from a store — with no disk at all.

``OnTheFlySource`` implements ``BatchSource``. The corpus is packed exactly as ``harvest``
packs it (same contexts, same BOS handling), and read again from the start when it runs out,
so the source is infinite. Rows are shuffled by a mixing buffer (``shuffle.mix``) seeded by
``seed``, so ``batches(n, seed)`` is deterministic. ``start_batch`` is implemented by
regenerating and discarding the first ``start_batch`` batches: resuming at batch ``j`` costs
the forward passes of ``j * batch_size`` tokens (harvest a store when that matters).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import islice

import torch
from torch import Tensor

from interplab.activations.corpus import CorpusConfig, iter_documents
from interplab.activations.packing import Packing, check_ctx_len, iter_contexts
from interplab.activations.shuffle import mix
from interplab.core.errors import InputError, SiteError, choices


class OnTheFlySource:
    """A ``BatchSource`` that runs ``model`` on the corpus as batches are asked for."""

    def __init__(self, model, corpus_cfg: CorpusConfig, sites: Sequence[str], ctx_len: int = 128,
                 buffer_tokens: int = 65536, model_batch_size: int = 8, drop_bos: bool = True) -> None:
        if model.tokenizer is None:
            raise InputError("OnTheFlySource needs a model with a tokenizer to pack the corpus.")
        if model_batch_size < 1:
            raise InputError(f"model_batch_size must be >= 1, got {model_batch_size}.")
        self.model = model
        self.corpus_cfg = corpus_cfg
        self._sites = [model.site(s) for s in sites]
        if not self._sites:
            raise InputError("OnTheFlySource needs at least one site.")
        self.ctx_len = ctx_len
        self.buffer_tokens = buffer_tokens
        self.model_batch_size = model_batch_size
        check_ctx_len(model, ctx_len, "ctx_len")  # before any forward
        self.packing = Packing.of(model.tokenizer, ctx_len, prepend_bos=True)
        self.first_position = 1 if drop_bos and self.packing.bos else 0
        iter_documents(corpus_cfg)  # check local input now, not at the first batch

    @property
    def sites(self) -> list[str]:
        return [str(s) for s in self._sites]

    def width(self, site: str) -> int:
        if site not in self.sites:
            raise SiteError(f"OnTheFlySource computes no site {site}; it computes {choices(self.sites)}.")
        return math.prod(self.model.site_shape(site))

    def _contexts(self) -> Iterator[Tensor]:
        while True:  # the corpus again from the start when it runs out
            yield from iter_contexts(self.model.tokenizer, iter_documents(self.corpus_cfg), self.ctx_len)

    def _chunks(self) -> Iterator[dict[str, Tensor]]:
        contexts = self._contexts()
        while True:
            ids = torch.stack(list(islice(contexts, self.model_batch_size))).to(self.model.device)
            _, cache = self.model.run_with_cache(ids, self._sites, stop_after_last_site=True)
            out = {}
            for s in self._sites:
                act = cache[s][:, self.first_position:].float().cpu()
                out[str(s)] = act.reshape(act.shape[0] * act.shape[1], -1)
            yield out

    def batches(self, batch_size: int, seed: int = 0, start_batch: int = 0) -> Iterator[dict[str, Tensor]]:
        """Shuffled float32 batches ``{site: [batch_size, width]}``, forever."""
        if start_batch < 0:
            raise InputError(f"start_batch must be >= 0, got {start_batch}.")
        gen = torch.Generator().manual_seed(seed)
        stream = mix(self._chunks(), self.buffer_tokens, batch_size, gen)
        return islice(stream, start_batch, None)
