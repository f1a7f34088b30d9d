"""What a harvest checks once the model is known and before its first forward pass: contexts
that fit the model's positions, a corpus that holds the tokens asked for, and a disk that can
hold the store. Each refusal names the numbers it compared and what to change.
"""

from __future__ import annotations

import math
import shutil
from itertools import islice
from pathlib import Path

from interplab.activations import shards as st
from interplab.activations.corpus import iter_documents
from interplab.activations.harvest_config import HarvestConfig
from interplab.activations.packing import Packing, check_ctx_len, iter_contexts
from interplab.core.errors import InputError
from interplab.core.model import Model

TOKEN_ID_BYTES = 8  # tokens.safetensors keeps int64 ids of whole contexts


def check_harvest(model: Model, cfg: HarvestConfig, widths: dict[str, int]) -> None:
    """Raise before any work if ``cfg`` cannot be harvested with ``model`` (``widths``: values
    per token of each site)."""
    check_ctx_len(model, cfg.ctx_len, "ctx_len")
    packing = Packing.of(model.tokenizer, cfg.ctx_len, prepend_bos=True)
    rows = cfg.ctx_len - (1 if cfg.drop_bos and packing.bos else 0)
    check_disk(cfg, widths, rows)
    check_corpus_size(model, cfg, rows)


def _stored_rows(out: Path) -> int:
    try:
        return int(st.read_manifest(out).get("n_tokens_stored", 0))
    except st.StoreError:  # no store, or a damaged one (refused later with its own message)
        return 0


def _existing_bytes(out: Path) -> int:
    return sum(f.stat().st_size for f in out.glob("shard-*/*") if f.is_file())


def check_disk(cfg: HarvestConfig, widths: dict[str, int], rows_per_context: int) -> None:
    """Refuse a store that cannot fit the free space of the filesystem ``cfg.out`` is on."""
    out = Path(cfg.out)
    stored = 0 if cfg.overwrite or not out.is_dir() else _stored_rows(out)
    left = max(cfg.n_tokens - stored, 0)
    itemsize = st.DTYPES[cfg.dtype].itemsize
    per_row = sum(widths.values()) * itemsize
    per_row_ids = cfg.ctx_len * TOKEN_ID_BYTES / rows_per_context
    need = math.ceil(left * (per_row + per_row_ids))
    where = out
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if cfg.overwrite and out.is_dir():
        free += _existing_bytes(out)  # the old store is deleted first
    if need > free:
        fits = int(free // (per_row + per_row_ids))
        resumed = f" ({stored:,} already stored)" if stored else ""
        raise InputError(
            f"The store would need about {_size(need)} on disk: {left:,} more tokens{resumed} × "
            f"{sum(widths.values()):,} values ({', '.join(f'{s} {w}' for s, w in widths.items())}) × {itemsize} "
            f"bytes ({cfg.dtype}), plus the token ids; the filesystem of {where} has {_size(free)} free. "
            f"Free some space, or harvest fewer tokens (about {fits:,} fit), fewer sites, a smaller dtype, "
            "or into another --out."
        )


def check_corpus_size(model: Model, cfg: HarvestConfig, rows_per_context: int) -> None:
    """Refuse ``n_tokens`` beyond what the corpus packs into (local corpora: tokenizes up to the
    tokens asked for, which costs far less than one forward pass over them)."""
    if cfg.corpus.startswith("hf:"):
        return  # streamed: counting would read it twice over the network; a short one fails when it ends
    need = math.ceil(cfg.n_tokens / rows_per_context)
    docs = iter_documents(cfg.corpus_config())
    have = sum(1 for _ in islice(iter_contexts(model.tokenizer, docs, cfg.ctx_len), need))
    if have < need:
        raise InputError(
            f"The corpus {cfg.corpus!r} packs into only {have} contexts of {cfg.ctx_len} tokens "
            f"({have * rows_per_context} rows), fewer than the {cfg.n_tokens} tokens asked "
            f"({need} contexts). Use n_tokens {have * rows_per_context} or fewer, or a larger corpus."
        )


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # not reached
