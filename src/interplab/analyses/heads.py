"""Attention summaries and head detectors: previous-token, duplicate-token and induction scores
for every layer × head (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits";
Olsson et al. 2022, "In-context Learning and Induction Heads"; cf. TransformerLens's
``head_detector`` and its repeated-random-token induction score).

The model reads sequences of random tokens repeated once, ``[bos] r r`` (r drawn uniformly from
the vocabulary without special tokens, seeded), and every head's attention probabilities (site
``L.attn.pattern``, which needs eager attention) are scored per sequence, each score a mean over
query positions i of an attention mass, so in [0, 1]:

* ``previous_token``: the attention from i to i − 1, over i ≥ 1;
* ``duplicate_token``: the mass on earlier occurrences of token i (positions j < i with
  t[j] = t[i]), over the queries i that have one;
* ``induction``: the mass on the tokens right after those earlier occurrences (j + 1 with j + 1 < i),
  over the queries that have one: on ``r r``, attending from the second copy of a token to the
  token that followed its first copy, the pattern that lets a head copy the continuation;
* summaries: ``first_token``, the mass on position 0 (the BOS "attention sink") over i ≥ 1, and
  ``entropy``, the entropy of the attention distribution in nats (not in [0, 1]), over all i.

CIs are bootstrap intervals of the mean over sequences (``stats.bootstrap_ci``): sequences are
the independent unit, positions within one are not. Assumptions: sequences are unpadded; with a
small vocabulary r repeats tokens within itself, which the token-based definitions absorb (every
earlier occurrence counts); a score whose query set is empty in a sequence is NaN there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interplab.core.config import check_fields, param
from interplab.core.errors import ConfigError, InputError
from interplab.core.model import Model
from interplab.core.sites import Site, SiteKind
from interplab.stats import CI, bootstrap_ci

DETECTORS = ("previous_token", "duplicate_token", "induction")
SUMMARIES = ("first_token", "entropy")


# -- scoring attention patterns [batch, heads, q, k] of unpadded sequences -------------------
def _check(pattern: torch.Tensor, tokens: torch.Tensor | None = None) -> None:
    if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2]:
        raise InputError(
            f"Attention patterns must be [batch, heads, q_pos, k_pos] over whole sequences; got "
            f"shape {tuple(pattern.shape)}. Cache 'L<n>.attn.pattern' without positions=."
        )
    if tokens is not None and tuple(tokens.shape) != (pattern.shape[0], pattern.shape[-1]):
        raise InputError(
            f"tokens must be [batch, pos] = {[pattern.shape[0], pattern.shape[-1]]}; got {tuple(tokens.shape)}."
        )


def _masked_mean(mass: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Mean over query positions of mass [b, h, q] where queries [b, q] holds; NaN if none."""
    q = queries[:, None].to(mass.dtype)
    return (mass * q).sum(-1) / q.sum(-1)


def duplicate_mask(tokens: torch.Tensor) -> torch.Tensor:
    """[b, q, k]: k < q and tokens[k] == tokens[q] (earlier occurrences of the query's token)."""
    n = tokens.shape[-1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(-1)
    return (tokens[:, :, None] == tokens[:, None, :]) & earlier


def induction_mask(tokens: torch.Tensor) -> torch.Tensor:
    """[b, q, k]: k − 1 is an earlier occurrence of the query's token, and k < q."""
    dup = duplicate_mask(tokens)
    out = torch.zeros_like(dup)
    out[..., 1:] = dup[..., :-1]
    n = tokens.shape[-1]
    return out & torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(-1)


def previous_token_scores(pattern: torch.Tensor) -> torch.Tensor:
    """[b, h]: mean attention from position i to i − 1, over i ≥ 1."""
    _check(pattern)
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).float().mean(-1)


