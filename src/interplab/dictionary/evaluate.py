"""Evaluating a sparse dictionary: reconstruction, sparsity, and what splicing it in costs the
model's next-token predictions (Gao et al. 2024; Bricken et al. 2023; SAEBench, Karvonen et
al. 2025).

Each batch of token contexts runs three ways: clean; with the dictionary spliced in at its
target site (``splice``); with the target site zero-ablated (the floor). From these:

* CE: mean next-token cross-entropy over every (context, position p < ctx-1) predicting token
  p+1, leaving out predictions whose target is BOS (with ``exclude_bos``: in packed contexts
  the next document's BOS is not a prediction of the text).
* KL: mean over the same positions of KL(clean || spliced) of the next-token distributions.
* Loss recovered: ``(CE_zero - CE_spliced) / (CE_zero - CE_clean)``: 1 for a perfect
  dictionary, 0 for one no better than zero-ablating the site.

With ``exclude_bos`` BOS positions are also left unspliced (and unablated) and out of the
reconstruction statistics: their activations are outliers no dictionary is trained on.
The reconstruction and sparsity metrics (``metrics``) come from the spliced forward itself.
CIs bootstrap over contexts (the independent units): each context contributes its summed
per-token values times ``n_contexts / n_scored_tokens``, so the mean of the contributions is the
token-level mean that is reported (a ratio estimator with the token count held fixed).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interplab.activations.source import BatchSource
from interplab.core.config import param
from interplab.core.errors import ConfigError, InputError
from interplab.core.model import Model
from interplab.dictionary.base import Dictionary
from interplab.dictionary.metrics import (
    DENSE_THRESHOLD,
    DensityHistogram,
    ReconstructionStats,
    log10_density_histogram,
)
from interplab.dictionary.splice import (
    SpliceRecord,
    bos_id,
    check_contexts,
    check_sites,
    splice_hooks,
    zero_hooks,
)
from interplab.stats import CI, bootstrap_ci
from interplab.stats.bootstrap import resample_indices

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """How much to evaluate on, and what to compute."""

    n_contexts: int = param(0, help="Contexts to evaluate (the first n given); 0 means all.")
    batch_size: int = param(8, help="Contexts per forward pass.")
    ctx_len: int = param(0, help="Tokens per context (the first ctx_len of each); 0 means as given.")
    n_batches: int = param(16, help="Batches to draw when evaluating on an activation source.")
    source_batch_size: int = param(4096, help="Tokens per batch drawn from an activation source.")
    seed: int = param(0, help="Seed of the source's batch order and of the bootstrap.")
    dense_threshold: float = param(DENSE_THRESHOLD, help="A latent firing on more than this fraction of tokens is dense (0.1: log10 density > -1).")
    exclude_bos: bool = param(True, help="Leave BOS positions unspliced and out of every metric, and drop predictions of BOS from CE/KL.")
    downstream: bool = param(True, help="Compute CE, KL and loss recovered (three forwards per batch); off: one forward for activations only.")
    zero_ablation: bool = param(True, help="Run the zero-ablated floor (needed for loss recovered).")
    confidence: float = param(0.95, help="Confidence level of the bootstrap intervals over contexts.")
    n_resamples: int = param(1000, help="Bootstrap resamples.")
    histogram_bins: int = param(40, help="Bins of the log10 feature-density histogram over [-8, 0].")
    progress: bool = param(True, help="Show a progress bar.")

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_batches", "source_batch_size", "histogram_bins"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.n_contexts < 0 or self.ctx_len < 0:
            raise ConfigError("n_contexts and ctx_len must be >= 0 (0 means all / as given).")
        if self.ctx_len == 1 and self.downstream:
            raise ConfigError("ctx_len=1 leaves no next token to predict; use >= 2 or downstream=False.")
        if not 0 <= self.dense_threshold <= 1:
            raise ConfigError(f"dense_threshold is a fraction of tokens in [0, 1], got {self.dense_threshold}.")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence}.")
        if self.n_resamples < 2:
            raise ConfigError(f"n_resamples must be >= 2, got {self.n_resamples}.")


@dataclass
class EvalResult:
    """Every metric of one evaluation (definitions: ``metrics`` and this module's docstring).

    Downstream fields are None when evaluated on an activation source or with
    ``downstream=False``; the zero-ablation ones also with ``zero_ablation=False``.
    """

    config: EvalConfig
    input_site: str
    target_site: str
    n_tokens: int  # tokens in the reconstruction statistics
    l0: float
    mse: float  # squared error summed over features, mean over tokens
    fvu: float  # about the target's mean
    explained_variance: float
    cosine_similarity: float
    relative_norm: float
    n_dead: int
    n_dense: int
    density: Tensor  # [d_sae] float64
    mean_activation: Tensor  # [d_sae] float64, mean when firing (NaN if dead)
    density_histogram: DensityHistogram
    n_contexts: int = 0
    n_scored: int = 0  # next-token predictions CE / KL average over
    ce_clean: float | None = None
    ce_spliced: float | None = None
    ce_zero: float | None = None
    kl: float | None = None  # KL(clean || spliced)
    kl_zero: float | None = None  # KL(clean || zero-ablated)
    loss_recovered: float | None = None
    ce_increase_ci: CI | None = None  # CE_spliced - CE_clean
    kl_ci: CI | None = None
    loss_recovered_ci: tuple[float, float] | None = None  # percentile bootstrap
    per_context: dict[str, Tensor] | None = None  # per-context mean CE / KL, [n_contexts]

    @property
    def dead_fraction(self) -> float:
        return self.n_dead / self.density.numel()

    def summary(self) -> dict[str, float | int | None]:
        """The scalar metrics, for a table or a log line."""
        keys = ("n_tokens", "l0", "mse", "fvu", "explained_variance", "cosine_similarity",
                "relative_norm", "n_dead", "n_dense", "ce_clean", "ce_spliced", "ce_zero", "kl",
                "kl_zero", "loss_recovered")
        return {k: getattr(self, k) for k in keys}


# -- the evaluation ---------------------------------------------------------------------------
def evaluate(model: Model, dictionary: Dictionary, data: Tensor | BatchSource,
             cfg: EvalConfig | None = None) -> EvalResult:
    """Evaluate ``dictionary`` on token contexts (``LongTensor [n, ctx]``, run through the
    HookedModel ``model``) or on an activation ``BatchSource`` (reconstruction and sparsity
    only; ``model`` may then be None)."""
    cfg = cfg or EvalConfig()
    if isinstance(data, Tensor):
        return _on_contexts(model, dictionary, data, cfg)
    if isinstance(data, BatchSource):
        return _on_source(dictionary, data, cfg)
    raise InputError(
        f"evaluate takes token contexts (a LongTensor [n_contexts, ctx_len]) or a BatchSource; "
        f"got {type(data).__name__}."
    )


class _Downstream:
    """Per-context sums of CE (clean, spliced, zero) and KL, and the scored-token counts."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Tensor]] = {k: [] for k in ("clean", "spliced", "zero", "kl", "kl_zero", "n")}

    def add(self, key: str, per_token: Tensor, scored: Tensor) -> None:
        self.rows[key].append((per_token * scored).sum(-1).double().cpu())

    def sums(self, key: str) -> Tensor | None:
        return torch.cat(self.rows[key]) if self.rows[key] else None


def _nll(logp: Tensor, targets: Tensor) -> Tensor:
    return -logp.gather(-1, targets[..., None]).squeeze(-1)


def _kl(logp_p: Tensor, logp_q: Tensor) -> Tensor:
    return (logp_p.exp() * (logp_p - logp_q)).sum(-1)


@torch.no_grad()
def _on_contexts(model: Model, dictionary: Dictionary, contexts: Tensor, cfg: EvalConfig) -> EvalResult:
    if model is None:
        raise InputError("Evaluating on token contexts needs the model (a HookedModel).")
    check_sites(model, dictionary)
    contexts = check_contexts(model, contexts, min_len=max(cfg.ctx_len, 2 if cfg.downstream else 1))
    if cfg.n_contexts:
        if cfg.n_contexts > contexts.shape[0]:
            raise InputError(f"n_contexts={cfg.n_contexts} but only {contexts.shape[0]} contexts were given.")
        contexts = contexts[: cfg.n_contexts]
    if cfg.ctx_len:
        contexts = contexts[:, : cfg.ctx_len]
    if cfg.downstream and cfg.n_resamples and contexts.shape[0] < 2:
        log.warning("One context only: no bootstrap intervals.")
    bos = bos_id(model) if cfg.exclude_bos else None
    stats = ReconstructionStats()
    down = _Downstream()
    n = contexts.shape[0]
    starts = range(0, n, cfg.batch_size)
    for lo in tqdm(starts, desc="evaluate", unit="batch", disable=not cfg.progress):
        tokens = contexts[lo: lo + cfg.batch_size].to(model.device)
        keep = torch.ones_like(tokens, dtype=torch.bool) if bos is None else tokens != bos
        keep_flat = keep.reshape(-1)
        if cfg.downstream:
            record = _three_ways(model, dictionary, tokens, keep, keep_flat, cfg, down)
        else:
            record = _activations_only(model, dictionary, tokens)
        k = keep_flat.to(record.target.device)
        if not bool(k.any()):
            continue  # every token of the batch is BOS
        stats.update(record.recon[k], record.target[k], record.z[k.to(record.z.device)])
    return _result(dictionary, cfg, stats, down if cfg.downstream else None, n)


def _three_ways(model: Model, dictionary, tokens, keep, keep_flat, cfg, down: _Downstream) -> SpliceRecord:
    targets = tokens[:, 1:]
    scored = keep[:, 1:].to(torch.float64)
    down.rows["n"].append(scored.sum(-1).cpu())
    logp_c = torch.log_softmax(model.run(tokens)[:, :-1].float(), -1)
    down.add("clean", _nll(logp_c, targets), scored)
    record = SpliceRecord()
    logits = model.run(tokens, splice_hooks(dictionary, keep_flat, record))
    logp_s = torch.log_softmax(logits[:, :-1].float(), -1)
    down.add("spliced", _nll(logp_s, targets), scored)
    down.add("kl", _kl(logp_c, logp_s), scored)
    del logp_s
    if cfg.zero_ablation:
        logp_z = torch.log_softmax(model.run(tokens, zero_hooks(dictionary, keep_flat))[:, :-1].float(), -1)
        down.add("zero", _nll(logp_z, targets), scored)
        down.add("kl_zero", _kl(logp_c, logp_z), scored)
    return record


def _activations_only(model: Model, dictionary: Dictionary, tokens: Tensor) -> SpliceRecord:
    cfg = dictionary.cfg
    _, cache = model.run_with_cache(tokens, list(dict.fromkeys([cfg.input_site, cfg.target_site])))
    x = cache[cfg.input_site].reshape(-1, cfg.d_in)
    target = cache[cfg.target_site].reshape(-1, cfg.width_out)
    dev = dictionary.W_dec.device
    return SpliceRecord(x=x, target=target, z=dictionary.encode(x.to(dev)),
                        recon=dictionary(x.to(dev)).to(device=target.device, dtype=target.dtype))


@torch.no_grad()
def _on_source(dictionary: Dictionary, source: BatchSource, cfg: EvalConfig) -> EvalResult:
    dc = dictionary.cfg
    for what, site, width in (("input", dc.input_site, dc.d_in), ("target", dc.target_site, dc.width_out)):
        if site not in source.sites:
            raise InputError(
                f"The activation source holds sites {source.sites}, not the dictionary's {what} "
                f"site {site!r}. Harvest {site} too, or evaluate on token contexts."
            )
        if source.width(site) != width:
            raise ConfigError(
                f"The source's {site} activations have width {source.width(site)}; the dictionary "
                f"expects {width} there."
            )
    stats = ReconstructionStats()
    dev = dictionary.W_dec.device
    batches = source.batches(cfg.source_batch_size, seed=cfg.seed)
    for _ in tqdm(range(cfg.n_batches), desc="evaluate", unit="batch", disable=not cfg.progress):
        batch = next(batches)
        x = batch[dc.input_site].to(dev)
        target = batch[dc.target_site].to(dev)
        stats.update(dictionary(x).to(target.dtype), target, dictionary.encode(x))
    return _result(dictionary, cfg, stats, None, 0)


# -- assembling the result --------------------------------------------------------------------
def _result(dictionary, cfg: EvalConfig, stats: ReconstructionStats, down: _Downstream | None,
            n_contexts: int) -> EvalResult:
    m = stats.result(cfg.dense_threshold)
    density = stats.density
    result = EvalResult(
        config=cfg, input_site=dictionary.cfg.input_site, target_site=dictionary.cfg.target_site,
        n_tokens=m.n_tokens, l0=m.l0, mse=m.mse, fvu=m.fvu, explained_variance=m.explained_variance,
        cosine_similarity=m.cosine_similarity, relative_norm=m.relative_norm, n_dead=m.n_dead,
        n_dense=m.n_dense, density=density, mean_activation=stats.mean_activation_when_firing,
        density_histogram=log10_density_histogram(density, bins=cfg.histogram_bins),
        n_contexts=n_contexts,
    )
    if down is not None:
        _fill_downstream(result, down, cfg)
    log.info("dictionary eval %s", {k: v for k, v in result.summary().items() if v is not None})
    return result


def _fill_downstream(r: EvalResult, down: _Downstream, cfg: EvalConfig) -> None:
    counts = down.sums("n")
    total = float(counts.sum())
    if total == 0:
        raise InputError("No next-token predictions left to score (every target is BOS?).")
    sums = {k: down.sums(k) for k in ("clean", "spliced", "zero", "kl", "kl_zero")}
    r.n_scored = int(total)
    r.ce_clean = float(sums["clean"].sum()) / total
    r.ce_spliced = float(sums["spliced"].sum()) / total
    r.kl = float(sums["kl"].sum()) / total
    per = counts.clamp_min(1)
    r.per_context = {k: v / per for k, v in sums.items() if v is not None}
    if sums["zero"] is not None:
        r.ce_zero = float(sums["zero"].sum()) / total
        r.kl_zero = float(sums["kl_zero"].sum()) / total
        r.loss_recovered = _loss_recovered(r.ce_clean, r.ce_spliced, r.ce_zero)
    n = counts.shape[0]
    if n < 2:
        return
    scale = n / total
    samples = torch.stack([(sums["spliced"] - sums["clean"]) * scale, sums["kl"] * scale], -1)
    ci = bootstrap_ci(samples, "mean", n_resamples=cfg.n_resamples, confidence=cfg.confidence, seed=cfg.seed)
    r.ce_increase_ci = CI(ci.estimate[0], ci.low[0], ci.high[0], ci.confidence, ci.method, ci.n)
    r.kl_ci = CI(ci.estimate[1], ci.low[1], ci.high[1], ci.confidence, ci.method, ci.n)
    if sums["zero"] is not None and not math.isnan(r.loss_recovered):
        r.loss_recovered_ci = _loss_recovered_ci(sums, cfg)


def _loss_recovered(clean: float, spliced: float, zero: float) -> float:
    gap = zero - clean
    if gap == 0:
        log.warning("Zero-ablating the site does not change CE, so loss recovered is undefined (NaN).")
        return math.nan
    return (zero - spliced) / gap


def _loss_recovered_ci(sums: dict[str, Tensor], cfg: EvalConfig) -> tuple[float, float]:
    """Percentile bootstrap over contexts of the ratio (the token count cancels in it)."""
    n = sums["clean"].shape[0]
    idx = resample_indices(n, cfg.n_resamples, cfg.seed)
    weights = torch.zeros(cfg.n_resamples, n, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones(idx.shape, dtype=torch.float64))
    c, s, z = (weights @ sums[k] for k in ("clean", "spliced", "zero"))
    ratio = (z - s) / (z - c)
    ratio = ratio[torch.isfinite(ratio)]
    if ratio.numel() < 2:
        return (math.nan, math.nan)
    tail = (1 - cfg.confidence) / 2
    q = torch.quantile(ratio, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(q[0]), float(q[1])
