"""The on-disk format of an activation store: a directory of shards plus a manifest.

Layout::

    store/
      manifest.json              format tag, model (name, weights hash), sites, widths, dtype,
                                 packing, corpus, shard plan, completed shards, content hash
      shard-00000/
        shard.json               index, n_tokens, n_contexts, first_context, file hashes, sha256
        tokens.safetensors       "input_ids" [n_contexts, ctx_len] int64 (whole contexts)
        L3.resid_post.safetensors  "acts" [n_tokens, width] in the stored dtype
      shard-00001/ ...
      harvest-<time>/            run records of the `interplab harvest` runs that wrote it
                                 (the format ignores them; overwriting the store keeps them)

Shard ``i`` always holds contexts ``[i * contexts_per_shard, (i + 1) * contexts_per_shard)`` of
the deterministic packed corpus, and rows in (context, position) order; the last shard is cut
to the requested token count. A shard is written under a hidden temp name and renamed, so a
shard directory that exists is complete; its ``shard.json`` says what it holds, and the manifest
(rewritten atomically) lists the shards that exist. A shard's ``sha256`` hashes its files'
names and hashes; the store's ``content_hash`` hashes the shard hashes in index order, so two
harvests of the same thing (one process or many) have the same hashes.

This module is the format: writing a shard, scanning the shards on disk, the manifest.
``interplab.activations.store.ActivationStore`` reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from interplab.core.artifacts import read_json, sha256_file, write_json
from interplab.core.errors import InterplabError

log = logging.getLogger(__name__)

FORMAT = "interplab-activation-store/1"
MANIFEST = "manifest.json"
SHARD_META = "shard.json"
TOKENS = "tokens.safetensors"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class StoreError(InterplabError):
    """An activation store that cannot be written, resumed or read as asked."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def site_file(site: str) -> str:
    return f"{site}.safetensors"




def files_hash(files: dict[str, str]) -> str:
    """A shard's ``sha256``: the hash of its files' names and hashes."""
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def repair_advice(root: Path, index: int | None) -> str:
    """How to repair a store whose shard ``index`` (None: whose manifest) is damaged, as commands;
    the latest run record of `interplab harvest` in the store gives the exact one to re-run."""
    root = Path(root)
    records = sorted(p for p in root.glob("harvest-*/config.json"))
    if index is None:
        where = f" (the last one's config is {records[-1]})" if records else ""
        return (f"To repair it, re-run the `interplab harvest` command that wrote the store{where} with "
                "`--overwrite` added (overwrite=True in Python): it recomputes the whole store.")
    rerun = (f"`interplab run {shlex.quote(str(records[-1]))}` (or the same `interplab harvest` command, from "
             "where you ran it)" if records else "the same `interplab harvest` command (or harvest() with the same config)")
    return (f"To repair it, delete that shard and re-run the harvest that wrote the store, which recomputes only "
            f"the missing shard (the same rows, so the same content hash): `rm -r "
            f"{shlex.quote(str(root / shard_name(index)))}`, then {rerun}.")


def _save(tensors: dict[str, Tensor], path: Path) -> None:
    """Write one safetensors file and fsync it (tests replace this to simulate a full disk)."""
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    with path.open("rb") as f:
        os.fsync(f.fileno())


def write_shard(root: Path, index: int, acts: dict[str, Tensor], tokens: Tensor,
                first_context: int) -> dict:
    """Write shard ``index`` atomically (temp directory, then rename) and return its meta.

    On any error the temp directory is removed and the error re-raised; nothing else changes.
    """
    root = Path(root)
    n = {t.shape[0] for t in acts.values()}
    assert len(n) == 1, f"sites hold different row counts: {n}"
    final = root / shard_name(index)
    tmp = root / f".tmp-{shard_name(index)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        files = {TOKENS: {"input_ids": tokens.long()}}
        files.update({site_file(s): {"acts": t} for s, t in acts.items()})
        hashes = {}
        for name, tensors in files.items():
            _save(tensors, tmp / name)
            hashes[name] = sha256_file(tmp / name)
        meta = {"index": index, "n_tokens": n.pop(), "n_contexts": int(tokens.shape[0]),
                "first_context": first_context, "files": hashes,
                "sha256": files_hash(hashes)}
        (tmp / SHARD_META).write_text(json.dumps(meta, indent=2))
        shutil.rmtree(final, ignore_errors=True)  # a stale copy the manifest never listed
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def read_shard_meta(path: Path) -> dict:
    """A shard's ``shard.json``; damaged (unreadable, or its files' hashes not its ``sha256``)
    raises ``StoreError`` naming it."""
    meta = read_json(path, StoreError)
    try:
        ok = files_hash(meta["files"]) == meta["sha256"] and path.parent.name == shard_name(meta["index"])
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise StoreError(f"{path} is damaged: it does not describe the shard {path.parent.name} it is in.")
    return meta


def scan_shards(root: Path) -> dict[int, dict]:
    """The complete shards present on disk, by index (a shard directory exists only complete;
    one whose ``shard.json`` is damaged counts as absent, so a harvest recomputes it)."""
    found = {}
    for meta_path in sorted(Path(root).glob(f"shard-*/{SHARD_META}")):
        try:
            meta = read_shard_meta(meta_path)
        except StoreError as err:
            log.warning("%s", err)
            continue
        found[meta["index"]] = meta
    return found


def remove_temps(root: Path) -> None:
    """Remove temp shard directories a killed process left behind."""
    for tmp in Path(root).glob(".tmp-shard-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def remove_store(root: Path) -> None:
    """Remove a store's own files (manifest, shards, temp shards); anything else in the
    directory, such as the run records of the harvests that wrote it, stays."""
    root = Path(root)
    (root / MANIFEST).unlink(missing_ok=True)
    for path in [*root.glob("shard-*"), *root.glob(".tmp-shard-*")]:
        shutil.rmtree(path, ignore_errors=True)


def content_hash(shards: Sequence[dict]) -> str:
    digest = hashlib.sha256()
    for meta in sorted(shards, key=lambda m: m["index"]):
        digest.update(f"{meta['index']}:{meta['sha256']};".encode())
    return digest.hexdigest()


def write_manifest(root: Path, header: dict, shards: dict[int, dict]) -> dict:
    """The header plus the completed shards, written atomically."""
    listed = [{k: m[k] for k in ("index", "n_tokens", "n_contexts", "first_context", "sha256")}
              for _, m in sorted(shards.items())]
    stored = sum(m["n_tokens"] for m in listed)
    manifest = {**header, "shards": listed, "n_tokens_stored": stored,
                "complete": len(listed) == header["n_shards"] and stored == header["n_tokens"],
                "content_hash": content_hash(listed)}
    write_json(Path(root) / MANIFEST, manifest)
    return manifest


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise StoreError(f"{root} is not an activation store: it has no {MANIFEST}. Create one with harvest().")
    manifest = read_json(path, StoreError, fix=repair_advice(root, None))
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{path} has format {manifest.get('format')!r}; this interplab reads {FORMAT!r}.")
    try:
        intact = manifest["content_hash"] == content_hash(manifest["shards"])
    except (KeyError, TypeError):
        intact = False
    if not intact:
        raise StoreError(f"{path} is damaged: its content hash does not match the shards it lists. "
                         f"{repair_advice(root, None)}")
    return manifest


