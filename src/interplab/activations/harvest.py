"""Harvesting activations into a store: resumable, atomic per shard, optionally distributed.

``harvest(model, cfg)`` packs the corpus into contexts (``packing``), runs the model on them in
batches, keeps the activations at ``cfg.sites`` for every position (the BOS position is dropped
by default: its activations are outliers, orders of magnitude larger than the rest, and would
dominate a dictionary's loss), and writes shards of ``shard_tokens`` rows (rounded down to whole
contexts). The forward stops after the deepest asked site (``stop_after_last_site``), which
gives the same activations as the full forward, bit for bit.

Resume: shard ``i`` always holds the same contexts, so re-running the same command skips every
shard on disk (a shard directory exists only complete) and ends with exactly ``n_tokens`` rows,
however the previous run died. Before any work a store made with another model (weights hash),
sites, dtype, packing, corpus or size is refused, unless it holds no shard yet (nothing to mix):
a rejected command never blocks the corrected one. A first run that fails before writing any
shard removes its manifest again.

One writer at a time: the harvest holds the store's lock (``core.locks.write_lock``), so a second
process harvesting into the same directory is refused at once rather than racing. A full disk
(an ``OSError`` or safetensors' own ``SafetensorError``) stops the harvest with a message saying
how much is safely stored; re-running resumes from there.

Distributed: with ``torch.distributed`` initialised (or ``rank`` / ``world_size`` passed),
rank ``r`` harvests the shards ``i`` with ``i % world_size == r``. Each shard describes itself
(``shard.json``), so the manifest is a pure function of the shard directories: rank 0 prepares
the directory, everyone waits at a barrier, each rank writes only its shards, and after a final
barrier rank 0 writes the manifest from what is on disk. A rank that dies loses only its
unfinished shard; re-running resumes. (Without torch.distributed, ranks passed by hand must
be run with the directory already prepared, e.g. by a first single-rank call with n_tokens 0 —
prefer torch.distributed.)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from interplab.activations import shards as st
from interplab.activations.corpus import iter_documents
from interplab.activations.harvest_checks import check_harvest
from interplab.activations.harvest_config import IDENTITY, HarvestConfig, HarvestReport
from interplab.activations.packing import Packing, iter_contexts
from interplab.core.artifacts import is_disk_full
from interplab.core.config import to_dict
from interplab.core.errors import ConfigError, InputError
from interplab.core.locks import write_lock
from interplab.core.model import Model
from interplab.core.sites import Site

__all__ = ["HarvestConfig", "HarvestReport", "check_resumable", "harvest", "weights_hash"]

log = logging.getLogger(__name__)

def weights_hash(model: Model) -> str:
    """The loader's weights hash, or (models built in memory) a SHA-256 of the parameters."""
    known = model.source.get("weights_hash")
    if known:
        return known
    digest = hashlib.sha256()
    for name, p in sorted(model.hf.state_dict().items()):
        digest.update(name.encode())
        digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Plan:
    packing: Packing
    rows_per_context: int
    contexts_per_shard: int
    n_contexts: int
    n_shards: int

    @property
    def tokens_per_shard(self) -> int:
        return self.rows_per_context * self.contexts_per_shard


def _plan(model: Model, cfg: HarvestConfig) -> _Plan:
    packing = Packing.of(model.tokenizer, cfg.ctx_len, prepend_bos=True)
    rows = cfg.ctx_len - (1 if cfg.drop_bos and packing.bos else 0)
    per_shard = cfg.shard_tokens // rows
    if per_shard < 1:
        raise ConfigError(f"shard_tokens ({cfg.shard_tokens}) is less than one context's {rows} rows.")
    n_contexts = math.ceil(cfg.n_tokens / rows)
    return _Plan(packing, rows, per_shard, n_contexts, math.ceil(n_contexts / per_shard))


