"""Gradients of a scalar metric with respect to activations, from one backward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interplab.core.errors import InputError
from interplab.core.sites import Site, as_sites
from interplab.runtime import dispatch


@dataclass
class GradientResult:
    """The metric's value, and the activation and its gradient at each asked site."""

    value: torch.Tensor
    grads: dict[Site, torch.Tensor]
    acts: dict[Site, torch.Tensor]

    def __getitem__(self, site) -> torch.Tensor:
        return self.grads[Site.parse(site)]


def gradients(model, inputs, metric, sites, interventions=()) -> GradientResult:
    batch = model.to_batch(inputs)
    sites = [model.site(s) for s in as_sites(sites)]
    if not sites:
        raise InputError("gradients() needs at least one site.")
    taps: dict[Site, dict] = {}  # one tap per whole site, shared by its per-head sites
    handles = []

    def tap(whole):
        def fn(act):
            # Always hand back a new tensor so the model computes on from it: a leaf when
            # nothing upstream needs grad (the graph starts here), else an alias in the graph.
            act = act.detach().requires_grad_(True) if not act.requires_grad else act.view_as(act)
            taps[whole]["act"] = act
            return act
        return fn

    frozen = [p for p in model.hf.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for site in sites:
            whole = Site(site.layer, site.kind)
            if whole not in taps:
                taps[whole] = {"sites": [], "axis": model.adapter.point(whole).head_axis}
                handles += model.attach_site(whole, tap(whole), dispatch.GRAD, True)
            taps[whole]["sites"].append(site)
        with model.attached(interventions, batch=batch), torch.enable_grad():
            logits = model.forward_logits(batch)
            value = metric(logits, batch)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise InputError(
                    "The metric must return a scalar tensor (e.g. a mean over the batch); got "
                    f"{type(value).__name__} of shape {getattr(value, 'shape', None)}."
                )
            wholes = [w for w in taps if "act" in taps[w]]
            acts = [taps[w]["act"] for w in wholes]
            grads = torch.autograd.grad(value, acts, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
    out_g, out_a = {}, {}
    for whole, act, g in zip(wholes, acts, grads):
        g = torch.zeros_like(act) if g is None else g
        axis = taps[whole]["axis"]
        for site in taps[whole]["sites"]:
            ga, aa = g, act.detach()
            if site.head is not None:
                ga, aa = ga.select(axis, site.head), aa.select(axis, site.head)
            out_g[site], out_a[site] = ga.detach().clone(), aa.clone()
    return GradientResult(value.detach(), out_g, out_a)
