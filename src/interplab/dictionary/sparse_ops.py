"""A TopK training step that never materialises the dense latent matrix.

The step of a TopK SAE is bound by the encoder matmul (~2·d_in·d_sae FLOPs a token forward);
everything after the top-k selection touches only ``k`` latents a token. This module keeps it
that way in both directions:

* forward: pre-activations from one matmul (optionally in bfloat16 — its products accumulate
  in float32 inside the kernel; the result is rounded to bfloat16, ~0.4 % relative, before
  the top-k), ``topk``, then the decoder as ``embedding_bag`` over the ``k`` chosen rows of
  ``W_dec`` (as sparsify does);
* backward: the encoder's weight gradient is ``Gᵀ·x`` for the sparse ``[batch, d_sae]``
  matrix ``G`` of top-k gradients, computed as a CSR sparse-dense product with ``G`` sorted by
  latent — instead of sparsify's ``index_add_`` over a ``[batch·k, d_in]`` temporary, or the
  dense ``[batch, d_sae]`` products a plain autograd graph needs. The gradient reaching
  ``b_dec`` through the encoder input needs only ``W_enc`` times the column sums of ``G``.

``topk_train_step`` returns the same loss terms as ``Dictionary.training_step`` (tested for
equal values and gradients in float32); AuxK runs its own small matmul on the dead latents'
encoder columns only.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor


def _csr_by_latent(idx: Tensor, values: Tensor, n_latents: int) -> Tensor:
    """The sparse [d_sae, batch] matrix with ``values[n, j]`` at ``(idx[n, j], n)``."""
    n, k = idx.shape
    flat = idx.reshape(-1)
    order = flat.argsort(stable=True)
    rows = torch.arange(n, device=idx.device).repeat_interleave(k)[order]
    counts = torch.bincount(flat, minlength=n_latents)
    crow = torch.zeros(n_latents + 1, dtype=torch.long, device=idx.device)
    crow[1:] = counts.cumsum(0)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, rows, values.reshape(-1)[order], (n_latents, n),
                                       check_invariants=False)


class TopKEncode(torch.autograd.Function):
    """(x, b_in, W_enc, b_enc) → (ReLU'd top-k values, indices) of (x - b_in) @ W_enc + b_enc."""

    @staticmethod
    def forward(ctx, x, b_in, w_enc, b_enc, k: int, compute_dtype: torch.dtype):
        xc = x - b_in
        if compute_dtype == xc.dtype:
            pre = torch.addmm(b_enc, xc, w_enc)
        else:
            pre = (xc.to(compute_dtype) @ w_enc.to(compute_dtype)).to(xc.dtype) + b_enc
        values, idx = pre.topk(k, dim=-1, sorted=False)
        values = values.relu()
        ctx.save_for_backward(xc, w_enc, idx, values)
        ctx.n_latents = w_enc.shape[1]
        ctx.mark_non_differentiable(idx)
        return values, idx

    @staticmethod
    def backward(ctx, grad_values, _grad_idx):
        xc, w_enc, idx, values = ctx.saved_tensors
        g = grad_values * (values > 0)
        col_sums = torch.zeros(ctx.n_latents, dtype=g.dtype, device=g.device)
        col_sums.index_add_(0, idx.reshape(-1), g.reshape(-1))
        grad_x = grad_b_in = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(idx, w_enc.t().contiguous(), mode="sum", per_sample_weights=g)
        if ctx.needs_input_grad[1]:
            grad_b_in = -(w_enc @ col_sums)
        if ctx.needs_input_grad[2]:
            grad_w = (_csr_by_latent(idx, g, ctx.n_latents) @ xc).t().contiguous()
        if ctx.needs_input_grad[3]:
            grad_b = col_sums
        return grad_x, grad_b_in, grad_w, grad_b, None, None


def topk_train_step(d, x: Tensor, target: Tensor | None, compute_dtype: torch.dtype | None = None):
    """``Dictionary.training_step`` for a plain TopK SAE or TopK transcoder, kept sparse.

    Returns a ``StepOutput`` whose ``latents`` is None and whose ``fired`` says which latents
    were active; ``recon`` is in normalised units like the dense path.
    """
    from interplab.dictionary.base import StepOutput

    target = x if target is None else target
    x_n = d._in(x)
    t_n = target.to(d.W_enc.dtype) * d.out_scale
    b_in = torch.zeros_like(d.b_dec) if d.is_transcoder else d.b_dec
    values, idx = TopKEncode.apply(x_n, b_in, d.W_enc, d.b_enc, d.cfg.k, compute_dtype or x_n.dtype)
    recon = F.embedding_bag(idx, d.W_dec, mode="sum", per_sample_weights=values) + d.b_dec
    skip = d.skip(x_n)
    if not isinstance(skip, float):
        recon = recon + skip
    err = recon - t_n
    mse = err.pow(2).sum(-1).mean()
    parts = {"mse": mse}
    if d.training and bool(d.dead_mask().any()):
        parts.update(sparse_aux_loss(d, x_n - b_in, err))
    loss = sum(parts.values())
    with torch.no_grad():
        var = (t_n - t_n.mean(0)).pow(2).sum(-1).mean()
        parts["fvu"] = mse.detach() / var.clamp_min(1e-12)
        active = values > 0
        parts["l0"] = active.sum(-1).float().mean()
        fired = torch.zeros(d.cfg.d_sae, dtype=torch.bool, device=x.device)
        fired[idx[active]] = True
    return StepOutput(loss, parts, None, recon, fired=fired)


def sparse_aux_loss(d, xc: Tensor, err: Tensor) -> dict[str, Tensor]:
    """AuxK (Gao et al. 2024) from the dead latents' encoder columns only (same value as
    ``TopKFamily.aux_loss``, which computes it from the full pre-activations)."""
    dead = d.dead_mask().nonzero().squeeze(-1)
    k = min(d.aux_k, dead.numel())
    pre = xc @ d.W_enc[:, dead] + d.b_enc[dead]
    values, local = pre.topk(k, dim=-1, sorted=False)
    e_hat = F.embedding_bag(dead[local], d.W_dec, mode="sum", per_sample_weights=values.relu())
    residual = -err.detach()
    var = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    loss = (e_hat - residual).pow(2).sum(-1).mean() / var
    return {"auxk": d.cfg.aux_coeff * min(dead.numel() / d.aux_k, 1.0) * loss}
