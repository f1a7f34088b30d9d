"""Edge attribution patching (EAP) and EAP with integrated gradients (EAP-IG).

Technique. EAP (Syed, Rager & Conmy 2023, "Attribution Patching Outperforms Automated
Circuit Discovery") estimates the effect of ablating edge s -> r to first order:

    score(s -> r) = (out_s^abl - out_s^clean) . dM / dx_r

summed over positions, per prompt, where ``x_r`` is the residual input of receiver ``r`` alone
(a head's q, k or v input -- under grouped-query attention a KV head's k or v input, shared
by the query heads of its group; an MLP's input; the final residual). Cost: a forward on the
corrupt prompts for ``out_s^abl``, a forward + backward on the clean prompts for ``out_s^clean`` and
the gradients: 2F + 1B (1F + 1B with the zero ablation, which needs no corrupt run).

EAP-IG (Hanna, Pezzelle & Belinkov 2024, "Have Faith in Faithfulness: Going Beyond Circuit
Overlap When Finding Model Mechanisms") replaces the gradient at the clean input with its
average over ``m`` points on the straight line from the ablated input to the clean one, taken
at the input of block 0 (embedding + positions): ``x_0(a) = x_0^abl + a (x_0^clean - x_0^abl)``,
``a = k/m``, k = 1..m (a right Riemann sum, so a = 1 is the clean point). Cost: 2F for the
clean and corrupt outputs, then m(F + B).

Receiver gradients. One backward gives the gradient at every receiver's *output* (q / k / v
sites, ``mlp_out``, ``ln_final``); the gradient at its own input is the vector-Jacobian
product of its norm + projection, re-run on the cached input (a per-layer module call, not a
model pass; not counted in ``n_forward``). For a KV head that gradient, taken at its k / v
output, already sums what every query head of its group sends back through it. The gradient
at ``resid_pre`` itself would not do: it sums over every reader of that stream.

Assumptions and known failures: the first-order estimate is exact where the metric is linear
in the edge (e.g. an edge into the logits of a model without a final norm, metric
``logit_diff``), and fails where it is not -- notably at a saturated softmax, where the
gradient into a head's q / k is ~0 although ablating the edge changes the pattern (EAP's
zero-gradient failure; Hanna et al. 2024 §2; visible in the planted induction model). With the
``kl`` metric the clean point is a minimum, so plain EAP gives all-zero scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from interplab.analyses.circuits.edges import (
    CircuitTask,
    Scorer,
    attn_norm,
    check_ablation,
    check_task,
    head_out_weights,
    receiver_input_site,
    reduce_ablation,
    sender_outputs,
    sender_sites,
    stack_outputs,
)
from interplab.analyses.circuits.exact import EdgeScores
from interplab.analyses.circuits.graph import CircuitGraph, Receiver
from interplab.analyses.metrics import check_metric
from interplab.core.config import param
from interplab.core.errors import ConfigError
from interplab.core.model import Model
from interplab.core.sites import Site, SiteKind
from interplab.interventions import Patch


@dataclass(frozen=True)
class EAPConfig:
    """EAP (``steps=0``) or EAP-IG with ``steps`` interpolation points."""

    metric: str = param("logit_diff", help="logit_diff, prob, loss or kl (at the last position).")
    ablation: str = param("corrupt", help="corrupt, mean or zero: what an ablated edge carries.")
    steps: int = param(0, help="0: plain EAP; m > 0: EAP-IG with m interpolation steps.")

    def __post_init__(self) -> None:
        check_metric(self.metric)
        check_ablation(self.ablation)
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0 (0 = plain EAP); got {self.steps}.")


def _output_site(graph: CircuitGraph, r: Receiver) -> Site:
    if r.kind == "head":
        return Site(r.layer, SiteKind(f"attn.{r.input}"))
    if r.kind == "mlp":
        return Site(r.layer, SiteKind.MLP_OUT)
    return Site(None, SiteKind.LN_FINAL)


def grad_sites(graph: CircuitGraph) -> list[Site]:
    """Every receiver's input and output site (deduplicated, in graph order)."""
    sites: list[Site] = []
    for r in graph.receivers:
        for s in (receiver_input_site(graph, r), _output_site(graph, r)):
            if s not in sites:
                sites.append(s)
    return sites


