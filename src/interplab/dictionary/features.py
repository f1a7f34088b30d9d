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
  mlp_out included); None otherwise.

Memory: the windows are ``[d_sae, n_top, window]`` float32 activations and int64 tokens: with
9216 latents, 10 examples and 16 tokens about 6 MB and 12 MB; during the run a batch adds
``batch * window * d_sae`` of each.
"""

from __future__ import annotations

import json
import logging
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
from interplab.core.sites import Site, SiteKind
from interplab.dictionary.base import Dictionary
from interplab.dictionary.splice import bos_id, check_contexts, check_sites
from interplab.models.norms import norm_convention

log = logging.getLogger(__name__)

FORMAT = "interplab-feature-stats/1"
RESIDUAL_KINDS = frozenset({SiteKind.EMBED, SiteKind.RESID_PRE, SiteKind.RESID_MID, SiteKind.RESID_POST,
                            SiteKind.ATTN_OUT, SiteKind.MLP_OUT})


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
    progress: bool = param(True, help="Show a progress bar.")

    def __post_init__(self) -> None:
        for name in ("n_top", "window", "batch_size", "hist_bins"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.n_logits < 0:
            raise ConfigError(f"n_logits must be >= 0, got {self.n_logits}.")
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
           "logit_top_values", "logit_bottom_ids", "logit_bottom_values")


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

    @property
    def d_sae(self) -> int:
        return self.density.shape[0]

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
        cfg = FeatureConfig(**{k: v for k, v in meta["config"].items() if k in known})
        tensors = load_file(str(path / "stats.safetensors"))
        return cls(config=cfg, input_site=meta["input_site"], target_site=meta["target_site"],
                   n_contexts=meta["n_contexts"], n_tokens=meta["n_tokens"], **tensors)


def _token(tokenizer, t: int) -> str:
    return f"<{t}>" if tokenizer is None else tokenizer.decode([t])


# -- computing them ---------------------------------------------------------------------------
class _TopN:
    """Running top-n per latent of per-context maxima, with their windows."""

    def __init__(self, n: int, w: int, d_sae: int, device) -> None:
        self.vals = torch.full((n, d_sae), float("-inf"), device=device)
        self.ctx = torch.full((n, d_sae), -1, dtype=torch.long, device=device)
        self.pos = torch.zeros((n, d_sae), dtype=torch.long, device=device)
        self.start = torch.zeros((n, d_sae), dtype=torch.long, device=device)
        self.acts = torch.zeros((n, w, d_sae), device=device)
        self.toks = torch.zeros((n, w, d_sae), dtype=torch.long, device=device)

    def merge(self, z: Tensor, tokens: Tensor, first_ctx: int, before: int) -> None:
        """Merge a batch: ``z [B, T, d_sae]`` latents of ``tokens [B, T]``."""
        b, t, s = z.shape
        n, w = self.vals.shape[0], self.acts.shape[1]
        best, pos = z.max(dim=1)  # first position of the maximum
        start = (pos - before).clamp(0, t - w)
        idx = start[:, None, :] + torch.arange(w, device=z.device)[None, :, None]  # [B, W, S]
        acts = z.gather(1, idx)
        toks = tokens.gather(1, idx.reshape(b, w * s)).reshape(b, w, s)
        ctx = torch.arange(first_ctx, first_ctx + b, device=z.device)[:, None].expand(b, s)
        vals = torch.cat([self.vals, best.float()])
        # Stable: ties keep the earlier context (the kept ones come first and are earlier).
        order = vals.sort(dim=0, descending=True, stable=True).indices[:n]
        self.vals = vals.gather(0, order)
        self.ctx = torch.cat([self.ctx, ctx]).gather(0, order)
        self.pos = torch.cat([self.pos, pos]).gather(0, order)
        self.start = torch.cat([self.start, start]).gather(0, order)
        big = order[:, None, :].expand(n, w, s)
        self.acts = torch.cat([self.acts, acts.float()]).gather(0, big)
        self.toks = torch.cat([self.toks, toks]).gather(0, big)


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
    top = _TopN(cfg.n_top, w, s, dev)
    fires = torch.zeros(s, dtype=torch.long, device=dev)
    act_sum = torch.zeros(s, dtype=torch.float64, device=dev)
    hist = torch.zeros(s * nb, dtype=torch.long, device=dev)
    width = (cfg.hist_high - cfg.hist_low) / nb
    n_tokens = 0
    site = dictionary.cfg.input_site
    for lo in tqdm(range(0, n_ctx, cfg.batch_size), desc="feature stats", unit="batch", disable=not cfg.progress):
        tokens = contexts[lo: lo + cfg.batch_size].to(model.device)
        _, cache = model.run_with_cache(tokens, [site])
        b = tokens.shape[0]
        z = dictionary.encode(cache[site].reshape(b * t, -1).to(dev)).float().reshape(b, t, s)
        tokens = tokens.to(dev)
        if bos is not None:
            keep = tokens != bos
            z = z * keep[..., None]
            n_tokens += int(keep.sum())
        else:
            n_tokens += b * t
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
        n_contexts=n_ctx, n_tokens=n_tokens,
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
    if cfg.n_logits:
        effects = logit_effects(model, dictionary, cfg.n_logits)
        if effects is not None:
            (stats.logit_top_ids, stats.logit_top_values, stats.logit_bottom_ids,
             stats.logit_bottom_values) = effects
    return stats


@torch.no_grad()
def logit_effects(model: Model, dictionary: Dictionary, k: int, chunk: int = 1024
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """``(top_ids, top_values, bottom_ids, bottom_values)``, each ``[d_sae, k]``: the largest and
    smallest entries of ``W_dec[i] / out_scale · diag(γ) · W_Uᵀ`` (see the module docstring);
    None when the target is not in the residual stream or the final norm is unknown."""
    site = Site.parse(dictionary.cfg.target_site)
    if site.kind not in RESIDUAL_KINDS:
        log.info("No logit effects: the target site %s is not in the residual stream.", site)
        return None
    conv = norm_convention(model.adapter.final_norm(), model.dims.d_model)
    if conv is None:
        log.warning("No logit effects: unknown final norm %s.", type(model.adapter.final_norm()).__name__)
        return None
    centre, g = conv.centre, conv.gain.float().cpu()
    w_u = model.adapter.unembed().weight.detach().float().cpu()  # [d_vocab, d_model]
    k = min(k, w_u.shape[0])
    w_dec = (dictionary.W_dec.detach().float() / dictionary.out_scale.float()).cpu()
    out = ([], [], [], [])
    for lo in range(0, w_dec.shape[0], chunk):
        d = w_dec[lo: lo + chunk]
        if centre:
            d = d - d.mean(-1, keepdim=True)
        eff = (d * g) @ w_u.T
        hi, low = eff.topk(k, dim=-1), eff.topk(k, dim=-1, largest=False)
        for acc, v in zip(out, (hi.indices, hi.values, low.indices, low.values)):
            acc.append(v)
    return tuple(torch.cat(a) for a in out)
