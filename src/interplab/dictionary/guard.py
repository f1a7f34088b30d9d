"""Stopping training at the first non-finite number, and saying where it came from.

One NaN or infinity in an activation batch (a corrupt shard, a float16 overflow in the harvest,
a bad tensor handed to ``TensorSource``) or one diverged step turns every weight NaN within a
step, and a run that goes on writes NaN checkpoints and NaN dictionaries that later analyses
read as if they were trained. So the trainer keeps, per input site and per dictionary, the
first step whose batch or loss was not finite (``Watch``: device tensors, no host sync per
step), reads them where it synchronises anyway (every step on CPU; on an accelerator at the
logging steps, before each checkpoint and at the end) and stops with ``NonFiniteError`` before
anything is written from the bad weights. ``check_weights`` refuses to checkpoint or publish
non-finite weights whatever caused them, so the last checkpoint on disk is always a good one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from interplab.core.errors import InterplabError

NONE = 2**62  # "no bad step yet" (a minimum over steps and ranks keeps the first bad one)


class NonFiniteError(InterplabError):
    """Training met a NaN or an infinity: in an activation batch, a loss or the weights."""


class Watch:
    """The first step (1-based) at which each input site's batch and each dictionary's loss
    held a non-finite value, kept on the training device; ``check`` raises at the first."""

    def __init__(self, source, sites: list[str], names: list[str], batch_size: int, device: torch.device,
                 reduce_min=lambda t: t) -> None:
        self.source, self.sites, self.names, self.batch_size = source, sites, names, batch_size
        self.reduce_min = reduce_min  # an all-reduce MIN under torch.distributed: every rank stops together
        self.first = torch.full((len(sites) + len(names),), NONE, dtype=torch.long, device=device)

    @torch.no_grad()
    def _note(self, slot: int, step: int, bad: Tensor) -> None:
        cur = self.first[slot]
        self.first[slot] = torch.where(bad & (cur == NONE), torch.full_like(cur, step + 1), cur)

    def note_input(self, site: str, step: int, x: Tensor) -> None:
        self._note(self.sites.index(site), step, ~torch.isfinite(x).all())

    def note_loss(self, i: int, step: int, loss: Tensor) -> None:
        self._note(len(self.sites) + i, step, ~torch.isfinite(loss.detach()))

    def check(self, last_good: Path | None, dicts: dict | None = None, step: int | None = None) -> None:
        """Raise ``NonFiniteError`` for the first bad batch or loss noted so far (a host sync);
        given the dictionaries about to be written at ``step``, for non-finite weights too."""
        first = self.reduce_min(self.first.clone()).tolist()
        n = len(self.sites)
        bad_in = min(((v, s) for s, v in zip(self.sites, first[:n]) if v != NONE), default=None)
        bad_loss = min(((v, i) for i, v in enumerate(first[n:]) if v != NONE), default=None)
        if bad_in and (not bad_loss or bad_in[0] <= bad_loss[0]):
            raise input_error(self.source, bad_in[1], bad_in[0], self.batch_size, last_good)
        if bad_loss:
            raise loss_error(self.names[bad_loss[1]], bad_loss[0], last_good)
        if dicts is not None:
            check_weights(dicts, self.names, step, last_good, self.reduce_min)


def check_weights(dicts: dict, names: list[str], step: int, last_good: Path | None, reduce_min) -> None:
    """Refuse non-finite weights (of any rank: ``reduce_min`` merges) before they are
    checkpointed or published."""
    bad = {i: [k for k, v in d.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
           for i, d in dicts.items()}
    bad = {i: keys for i, keys in bad.items() if keys}
    device = next((t.device for d in dicts.values() for t in d.state_dict().values()), torch.device("cpu"))
    if int(reduce_min(torch.tensor(0 if bad else 1, device=device))) == 1:
        return
    what = "; ".join(f"{names[i]} ({', '.join(keys)})" for i, keys in sorted(bad.items())) or "a dictionary on another rank"
    raise NonFiniteError(
        f"After step {step}, non-finite weights in {what}; nothing was written from them. "
        f"{_kept(last_good)} Training diverged: lower lr, set grad_clip (e.g. 1.0) or look for "
        "outliers in the activations, then train again.")


def _kept(last_good: Path | None) -> str:
    if last_good is None:
        return "No checkpoint had been written yet."
    return f"The last good checkpoint, {last_good}, is kept."


def check_sample(source, sample: dict[str, Tensor]) -> None:
    """Refuse a non-finite initialisation sample (the first ``init_tokens`` of the stream)."""
    for site, t in sorted(sample.items()):
        if not torch.isfinite(t).all():
            where, fix = _locate(source, site)
            raise NonFiniteError(
                f"Training stopped before its first step: the first {t.shape[0]} rows at {site}, which set "
                f"the dictionaries' scales and decoder bias, hold NaN or infinite values. {where} {fix}")


def input_error(source, site: str, step: int, batch_size: int, last_good: Path | None) -> NonFiniteError:
    """The error for a non-finite activation batch, naming the store's shards that hold it."""
    where, fix = _locate(source, site)
    return NonFiniteError(
        f"Training stopped at step {step}: its activation batch at {site} (batch {step - 1} of the "
        f"shuffled stream, {batch_size} rows) holds NaN or infinite values. {where} Nothing from "
        f"that step on was saved. {_kept(last_good)} {fix}")


def loss_error(name: str, step: int, last_good: Path | None) -> NonFiniteError:
    return NonFiniteError(
        f"Training stopped at step {step}: the loss of {name} is NaN or infinite although its "
        f"activation batch is finite, so training diverged. {_kept(last_good)} Lower lr, set "
        "grad_clip (e.g. 1.0) or check the activations for extreme outliers, and train into a new "
        "out directory (or resume from the kept checkpoint with the same settings).")


def _locate(source, site: str) -> tuple[str, str]:
    """(where the non-finite rows are, what to do) for a store; a generic answer otherwise."""
    if not (hasattr(source, "manifest") and hasattr(source, "shards") and hasattr(source, "read")):
        return (f"They come from the {type(source).__name__} the trainer was given.",
                "Remove or fix the non-finite rows of the source and train again.")
    from interplab.activations.shards import shard_name, site_file

    found, start = [], 0
    for meta in source.shards:
        stop = start + meta["n_tokens"]
        rows = source.read(start, stop, [site])[site]
        bad = (~torch.isfinite(rows).all(-1)).nonzero()[:, 0]
        if len(bad):
            found.append((meta, len(bad), start + int(bad[0])))
        start = stop
    if not found:  # the rows changed under us; say what we know
        return f"They come from the store {source.root}.", "Check the store and train again."
    parts = [f"{shard_name(meta['index'])}/{site_file(site)} ({n} row{'s' if n > 1 else ''}, first store row {first})"
             for meta, n, first in found]
    # The store hashes each file as it reads it (a corrupt file is a StoreError before this), so
    # these values are as harvested: the model produced them.
    where = f"They come from the store {source.root}: {'; '.join(parts)}, as harvested (the files match their hashes)."
    fix = ("The model produced these values (e.g. a float16 overflow): harvest a new store (e.g. storing "
           "float32, or from the model in float32) and train into a new out directory.")
    return where, fix

