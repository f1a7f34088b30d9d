"""AtP*: attribution patching with the QK fix and GradDrop, over an activation-patching grid.

Kramár, Lieberum, Shah & Nanda 2024, "AtP*: An efficient and scalable method for localizing LLM
behaviour to components" (arXiv:2403.00745). For every cell of the grid ``activation_patching``
would sweep (``config.sweep`` over ``layers`` / heads / ``positions``), estimate the change of
the metric when that cell alone is patched from the source run into the base run:

* **AtP** (Nanda 2023; Syed et al. 2023): ``(a_src − a_base) · dM/da`` at the base run, summed
  over the cell's entries: one forward on the source, one forward + backward on the base.
* **QK fix** (``qk_fix``; sweeps ``queries`` and ``keys``): against attention saturation, the
  softmax is kept out of the linearisation -- the pattern under the patched q (or k) is
  recomputed exactly and the estimate is ``sum dM/dA · (A' − A)`` (``atp_qk``). It costs two
  calls of each layer's attention module, no forward. ``values`` cells stay linear (v enters z
  linearly).
* **GradDrop** (``grad_drop``): against paths that cancel, for each layer l one more backward
  with the gradient through layer l's contributions to the residual stream (its ``attn_out``
  and ``mlp_out``; the forward is unchanged, an ``Apply`` detaches them) set to
  zero, giving ``Î_l(n)``; the cell's AtP* score is the mean over prompts of the mean over
  l ≠ layer(n) of ``|Î_l(n)|`` -- the paper's ``1/(L−1) sum_l |Î_l|``, since a node's own
  layer gives ``Î = 0``. Residual-stream cells (resid_pre / resid_mid / resid_post) are no
  layer's output: their mean runs over all L. L extra forward + backward passes.

The result holds the signed estimate (AtP with the QK fix; ``effects`` on patching's scale,
0 = corrupt, 1 = clean, normalised exactly as ``activation_patching``), the plain AtP deltas for
comparison, and ``score``: what AtP* ranks cells by, the mean over prompts of the magnitude of
the estimated change (GradDrop's when on) over ``|mean M(clean) − mean M(corrupt)|`` -- the
paper's ``c(n) = E|I(n)|`` on the effects' scale.

Assumptions and limits (as ``attribution``): prompts of one token length, no padding; first
order except for the softmax of q / k cells. The QK fix covers the q / k cells themselves; a
node *upstream* of a saturated head (e.g. the head writing the keys a saturated head reads) is
still estimated through that softmax and can be a false negative, as in the paper -- the
``verified`` sweep's random sample is the guard. ``heads`` (attn.z) cells come after the
softmax, so their AtP already uses the exact change of z and ``qk_fix`` leaves them alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from interplab.analyses import atp_qk
from interplab.analyses.attribution_engine import PromptMetric
from interplab.analyses.metrics import normalise
from interplab.analyses.patching import HEAD_INPUTS, PatchingConfig, _cells, pair_inputs
from interplab.core.config import param
from interplab.core.errors import SiteError
from interplab.core.model import Model
from interplab.core.shapes import AnswerIds
from interplab.core.sites import Site, SiteKind
from interplab.interventions import Apply

log = logging.getLogger(__name__)

RESIDUAL = ("resid_pre", "resid_mid", "resid_post")
QK = {"queries": "q", "keys": "k"}


@dataclass(frozen=True)
class AtPStarConfig(PatchingConfig):
    """AtP* estimates of one activation-patching sweep (its grid, direction and metric)."""

    qk_fix: bool = param(True, help="queries / keys sweeps: recompute the attention pattern "
                         "exactly instead of linearising the softmax (AtP*'s QK fix).")
    grad_drop: bool = param(False, help="Score cells with AtP*'s GradDrop (one more backward per "
                            "layer) against paths that cancel.")


@dataclass
class AtPStarResult:
    """Estimated effects [prompt, *cells] on the sweep's grid, plain AtP, and the AtP* score."""

    config: AtPStarConfig
    axes: dict[str, list]  # the grid, as activation_patching's
    effects: torch.Tensor  # [prompt, *cells], estimated normalised effect (0 corrupt, 1 clean)
    delta: torch.Tensor  # [prompt, *cells], estimated change of the raw metric (QK fix where on)
    plain_delta: torch.Tensor  # [prompt, *cells], plain AtP (linear through every softmax)
    score: torch.Tensor  # [*cells] >= 0, AtP*'s ranking score on the effects' scale
    base_metric: torch.Tensor  # [prompt]
    clean_metric: torch.Tensor  # [prompt]
    corrupt_metric: torch.Tensor  # [prompt]
    drop_delta: torch.Tensor | None = None  # [layer dropped, prompt, *cells]; NaN: left out
    passes: dict[str, int] | None = None
    seconds: float = 0.0


def _kind(sweep: str) -> SiteKind:
    if sweep in HEAD_INPUTS:
        return HEAD_INPUTS[sweep]
    return SiteKind.Z if sweep.startswith("heads") else SiteKind(sweep)


def _gather(cells, per_layer: dict[int, torch.Tensor]) -> torch.Tensor:
    """[n, cells] from per-layer sums over d: [n, pos] (residual kinds) or [n, pos, heads]."""
    cols = []
    for c in cells:
        t = per_layer[c.layer]
        if c.head is None:
            cols.append(t[:, c.pos])
        elif c.pos is None:
            cols.append(t[:, :, c.head].sum(1))
        else:
            cols.append(t[:, c.pos, c.head])
    return torch.stack(cols, 1)


def _detach(x: torch.Tensor) -> torch.Tensor:
    return x.detach()


