"""Counting the floating-point operations of forwards, to report how close a sweep runs to
the hardware's rate.

A multiply-add is 2 FLOPs. Per token and block: 2 × the block's matrix parameters (every 2D
weight: q/k/v/o projections and the MLP); attention adds 4 × n_heads × d_head per (query, key)
pair it scores (QKᵀ and the weighted sum); the unembedding 2 × d_model × d_vocab per token
whose logits are computed. Norms, activations and rotary embeddings are not counted (a few %),
the same way for every forward compared.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


def causal_pairs(start: int, n_pos: int) -> int:
    """(query, key) pairs causal attention scores for queries start..n_pos-1 (query q sees q + 1 keys)."""
    return (n_pos * (n_pos + 1) - start * (start + 1)) // 2


@dataclass(frozen=True)
class FlopModel:
    n_layers: int
    block_params: int  # 2D weights of one block
    attn_width: int  # n_heads * d_head
    unembed_params: int

    @classmethod
    def of(cls, model) -> FlopModel:
        blocks = model.adapter.blocks()
        block = sum(p.numel() for p in blocks[0].parameters() if p.ndim == 2)
        d = model.dims
        return cls(d.n_layers, block, d.n_heads * d.d_head, model.adapter.unembed().weight.numel())

    def blocks(self, tokens: float, pairs: float, layers: float) -> float:
        """``layers`` blocks over ``tokens`` tokens scoring ``pairs`` (query, key) pairs."""
        return layers * (2 * self.block_params * tokens + 4 * self.attn_width * pairs)

    def unembedding(self, rows: float) -> float:
        return 2 * self.unembed_params * rows

    def suffix(self, n_pos: int, start: int, layers: int) -> float:
        """One row recomputing positions start..n_pos-1 (causal) through ``layers`` blocks and
        its last position's logits."""
        return self.blocks(n_pos - start, causal_pairs(start, n_pos), layers) + self.unembedding(1)

    def plain(self, rows: int, n_pos: int, logits_per_row: int | None = None) -> float:
        """A plain causal forward of ``rows`` × ``n_pos`` tokens (logits at every position
        unless told), as ``model(input_ids)`` computes it."""
        pairs = rows * causal_pairs(0, n_pos)
        logits = n_pos if logits_per_row is None else logits_per_row
        return self.blocks(rows * n_pos, pairs, self.n_layers) + self.unembedding(rows * logits)


@dataclass
class SweepCost:
    """What a sweep needed and did: FLOPs (needed: the least any method must compute, counted
    conservatively; executed: what its forwards computed, padding and regrouping included)."""

    needed_flops: float = 0.0
    executed_flops: float = 0.0
    seconds: float = 0.0
    forwards: int = 0
    tokens: int = 0  # token slots of the largest forward
    reference_rate: float = 0.0  # FLOP/s of a plain forward of the same model (0: not measured)
    reference_tokens: int = 0

    @property
    def rate(self) -> float:
        """Needed FLOPs per second: the achieved rate."""
        return self.needed_flops / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        out = (f"Speed: {self.needed_flops / 1e9:,.1f} GFLOP needed ({self.executed_flops / 1e9:,.1f} "
               f"computed, padding and attention over whole packed sequences included) in "
               f"{self.forwards} forward(s), {self.seconds:.2f} s: {self.rate / 1e9:.1f} GFLOP/s")
        if self.reference_rate > 0:
            out += (f", {self.rate / self.reference_rate:.2f} of a plain batched forward of the same "
                    f"model ({self.reference_tokens} tokens, last-position logits: "
                    f"{self.reference_rate / 1e9:.1f} GFLOP/s)")
        return out + "."


def plain_forward_rate(model, input_ids: torch.Tensor, repeats: int = 1,
                       last_only: bool = False) -> tuple[float, float]:
    """(FLOPs per second, seconds) of a plain ``model.hf(input_ids)`` forward (all logits, or
    with ``last_only`` the last position's, as a patching loop asks), timed after one warm-up;
    the reference a sweep's achieved rate is reported against."""
    rows, n_pos = input_ids.shape
    flops = FlopModel.of(model).plain(rows, n_pos, 1 if last_only else None)
    kwargs = {"logits_to_keep": 1} if last_only else {}
    device = next(model.hf.parameters()).device
    input_ids = input_ids.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        model.hf(input_ids=input_ids, **kwargs)
        best = float("inf")
        for _ in range(repeats):
            sync()
            t = time.perf_counter()
            model.hf(input_ids=input_ids, **kwargs)
            sync()
            best = min(best, time.perf_counter() - t)
    return flops / best, best
