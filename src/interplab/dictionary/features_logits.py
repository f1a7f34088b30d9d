"""Direct logit effects of a dictionary's latents (see ``features.py``): each decoder row, in
model units, through the final norm's gain (centred first for LayerNorm) and the unembedding."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from interplab.core.model import Model
from interplab.core.sites import Site, SiteKind
from interplab.dictionary.base import Dictionary
from interplab.models.norms import norm_convention

log = logging.getLogger(__name__)

RESIDUAL_KINDS = frozenset({SiteKind.EMBED, SiteKind.RESID_PRE, SiteKind.RESID_MID, SiteKind.RESID_POST,
                            SiteKind.ATTN_OUT, SiteKind.MLP_OUT})


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