def receiver_grads(model: Model, graph: CircuitGraph, res) -> torch.Tensor:
    """dM/dx_r for every receiver: [n, pos, n_receivers, d_model], by VJPs of each receiver's
    norm + projection at its cached input (``res``: a ``GradientResult`` of ``grad_sites``)."""
    a = model.adapter
    out = []
    with torch.enable_grad():
        for r in graph.receivers:
            x = res.acts[receiver_input_site(graph, r)].detach().requires_grad_(True)
            g_out = res.grads[_output_site(graph, r)]
            if r.kind == "head":
                point = a.qkv_point(r.layer, r.input)
                y = point.get(point.module.forward(attn_norm(model, r.layer).forward(x)))
                h = r.site_head  # k / v sites index KV heads
                y, g_out = y.select(point.head_axis, h), g_out.select(point.head_axis, h)
            elif r.kind == "mlp":
                y = a.mlp_branch(r.layer).forward(a.mlp_norm(r.layer).forward(x))
            else:
                y = a.final_norm().forward(x)
            (g,) = torch.autograd.grad(y, x, grad_outputs=g_out.to(y.dtype))
            out.append(g.detach())
    return torch.stack(out, dim=2)


def _scores(graph: CircuitGraph, diff: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """[n, n_edges]: each edge's (abl - clean) . gradient, summed over positions."""
    n = diff.shape[0]
    out = torch.empty(n, graph.n_edges, dtype=torch.float32)
    for i, r in enumerate(graph.receivers):
        block = torch.einsum("bpsd,bpd->bs", diff[:, :, : r.n_senders], grads[:, :, i])
        out[:, r.start : r.start + r.n_senders] = block.float()
    return out


def eap(model: Model, task: CircuitTask, config: EAPConfig = EAPConfig(),
        graph: CircuitGraph | None = None) -> EdgeScores:
    """EAP or EAP-IG scores of every edge (see the module doc); the pass counts travel with
    the result."""
    start = time.perf_counter()
    check_task(model, task, config.metric, config.ablation)
    graph = graph or CircuitGraph.from_model(model)
    w_o = head_out_weights(model)
    senders = sender_sites(graph)
    n_fwd = n_bwd = 0
    abl = None
    if config.ablation != "zero":
        _, cache = model.run_with_cache(task.corrupt, senders)
        n_fwd += 1
        abl = reduce_ablation(sender_outputs(cache, graph, w_o), config.ablation)
    everyone = torch.arange(task.n_prompts)
    sites = list(dict.fromkeys([*senders, *grad_sites(graph)]))
    if config.steps == 0:
        holder = {}

        def metric(logits, batch):  # the clean run is this run: KL's reference is itself
            last = logits[:, -1]
            holder["last"] = last.detach()
            return Scorer(config.metric, task, last.detach())(last, everyone).sum()

        res = model.gradients(task.clean, metric, sites)
        n_fwd, n_bwd = n_fwd + 1, n_bwd + 1
        clean = sender_outputs(res.acts, graph, w_o)
        grads = receiver_grads(model, graph, res)
        scorer = Scorer(config.metric, task, holder["last"])
        method = "eap"
    else:
        clean_logits, cache = model.run_with_cache(task.clean, senders)
        n_fwd += 1
        clean = sender_outputs(cache, graph, w_o)
        scorer = Scorer(config.metric, task, clean_logits[:, -1])
        x0 = clean["embed"]
        x0_abl = torch.zeros_like(x0) if abl is None else abl["embed"].expand_as(x0)
        grads = None
        for k in range(1, config.steps + 1):
            alpha = k / config.steps
            point = Patch(Site(0, SiteKind.RESID_PRE), value=x0_abl + alpha * (x0 - x0_abl))
            res = model.gradients(task.clean, lambda lg, b: scorer(lg[:, -1], everyone).sum(),
                                  grad_sites(graph), [point])
            step = receiver_grads(model, graph, res)
            grads = step if grads is None else grads + step
            n_fwd, n_bwd = n_fwd + 1, n_bwd + 1
        grads = grads / config.steps
        method = "eap-ig"
    clean_stack = stack_outputs(clean, graph)
    abl_stack = torch.zeros_like(clean_stack) if abl is None else stack_outputs(abl, graph)
    per_prompt = _scores(graph, abl_stack.expand_as(clean_stack) - clean_stack, grads)
    return EdgeScores(method, graph.edges, per_prompt.mean(0), per_prompt, config.metric,
                      config.ablation, scorer.higher_is_better, n_fwd, n_bwd,
                      time.perf_counter() - start, config)
