"""What a training run reads, as an identity a checkpoint can record and a resume can compare.

A checkpoint is only meaningful with the data it was trained on: resuming store A's step 3000
on store B would quietly train half on each. ``source_identity`` describes a ``BatchSource``:

* an activation store: its path and ``content_hash`` (the manifest's hash of every shard's file
  hashes, so a moved or copied store is the same store, a re-harvested one with other data is not);
* a ``TensorSource``: a sha256 of its tensors' bytes, shapes and dtypes, and whether it shuffles;
* an ``OnTheFlySource``: a sha256 of the model (name, weights hash, dtype), the corpus, the sites,
  the context length and the shuffle buffer;
* anything else: its type only (``hash`` None: it cannot be compared, and a resume says so).

``check_same_source`` refuses a resume whose source differs from the checkpoint's, naming both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import torch

from interplab.core.errors import ConfigError

log = logging.getLogger(__name__)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _tensor_hash(tensors: dict[str, torch.Tensor], shuffle: bool) -> str:
    h = hashlib.sha256(json.dumps({"shuffle": shuffle}).encode())
    for site in sorted(tensors):
        t = tensors[site].detach()
        h.update(json.dumps([site, list(t.shape), str(t.dtype)]).encode())
        h.update(t.cpu().contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


def source_identity(source) -> dict:
    """``{"kind", "description", "hash"}`` (plus ``path`` for a store) of a batch source."""
    manifest = getattr(source, "manifest", None)
    if isinstance(manifest, dict) and "content_hash" in manifest:
        return {"kind": "store", "path": str(source.root), "hash": manifest["content_hash"],
                "description": f"store {source.root}"}
    if hasattr(source, "tensors") and isinstance(source.tensors, dict):
        return {"kind": "tensors", "hash": _tensor_hash(source.tensors, bool(getattr(source, "shuffle", True))),
                "description": f"tensors in memory ({', '.join(sorted(source.tensors))})"}
    model, corpus = getattr(source, "model", None), getattr(source, "corpus_cfg", None)
    if model is not None and corpus is not None:
        info = getattr(model, "source", {}) or {}
        what = {"model": info.get("name"), "weights_hash": info.get("weights_hash"),
                "dtype": str(getattr(model, "dtype", "")),
                "corpus": dataclasses.asdict(corpus) if dataclasses.is_dataclass(corpus) else str(corpus),
                **{k: getattr(source, k, None) for k in ("sites", "ctx_len", "buffer_tokens", "model_batch_size",
                                                         "first_position")}}
        return {"kind": "on_the_fly", "hash": _digest(what), "details": json.loads(json.dumps(what, default=str)),
                "description": f"the model {info.get('name')} on the fly (corpus {getattr(corpus, 'source', corpus)})"}
    return {"kind": type(source).__name__, "hash": None, "description": f"a {type(source).__name__}"}


def _short(identity: dict) -> str:
    h, label = identity.get("hash"), "content hash" if identity.get("kind") in ("store", "tensors") else "hash"
    return f"{identity.get('description')} ({f'{label} {h[:16]}…' if h else f'no {label}'})"


def check_same_source(recorded: dict | None, current: dict, where) -> None:
    """Refuse to resume the checkpoint at ``where`` on a source other than the one it recorded."""
    if recorded is None:
        log.warning("checkpoint %s records no source identity (written by an older interplab); "
                    "cannot check that this run reads the same data", where)
        return
    same_kind = recorded.get("kind") == current.get("kind")
    if same_kind and (recorded.get("hash") is None or current.get("hash") is None):
        log.warning("cannot compare the source of checkpoint %s (%s) with this run's (%s): no content hash",
                    where, recorded.get("description"), current.get("description"))
        return
    if same_kind and recorded["hash"] == current["hash"]:
        return
    old, new = recorded.get("details") or {}, current.get("details") or {}
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    differ = f" ({'; '.join(diffs)})" if diffs else ""
    fix = (f"Resume with the original store (--store {recorded['path']})" if recorded.get("kind") == "store"
           else "Resume with the original source")
    raise ConfigError(
        f"Cannot resume from {where}: it was trained on {_short(recorded)}, but this run reads "
        f"{_short(current)}{differ}. Continuing would mix the two. {fix}, or train into a new out directory.")
