"""Turning prompts into a left-padded batch with positions that follow the attention mask."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int

from interplab.core.errors import InputError


@dataclass(frozen=True)
class Batch:
    """Token ids, mask and per-token positions of a batch of prompts."""

    input_ids: Int[torch.Tensor, "batch pos"]
    attention_mask: Int[torch.Tensor, "batch pos"]
    positions: Int[torch.Tensor, "batch pos"]  # index within each prompt; -1 on padding
    lengths: Int[torch.Tensor, " batch"]

    @property
    def padded(self) -> bool:
        return bool((self.attention_mask == 0).any())

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)

    def hf_kwargs(self) -> dict:
        """Arguments for the HF forward. Unpadded batches pass ids only, exactly as a user
        calling the plain model would, so "nothing attached" is bit-identical to it."""
        if not self.padded:
            return {"input_ids": self.input_ids}
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.positions.clamp(min=0),
        }


def batch_from_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Batch:
    if input_ids.ndim == 1:
        input_ids = input_ids[None]
    if input_ids.ndim != 2 or input_ids.dtype not in (torch.int64, torch.int32):
        raise InputError(
            f"Token ids must be an integer tensor of shape [batch, pos]; got dtype "
            f"{input_ids.dtype} and shape {tuple(input_ids.shape)}."
        )
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise InputError(f"Empty batch: token ids of shape {tuple(input_ids.shape)}.")
    input_ids = input_ids.long()
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(input_ids.device).long()
    if attention_mask.shape != input_ids.shape:
        raise InputError(
            f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids shape "
            f"{tuple(input_ids.shape)}."
        )
    lengths = attention_mask.sum(-1)
    if (lengths == 0).any():
        rows = (lengths == 0).nonzero().flatten().tolist()
        raise InputError(f"Rows {rows} have no real tokens (attention mask all zero).")
    positions = attention_mask.cumsum(-1) - 1
    positions = positions.masked_fill(attention_mask == 0, -1)
    # Real tokens must be contiguous, or "position p" would mean nothing.
    idx = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    first = torch.where(attention_mask == 1, idx, input_ids.shape[1]).amin(-1)
    last = torch.where(attention_mask == 1, idx, -1).amax(-1)
    if not torch.equal(last - first + 1, lengths):
        raise InputError("Each row's real tokens must be contiguous (left or right padding).")
    return Batch(input_ids, attention_mask, positions, lengths)


def encode(tokenizer, prompts: Sequence[str], device: torch.device | str = "cpu") -> Batch:
    """Tokenize each prompt on its own (the tokenizer's default special tokens) and left-pad."""
    if tokenizer is None:
        raise InputError("This model has no tokenizer; pass token ids instead of strings.")
    if len(prompts) == 0:
        raise InputError("Empty prompt list: pass at least one prompt.")
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    empty = [i for i, r in enumerate(rows) if len(r) == 0]
    if empty:
        raise InputError(f"Prompts {empty} tokenize to nothing; every prompt needs a token.")
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return batch_from_ids(ids.to(device), mask.to(device))


def as_batch(inputs, tokenizer, device) -> Batch:
    """Accept a Batch, a prompt or list of prompts, token ids, or a tokenizer-style mapping."""
    if isinstance(inputs, Batch):
        return inputs
    if isinstance(inputs, str):
        return encode(tokenizer, [inputs], device)
    if isinstance(inputs, torch.Tensor):
        return batch_from_ids(inputs.to(device))
    if isinstance(inputs, Mapping):
        if "input_ids" not in inputs:
            raise InputError("A mapping input needs 'input_ids' (and optionally 'attention_mask').")
        mask = inputs.get("attention_mask")
        return batch_from_ids(inputs["input_ids"].to(device), None if mask is None else mask)
    if isinstance(inputs, Sequence) and all(isinstance(p, str) for p in inputs):
        return encode(tokenizer, list(inputs), device)
    raise InputError(
        f"Cannot run inputs of type {type(inputs).__name__}. Pass a prompt, a list of prompts, "
        "a [batch, pos] tensor of token ids, a mapping with input_ids/attention_mask, or a Batch."
    )
