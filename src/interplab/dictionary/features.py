"""Per-latent statistics of a dictionary over a corpus — what a feature dashboard shows
(Bricken et al. 2023, "Towards Monosemanticity"; Neuronpedia / SAEDashboard).

For every latent at once (no per-latent loop over the data):

* density: the fraction of (non-BOS) tokens it fires on (activation != 0), and its mean
  activation over those tokens;
* the ``n_top`` contexts where its maximum over the context is largest (ties: the earlier
  context, then the earlier position), each with the position of that maximum and the latent's
  activations on a ``window`` of tokens around it. A running top-n merge keeps them: per batch
  the per-context maxima join the current top n and a stable descending sort keeps n. Only
  positive maxima count; slots no context filled hold context -1;
* a histogram of log10 |activation| over the tokens it fires on, in fixed bins (values outside
  clamp into the end bins), counted with one bincount over all (token, latent) firings;
* its direct logit effects: the decoder row (in model units) through the final norm's gain
  (centred first for LayerNorm) and the unembedding, ``W_dec[i] · diag(γ) · W_Uᵀ``, top
  ``n_logits`` positive and negative (the norm's scale is left out, as in dashboards). Only
  for targets in the residual stream (embed, resid_*, attn_out, mlp_out — a transcoder's
  mlp_out included); None otherwise;
* quantile samples (Bricken et al.'s / SAEDashboard's "subsample intervals"): (0, max] of the
  latent's per-context maxima (max = its top value) split into ``n_quantiles`` equal intervals,
  ``quantile_edges(top_values[:, 0], n_quantiles)`` (``[d_sae, n_quantiles + 1]``, interval q
  is ``(edges[q], edges[q + 1]]``, edges ``max * q / n_quantiles``; ``FeatureStats.quantile_edges``);
  in each, ``n_per_quantile`` contexts whose maximum lies in it, drawn uniformly at random without
  replacement (priority sampling: every (context, latent) gets a priority from a
  ``torch.Generator`` seeded with ``seed``, the highest ``n_per_quantile`` in the interval are
  kept), each with the same window as the top contexts, sorted by maximum within the interval;
  empty slots hold context -1. ``quantile_counts`` says how many contexts have their maximum in
  each interval. This is a second pass over the contexts (the maximum is known only after the
  first): it about doubles the run's time. The pass recomputes the maxima; should a device give a
  slightly larger one than the first pass, that context counts in the top interval;
* the ``n_neighbours`` nearest other latents by cosine similarity of decoder rows
  (``neighbour_ids``, ``neighbour_cos``), computed a chunk of rows at a time;
* ``vocab``: the decoded string of every token id in any window or logit list (from the model's
  tokenizer, when it has one), so that a dashboard needs no tokenizer (``token_str``).

The running selections and the neighbours live in ``features_select.py``, the logit effects in
``features_logits.py``; ``neuronpedia.py`` exports the stats in Neuronpedia's import format.

Saved: ``config.json`` (meta, the config, the vocab as ``{"id": "string"}``) +
``stats.safetensors`` + ``provenance.json``. A directory written before the quantiles,
neighbours and vocab existed still loads: those are None and the config says 0 for them.

Memory: the windows are ``[d_sae, n_top, window]`` float32 activations and int64 tokens: with
9216 latents, 10 examples and 16 tokens about 6 MB and 12 MB; during the run a batch adds
``batch * window * d_sae`` of each. The quantile samples add ``[d_sae, n_quantiles,
n_per_quantile, window]`` of each (5 × 4 slots: twice the top contexts' size), and during the
second pass about ``3 * n_quantiles * n_per_quantile * window * d_sae`` floats.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from interplab.core.artifacts import write_artifact
from interplab.core.config import param, to_dict
from interplab.core.errors import ConfigError, InterplabError
from interplab.core.model import Model
from interplab.dictionary.base import Dictionary
from interplab.dictionary.features_logits import RESIDUAL_KINDS, logit_effects
from interplab.dictionary.features_select import QuantileSample, TopN, decoder_neighbours, quantile_edges
from interplab.dictionary.splice import bos_id, check_contexts, check_sites

FORMAT = "interplab-feature-stats/1"
__all__ = ["FORMAT", "RESIDUAL_KINDS", "TENSORS", "FeatureConfig", "FeatureDescription", "FeatureStats",
           "feature_stats", "logit_effects", "token_strings"]


@dataclass(frozen=True)
class FeatureConfig:
    """What to keep per latent."""

    n_top: int = param(10, help="Top-activating contexts kept per latent.")
    window: int = param(16, help="Tokens of each top context kept around its maximum: 3/4 before it, the rest after.")
    batch_size: int = param(8, help="Contexts per forward pass.")
    hist_bins: int = param(40, help="Bins of the per-latent log10-activation histogram.")
    hist_low: float = param(-4.0, help="Lower edge of the histogram, in log10 activation.")
    hist_high: float = param(4.0, help="Upper edge of the histogram, in log10 activation.")
    n_logits: int = param(10, help="Top positive and negative logit effects kept per latent (0: none).")
    exclude_bos: bool = param(True, help="Leave BOS positions out of every statistic.")
    n_quantiles: int = param(5, help="Intervals of (0, max] to sample contexts from, per latent (0: no second pass).")
    n_per_quantile: int = param(4, help="Contexts sampled uniformly at random per interval.")
    seed: int = param(0, help="Seed of the quantile samples.")
    n_neighbours: int = param(8, help="Nearest latents by decoder cosine kept per latent (0: none).")
    progress: bool = param(True, help="Show a progress bar.")

    def __post_init__(self) -> None:
        for name in ("n_top", "window", "batch_size", "hist_bins"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("n_logits", "n_quantiles", "n_neighbours"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.n_per_quantile < 1:
            raise ConfigError(f"n_per_quantile must be >= 1, got {self.n_per_quantile}.")
        if not self.hist_low < self.hist_high:
            raise ConfigError(f"hist_low must be below hist_high, got {self.hist_low} and {self.hist_high}.")

    @property
    def before(self) -> int:
        """Tokens of a window before its maximum (when the context allows)."""
        return (3 * self.window) // 4


@dataclass
class FeatureDescription:
    """One latent as a dashboard shows it."""

    index: int
    density: float
    mean_activation: float
    examples: list[str]  # top contexts, the maximum marked «like this» with its activation
    top_logits: list[tuple[str, float]]
    bottom_logits: list[tuple[str, float]]

    def __str__(self) -> str:
        lines = [f"latent {self.index}: density {self.density:.3g}, mean activation {self.mean_activation:.3g}"]
        lines += [f"  {e}" for e in self.examples]
        if self.top_logits:
            lines.append("  promotes: " + ", ".join(f"{t!r} {v:+.3g}" for t, v in self.top_logits))
            lines.append("  suppresses: " + ", ".join(f"{t!r} {v:+.3g}" for t, v in self.bottom_logits))
        return "\n".join(lines)


TENSORS = ("density", "mean_activation", "top_values", "top_contexts", "top_positions", "window_start",
           "window_acts", "window_tokens", "hist_counts", "hist_edges", "logit_top_ids",
           "logit_top_values", "logit_bottom_ids", "logit_bottom_values", "quantile_values",
           "quantile_contexts", "quantile_positions", "quantile_start", "quantile_acts", "quantile_tokens",
           "quantile_counts", "neighbour_ids", "neighbour_cos")


@dataclass
class FeatureStats:
    """Statistics of every latent (see the module docstring); tensors lead with ``d_sae``."""

    config: FeatureConfig
    input_site: str
    target_site: str
    n_contexts: int
    n_tokens: int
    density: Tensor  # [d_sae] float64
    mean_activation: Tensor  # [d_sae] float64, over firing tokens; NaN when dead
    top_values: Tensor  # [d_sae, n_top] float32, the context's maximum
    top_contexts: Tensor  # [d_sae, n_top] int64 context index; -1 for an empty slot
    top_positions: Tensor  # [d_sae, n_top] int64 position of the maximum
    window_start: Tensor  # [d_sae, n_top] int64 first position of the window
    window_acts: Tensor  # [d_sae, n_top, window] float32
    window_tokens: Tensor  # [d_sae, n_top, window] int64
    hist_counts: Tensor  # [d_sae, hist_bins] int64
    hist_edges: Tensor  # [hist_bins + 1] float64, log10 activation
    logit_top_ids: Tensor | None = None  # [d_sae, n_logits]
    logit_top_values: Tensor | None = None
    logit_bottom_ids: Tensor | None = None
    logit_bottom_values: Tensor | None = None
    # None when n_quantiles is 0 (or in a directory from before they existed):
    quantile_values: Tensor | None = None  # [d_sae, n_quantiles, n_per_quantile] float32, the context's maximum
    quantile_contexts: Tensor | None = None  # [d_sae, n_q, k] int64; -1 for an empty slot
    quantile_positions: Tensor | None = None  # [d_sae, n_q, k] int64 position of the maximum
    quantile_start: Tensor | None = None  # [d_sae, n_q, k] int64 first position of the window
    quantile_acts: Tensor | None = None  # [d_sae, n_q, k, window] float32
    quantile_tokens: Tensor | None = None  # [d_sae, n_q, k, window] int64
    quantile_counts: Tensor | None = None  # [d_sae, n_q] int64 contexts whose maximum lies in the interval
    neighbour_ids: Tensor | None = None  # [d_sae, n_neighbours] int64, most similar first; None when 0
    neighbour_cos: Tensor | None = None  # [d_sae, n_neighbours] float32
    vocab: dict[int, str] | None = None  # token id -> decoded string, for every id in the tensors above
    context_len: int | None = None  # tokens per context (None in an old directory)

    @property
    def d_sae(self) -> int:
        return self.density.shape[0]

    def quantile_edges(self) -> Tensor | None:
        """``[d_sae, n_quantiles + 1]`` float32: latent i's interval q is ``(edges[i, q],
        edges[i, q + 1]]`` (see the module docstring); None without quantile samples."""
        if self.quantile_values is None:
            return None
        return quantile_edges(self.top_values[:, 0], self.quantile_values.shape[1])

    def token_str(self, token_id: int) -> str:
        """The token's decoded string from ``vocab``; ``<id>`` when it is not there."""
        token_id = int(token_id)
        return self.vocab.get(token_id, f"<{token_id}>") if self.vocab else f"<{token_id}>"

    def token_ids(self) -> Tensor:
        """Sorted distinct token ids in the windows (top and quantile) and logit lists."""
        parts = [getattr(self, k) for k in ("window_tokens", "quantile_tokens", "logit_top_ids", "logit_bottom_ids")]
        return torch.unique(torch.cat([p.flatten() for p in parts if p is not None]))

    def describe(self, i: int, tokenizer=None, n: int | None = None) -> FeatureDescription:
        """Latent ``i``'s top contexts as text (token ids in <> without a tokenizer), its
        maximum marked ``«token»(activation)``, and its logit effects."""
        if not 0 <= i < self.d_sae:
            raise InterplabError(f"Latent {i} out of range: this dictionary has {self.d_sae} (0..{self.d_sae - 1}).")
        examples = []
        for j in range(self.top_contexts.shape[1] if n is None else min(n, self.top_contexts.shape[1])):
            ctx = int(self.top_contexts[i, j])
            if ctx < 0:
                break
            mark = int(self.top_positions[i, j] - self.window_start[i, j])
            parts = [_token(tokenizer, int(t)) for t in self.window_tokens[i, j]]
            value = float(self.top_values[i, j])
            parts[mark] = f"«{parts[mark]}»({value:.3g})"
            sep = "" if tokenizer is not None else " "
            examples.append(f"{value:.3g} [context {ctx}, position {int(self.top_positions[i, j])}]: {sep.join(parts)}")
        top = bottom = []
        if self.logit_top_ids is not None:
            top = [(_token(tokenizer, int(t)), float(v)) for t, v in zip(self.logit_top_ids[i], self.logit_top_values[i])]
            bottom = [(_token(tokenizer, int(t)), float(v))
                      for t, v in zip(self.logit_bottom_ids[i], self.logit_bottom_values[i])]
        return FeatureDescription(i, float(self.density[i]), float(self.mean_activation[i]), examples, top, bottom)

    # -- artifacts -------------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False, **provenance_extra) -> Path:
        """``config.json`` + ``stats.safetensors`` + ``provenance.json``, written atomically."""
        meta = {"format": FORMAT, "config": to_dict(self.config), "input_site": self.input_site,
                "target_site": self.target_site, "n_contexts": self.n_contexts, "n_tokens": self.n_tokens}
        if self.context_len is not None:
            meta["context_len"] = self.context_len
        if self.vocab is not None:
            meta["vocab"] = {str(k): v for k, v in sorted(self.vocab.items())}
        tensors = {k: getattr(self, k) for k in TENSORS if getattr(self, k) is not None}
        return write_artifact(path, meta, tensors, "stats.safetensors", overwrite, **provenance_extra)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise InterplabError(f"{path} is not a feature-stats directory (no config.json).")
        meta = json.loads(cfg_file.read_text())
        if meta.get("format") != FORMAT:
            raise InterplabError(f"{path}/config.json is not interplab feature stats (format {meta.get('format')!r}).")
        known = {f.name for f in fields(FeatureConfig)}
        # A directory from before the quantile samples and neighbours: say 0 of them, as it has none.
        old = {k: 0 for k in ("n_quantiles", "n_neighbours") if k not in meta["config"]}
        cfg = FeatureConfig(**{**{k: v for k, v in meta["config"].items() if k in known}, **old})
        tensors = {k: v for k, v in load_file(str(path / "stats.safetensors")).items() if k in TENSORS}
        vocab = meta.get("vocab")
        return cls(config=cfg, input_site=meta["input_site"], target_site=meta["target_site"],
                   n_contexts=meta["n_contexts"], n_tokens=meta["n_tokens"], context_len=meta.get("context_len"),
                   vocab=None if vocab is None else {int(k): v for k, v in vocab.items()}, **tensors)