def _drop_edits(model: Model, layer: int) -> list[Apply]:
    """Stop the gradient through layer ``layer``'s outputs into the residual stream."""
    edits = [Apply(Site(layer, SiteKind.ATTN_OUT), fn=_detach)]
    try:
        model.site(Site(layer, SiteKind.MLP_OUT))
        edits.append(Apply(Site(layer, SiteKind.MLP_OUT), fn=_detach))
    except SiteError:  # an attention-only model has no MLP to drop
        pass
    return edits


def atp_star(model: Model, clean, corrupt, answers: AnswerIds, wrong: AnswerIds,
             config: AtPStarConfig = AtPStarConfig()) -> AtPStarResult:
    """AtP* estimates of every cell of the sweep; see the module docstring."""
    clean, corrupt, answers, wrong = pair_inputs(model, clean, corrupt, answers, wrong)
    n, n_pos = clean.shape
    cells, axes = _cells(model, config, n_pos)
    which = QK.get(config.sweep) if config.qk_fix else None
    if which is not None:
        atp_qk.check_eager(model)
    layers = sorted({c.layer for c in cells})
    sites = [Site(layer, _kind(config.sweep)) for layer in layers]
    extra = [Site(layer, k) for layer in layers for k in (SiteKind.Z, SiteKind.V)] if which else []
    denoising = config.direction == "denoising"
    base, source = (corrupt, clean) if denoising else (clean, corrupt)

    start = time.perf_counter()
    with torch.no_grad():
        source_logits, cache = model.run_with_cache(source, sites)
    # Denoising: the source is the clean run; noising: the base is, and the metric keeps its
    # logits as the kl reference on its first call.
    metric = PromptMetric(config.metric, answers, wrong, source_logits[:, -1] if denoising else None)
    grad_sites = list(dict.fromkeys(sites + extra))
    with atp_qk.captured_attention(model, layers if which else []) as calls:
        g = model.gradients(base, metric, grad_sites)
    base_m, source_m = metric.values, metric.score(source_logits[:, -1])
    changes = (atp_qk.pattern_changes(model, layers, calls, g.acts, cache.acts, (which,))
               if which else {})

    def linear(grads) -> torch.Tensor:
        return _gather(cells, {s.layer: ((cache.acts[s] - g.acts[s]).double() * grads[s].double()).sum(-1)
                               for s in sites})

    def estimate(grads) -> torch.Tensor:
        if not which:
            return linear(grads)
        per_layer = {}
        for layer in layers:
            z, v = Site(layer, SiteKind.Z), Site(layer, SiteKind.V)
            grad_a = atp_qk.pattern_grad(model, grads[z], g.acts[v])
            per_layer[layer] = atp_qk.qk_cells(changes[(layer, which)], grad_a, which,
                                               model.dims.n_kv_heads)[:, None]
        return _gather(cells, per_layer)

    delta, plain = estimate(g.grads), linear(g.grads)
    passes = {"forward": 2, "backward": 1, "attention_calls": 2 * len(layers) if which else 0}
    drop_delta = None
    if config.grad_drop:
        drop_delta, n_drops = _grad_drop(model, base, metric, grad_sites, cells, estimate, config)
        passes["forward"] += n_drops
        passes["backward"] += n_drops
    seconds = time.perf_counter() - start
    log.info("AtP* (%s): %s in %.2fs", config.sweep, passes, seconds)

    clean_m, corrupt_m = (source_m, base_m) if denoising else (base_m, source_m)
    denom = float((clean_m.mean() - corrupt_m.mean()).abs())
    effects = normalise(config.metric, base_m[:, None] + delta.float(), clean_m[:, None],
                        corrupt_m[:, None], base="corrupt" if denoising else "clean")
    score = _score(delta, drop_delta) / denom
    shape = [len(v) for v in axes.values()]
    return AtPStarResult(
        config, axes, effects.reshape(n, *shape), delta.float().reshape(n, *shape),
        plain.float().reshape(n, *shape), score.float().reshape(shape), base_m, clean_m, corrupt_m,
        None if drop_delta is None else drop_delta.float().reshape(-1, n, *shape), passes, seconds,
    )


def _grad_drop(model: Model, base, metric, grad_sites, cells, estimate, config
               ) -> tuple[torch.Tensor, int]:
    """Î_l for every layer l: [n_layers, n, cells]; NaN where a cell leaves l out (its own
    layer: Î_l = 0 by construction) and for a layer whose drop would only touch such cells."""
    n_layers = model.dims.n_layers
    own = torch.zeros(n_layers, len(cells), dtype=torch.bool)
    if config.sweep not in RESIDUAL:
        for j, c in enumerate(cells):
            own[c.layer, j] = True
    out = torch.full((n_layers, base.shape[0], len(cells)), float("nan"), dtype=torch.float64)
    runs = 0
    for layer in range(n_layers):
        if bool(own[layer].all()):
            continue
        res = model.gradients(base, metric, grad_sites, _drop_edits(model, layer))
        out[layer] = estimate(res.grads).masked_fill(own[layer], float("nan"))
        runs += 1
    return out, runs


def _score(delta: torch.Tensor, drop_delta: torch.Tensor | None) -> torch.Tensor:
    """Mean over prompts of |Î| (plain), or of the mean over the dropped layers l != layer(n)
    of |Î_l| (GradDrop); a cell with no other layer to drop (one layer) keeps |Î|."""
    if drop_delta is None:
        return delta.abs().mean(0)
    valid = ~torch.isnan(drop_delta)
    count = valid.sum(0)
    summed = torch.where(valid, drop_delta.abs(), torch.zeros_like(drop_delta)).sum(0)
    per_prompt = torch.where(count > 0, summed / count.clamp(min=1), delta.abs())
    return per_prompt.mean(0)


__all__ = ["AtPStarConfig", "AtPStarResult", "atp_star"]
