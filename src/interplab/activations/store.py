"""Reading an activation store (format: ``interplab.activations.shards``), memory-mapped.

``ActivationStore`` reads a store as a ``BatchSource``: float32 batches shuffled across shards
(see ``batches``), plus in-order access (``read``, ``tokens``, ``locate``) for feature
dashboards. Reads go through safetensors' ``safe_open``, which memory-maps the files.

Verified: ``open`` checks the manifest and every shard's description against each other (cheap:
no data is read), and each data file is hashed the first time it is read, against the SHA-256
recorded when its shard was written (``verify=True`` hashes them all at open). A corrupt or
damaged file is a ``StoreError`` naming it and the commands that repair the store, so a
damaged store never trains silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from interplab.activations.shards import (
    DTYPES,
    SHARD_META,
    TOKENS,
    StoreError,
    read_manifest,
    read_shard_meta,
    repair_advice,
    scan_shards,
    shard_name,
    site_file,
)
from interplab.core.artifacts import sha256_file
from interplab.core.errors import InputError, SiteError, choices

__all__ = ["ActivationStore", "StoreError"]


def _generator(*keys: int) -> torch.Generator:
    seed = int.from_bytes(hashlib.sha256(repr(keys).encode()).digest()[:8], "little") >> 1
    return torch.Generator().manual_seed(seed)


class ActivationStore:
    """A harvested store, read as a ``BatchSource`` (float32 batches) and in order."""

    def __init__(self, root: Path, manifest: dict, shards: list[dict], buffer_shards: int) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.shards = shards
        self.buffer_shards = buffer_shards
        self._verified: set[Path] = set()
        self._offsets = [0]
        for meta in shards:
            self._offsets.append(self._offsets[-1] + meta["n_tokens"])

    @classmethod
    def open(cls, path: str | Path, *, buffer_shards: int = 4, allow_partial: bool = False,
             verify: bool = False) -> ActivationStore:
        """Open a store. ``buffer_shards`` shards are mixed at a time in ``batches``; a store a
        harvest has not finished raises unless ``allow_partial``; ``verify`` re-hashes files."""
        root = Path(path)
        manifest = read_manifest(root)
        if buffer_shards < 1:
            raise InputError(f"buffer_shards must be >= 1, got {buffer_shards}.")
        if not manifest["complete"] and not allow_partial:
            raise StoreError(
                f"Store {root} is incomplete: {manifest['n_tokens_stored']} of "
                f"{manifest['n_tokens']} tokens stored. Re-run the same harvest to resume it, or "
                "open it with allow_partial=True."
            )
        on_disk = scan_shards(root)
        shards = []
        for listed in manifest["shards"]:
            i = listed["index"]
            meta = on_disk.get(i)
            if meta is None and (root / shard_name(i) / SHARD_META).is_file():
                read_shard_meta(root / shard_name(i) / SHARD_META)  # raises, naming the damage
            if meta is None or meta["sha256"] != listed["sha256"]:
                raise StoreError(f"Store {root}: {shard_name(i)} is missing or differs from the manifest. "
                                 f"{repair_advice(root, i)}")
            shards.append(meta)
        if not shards:
            raise StoreError(f"Store {root} holds no complete shard yet.")
        store = cls(root, manifest, shards, buffer_shards)
        for k, meta in enumerate(shards):
            for name in meta["files"]:
                store._file(k, name, hashed=verify)
        return store

    def _file(self, k: int, name: str, hashed: bool = True) -> Path:
        """The path of file ``name`` of the ``k``-th shard; hashed against its shard's record
        the first time (``hashed``), and checked to exist otherwise."""
        meta = self.shards[k]
        path = self.root / shard_name(meta["index"]) / name
        if path in self._verified:
            return path
        if name not in meta["files"] or not path.is_file():
            raise StoreError(f"Store {self.root}: {shard_name(meta['index'])}/{name} is missing. "
                             f"{repair_advice(self.root, meta['index'])}")
        if hashed:
            if sha256_file(path) != meta["files"][name]:
                raise StoreError(
                    f"Store {self.root}: {shard_name(meta['index'])}/{name} is corrupt (hash mismatch): its SHA-256 "
                    f"differs from the one recorded when the shard was written. {repair_advice(self.root, meta['index'])}"
                )
            self._verified.add(path)
        return path

    def _tensors(self, k: int, name: str, key: str, start: int | None = None, stop: int | None = None) -> Tensor:
        """Tensor ``key`` (rows ``[start, stop)`` when given) of file ``name`` of the ``k``-th shard."""
        path = self._file(k, name)
        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(key) if start is None else f.get_slice(key)[start:stop]
        except (SafetensorError, OSError) as err:  # changed since it was hashed
            raise StoreError(f"Store {self.root}: {path.relative_to(self.root)} cannot be read ({err}). "
                             f"{repair_advice(self.root, self.shards[k]['index'])}") from None

    # -- what it holds -----------------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        return list(self.manifest["sites"])

    def width(self, site: str) -> int:
        self._check_sites([site])
        return int(self.manifest["widths"][site])

    @property
    def n_tokens(self) -> int:
        return self._offsets[-1]

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.manifest["dtype"]]

    def check(self, model: str, sites: Sequence[str] = ()) -> None:
        """Raise unless this store was made by ``model`` (name or weights hash) and holds ``sites``."""
        info = self.manifest["model"]
        if model not in (info.get("name"), info.get("weights_hash")):
            raise StoreError(
                f"Store {self.root} was harvested from model {info.get('name')!r} (weights hash "
                f"{info.get('weights_hash')}), not {model!r}. Harvest a store for {model!r}."
            )
        self._check_sites([str(s) for s in sites])

    def _check_sites(self, sites: Sequence[str]) -> None:
        missing = [s for s in sites if s not in self.manifest["sites"]]
        if missing:
            raise SiteError(f"Store {self.root} holds no site {', '.join(missing)}; it holds {choices(self.sites)}.")

    # -- in-order access ---------------------------------------------------------------------
    def _shard_rows(self, k: int, site: str, start: int | None = None, stop: int | None = None) -> Tensor:
        return self._tensors(k, site_file(site), "acts", start, stop)

    def read(self, start: int, stop: int, sites: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Rows ``[start, stop)`` in store order (shard, context, position), as float32."""
        sites = self._sites(sites)
        if not 0 <= start <= stop <= self.n_tokens:
            raise InputError(f"Rows [{start}, {stop}) outside the store's 0..{self.n_tokens}.")
        out: dict[str, list[Tensor]] = {s: [] for s in sites}
        for k in range(len(self.shards)):
            a, b = max(start, self._offsets[k]), min(stop, self._offsets[k + 1])
            if a < b:
                for s in sites:
                    out[s].append(self._shard_rows(k, s, a - self._offsets[k], b - self._offsets[k]))
        return {s: torch.cat(v).float() if v else torch.zeros(0, self.width(s)) for s, v in out.items()}

    def tokens(self) -> Tensor:
        """Token ids of every stored context, ``LongTensor[n_contexts, ctx_len]`` in store order."""
        return torch.cat([self._tensors(k, TOKENS, "input_ids") for k in range(len(self.shards))])

    def locate(self, row: int) -> tuple[int, int]:
        """(context index into ``tokens()``, position in that context) of store row ``row``."""
        if not 0 <= row < self.n_tokens:
            raise InputError(f"Row {row} outside the store's 0..{self.n_tokens - 1}.")
        per = self.manifest["rows_per_context"]
        k = next(i for i in range(len(self.shards)) if row < self._offsets[i + 1])
        local = row - self._offsets[k]
        before = sum(m["n_contexts"] for m in self.shards[:k])
        return before + local // per, local % per + self.manifest["first_position"]

    # -- shuffled batches (BatchSource) ------------------------------------------------------
    def _sites(self, sites) -> list[str]:
        sites = self.sites if sites is None else [str(s) for s in sites]
        self._check_sites(sites)
        return sites

    def batches(self, batch_size: int, seed: int = 0, start_batch: int = 0,
                sites: Sequence[str] | None = None) -> Iterator[dict[str, Tensor]]:
        """Float32 batches ``{site: [batch_size, width]}``, forever over epochs.

        Epoch ``e`` visits the shards in a permutation drawn from ``(seed, e)``, ``buffer_shards``
        at a time; the rows of each such group are permuted (drawn from ``(seed, e, group)``)
        and the epoch's rows are the groups' permuted rows one after another, cut into batches
        (the last partial batch of an epoch is dropped). Every row appears once per epoch. A
        batch is a slice of that sequence, so ``start_batch`` jumps there exactly, loading only
        the groups it needs.
        """
        sites = self._sites(sites)
        per_epoch = self.n_tokens // batch_size
        if batch_size < 1 or per_epoch == 0:
            raise InputError(f"batch_size must be in 1..{self.n_tokens} (the rows stored), got {batch_size}.")
        if start_batch < 0:
            raise InputError(f"start_batch must be >= 0, got {start_batch}.")
        epoch, i = divmod(start_batch, per_epoch)
        while True:
            yield from self._epoch(seed, epoch, i * batch_size, per_epoch * batch_size, batch_size, sites)
            epoch, i = epoch + 1, 0

    def _epoch(self, seed, epoch, start, end, batch_size, sites) -> Iterator[dict[str, Tensor]]:
        order = torch.randperm(len(self.shards), generator=_generator(seed, epoch)).tolist()
        groups = [order[g:g + self.buffer_shards] for g in range(0, len(order), self.buffer_shards)]
        pending: list[dict[str, Tensor]] = []
        have, pos = 0, 0
        for g, group in enumerate(groups):
            size = sum(self.shards[k]["n_tokens"] for k in group)
            lo, hi = max(start, pos), min(end, pos + size)
            if lo < hi:
                rows = {s: torch.cat([self._shard_rows(k, s) for k in group]) for s in sites}
                perm = torch.randperm(size, generator=_generator(seed, epoch, g))[lo - pos:hi - pos]
                taken = 0
                while taken < len(perm):
                    n = min(batch_size - have, len(perm) - taken)
                    idx = perm[taken:taken + n]
                    pending.append({s: t[idx] for s, t in rows.items()})
                    have, taken = have + n, taken + n
                    if have == batch_size:
                        yield {s: torch.cat([p[s] for p in pending]).float() for s in sites}
                        pending, have = [], 0
            pos += size
            if pos >= end:
                return