def _token(tokenizer, t: int) -> str:
    return f"<{t}>" if tokenizer is None else tokenizer.decode([t])


# -- computing them ---------------------------------------------------------------------------
def _latents(model: Model, dictionary: Dictionary, contexts: Tensor, cfg: FeatureConfig, bos: int | None,
             desc: str) -> Iterator[tuple[int, Tensor, Tensor, int]]:
    """Per batch of contexts: ``(first context, tokens [B, T], latents z [B, T, S] float32 with
    BOS positions zeroed, tokens counted)``, on the dictionary's device."""
    t, s, dev = contexts.shape[1], dictionary.cfg.d_sae, dictionary.W_dec.device
    site = dictionary.cfg.input_site
    for lo in tqdm(range(0, contexts.shape[0], cfg.batch_size), desc=desc, unit="batch", disable=not cfg.progress):
        tokens = contexts[lo: lo + cfg.batch_size].to(model.device)
        _, cache = model.run_with_cache(tokens, [site])
        b = tokens.shape[0]
        z = dictionary.encode(cache[site].reshape(b * t, -1).to(dev)).float().reshape(b, t, s)
        tokens = tokens.to(dev)
        if bos is None:
            yield lo, tokens, z, b * t
        else:
            keep = tokens != bos
            yield lo, tokens, z * keep[..., None], int(keep.sum())


