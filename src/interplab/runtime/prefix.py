"""Reusing a shared prefix: run only the suffix of many rows on top of one cached prefix.

A causal model's states at positions before ``start`` do not depend on anything at or after
``start``. When many rows differ only from ``start`` on (a patching sweep patching position
``start`` of the same prompt), the prefix's keys and values are computed once and each row runs
the suffix only. Used by the batched sweeps; equal to full forwards up to float rounding
(attention over a cache sums in another order), which the sweep tests bound.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from interplab.core.errors import InputError
from interplab.runtime.context import ForwardContext
from interplab.runtime.inputs import Batch


def prefix_states(model, batch: Batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) [batch, n_kv_heads, pos, d_head] of an unpadded batch."""
    if batch.padded:
        raise InputError("Prefix reuse needs prompts of equal length (no padding).")
    ctx = ForwardContext(batch.positions, batch.lengths, "full")
    with torch.no_grad():
        # A config-less DynamicCache keeps every key of every layer; with the config, sliding-
        # window layers would keep only the last `sliding_window` keys, and slicing the prefix
        # out of those picks the wrong tokens.
        out = model._call(ctx, input_ids=batch.input_ids, past_key_values=DynamicCache(),
                          use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def run_suffix(model, batch: Batch, start: int, kv, rows: torch.Tensor, interventions=(),
               logits_to_keep: int = 1) -> torch.Tensor:
    """Logits of rows ``batch[rows]`` computed from position ``start`` on, over the cached
    prefix ``kv`` (from ``prefix_states``); interventions index the new rows 0..len(rows)-1."""
    sub = Batch(batch.input_ids[rows], batch.attention_mask[rows], batch.positions[rows],
                batch.lengths[rows])
    if start == 0:
        with model.attached(interventions, batch=sub), torch.no_grad():
            ctx = ForwardContext(sub.positions, sub.lengths, "full")
            return model._call(ctx, input_ids=sub.input_ids, use_cache=False,
                               logits_to_keep=logits_to_keep).logits
    cache = DynamicCache()  # full layers, see prefix_states; HF's masks apply the window
    for layer, (k, v) in enumerate(kv):
        cache.update(k[rows, :, :start], v[rows, :, :start], layer)
    suffix = sub.positions[:, start:]
    with model.attached(interventions, batch=sub), torch.no_grad():
        ctx = ForwardContext(suffix, sub.lengths, "decode")
        return model._call(
            ctx, input_ids=sub.input_ids[:, start:], past_key_values=cache,
            position_ids=suffix, use_cache=True, logits_to_keep=logits_to_keep,
        ).logits
