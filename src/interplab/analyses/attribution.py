"""Attribution patching (Nanda 2023; Syed et al. 2023) and its integrated-gradients variant.

Activation patching asks, for every node, what the metric becomes when that node's activation
is replaced by its value from the *source* run; it costs one forward per node. Attribution
patching answers all nodes at once with a first-order Taylor expansion around the *base* run:

    M(patch node i) - M(base)  ~  (a_i^source - a_i^base) . dM/da_i |base

one forward on the source (to cache a^source) and one forward + backward on the base: 2F + 1B
("Attribution Patching Outperforms Automated Circuit Discovery", Syed, Rager & Conmy 2023).
Denoising: base = corrupt, source = clean; noising: base = clean, source = corrupt.

The IG variant (``method="ig"``) replaces the gradient at the base by the mean of the gradients
at ``m`` points between base and source, alpha = k/m for k = 1..m (a right Riemann sum of the
path integral of integrated gradients; Sundararajan et al. 2017), as EAP-IG does (Hanna, Pezzelle
& Belinkov 2024; Marks et al. 2024): 2F + m(F+B). ``ig_path`` says what is interpolated:

* ``"activations"`` (default): at step alpha, the node activation at EVERY selected node site
  -- every layer in ``layers`` of the one kind ``nodes`` names (all heads' ``attn.z``, or
  ``mlp_out``, or ``resid_pre``), at every position -- is set, simultaneously, to
  ``a^base + alpha (a^source - a^base)``; nothing else is set. The setting is straight-through:
  the forward value is the interpolated one, while the gradient still flows through the
  computed activation, so dM/da_i includes the paths through later nodes of the same kind
  (a plain replacement would cut them: with ``resid_pre`` every layer but the last would get a
  zero gradient). With a single node (``nodes="mlp"``, one layer) this is exact integrated
  gradients of that node's patch, and it converges to exact patching as m grows.
* ``"inputs"``: only the token embeddings are interpolated (EAP-IG-inputs, Hanna et al. 2024);
  every node takes whatever value the model computes from them.

Effects are on patching's scale (0 = corrupt run, 1 = clean run): the estimated metric
``M(base) + delta`` is normalised exactly as ``activation_patching`` normalises the metric it
measures (``metrics.normalise``: same per-prompt baselines, same batch-mean denominator), i.e.
``delta / (mean M(clean) - mean M(corrupt))``, plus 1 when noising; so ``effects`` and
``exact.effects`` are directly comparable cell by cell.

Assumptions and limits. Prompts have one token length (no padding) and do not interact, so one
backward of the SUM of per-prompt metrics gives every prompt's own gradient. Nodes: ``heads``
= one head's ``attn.z`` over all positions (the cell ``activation_patching(sweep="heads")``
patches); ``mlp`` = one layer's ``mlp_out`` over all positions; ``resid_pre`` = one layer and
position. The approximation is first order: it fails where the metric saturates -- notably
``metric="kl"`` with ``direction="noising"``: KL(clean || run) is at its minimum on the clean
run, so every gradient there is zero and plain attribution reports "no effect" (zeros, not
NaN) for every node, whatever patching would show; use ``method="ig"`` or another metric.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import torch

from interplab.analyses import attribution_engine as engine
from interplab.analyses.metrics import check_metric, normalise
from interplab.analyses.patching import DIRECTIONS, PatchingResult, pair_inputs
from interplab.core.config import param
from interplab.core.errors import ConfigError, InputError, choices
from interplab.core.model import Model
from interplab.core.shapes import AnswerIds
from interplab.stats import CI, EffectSummary

log = logging.getLogger(__name__)

NODES = ("heads", "mlp", "resid_pre")
METHODS = ("attribution", "ig")
IG_PATHS = ("activations", "inputs")
CI_UNITS = ("cells", "prompts")


@dataclass(frozen=True)
class AttributionConfig:
    """Attribution patching over one kind of node, optionally checked against exact patching."""

    nodes: str = param("heads", help="Nodes to score: heads (attn.z per head, all positions), "
                       "mlp (mlp_out per layer, all positions) or resid_pre (per layer and position).")
    direction: str = param("denoising", help="denoising (clean into corrupt) or noising (corrupt into clean).")
    metric: str = param("logit_diff", help="logit_diff, prob, loss or kl.")
    method: str = param("attribution", help="attribution (gradient at the base run, 2F+1B) or ig "
                        "(mean gradient along the path from base to source, 2F+m(F+B)).")
    ig_steps: int = param(5, help="IG: number m of points alpha = k/m, k = 1..m.")
    ig_path: str = param("activations", help="IG: interpolate every selected node at once "
                         "(activations) or only the token embeddings (inputs).")
    layers: tuple[int, ...] | None = param(None, help="Layers to score (default: all).")
    positions: tuple[int, ...] | None = param(None, help="resid_pre only: positions to score (default: all).")
    compare_exact: bool = param(False, help="Also run exact activation patching on the same cells "
                                "and report Pearson r and Kendall tau with bootstrap CIs.")
    ci_over: str = param("cells", help="Bootstrap unit of the correlation CIs: cells (node pairs) "
                         "or prompts (resample prompts, recompute the cell means).")
    confidence: float = param(0.95, help="Confidence level of the bootstrap intervals.")
    n_resamples: int = param(2000, help="Bootstrap resamples.")
    seed: int = param(0, help="Seed of the bootstrap and permutation tests.")

    def __post_init__(self) -> None:
        for name, valid in (("nodes", NODES), ("direction", DIRECTIONS), ("method", METHODS),
                            ("ig_path", IG_PATHS), ("ci_over", CI_UNITS)):
            value = getattr(self, name)
            if value not in valid:
                raise ConfigError(f"Unknown {name} {value!r}. Valid: {choices(valid)}.")
        check_metric(self.metric)
        if isinstance(self.ig_steps, bool) or not isinstance(self.ig_steps, int) or self.ig_steps < 1:
            raise ConfigError(f"ig_steps must be an integer >= 1, got {self.ig_steps!r}.")
        if self.positions is not None and self.nodes != "resid_pre":
            raise ConfigError(
                f"positions applies to nodes='resid_pre' only; nodes={self.nodes!r} sums each "
                "node over every position. Drop positions or use nodes='resid_pre'."
            )
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence}.")
        if self.n_resamples < 2:
            raise ConfigError(f"n_resamples must be >= 2, got {self.n_resamples}.")


@dataclass
class AttributionResult:
    """Estimated normalised effects [prompt, *cells], with the exact sweep when asked for."""

    config: AttributionConfig
    axes: dict[str, list]  # {"layer", "head"} | {"layer"} | {"layer", "pos"}, cell-axis order
    effects: torch.Tensor  # [prompt, *cells], 0 = corrupt, 1 = clean (patching's scale)
    delta: torch.Tensor  # [prompt, *cells], estimated change of the raw metric from the base run
    base_metric: torch.Tensor  # [prompt], the metric on the base run
    clean_metric: torch.Tensor  # [prompt]
    corrupt_metric: torch.Tensor  # [prompt]
    summary: EffectSummary | None = None  # over the cells, tested against "no effect"
    exact: PatchingResult | None = None  # exact patching of the same cells (compare_exact)
    pearson: float | None = None  # r between cell means of effects and exact.effects
    pearson_ci: CI | None = None
    kendall: float | None = None  # Kendall's tau-b, same pairs
    kendall_ci: CI | None = None
    passes: dict[str, int] | None = None  # forwards / backwards the estimate took
    seconds: float = 0.0  # wall time of the estimate (the exact sweep not included)


def attribution_patching(model: Model, clean, corrupt, answers: AnswerIds, wrong: AnswerIds,
                         config: AttributionConfig = AttributionConfig()) -> AttributionResult:
    """Estimate every node's patching effect from gradients; see the module docstring."""
    clean, corrupt, answers, wrong = pair_inputs(model, clean, corrupt, answers, wrong)
    n, n_pos = clean.shape
    layers, positions, axes = engine.cells(model, config, n_pos)
    if config.compare_exact:
        engine.check_comparable(axes)
    denoising = config.direction == "denoising"
    base, source = (corrupt, clean) if denoising else (clean, corrupt)
    sites = engine.node_sites(config.nodes, layers)

    start = time.perf_counter()
    if config.method == "attribution":
        est = engine.linear_estimate(model, base, source, sites, config, answers, wrong)
    else:
        est = engine.ig_estimate(model, base, source, sites, config, answers, wrong)
    delta = engine.reduce_nodes(config.nodes, est.delta_acts, est.grads, sites, positions)
    seconds = time.perf_counter() - start
    log.info("attribution (%s, %s): %s in %.2fs", config.method, config.nodes, est.passes, seconds)

    clean_m, corrupt_m = (est.source_m, est.base_m) if denoising else (est.base_m, est.source_m)
    shape = (n, *[len(v) for v in axes.values()])
    delta = delta.reshape(shape)
    view = (n,) + (1,) * (len(shape) - 1)
    effects = normalise(config.metric, est.base_m.view(view) + delta, clean_m.view(view),
                        corrupt_m.view(view), base="corrupt" if denoising else "clean")
    result = AttributionResult(
        config, axes, effects, delta, est.base_m, clean_m, corrupt_m,
        engine.summary(effects, config), passes=est.passes, seconds=seconds,
    )
    if config.compare_exact:
        exact = engine.exact(model, clean, corrupt, answers, wrong, config, layers, positions)
        result = compare_with(result, exact)
    return result


def compare_with(result: AttributionResult, exact: PatchingResult) -> AttributionResult:
    """``result`` with ``exact`` attached and correlated, as ``compare_exact`` does: for an
    exact sweep of the same cells run once and compared with several estimates."""
    if exact.axes != result.axes or exact.effects.shape != result.effects.shape:
        raise InputError(
            f"The exact sweep covers other cells: axes {_describe(exact.axes)} and effects "
            f"{tuple(exact.effects.shape)}, against {_describe(result.axes)} and "
            f"{tuple(result.effects.shape)}. Run it on the same prompts, layers and positions."
        )
    engine.check_comparable(result.axes)
    return dataclasses.replace(result, exact=exact, **engine.correlate(result, exact))


def _describe(axes: dict[str, list]) -> str:
    return "{" + ", ".join(f"{k}: {len(v)}" for k, v in axes.items()) + "}"


__all__ = ["AttributionConfig", "AttributionResult", "attribution_patching", "compare_with"]