@torch.no_grad()
def feature_stats(model: Model, dictionary: Dictionary, contexts: Tensor, cfg: FeatureConfig | None = None
                  ) -> FeatureStats:
    """Statistics of every latent of ``dictionary`` over ``contexts`` (``LongTensor [n,
    ctx]``, unpadded), read through the HookedModel ``model``."""
    cfg = cfg or FeatureConfig()
    check_sites(model, dictionary, need_target=False)
    contexts = check_contexts(model, contexts)
    n_ctx, t = contexts.shape
    w = min(cfg.window, t)
    s, nb = dictionary.cfg.d_sae, cfg.hist_bins
    dev = dictionary.W_dec.device
    bos = bos_id(model) if cfg.exclude_bos else None
    top = TopN(cfg.n_top, w, s, dev)
    fires = torch.zeros(s, dtype=torch.long, device=dev)
    act_sum = torch.zeros(s, dtype=torch.float64, device=dev)
    hist = torch.zeros(s * nb, dtype=torch.long, device=dev)
    width = (cfg.hist_high - cfg.hist_low) / nb
    n_tokens = 0
    for lo, tokens, z, counted in _latents(model, dictionary, contexts, cfg, bos, "feature stats"):
        b = z.shape[0]
        n_tokens += counted
        fired = z != 0
        fires += fired.sum((0, 1))
        act_sum += z.double().sum((0, 1))
        tok_i, lat_i = fired.reshape(b * t, s).nonzero(as_tuple=True)
        mag = z.reshape(b * t, s)[tok_i, lat_i].abs().log10()
        bins = ((mag - cfg.hist_low) / width).floor().long().clamp(0, nb - 1)
        hist += torch.bincount(lat_i * nb + bins, minlength=s * nb)
        top.merge(z, tokens, lo, cfg.before)
    empty = top.vals <= 0
    top.ctx[empty] = -1
    stats = FeatureStats(
        config=cfg, input_site=dictionary.cfg.input_site, target_site=dictionary.cfg.target_site,
        n_contexts=n_ctx, n_tokens=n_tokens, context_len=t,
        density=(fires.double() / max(n_tokens, 1)).cpu(),
        mean_activation=(act_sum / fires.double()).cpu(),
        top_values=top.vals.clamp_min(0).T.contiguous().cpu(),
        top_contexts=top.ctx.T.contiguous().cpu(),
        top_positions=top.pos.masked_fill(empty, 0).T.contiguous().cpu(),
        window_start=top.start.masked_fill(empty, 0).T.contiguous().cpu(),
        window_acts=top.acts.masked_fill(empty[:, None, :], 0).permute(2, 0, 1).contiguous().cpu(),
        window_tokens=top.toks.masked_fill(empty[:, None, :], 0).permute(2, 0, 1).contiguous().cpu(),
        hist_counts=hist.reshape(s, nb).cpu(),
        hist_edges=torch.linspace(cfg.hist_low, cfg.hist_high, nb + 1, dtype=torch.float64),
    )
    del top
    if cfg.n_quantiles:
        sample = QuantileSample(stats.top_values[:, 0].to(dev), cfg.n_quantiles, cfg.n_per_quantile, w)
        gen = torch.Generator().manual_seed(cfg.seed)  # on the CPU: the same sample on any device
        for lo, _, z, _ in _latents(model, dictionary, contexts, cfg, bos, "feature stats (quantiles)"):
            sample.merge(z, torch.rand(z.shape[0], s, generator=gen).to(dev), lo, cfg.before)
        for k, v in sample.result(contexts).items():
            setattr(stats, k, v)
    if cfg.n_neighbours:
        stats.neighbour_ids, stats.neighbour_cos = decoder_neighbours(dictionary.W_dec, cfg.n_neighbours)
    if cfg.n_logits:
        effects = logit_effects(model, dictionary, cfg.n_logits)
        if effects is not None:
            (stats.logit_top_ids, stats.logit_top_values, stats.logit_bottom_ids,
             stats.logit_bottom_values) = effects
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        stats.vocab = token_strings(tokenizer, stats.token_ids().tolist())
    return stats


def token_strings(tokenizer, ids: list[int]) -> dict[int, str]:
    """``{id: tokenizer.decode([id])}`` (one ``batch_decode`` call when the tokenizer has it)."""
    batch = getattr(tokenizer, "batch_decode", None)
    strings = batch([[i] for i in ids]) if batch is not None else [tokenizer.decode([i]) for i in ids]
    return dict(zip(ids, strings, strict=True))
