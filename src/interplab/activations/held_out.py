"""Held-out text: the documents of a corpus after everything an activation store read from it.

A store packs its corpus into consecutive contexts (``packing``): context ``j`` holds BOS (when
its packing has one) and the stream tokens ``[j * take, (j + 1) * take)``, ``take`` being the
context length less the BOS position. A store of ``n`` contexts has therefore read the first
``n * take`` tokens of the corpus's token stream (documents joined by the separator). Held-out
text starts at the first document that starts at or after that token: every document the store
read, fully or in part, is skipped. The offset is counted in stream tokens, so it does not
depend on the context length the held-out text is packed at (skipping the store's *number of
contexts* counted at another length would land inside the store's text when the length is
shorter).

The offset is only trusted after the corpus is shown to reproduce the store: its first and last
contexts are rebuilt from the stream and compared with the token ids the store kept, so another
corpus, another document split or another tokenizer is an error, not a silent miscount.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice

from safetensors import safe_open

from interplab.activations.packing import token_ids
from interplab.activations.shards import TOKENS, shard_name
from interplab.activations.store import ActivationStore
from interplab.core.errors import InputError


@dataclass(frozen=True)
class Offset:
    """Where held-out text starts in a corpus's token stream, and why."""

    documents: int  # documents skipped: each was read by the store, fully or in part
    tokens: int  # stream tokens before the first held-out document (separators included)
    store_tokens: int  # stream tokens the store's contexts hold (BOS positions not counted)
    store_contexts: int
    store_ctx_len: int


class _Windows:
    """The stream tokens in a few ``[lo, hi)`` ranges, collected while the stream goes by."""

    def __init__(self, ranges: dict[int, tuple[int, int]]) -> None:
        self.ranges = ranges
        self.got = {k: [None] * (hi - lo) for k, (lo, hi) in ranges.items()}

    def add(self, start: int, piece: list[int]) -> None:
        for k, (lo, hi) in self.ranges.items():
            a, b = max(lo, start), min(hi, start + len(piece))
            if a < b:
                self.got[k][a - lo:b - lo] = piece[a - start:b - start]


def _stored_context(store: ActivationStore, j: int) -> list[int]:
    before = 0
    for meta in store.shards:
        if j < before + meta["n_contexts"]:
            with safe_open(str(store.root / shard_name(meta["index"]) / TOKENS), framework="pt") as f:
                return f.get_slice("input_ids")[j - before:j - before + 1][0].tolist()
        before += meta["n_contexts"]
    raise AssertionError(f"context {j} outside the store")  # callers ask for 0..n-1


def _verify(store: ActivationStore, windows: _Windows, bos: int | None, source: str) -> None:
    recorded = store.manifest.get("corpus", {}).get("source")
    for j, got in windows.got.items():
        rebuilt = ([bos] if bos is not None else []) + got
        if rebuilt != _stored_context(store, j):
            raise InputError(
                f"The corpus {source!r} does not reproduce the store {store.root}: its context {j} differs "
                f"from the token ids the store kept (the store was harvested from corpus {recorded!r}). The "
                "held-out offset can only be counted on the store's own corpus and tokenizer: pass that "
                "corpus, or leave out the store to evaluate on another corpus from its start."
            )


def held_out_documents(tokenizer, store: ActivationStore, docs: Iterable[str],
                       source: str = "the corpus") -> tuple[Offset, Iterator[str]]:
    """The offset past everything ``store`` read from ``docs`` (its corpus, as documents), and
    the documents from there on. Raises when ``docs`` does not reproduce the store's tokens or
    when nothing is left after it."""
    packing = store.manifest["packing"]
    bos = packing["bos_id"] if packing["context_starts_with_bos"] else None
    sep = packing["separator_id"]
    take = packing["ctx_len"] - (1 if bos is not None else 0)
    n = sum(meta["n_contexts"] for meta in store.shards)
    consumed = n * take
    windows = _Windows({0: (0, take), n - 1: ((n - 1) * take, n * take)})
    it = iter(docs)
    pos = seen = 0
    while True:
        group = list(islice(it, 32))
        if not group:
            break
        for j, ids in enumerate(token_ids(tokenizer, group)):
            start = pos
            if seen and sep is not None:
                windows.add(pos, [sep])
                start += 1
            if start >= consumed:
                _verify(store, windows, bos, source)
                return Offset(seen, start, consumed, n, packing["ctx_len"]), chain(group[j:], it)
            windows.add(start, ids)
            pos, seen = start + len(ids), seen + 1
    if pos < consumed:
        raise InputError(
            f"The corpus {source!r} holds {pos:,} tokens, fewer than the {consumed:,} the store {store.root} "
            "read: it is not the store's corpus. Pass the corpus the store was harvested from "
            f"({store.manifest.get('corpus', {}).get('source')!r}), or leave out the store."
        )
    _verify(store, windows, bos, source)
    raise InputError(
        f"Nothing of the corpus {source!r} is held out from the store {store.root}: its {n:,} contexts read "
        f"all {seen:,} documents ({pos:,} tokens). Harvest fewer tokens, or evaluate on a larger corpus."
    )
