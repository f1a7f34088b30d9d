"""Collecting one activation vector per prompt at several sites, for probes and steering.

A probe (Alain & Bengio 2016, "Understanding intermediate layers using linear classifier
probes") or a steering vector (Turner et al. 2023; Rimsky et al. 2024) needs a [n, d] matrix per
site: one row per prompt, reduced over token positions. Prompts are left-padded by the runtime,
so the last real token of every row sits at the last column and the real tokens of a row are
where its attention mask is 1.

Reductions:

* ``"last"`` — the activation at each prompt's last real token (where a causal model has read
  the whole prompt);
* ``"mean"`` — the mean over each prompt's real (non-pad) tokens, leaving out a leading BOS
  token (its activation is huge and prompt-independent, so it would swamp the mean); a prompt
  that is only a BOS token keeps it.

The forward stops after the deepest asked site (``stop_after_last_site``), and the result is
float32 on the CPU whatever the model's dtype and device.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float

from interplab.core.errors import ConfigError, InputError, choices
from interplab.core.model import Model
from interplab.core.sites import as_sites

log = logging.getLogger(__name__)

REDUCTIONS = ("last", "mean")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ConfigError(
            f"Unknown reduction {reduction!r}: it says how a prompt's token positions become one "
            f"vector. Choose one of {choices(REDUCTIONS)}."
        )


def collect(model: Model, prompts: Sequence[str] | torch.Tensor, sites: Sequence[str] | str,
            reduction: str = "last", batch_size: int = 16,
            ) -> dict[str, Float[torch.Tensor, "n d"]]:
    """One reduced activation per prompt at every site: ``{str(site): [n, d] float32 CPU}``.

    ``prompts`` is a list of strings (tokenized one by one and left-padded), a [n, pos]
    LongTensor of token ids (all positions real), a list of 1-D LongTensors of different
    lengths (left-padded here), or a mapping with ``input_ids`` / ``attention_mask``. Sites are checked against the model before
    any forward pass; activations with extra axes (e.g. ``attn.z``) are flattened to [n, d].
    """
    check_reduction(reduction)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}.")
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, torch.Tensor):
        if prompts.ndim == 1:
            prompts = prompts[None]
        n = prompts.shape[0]
    elif isinstance(prompts, Mapping):
        if "input_ids" not in prompts:
            raise InputError("A mapping of prompts needs 'input_ids' (and optionally "
                             "'attention_mask').")
        n = prompts["input_ids"].shape[0]
    else:
        prompts = list(prompts)
        n = len(prompts)
    if n == 0:
        raise InputError("Empty prompt list: collect() needs at least one prompt.")
    site_list = [model.site(s) for s in as_sites(sites)]  # SiteError before any forward
    if not site_list:
        raise InputError("No sites given: pass at least one site, e.g. 'L0.resid_post'.")
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    out: dict[str, list[torch.Tensor]] = {str(s): [] for s in site_list}
    for start in range(0, n, batch_size):
        batch = model.to_batch(_chunk(prompts, start, start + batch_size, model))
        _, cache = model.run_with_cache(batch, site_list, stop_after_last_site=True)
        weights = position_weights(batch.input_ids, batch.attention_mask, reduction, bos)
        for site in site_list:
            act = cache[site].float()
            act = act.reshape(act.shape[0], act.shape[1], -1)  # [batch, pos, d]
            reduced = torch.einsum("bp,bpd->bd", weights.to(act.device, act.dtype), act)
            out[str(site)].append(reduced.cpu())
        log.debug("collected %d/%d prompts", min(start + batch_size, n), n)
    return {k: torch.cat(v) for k, v in out.items()}


def _chunk(prompts, lo: int, hi: int, model):
    """Rows ``lo:hi`` of the prompts in a form ``model.to_batch`` accepts."""
    if isinstance(prompts, torch.Tensor):
        return prompts[lo:hi]
    if isinstance(prompts, Mapping):
        return {k: v[lo:hi] for k, v in prompts.items() if k in ("input_ids", "attention_mask")}
    rows = prompts[lo:hi]
    if all(isinstance(r, torch.Tensor) for r in rows):
        return _left_pad(rows, model)
    if not all(isinstance(r, str) for r in rows):
        raise InputError("Prompts must be all strings or all 1-D token-id tensors, not a mix.")
    return rows


def _left_pad(rows: list[torch.Tensor], model) -> dict:
    bad = [i for i, r in enumerate(rows) if r.ndim != 1 or r.numel() == 0]
    if bad:
        raise InputError(f"Token-id prompts {bad} are not non-empty 1-D tensors.")
    tok = model.tokenizer
    pad = getattr(tok, "pad_token_id", None) if tok is not None else None
    pad = 0 if pad is None else pad
    width = max(r.numel() for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - r.numel():] = r.long().cpu()
        mask[i, width - r.numel():] = 1
    return {"input_ids": ids, "attention_mask": mask}


def position_weights(input_ids: torch.Tensor, mask: torch.Tensor, reduction: str,
                      bos: int | None) -> torch.Tensor:
    """[batch, pos] weights whose row-wise dot with the activations is the reduction."""
    mask = mask.float()
    if reduction == "last":
        # Rows are left- or right-padded with contiguous real tokens: the last real one is the
        # largest column index where the mask is 1.
        idx = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask > 0, idx, -1).amax(-1)
        w = torch.zeros_like(mask)
        w[torch.arange(mask.shape[0]), last] = 1.0
        return w
    keep = mask.clone()
    if bos is not None:
        idx = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        first = torch.where(mask > 0, idx, mask.shape[1]).amin(-1)
        rows = torch.arange(mask.shape[0], device=mask.device)
        is_bos = input_ids[rows, first] == bos
        drop = is_bos & (mask.sum(-1) > 1)
        keep[rows[drop], first[drop]] = 0.0
    return keep / keep.sum(-1, keepdim=True)
