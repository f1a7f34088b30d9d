"""Generation with interventions, under the KV cache or without it.

Semantics. An intervention's positions are token positions of each sequence: 0 is the prompt's
first token, ``len(prompt)`` the first generated one; negative positions count back from the
prompt's end (-1 is the prompt's last token). The intervention acts on a token's activations
whenever that token is computed: prompt positions during the prefill forward, position
``len(prompt) + t`` in the decode step that computes new token ``t``'s successor. With
``positions=None`` it acts on every token, prompt and generated. Because the KV cache keeps the
keys and values computed under the intervention, this equals re-running the whole sequence
with the same interventions at every step (``use_kv_cache=False``, the reference path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interplab.core.errors import InputError
from interplab.runtime.context import ForwardContext
from interplab.runtime.inputs import Batch, batch_from_ids


@dataclass
class GenerationResult:
    """Prompt plus generated tokens (left-padded as the prompts were), and the new tokens."""

    tokens: torch.Tensor  # [batch, pad + prompt + new]
    new_tokens: torch.Tensor  # [batch, new]
    prompt_lengths: torch.Tensor
    logits: torch.Tensor  # [batch, new, d_vocab]: the distribution each new token came from
    texts: list[str] | None = None


def _pick(logits, do_sample, temperature, top_k, generator):
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate(model, inputs, max_new_tokens: int = 20, interventions=(), *, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
             use_kv_cache: bool = True) -> GenerationResult:
    """Generate ``max_new_tokens`` tokens per prompt (greedy unless ``do_sample``)."""
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if do_sample and temperature <= 0:
        raise InputError(f"temperature must be > 0 when sampling, got {temperature}.")
    batch: Batch = model.to_batch(inputs, extra_tokens=max_new_tokens)
    right = (batch.attention_mask[:, -1] == 0).nonzero().flatten().tolist()
    if right:  # new tokens go on the right, after which those rows' tokens would have a gap
        raise InputError(
            f"generate() needs left-padded prompts, but rows {right} end in padding. Left-pad "
            "them (e.g. tokenizer.padding_side = 'left') or pass the prompts as strings."
        )
    lengths = batch.lengths
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids, mask = batch.input_ids, batch.attention_mask
    new, step_logits = [], []
    with model.attached(interventions, batch=batch, max_new_tokens=max_new_tokens), torch.no_grad():
        cache = None
        for step in range(max_new_tokens):
            full = batch_from_ids(ids, mask)
            if use_kv_cache and step > 0:
                ctx = ForwardContext(full.positions[:, -1:], lengths, "decode")
                out = model.call_hf(
                    ctx, input_ids=ids[:, -1:], attention_mask=mask,
                    position_ids=full.positions[:, -1:].clamp(min=0),
                    past_key_values=cache, use_cache=True,
                )
            else:
                ctx = ForwardContext(full.positions, lengths, "prefill" if step == 0 else "full")
                out = model.call_hf(
                    ctx, input_ids=ids, attention_mask=mask,
                    position_ids=full.positions.clamp(min=0), use_cache=use_kv_cache,
                )
            cache = out.past_key_values if use_kv_cache else None
            logits = out.logits[:, -1].float()
            token = _pick(logits, do_sample, temperature, top_k, gen.manual_seed(seed + step))
            step_logits.append(logits)
            new.append(token)
            ids = torch.cat([ids, token[:, None].to(ids.device)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    new_tokens = torch.stack(new, dim=1)
    texts = None
    if model.tokenizer is not None:
        texts = [model.tokenizer.decode(row) for row in new_tokens.tolist()]
    return GenerationResult(ids, new_tokens, lengths, torch.stack(step_logits, 1), texts)
