"""Reusing what is identical across rows: a shared prefix of positions, and the layers before
the first one a row changes.

A causal model's states at positions before ``start`` do not depend on anything at or after
``start``; and a row whose first edit is at layer L has, below L, exactly the base run's states.
When many rows differ only from position ``start`` and layer ``start_layer`` on (a patching
sweep), the prefix's keys and values come from one base forward, the tail of the blocks runs
from the base run's cached resid_pre at ``start_layer``, and only that part is computed. Equal
to full forwards up to float rounding (sums run in another order), which the sweep tests bound.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers import DynamicCache

from interplab.core.errors import InputError
from interplab.runtime import dispatch
from interplab.runtime.cache import ActivationCache
from interplab.runtime.context import ForwardContext
from interplab.runtime.inputs import Batch


def prefix_states(model, batch: Batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) [batch, n_kv_heads, pos, d_head] of an unpadded batch."""
    return base_states(model, batch)[0]


def base_states(model, batch: Batch, sites=()) -> tuple[list, ActivationCache, torch.Tensor]:
    """One forward of the base batch giving what the rows reuse: every layer's keys and
    values (the prefix) and the activations at ``sites`` (e.g. resid_pre where rows start),
    and the last position's logits [batch, 1, vocab]."""
    if batch.padded:
        raise InputError("Prefix reuse needs prompts of equal length (no padding).")
    cache = ActivationCache(attention_mask=batch.attention_mask)
    handles = []
    ctx = ForwardContext(batch.positions, batch.lengths, "full")
    try:
        for site in sites:
            handles += model.attach_site(site, model.cache_hook(site, cache, None, None, None),
                                          dispatch.CACHE, False)
        with torch.no_grad():
            # A config-less DynamicCache keeps every key of every layer; with the config,
            # sliding-window layers would keep only the last `sliding_window` keys, and slicing
            # the prefix out of those picks the wrong tokens.
            out = model.call_hf(ctx, input_ids=batch.input_ids, past_key_values=DynamicCache(),
                              use_cache=True, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers], cache, out.logits


def is_causal(model) -> bool:
    """Prefix reuse needs causal attention (a later token never changes an earlier one);
    bidirectional models (e.g. tracr's, ``config.causal=False``) must run whole prompts."""
    return bool(getattr(model.hf.config, "causal", True))


def can_skip_layers(model) -> bool:
    return model.adapter.layers_owner() is not None


@contextlib.contextmanager
def tail_blocks(model, start_layer: int):
    """Within the body, the HF forward runs only blocks ``start_layer`` onward."""
    owner, name = model.adapter.layers_owner()
    blocks = getattr(owner, name)
    setattr(owner, name, nn.ModuleList(list(blocks)[start_layer:]))
    try:
        yield
    finally:
        setattr(owner, name, blocks)


def run_suffix(model, batch: Batch, start: int, kv, rows: torch.Tensor, interventions=(),
               logits_to_keep: int = 1, start_layer: int = 0,
               resid: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of rows ``batch[rows]`` computed from position ``start`` and layer
    ``start_layer`` on: the prefix from ``kv`` (``prefix_states``), the input of block
    ``start_layer`` from ``resid`` (the base run's resid_pre there, [prompt, pos, d_model]).
    Interventions index the new rows 0..len(rows)-1 and must sit at layers >= start_layer."""
    sub = Batch(batch.input_ids[rows], batch.attention_mask[rows], batch.positions[rows],
                batch.lengths[rows])
    kwargs: dict = {"logits_to_keep": logits_to_keep}
    if start_layer > 0:
        if resid is None or not can_skip_layers(model):
            raise InputError("Skipping layers needs the base resid_pre and a supporting adapter.")
        kwargs["inputs_embeds"] = resid[rows, start:]
    else:
        kwargs["input_ids"] = sub.input_ids[:, start:]
    if start > 0:
        cache = DynamicCache()  # full layers, see prefix_states; HF's masks apply the window
        for layer, (k, v) in enumerate(kv):
            cache.update(k[rows, :, :start], v[rows, :, :start], layer)
        kwargs.update(past_key_values=cache, position_ids=sub.positions[:, start:], use_cache=True)
    else:
        kwargs["use_cache"] = False
    ctx = ForwardContext(sub.positions[:, start:], sub.lengths, "full" if start == 0 else "decode")
    skip = tail_blocks(model, start_layer) if start_layer > 0 else contextlib.nullcontext()
    with model.attached(interventions, batch=sub), torch.no_grad(), skip:
        return model.call_hf(ctx, **kwargs).logits
