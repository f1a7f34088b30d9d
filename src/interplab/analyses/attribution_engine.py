"""The passes behind ``attribution``: gradients at the base run, integrated gradients along a
path, the reduction of activation x gradient to nodes, the exact reference and the correlations.

Kept apart from ``attribution`` so that module reads as the technique and its API; see its
docstring for what is estimated and the assumptions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from interplab.analyses.metrics import answer_metric, normalise
from interplab.analyses.patching import PatchingConfig, PatchingResult, activation_patching
from interplab.core.errors import ConfigError
from interplab.core.model import Model
from interplab.core.sites import Site, SiteKind
from interplab.interventions import Apply, Patch
from interplab.runtime.inputs import Batch
from interplab.stats import CI, correlation_ci, summarize
from interplab.stats._interval import interval
from interplab.stats.bootstrap import resample_indices
from interplab.stats.correlation import batched_kendall_tau, batched_pearson

log = logging.getLogger(__name__)

KINDS = {"heads": SiteKind.Z, "mlp": SiteKind.MLP_OUT, "resid_pre": SiteKind.RESID_PRE}
EMBED = Site(None, SiteKind.EMBED)


# -- cells -------------------------------------------------------------------------------------
def cells(model: Model, config, n_pos: int) -> tuple[list[int], list[int], dict[str, list]]:
    """Layers, positions and the cell axes (in ``activation_patching``'s order), range-checked."""
    layers = list(range(model.dims.n_layers)) if config.layers is None else list(config.layers)
    for layer in layers:
        model.site(Site(layer, SiteKind.RESID_PRE))  # range check with a teaching message
    if len(set(layers)) != len(layers):
        raise ConfigError(f"layers lists a layer twice: {layers}.")
    positions = list(range(n_pos))
    if config.positions is not None:
        bad = [p for p in config.positions if not -n_pos <= p < n_pos]
        if bad:
            raise ConfigError(
                f"Positions {bad} are outside the prompts' {n_pos} tokens (valid {-n_pos}..{n_pos - 1})."
            )
        positions = [p % n_pos for p in config.positions]
    if config.nodes == "heads":
        return layers, positions, {"layer": layers, "head": list(range(model.dims.n_heads))}
    if config.nodes == "mlp":
        return layers, positions, {"layer": layers}
    return layers, positions, {"layer": layers, "pos": positions}


def check_comparable(axes: dict[str, list]) -> None:
    n = 1
    for values in axes.values():
        n *= len(values)
    if n < 3:
        raise ConfigError(
            f"compare_exact correlates the cells, but this config has only {n}; select at least "
            "3 (more layers, or nodes='heads' / 'resid_pre'), or set compare_exact=False."
        )


def node_sites(nodes: str, layers: list[int]) -> list[Site]:
    return [Site(layer, KINDS[nodes]) for layer in layers]


# -- the metric --------------------------------------------------------------------------------
class PromptMetric:
    """``metric(logits, batch)`` for ``HookedModel.gradients``: the SUM over prompts of the
    per-prompt metric at the last position. Prompts do not interact in the forward pass, so the
    gradient of the sum at prompt i's activations is prompt i's own gradient.

    ``clean_last`` None means "the run this is called on is the clean run": its own (detached)
    last logits are the reference of ``kl``, and are kept for later ``score`` calls.
    """

    def __init__(self, name: str, answers, wrong, clean_last: torch.Tensor | None) -> None:
        self.name, self.answers, self.wrong, self.clean_last = name, answers, wrong, clean_last
        self.values: torch.Tensor | None = None

    def score(self, last_logits: torch.Tensor) -> torch.Tensor:
        return answer_metric(self.name, last_logits, self.answers, self.wrong, self.clean_last)

    def __call__(self, logits: torch.Tensor, batch) -> torch.Tensor:
        last = logits[:, -1]
        if self.clean_last is None:
            self.clean_last = last.detach()
        values = self.score(last)
        self.values = values.detach()
        return values.sum()


@dataclass
class Estimate:
    delta_acts: dict[Site, torch.Tensor]  # source − base activation at each node site
    grads: dict[Site, torch.Tensor]  # dM/da at the base run, or its mean along the IG path
    base_m: torch.Tensor  # [prompt]
    source_m: torch.Tensor  # [prompt]
    passes: dict[str, int]


def linear_estimate(model: Model, base: Batch, source: Batch, sites, config, answers, wrong) -> Estimate:
    """Attribution patching: cache the source (F), gradients at the base (F + B)."""
    with torch.no_grad():
        source_logits, cache = model.run_with_cache(source, sites)
    # Denoising: the source is the clean run. Noising: the base run is, and the metric takes
    # its reference logits from it as it goes (no extra forward).
    metric = PromptMetric(config.metric, answers, wrong,
                          source_logits[:, -1] if config.direction == "denoising" else None)
    g = model.gradients(base, metric, sites)
    delta = {s: cache.acts[s] - g.acts[s] for s in sites}
    return Estimate(delta, g.grads, metric.values, metric.score(source_logits[:, -1]),
                    {"forward": 2, "backward": 1})


def interpolation(site: Site, base: torch.Tensor, source: torch.Tensor, alpha: float) -> Apply:
    """Set ``site`` (every row and position) to ``base + alpha (source − base)``, straight-through:
    the value is the interpolated one, the gradient flows on through the computed activation."""
    target = torch.lerp(base, source, alpha)  # [n, pos, *site]
    # Apply sees the selected entries [n * pos, *site], row by row: with no padding that is the
    # row-major flattening of [n, pos].
    flat = target.reshape(-1, *target.shape[2:])

    def fn(current: torch.Tensor) -> torch.Tensor:
        return flat.to(current) + (current - current.detach())

    return Apply(site, fn=fn)


def ig_estimate(model: Model, base: Batch, source: Batch, sites, config, answers, wrong) -> Estimate:
    """Integrated gradients: cache base and source (2F), then m gradient passes (m(F + B))."""
    cached = [*sites, EMBED] if config.ig_path == "inputs" else list(sites)
    with torch.no_grad():
        source_logits, src = model.run_with_cache(source, cached)
        base_logits, bas = model.run_with_cache(base, cached)
    denoising = config.direction == "denoising"
    clean_last = (source_logits if denoising else base_logits)[:, -1]
    metric = PromptMetric(config.metric, answers, wrong, clean_last)
    m = config.ig_steps
    total = {s: torch.zeros_like(bas.acts[s], dtype=torch.float64) for s in sites}
    for k in tqdm(range(1, m + 1), desc="attribution ig", disable=m < 10):
        alpha = k / m
        if config.ig_path == "inputs":
            edits = [Patch(EMBED, value=torch.lerp(bas.acts[EMBED], src.acts[EMBED], alpha))]
        else:
            edits = [interpolation(s, bas.acts[s], src.acts[s], alpha) for s in sites]
        g = model.gradients(base, metric, sites, edits)
        for s in sites:
            total[s] += g.grads[s].double()
    grads = {s: t / m for s, t in total.items()}
    delta = {s: src.acts[s] - bas.acts[s] for s in sites}
    return Estimate(delta, grads, metric.score(base_logits[:, -1]),
                    metric.score(source_logits[:, -1]), {"forward": 2 + m, "backward": m})


def reduce_nodes(nodes: str, delta_acts, grads, sites, positions: list[int]) -> torch.Tensor:
    """Sum (a^source − a^base) · grad over each node's entries: [prompt, layer, *cell]."""
    out = []
    for s in sites:
        prod = delta_acts[s].double() * grads[s].double()
        if nodes == "heads":  # [n, pos, heads, d_head] -> [n, heads]
            out.append(prod.sum((1, 3)))
        elif nodes == "mlp":  # [n, pos, d_model] -> [n]
            out.append(prod.sum((1, 2)))
        else:  # [n, pos, d_model] -> [n, positions]
            out.append(prod.sum(2)[:, positions])
    return torch.stack(out, 1).float()


# -- statistics --------------------------------------------------------------------------------
def summary(effects: torch.Tensor, config):
    """``stats.summarize`` against "no effect": 0 when denoising, 1 when noising (as patching)."""
    if effects.shape[0] < 2:
        log.warning("One prompt: no confidence intervals or tests (they need >= 2 prompts).")
        return None
    null = 0.0 if config.direction == "denoising" else 1.0
    return summarize(effects, confidence=config.confidence, n_resamples=config.n_resamples,
                     seed=config.seed, null=null)


# -- the exact reference -----------------------------------------------------------------------
def exact(model: Model, clean: Batch, corrupt: Batch, answers, wrong, config, layers, positions
          ) -> PatchingResult:
    """Exact activation patching of the same cells. Heads and resid_pre are sweeps of
    ``activation_patching``; an ``mlp`` node (a layer's mlp_out at every position at once) is
    not, so it is patched here, one batched forward for all layers, and returned as a
    ``PatchingResult`` whose config says sweep='mlp_out' but whose axes are {"layer"} only."""
    common = dict(direction=config.direction, metric=config.metric, layers=tuple(layers),
                  confidence=config.confidence, n_resamples=config.n_resamples, seed=config.seed)
    if config.nodes == "heads":
        return activation_patching(model, clean, corrupt, answers, wrong,
                                   PatchingConfig(sweep="heads", **common))
    if config.nodes == "resid_pre":
        return activation_patching(model, clean, corrupt, answers, wrong,
                                   PatchingConfig(sweep="resid_pre", positions=tuple(positions), **common))
    pcfg = PatchingConfig(sweep="mlp_out", **common)
    base, source = (corrupt, clean) if config.direction == "denoising" else (clean, corrupt)
    sites = node_sites("mlp", layers)
    with torch.no_grad():
        clean_logits = model.run(clean)[:, -1]
        corrupt_logits = model.run(corrupt)[:, -1]
        _, cache = model.run_with_cache(source, sites)
    n = clean.shape[0]
    all_p = torch.arange(n)

    def score(last, prompts):
        return answer_metric(config.metric, last, answers[prompts], wrong[prompts], clean_logits[prompts])

    clean_m, corrupt_m = score(clean_logits, all_p), score(corrupt_logits, all_p)
    raw = torch.empty(n, len(layers))
    per = max(1, pcfg.max_rows // n)
    for lo in range(0, len(layers), per):
        chunk = list(range(lo, min(lo + per, len(layers))))
        edits = [Patch(sites[li], value=cache.acts[sites[li]], rows=tuple(range(j * n, (j + 1) * n)))
                 for j, li in enumerate(chunk)]
        logits = model.run(base.input_ids.repeat(len(chunk), 1), edits)[:, -1]
        raw[:, chunk] = score(logits, all_p.repeat(len(chunk))).float().reshape(len(chunk), n).T
    effects = normalise(config.metric, raw, clean_m[:, None], corrupt_m[:, None],
                        base="corrupt" if config.direction == "denoising" else "clean")
    labels = []
    if model.tokenizer is not None:
        labels = [model.tokenizer.decode([t]) for t in clean.input_ids[0].tolist()]
    return PatchingResult(pcfg, {"layer": list(layers)}, effects, raw, clean_m, corrupt_m,
                          summary(effects, config), labels)


def correlate(result, exact: PatchingResult) -> dict:
    """Pearson r and Kendall tau-b between the cell means of the estimate and of exact patching,
    with bootstrap CIs over cells (pairs bootstrap, BCa) or over prompts (percentile); the
    fields of an ``AttributionResult`` to set."""
    cfg = result.config
    est = result.effects.reshape(result.effects.shape[0], -1).double().cpu()
    ref = exact.effects.reshape(est.shape).double().cpu()
    x, y = est.mean(0), ref.mean(0)
    for name, v in (("attribution", x), ("exact patching", y)):
        if bool(v.max() == v.min()):
            log.warning("correlation undefined: the %s means are constant over the cells", name)
            return {"pearson": float("nan"), "kendall": float("nan")}
    out = {}
    for name, fn in (("pearson", batched_pearson), ("kendall", batched_kendall_tau)):
        if cfg.ci_over == "cells":
            ci = correlation_ci(x, y, name, n_resamples=cfg.n_resamples, confidence=cfg.confidence,
                                seed=cfg.seed)
        else:
            ci = _prompt_bootstrap(est, ref, fn, cfg)
        out[name], out[f"{name}_ci"] = float(ci.estimate), ci
    return out


def _prompt_bootstrap(est: torch.Tensor, ref: torch.Tensor, fn, cfg) -> CI:
    """Resample prompts, recompute both sets of cell means, correlate: percentile CI."""
    n = est.shape[0]
    estimate = fn(est.mean(0)[None], ref.mean(0)[None])[0]
    idx = resample_indices(n, cfg.n_resamples, cfg.seed)
    counts = torch.zeros(cfg.n_resamples, n, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones_like(counts))
    reps = fn(counts @ est / n, counts @ ref / n)
    reps = reps[torch.isfinite(reps)]
    if reps.numel() < 2:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        return CI(estimate, nan, nan, cfg.confidence, "percentile", n)
    low, high = interval(estimate[None], reps[:, None], None, cfg.confidence, "percentile")
    return CI(estimate, low[0], high[0], cfg.confidence, "percentile", n)

