"""Packing documents into fixed-length contexts, the way LM pre-training data is packed.

Every document is tokenized without special tokens; the documents are joined into one token
stream with a separator between consecutive documents (the tokenizer's EOS id, or its BOS id
when it has no EOS, or nothing when it has neither); the stream is cut into consecutive chunks.
With ``prepend_bos`` and a tokenizer that has a BOS token, each context is ``[BOS]`` followed by
the next ``ctx_len - 1`` stream tokens, so every context starts the way the model saw text in
training and position 0 is always BOS. Without a BOS token (or with ``prepend_bos=False``) each
context is simply the next ``ctx_len`` stream tokens and starts mid-text; ``Packing.bos`` is
then False and a harvest has no BOS position to drop. The final chunk that is too short is
dropped. Deterministic: the same tokenizer and documents give the same contexts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import torch

from interplab.core.errors import ConfigError, InputError


@dataclass(frozen=True)
class Packing:
    """How contexts are built: context length, the BOS id (None: no BOS position), separator."""

    ctx_len: int
    bos_id: int | None
    separator_id: int | None

    @property
    def bos(self) -> bool:
        return self.bos_id is not None

    @classmethod
    def of(cls, tokenizer, ctx_len: int, prepend_bos: bool = True) -> Packing:
        bos = getattr(tokenizer, "bos_token_id", None)
        eos = getattr(tokenizer, "eos_token_id", None)
        least = 2 if (prepend_bos and bos is not None) else 1
        if ctx_len < least:
            raise ConfigError(f"ctx_len must be >= {least} (room for BOS and one token), got {ctx_len}.")
        return cls(ctx_len, bos if prepend_bos else None, eos if eos is not None else bos)

    def describe(self) -> dict:
        return {"ctx_len": self.ctx_len, "bos_id": self.bos_id, "separator_id": self.separator_id,
                "context_starts_with_bos": self.bos}


def token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """The token ids of each document, without special tokens (how packing tokenizes)."""
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def model_positions(model) -> int | None:
    """The longest sequence ``model`` was built for (None when its config does not say)."""
    limit = getattr(model, "max_positions", None)
    if limit is None:
        cfg = getattr(getattr(model, "hf", None), "config", None)
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return limit if isinstance(limit, int) else None


def check_ctx_len(model, ctx_len: int, option: str = "ctx_len") -> None:
    """Refuse, before any forward, contexts longer than the model's positions."""
    limit = model_positions(model)
    if limit is not None and ctx_len > limit:
        name = (getattr(model, "source", None) or {}).get("name") or "the model"
        raise ConfigError(f"{option}={ctx_len} exceeds the {limit} positions {name} was built for "
                          f"(its config's maximum sequence length); use {option} <= {limit}.")


def _token_stream(tokenizer, docs: Iterable[str], separator: int | None, chunk: int = 32) -> Iterator[list[int]]:
    it = iter(docs)
    first = True
    while True:
        group = list(islice(it, chunk))
        if not group:
            return
        for ids in token_ids(tokenizer, group):
            if not first and separator is not None:
                yield [separator]
            first = False
            yield ids


def iter_contexts(tokenizer, docs: Iterable[str], ctx_len: int, prepend_bos: bool = True) -> Iterator[torch.Tensor]:
    """Contexts ``LongTensor[ctx_len]`` one at a time (see the module docstring)."""
    packing = Packing.of(tokenizer, ctx_len, prepend_bos)
    take = ctx_len - 1 if packing.bos else ctx_len
    head = [packing.bos_id] if packing.bos else []
    buf: list[int] = []
    start = 0
    for piece in _token_stream(tokenizer, docs, packing.separator_id):
        buf.extend(piece)
        while len(buf) - start >= take:
            yield torch.tensor(head + buf[start:start + take], dtype=torch.long)
            start += take
        if start > 1 << 16:  # drop what has been used, now and then
            del buf[:start]
            start = 0


def pack(tokenizer, docs: Iterable[str], ctx_len: int, prepend_bos: bool = True,
         max_contexts: int | None = None) -> torch.Tensor:
    """All contexts (or the first ``max_contexts``) as one ``LongTensor[n_contexts, ctx_len]``."""
    rows = list(islice(iter_contexts(tokenizer, docs, ctx_len, prepend_bos), max_contexts))
    if not rows:
        raise InputError(f"The corpus is shorter than one context of {ctx_len} tokens.")
    return torch.stack(rows)