def _header(model: Model, cfg: HarvestConfig, plan: _Plan, sites: list[Site]) -> dict:
    widths = {str(s): math.prod(model.site_shape(s)) for s in sites}
    return {
        "format": st.FORMAT,
        "model": {"name": model.source.get("name") or cfg.model, "weights_hash": weights_hash(model)},
        "sites": [str(s) for s in sites],
        "widths": widths,
        "dtype": cfg.dtype,
        "packing": plan.packing.describe(),
        "drop_bos": cfg.drop_bos,
        "first_position": cfg.ctx_len - plan.rows_per_context,
        "rows_per_context": plan.rows_per_context,
        "n_tokens": cfg.n_tokens,
        "tokens_per_shard": plan.tokens_per_shard,
        "contexts_per_shard": plan.contexts_per_shard,
        "n_shards": plan.n_shards,
        "corpus": cfg.corpus_config().describe(),
        "config": to_dict(cfg),
    }


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def check_resumable(out: Path, header: dict) -> None:
    """Raise, naming both values, if the store at ``out`` was made with a different identity."""
    old = st.read_manifest(out)
    for key in IDENTITY:
        if _get(old, key) != _get(header, key) and not st.scan_shards(out):
            return  # it holds no shard yet (a rejected command wrote only the manifest): nothing to mix
        if _get(old, key) != _get(header, key):
            what = "model" if key.startswith("model") else key
            raise st.StoreError(
                f"Cannot resume into {out}: it was harvested with {what} {_get(old, key)!r} "
                f"(model {old['model']['name']!r}), this run asks {_get(header, key)!r} "
                f"(model {header['model']['name']!r}). Use another `out` directory, or "
                "overwrite=True to replace the store."
            )


def _prepare(out: Path, cfg: HarvestConfig, header: dict) -> None:
    # Hidden entries are temps (a shard being written, a run record being written: the CLI
    # keeps its run records inside the store directory), so they do not make it "used".
    if out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        if not (out / st.MANIFEST).is_file():
            raise st.StoreError(f"{out} exists and is not an activation store (no {st.MANIFEST}); refusing to write into it.")
        if cfg.overwrite:
            log.info("Overwriting the store at %s", out)
            st.remove_store(out)
        elif cfg.resume:
            check_resumable(out, header)
        else:
            raise st.StoreError(f"{out} already holds a store; pass resume=True to continue it or overwrite=True to replace it.")
    out.mkdir(parents=True, exist_ok=True)
    st.remove_temps(out)
    st.write_manifest(out, header, st.scan_shards(out))


def _dist(rank: int | None, world_size: int | None) -> tuple[int, int, bool]:
    if rank is not None or world_size is not None:
        if rank is None or world_size is None or not 0 <= rank < world_size:
            raise ConfigError(f"Pass both rank and world_size with 0 <= rank < world_size (got {rank}, {world_size}).")
        return rank, world_size, torch.distributed.is_available() and torch.distributed.is_initialized()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size(), True
    return 0, 1, False


def _barrier(on: bool) -> None:
    if on:
        torch.distributed.barrier()


def harvest(model: Model, cfg: HarvestConfig, progress: bool = True, rank: int | None = None,
            world_size: int | None = None) -> HarvestReport:
    """Harvest ``cfg.sites`` activations of ``model`` (a HookedModel) into ``cfg.out``."""
    started = time.perf_counter()
    if model.tokenizer is None:
        raise InputError("harvest needs a model with a tokenizer to pack the corpus.")
    sites = [model.site(s) for s in cfg.sites]
    check_harvest(model, cfg, {str(s): math.prod(model.site_shape(s)) for s in sites})  # before any work
    rank, world, dist = _dist(rank, world_size)
    plan = _plan(model, cfg)
    header = _header(model, cfg, plan, sites)
    docs = iter_documents(cfg.corpus_config())  # checks local files before any work
    out = Path(cfg.out)
    # Rank 0 holds the lock for its whole job; the other ranks write only their own shards.
    lock = write_lock(out, f"The activation store {out}") if rank == 0 else contextlib.nullcontext()
    with lock, _disk_full_message(out, header):
        new = rank == 0 and not (out / st.MANIFEST).is_file()
        try:
            if rank == 0:
                _prepare(out, cfg, header)
            _barrier(dist)
            if rank != 0:
                check_resumable(out, header)
            done = st.scan_shards(out)
            mine = [i for i in range(plan.n_shards) if i % world == rank and i not in done]
            log.info("Harvest into %s: %d shards planned, %d on disk, %d for rank %d", out, plan.n_shards,
                     len(done), len(mine), rank)
            rows_done = _run(model, cfg, plan, sites, docs, out, header, set(mine), progress, rank == 0 and not dist)
        except BaseException:
            if new and not dist and not st.scan_shards(out):  # a rejected first run leaves no store behind
                st.remove_store(out)
            raise
        _barrier(dist)
        manifest = st.write_manifest(out, header, st.scan_shards(out)) if rank == 0 else st.read_manifest(out)
        _barrier(dist)
    seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in out.glob("shard-*/*.safetensors"))
    stored = manifest["n_tokens_stored"]
    return HarvestReport(out, stored, len(manifest["shards"]), len(mine), plan.n_shards - len(mine),
                         seconds, rows_done / seconds if seconds else 0.0, size,
                         size / stored if stored else 0.0, manifest["content_hash"], manifest["complete"])