def duplicate_token_scores(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[b, h]: attention mass on earlier occurrences of the query's token, over queries with one."""
    _check(pattern, tokens)
    mask = duplicate_mask(tokens)
    return _masked_mean((pattern.float() * mask[:, None]).sum(-1), mask.any(-1))


def induction_scores(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[b, h]: attention mass on the tokens after earlier occurrences of the query's token."""
    _check(pattern, tokens)
    mask = induction_mask(tokens)
    return _masked_mean((pattern.float() * mask[:, None]).sum(-1), mask.any(-1))


def first_token_scores(pattern: torch.Tensor) -> torch.Tensor:
    """[b, h]: attention mass on position 0, over queries i ≥ 1."""
    _check(pattern)
    return pattern[..., 1:, 0].float().mean(-1)


def entropy_scores(pattern: torch.Tensor) -> torch.Tensor:
    """[b, h]: entropy (nats) of each query's attention distribution, averaged over queries."""
    _check(pattern)
    p = pattern.float()
    return -torch.special.xlogy(p, p).sum(-1).mean(-1)


def score_pattern(pattern: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every detector and summary of one layer's patterns: name -> [b, h]."""
    return {
        "previous_token": previous_token_scores(pattern),
        "duplicate_token": duplicate_token_scores(pattern, tokens),
        "induction": induction_scores(pattern, tokens),
        "first_token": first_token_scores(pattern),
        "entropy": entropy_scores(pattern),
    }


# -- inputs ------------------------------------------------------------------------------------
def repeated_random_tokens(n: int, half_length: int, vocab_size: int, exclude=(), bos: int | None = None,
                           seed: int = 0) -> torch.Tensor:
    """[n, (1 +) 2 · half_length] token ids: ``[bos] r r`` with r uniform over the vocabulary
    minus ``exclude`` (special tokens), deterministic in ``seed``."""
    allowed = torch.tensor(sorted(set(range(vocab_size)) - {int(t) for t in exclude}), dtype=torch.long)
    if len(allowed) < 2:
        raise InputError(f"Only {len(allowed)} token ids remain after excluding special tokens.")
    g = torch.Generator().manual_seed(seed)
    r = allowed[torch.randint(len(allowed), (n, half_length), generator=g)]
    parts = [r, r] if bos is None else [torch.full((n, 1), int(bos), dtype=torch.long), r, r]
    return torch.cat(parts, 1)


def _special_ids(model: Model) -> tuple[set[int], int | None]:
    cfg, tok = model.hf.config, model.tokenizer
    ids: set[int] = set()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(cfg, name, None)
        ids.update(value if isinstance(value, (list, tuple)) else [] if value is None else [value])
    if tok is not None:
        ids.update(getattr(tok, "all_special_ids", []) or [])
    bos = getattr(cfg, "bos_token_id", None)
    if bos is None and tok is not None:
        bos = tok.bos_token_id
    return {int(i) for i in ids}, (bos[0] if isinstance(bos, (list, tuple)) else bos)


# -- the analysis ------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadDetectionConfig:
    """Random repeated sequences to score every head on."""

    n_sequences: int = param(64, help="Random sequences to score (the bootstrap's samples; >= 2 for a CI).", ge=2)
    half_length: int = param(20, help="Length of the random block r; each sequence is [bos] r r.", ge=2)
    prepend_bos: bool = param(True, help="Start every sequence with the model's BOS token, if it has one.")
    batch_size: int = param(32, help="Sequences per forward pass.", ge=1)
    seed: int = param(0, help="Seed of the random tokens and of the bootstrap.")
    confidence: float = param(0.95, help="Confidence level of the bootstrap intervals.", gt=0.0, lt=1.0)
    n_resamples: int = param(2000, help="Bootstrap resamples.", ge=2)

    def __post_init__(self) -> None:
        check_fields(self)  # the declared ranges


@dataclass
class HeadScores:
    """Per-sequence scores [seq, layer, head] and their bootstrap CIs [layer, head] by name."""

    config: HeadDetectionConfig
    tokens: torch.Tensor  # [seq, pos] the sequences scored
    per_sequence: dict[str, torch.Tensor]  # name -> [seq, layer, head]
    ci: dict[str, CI]  # name -> CI with estimate / low / high [layer, head]

    def top(self, name: str, k: int = 5) -> list[tuple[int, int, float]]:
        """The k heads with the highest mean score: (layer, head, score)."""
        if name not in self.ci:
            raise ConfigError(f"Unknown score {name!r}. Valid: {', '.join(self.ci)}.")
        mean = self.ci[name].estimate
        flat = mean.flatten().topk(min(k, mean.numel()))
        n_heads = mean.shape[1]
        return [(int(i) // n_heads, int(i) % n_heads, float(v)) for v, i in zip(flat.values, flat.indices)]


def score_heads(model: Model, input_ids: torch.Tensor, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Every detector and summary for every head on unpadded ``input_ids`` [seq, pos]:
    name -> [seq, layer, head]. Caches one batch's patterns at a time."""
    if input_ids.ndim != 2:
        raise InputError(f"input_ids must be [seq, pos]; got shape {tuple(input_ids.shape)}.")
    sites = [Site(layer, SiteKind.PATTERN) for layer in range(model.dims.n_layers)]
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in (*DETECTORS, *SUMMARIES)}
    for lo in range(0, input_ids.shape[0], batch_size):
        ids = input_ids[lo : lo + batch_size].to(model.device)
        _, cache = model.run_with_cache(ids, sites)
        per_layer = [score_pattern(cache[s], ids) for s in sites]
        for name in chunks:
            chunks[name].append(torch.stack([scores[name] for scores in per_layer], 1).cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def detect_heads(model: Model, config: HeadDetectionConfig = HeadDetectionConfig()) -> HeadScores:
    """Score every head on seeded random repeated tokens; see the module docstring."""
    exclude, bos = _special_ids(model)
    bos = bos if config.prepend_bos else None
    length = 2 * config.half_length + (bos is not None)
    cfg = model.hf.config
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if limit is not None and length > limit:
        raise ConfigError(
            f"Sequences of {length} tokens exceed the model's {limit} positions; lower half_length "
            f"to at most {(limit - (bos is not None)) // 2}."
        )
    vocab = model.dims.d_vocab if model.tokenizer is None else min(model.dims.d_vocab, len(model.tokenizer))
    tokens = repeated_random_tokens(config.n_sequences, config.half_length, vocab, exclude, bos, config.seed)
    per_seq = score_heads(model, tokens, config.batch_size)
    ci = {
        name: bootstrap_ci(values, "mean", n_resamples=config.n_resamples, confidence=config.confidence,
                           seed=config.seed)
        for name, values in per_seq.items()
    }
    return HeadScores(config, tokens, per_seq, ci)
