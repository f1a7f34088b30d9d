"""Sampling the examples an explainer sees and a scorer is scored on, for a list of latents.

An *activation source* gives the chosen latents' activations on a batch of contexts:
``source.acts(tokens [B, T]) -> [B, T, n]`` (``n = len(source.latents)``, column j is latent
``source.latents[j]``). Two sources:

* ``DictionaryActivations(model, dictionary, latents)``: the model's activations at the
  dictionary's input site, encoded; BOS positions zeroed.
* ``TokenSetLatents(sets)``: planted latents with no model: latent i is 1.0 on every token whose
  id is in ``sets[i]``, 0 elsewhere (``explain.planted`` builds them).

``sample(source, contexts, tokenizer_or_vocab, cfg)`` runs the source once over every context
(one pass computes all latents; the activations, ``N * T * n`` float32, are kept in memory — call
it on chunks of latents when that is large) and then, per latent:

1. The contexts are split into two disjoint halves by a permutation seeded with ``cfg.seed``
   (the same for every latent): the *explanation* half and the *scoring* half.
2. A context *activates* when the latent's maximum over it is > 0. Its activating window is the
   ``window`` tokens around the first position of that maximum (``window // 2`` before it, when
   the context allows). A non-activating window is a window of ``window`` consecutive tokens on
   which the latent is 0 everywhere, from a context not already used for this latent in that
   half (its start drawn uniformly among such windows).
3. Explanation half: the ``n_top`` activating contexts with the largest maximum (ties: the
   earlier context), then ``n_quantile`` drawn from the rest across ``n_bins`` equal-count bins
   of their maxima (sorted by maximum; as evenly as the bins allow, uniformly within a bin);
   then ``n_explain_neg`` non-activating windows at random.
4. Scoring half: ``n_score_pos`` activating windows drawn across ``n_bins`` equal-count bins of
   all activating contexts' maxima (not just the top), and ``n_score_neg`` non-activating
   windows: ``round(hard_fraction * n_score_neg)`` *hard negatives* — zero windows that contain
   at least one of the latent's ``n_hard_tokens`` most frequent activating tokens (counted over
   the whole explanation half) — and the rest at random. With too few hard candidates the
   remainder is filled at random and ``LatentSample.notes`` says so.
5. A latent with fewer activating (or non-activating) windows than asked gets what exists, and
   a note.

Randomness per latent comes from a generator seeded with ``(cfg.seed, latent id)``, so a latent's
sample does not depend on which other latents are sampled with it; the same seed gives the same
samples. ``density`` is the fraction of all tokens of ``contexts`` the latent fires on
(activation != 0); BOS positions count as tokens it does not fire on.

``Example.context`` is the row of ``contexts`` the window comes from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from interplab.core.config import param
from interplab.core.errors import ConfigError, InputError
from interplab.explain.types import Example, LatentSample

__all__ = ["ActivationSource", "DictionaryActivations", "SampleConfig", "TokenSetLatents", "TokenStrings",
           "collect_acts", "sample"]


class ActivationSource(Protocol):
    latents: list[int]

    def acts(self, tokens: Tensor) -> Tensor:
        """``[B, T, len(latents)]`` float activations of the latents on ``tokens [B, T]``."""


class TokenSetLatents:
    """Planted latents: latent i fires with activation 1.0 on every token whose id is in ``sets[i]``."""

    def __init__(self, sets: Sequence[set[int]]):
        if not sets:
            raise InputError("TokenSetLatents needs at least one token set.")
        self.sets = [set(int(t) for t in s) for s in sets]
        self.latents = list(range(len(self.sets)))
        self._ids = [torch.tensor(sorted(s), dtype=torch.long) for s in self.sets]

    def acts(self, tokens: Tensor) -> Tensor:
        tokens = tokens.cpu()
        return torch.stack([torch.isin(tokens, ids) for ids in self._ids], dim=-1).float()


class DictionaryActivations:
    """The model's activations at ``dictionary.cfg.input_site``, encoded, for ``latents``; BOS
    positions zeroed (the model's BOS id, when it has one). ``acts`` returns float32 on the CPU."""

    def __init__(self, model, dictionary, latents: Sequence[int]):
        from interplab.dictionary.splice import bos_id, check_sites

        check_sites(model, dictionary, need_target=False)
        d_sae = dictionary.cfg.d_sae
        bad = [i for i in latents if not 0 <= int(i) < d_sae]
        if bad or not latents:
            raise InputError(f"Latents must be a non-empty list in 0..{d_sae - 1}; got {bad or 'none'}.")
        self.model, self.dictionary = model, dictionary
        self.latents = [int(i) for i in latents]
        self.site = dictionary.cfg.input_site
        self.bos = bos_id(model)
        self._index = torch.tensor(self.latents, dtype=torch.long, device=dictionary.W_dec.device)

    @torch.no_grad()
    def acts(self, tokens: Tensor) -> Tensor:
        return self.encoded(self.site_acts(tokens), tokens)

    @torch.no_grad()
    def site_acts(self, tokens: Tensor) -> Tensor:
        """The model's activations at the dictionary's input site, ``[B, T, d_in]`` (one forward)."""
        _, cache = self.model.run_with_cache(tokens.to(self.model.device), [self.site])
        return cache[self.site]

    @torch.no_grad()
    def encoded(self, x: Tensor, tokens: Tensor) -> Tensor:
        """``acts`` from site activations ``x`` already read (``site_acts``) for ``tokens``."""
        b, t = tokens.shape
        x = x.reshape(b * t, -1).to(self.dictionary.W_dec.device)
        z = self.dictionary.encode(x).float().index_select(1, self._index).reshape(b, t, -1).cpu()
        if self.bos is not None:
            z = z * (tokens.cpu() != self.bos)[..., None]
        return z


class TokenStrings:
    """Token id -> string, from a tokenizer (``decode([id])``, cached) or a ``{id: string}`` dict."""

    def __init__(self, tokenizer_or_vocab):
        self._vocab = tokenizer_or_vocab if isinstance(tokenizer_or_vocab, Mapping) else None
        self._tok = None if self._vocab is not None else tokenizer_or_vocab
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id not in self._cache:
            if self._vocab is not None:
                self._cache[token_id] = self._vocab.get(token_id, f"<{token_id}>")
            else:
                self._cache[token_id] = self._tok.decode([token_id])
        return self._cache[token_id]


@dataclass(frozen=True)
class SampleConfig:
    """How many examples of each kind to sample per latent (see ``explain.sampling``)."""

    window: int = param(24, help="Tokens per example window.", ge=1)
    n_top: int = param(10, help="Top-activating explanation examples per latent.", ge=0)
    n_quantile: int = param(10, help="Explanation examples drawn across activation quantiles of the rest.", ge=0)
    n_bins: int = param(5, help="Equal-count bins of the activating contexts' maxima to draw across.", ge=1)
    n_explain_neg: int = param(10, help="Non-activating explanation examples per latent.", ge=0)
    n_score_pos: int = param(25, help="Activating scoring examples per latent.", ge=0)
    n_score_neg: int = param(25, help="Non-activating scoring examples per latent.", ge=0)
    hard_fraction: float = param(0.5, help="Share of the non-activating scoring examples that are hard negatives.",
                                 ge=0.0, le=1.0)
    n_hard_tokens: int = param(5, help="Most frequent activating tokens a hard negative must contain one of.", ge=1)
    batch_size: int = param(16, help="Contexts per forward pass.", ge=1)
    seed: int = param(0, help="Seed of the split and of every draw.")

    def __post_init__(self) -> None:
        for name in ("window", "n_bins", "n_hard_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("n_top", "n_quantile", "n_explain_neg", "n_score_pos", "n_score_neg"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.hard_fraction <= 1.0:
            raise ConfigError(f"hard_fraction must be in [0, 1], got {self.hard_fraction}.")


@torch.no_grad()
def collect_acts(source: ActivationSource, contexts: Tensor, batch_size: int = 16) -> Tensor:
    """``[N, T, n]`` float32 (CPU): the source's activations on every context, a batch at a time."""
    parts = [source.acts(contexts[lo: lo + batch_size]).float().cpu() for lo in range(0, contexts.shape[0], batch_size)]
    acts = torch.cat(parts)
    if acts.shape != (*contexts.shape, len(source.latents)):
        raise InputError(f"The activation source returned {tuple(acts.shape)}, expected "
                         f"{(*contexts.shape, len(source.latents))}.")
    return acts


def split_halves(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Two disjoint sorted index sets covering ``range(n)``: (explanation half, scoring half)."""
    if n < 2:
        raise InputError(f"Sampling needs at least 2 contexts (one per half), got {n}.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n // 2].sort().values, perm[n // 2:].sort().values


def sample(source: ActivationSource, contexts: Tensor, tokenizer_or_vocab, cfg: SampleConfig | None = None,
           acts: Tensor | None = None) -> dict[int, LatentSample]:
    """Per latent of ``source``: its ``LatentSample`` (see the module docstring), keyed by latent id.

    ``contexts``: ``LongTensor [N, T]``. ``acts``: the source's activations ``[N, T, n]`` when
    already computed (``collect_acts``); otherwise they are computed here."""
    cfg = cfg or SampleConfig()
    if contexts.ndim != 2 or contexts.dtype != torch.long:
        raise InputError(f"contexts must be a LongTensor [N, T], got {contexts.dtype} {tuple(contexts.shape)}.")
    contexts = contexts.cpu()
    if acts is None:
        acts = collect_acts(source, contexts, cfg.batch_size)
    n_ctx, t = contexts.shape
    w = min(cfg.window, t)
    strings = TokenStrings(tokenizer_or_vocab)
    halves = split_halves(n_ctx, cfg.seed)
    fired = acts != 0
    density = fired.sum((0, 1)).double() / max(n_ctx * t, 1)
    ctx_max, ctx_arg = acts.max(dim=1)  # [N, n]: first position of the maximum
    out = {}
    for j, latent in enumerate(source.latents):
        gen = torch.Generator().manual_seed((cfg.seed * 1_000_003 + int(latent) + 1) % (1 << 62))
        sel = _LatentSelector(contexts, acts[..., j], fired[..., j], ctx_max[:, j], ctx_arg[:, j], w, gen, strings)
        out[int(latent)] = sel.run(halves, cfg, int(latent), float(density[j]))
    return out


class _LatentSelector:
    def __init__(self, contexts, acts, fired, ctx_max, ctx_arg, w, gen, strings):
        self.contexts, self.acts, self.fired = contexts, acts, fired
        self.ctx_max, self.ctx_arg, self.w, self.gen, self.strings = ctx_max, ctx_arg, w, gen, strings
        # zero[c, s]: the window starting at s is all zero
        csum = torch.nn.functional.pad(fired.long().cumsum(1), (1, 0))
        self.zero = (csum[:, w:] - csum[:, :-w]) == 0

    def example(self, c: int, start: int, kind: str) -> Example:
        ids = self.contexts[c, start: start + self.w].tolist()
        return Example(ids=ids, tokens=[self.strings(i) for i in ids],
                       acts=self.acts[c, start: start + self.w].tolist(), context=c, kind=kind)

    def activating(self, c: int, kind: str) -> Example:
        t = self.contexts.shape[1]
        start = min(max(int(self.ctx_arg[c]) - self.w // 2, 0), t - self.w)
        return self.example(c, start, kind)

    def shuffled(self, idx: Tensor) -> Tensor:
        return idx[torch.randperm(idx.numel(), generator=self.gen)]

    def across_bins(self, idx: Tensor, k: int, n_bins: int) -> list[int]:
        """``k`` of the contexts ``idx``, drawn across ``n_bins`` equal-count bins of their maxima."""
        if k <= 0 or idx.numel() == 0:
            return []
        if idx.numel() <= k:
            chosen = idx
        else:
            order = idx[torch.sort(-self.ctx_max[idx], stable=True).indices]  # descending maximum
            bins = [b for b in torch.tensor_split(order, min(n_bins, order.numel())) if b.numel()]
            want = [k // len(bins) + (1 if i < k % len(bins) else 0) for i in range(len(bins))]
            # a bin with fewer contexts than its share passes the rest on to the others
            spare = sum(max(wt - b.numel(), 0) for wt, b in zip(want, bins))
            want = [min(wt, b.numel()) for wt, b in zip(want, bins)]
            while spare:
                for i, b in enumerate(bins):
                    if spare and want[i] < b.numel():
                        want[i] += 1
                        spare -= 1
            chosen = torch.cat([self.shuffled(b)[:wt] for b, wt in zip(bins, want)])
        return chosen[torch.sort(-self.ctx_max[chosen], stable=True).indices].tolist()

    def zero_windows(self, half: Tensor, used: set[int], k: int, kind: str, mask: Tensor | None = None) -> list[Example]:
        """``k`` non-activating windows from distinct contexts of ``half`` not in ``used``."""
        ok = self.zero[half] if mask is None else self.zero[half] & mask[half]
        cands = half[ok.any(1)]
        cands = cands[torch.tensor([int(c) not in used for c in cands], dtype=torch.bool)] if used else cands
        out = []
        for c in self.shuffled(cands)[:k].tolist():
            starts = (self.zero[c] if mask is None else self.zero[c] & mask[c]).nonzero().flatten()
            start = int(starts[torch.randint(starts.numel(), (1,), generator=self.gen)])
            used.add(c)
            out.append(self.example(c, start, kind))
        return out

    def frequent_tokens(self, half: Tensor, n: int) -> list[int]:
        toks = self.contexts[half][self.fired[half]]
        return [t for t, _ in Counter(toks.tolist()).most_common(n)]

    def run(self, halves, cfg: SampleConfig, latent: int, density: float) -> LatentSample:
        ex_half, sc_half = halves
        notes: list[str] = []
        # -- explanation half
        act_ex = ex_half[self.ctx_max[ex_half] > 0]
        order = act_ex[torch.sort(-self.ctx_max[act_ex], stable=True).indices]
        top = order[: cfg.n_top].tolist()
        rest = order[cfg.n_top:]
        quant = self.across_bins(rest, cfg.n_quantile, cfg.n_bins)
        explain = [self.activating(c, "top") for c in top] + [self.activating(c, "quantile") for c in quant]
        if len(explain) < cfg.n_top + cfg.n_quantile:
            notes.append(f"only {len(explain)} activating explanation windows (asked {cfg.n_top + cfg.n_quantile}): "
                         f"it fires in {act_ex.numel()} of {ex_half.numel()} explanation contexts")
        used_ex = set(top) | set(quant)
        explain_neg = self.zero_windows(ex_half, used_ex, cfg.n_explain_neg, "random")
        if len(explain_neg) < cfg.n_explain_neg:
            notes.append(f"only {len(explain_neg)} non-activating explanation windows (asked {cfg.n_explain_neg})")
        # -- scoring half
        act_sc = sc_half[self.ctx_max[sc_half] > 0]
        pos = self.across_bins(act_sc, cfg.n_score_pos, cfg.n_bins)
        score_pos = [self.activating(c, "quantile") for c in pos]
        if len(score_pos) < cfg.n_score_pos:
            notes.append(f"only {len(score_pos)} activating scoring windows (asked {cfg.n_score_pos}): "
                         f"it fires in {act_sc.numel()} of {sc_half.numel()} scoring contexts")
        used_sc = set(pos)
        n_hard = round(cfg.hard_fraction * cfg.n_score_neg)
        hard: list[Example] = []
        if n_hard:
            freq = self.frequent_tokens(ex_half, cfg.n_hard_tokens)
            if freq:
                has = torch.isin(self.contexts, torch.tensor(freq, dtype=torch.long))
                hsum = torch.nn.functional.pad(has.long().cumsum(1), (1, 0))
                contains = (hsum[:, self.w:] - hsum[:, :-self.w]) > 0
                hard = self.zero_windows(sc_half, used_sc, n_hard, "hard", contains)
            if len(hard) < n_hard:
                what = ("no activating tokens in the explanation half" if not freq else
                        f"only {len(hard)} windows that never fire yet contain one of its frequent activating tokens "
                        f"{[self.strings(t) for t in freq]}")
                notes.append(f"hard negatives: {what}; {n_hard - len(hard)} random negatives instead")
        rand = self.zero_windows(sc_half, used_sc, cfg.n_score_neg - len(hard), "random")
        score_neg = hard + rand
        if len(score_neg) < cfg.n_score_neg:
            notes.append(f"only {len(score_neg)} non-activating scoring windows (asked {cfg.n_score_neg})")
        return LatentSample(latent=latent, explain=explain, explain_neg=explain_neg, score_pos=score_pos,
                            score_neg=score_neg, density=density, notes=notes)