def _run(model: Model, cfg, plan: _Plan, sites, docs, out: Path, header: dict, mine: set[int],
         progress: bool, write_manifest: bool) -> int:
    if not mine:
        return 0
    dtype = st.DTYPES[cfg.dtype]
    contexts = iter_contexts(model.tokenizer, docs, cfg.ctx_len, prepend_bos=True)
    first_pos = cfg.ctx_len - plan.rows_per_context
    total = sum(_shard_rows(cfg, plan, i) for i in mine)
    bar = tqdm(total=total, unit="tok", desc="harvest", disable=not progress, dynamic_ncols=True)
    rows_done = 0
    try:
        for i in range(max(mine) + 1):
            want = min(plan.contexts_per_shard, plan.n_contexts - i * plan.contexts_per_shard)
            if i not in mine:
                for _ in islice(contexts, want):  # tokenizing is cheap next to the forward
                    pass
                continue
            ids = list(islice(contexts, want))
            if len(ids) < want:
                got = i * plan.contexts_per_shard + len(ids)
                raise InputError(
                    f"The corpus {cfg.corpus!r} packs into only {got} contexts of {cfg.ctx_len} tokens "
                    f"({got * plan.rows_per_context} rows), fewer than the {cfg.n_tokens} tokens asked. "
                    "Lower n_tokens or use a larger corpus."
                )
            ids = torch.stack(ids)
            n_rows = _shard_rows(cfg, plan, i)
            acts = _forward_shard(model, ids, sites, cfg.batch_size, first_pos, dtype, bar)
            acts = {s: t[:n_rows] for s, t in acts.items()}
            _write(out, i, acts, ids, i * plan.contexts_per_shard, header)
            rows_done += n_rows
            if write_manifest:
                st.write_manifest(out, header, st.scan_shards(out))
    finally:
        bar.close()
    return rows_done


def _shard_rows(cfg, plan: _Plan, i: int) -> int:
    return min(plan.tokens_per_shard, cfg.n_tokens - i * plan.tokens_per_shard)


def _forward_shard(model: Model, ids: torch.Tensor, sites, batch_size: int, first_pos: int, dtype, bar) -> dict:
    parts: dict[str, list[torch.Tensor]] = {str(s): [] for s in sites}
    for b in range(0, ids.shape[0], batch_size):
        chunk = ids[b:b + batch_size].to(model.device)
        # Ask for no conversion that would be a no-op: the cache then clones the activation
        # instead of aliasing a buffer the model may reuse.
        keep = None if dtype == torch.float32 else dtype
        device = None if chunk.device.type == "cpu" else "cpu"
        _, cache = model.run_with_cache(chunk, sites, dtype=keep, device=device, stop_after_last_site=True)
        for s in sites:
            act = cache[s][:, first_pos:]
            parts[str(s)].append(act.reshape(act.shape[0] * act.shape[1], -1).to(dtype))
        bar.update(chunk.shape[0] * (ids.shape[1] - first_pos))
    return {s: torch.cat(v) for s, v in parts.items()}


def _write(out: Path, i: int, acts: dict, ids: torch.Tensor, first_context: int, header: dict) -> None:
    try:
        st.write_shard(out, i, acts, ids, first_context)
    except (OSError, SafetensorError) as err:  # safetensors reports a full disk as its own error type
        if not is_disk_full(err):
            raise
        raise st.StoreError(f"Disk full while writing {st.shard_name(i)} of {out}: {_stored(out, header)} (the "
                            "partial shard was removed). Free some space and re-run the same command: it resumes "
                            "from there.") from err


def _stored(out: Path, header: dict) -> str:
    shards = st.scan_shards(out)
    stored = sum(m["n_tokens"] for m in shards.values())
    return f"{stored} of {header['n_tokens']} tokens are safely stored in {len(shards)} complete shards"


@contextlib.contextmanager
def _disk_full_message(out: Path, header: dict):
    """A full disk outside a shard (the manifest, a temp directory) as the same resumable error."""
    try:
        yield
    except (OSError, SafetensorError) as err:
        if not is_disk_full(err):
            raise
        raise st.StoreError(f"Disk full while writing into {out}: {_stored(out, header)}. Free some space and "
                            "re-run the same command: it resumes from there.") from err
