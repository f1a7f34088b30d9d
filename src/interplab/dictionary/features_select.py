"""The running selections behind ``feature_stats`` (see ``features.py``): the top-n contexts per
latent, and the quantile samples (a second pass, once every latent's maximum is known).

Both keep, for every latent at once, a few contexts with a window of the latent's activations
around the context's maximum. Per batch the new candidates join the kept ones along a leading
slot axis and one sort (or top-k) along it keeps the best: no loop over latents.
"""

from __future__ import annotations

import torch
from torch import Tensor


def windows(z: Tensor, before: int, w: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per context and latent of ``z [B, T, S]``: its maximum and the first position of it
    (``[B, S]``), the window's first position (``[B, S]``: ``before`` tokens before the
    maximum when the context allows) and the activations on the window (``[B, w, S]``)."""
    t = z.shape[1]
    best, pos = z.max(dim=1)  # first position of the maximum
    start = (pos - before).clamp(0, t - w)
    idx = start[:, None, :] + torch.arange(w, device=z.device)[None, :, None]  # [B, W, S]
    return best, pos, start, z.gather(1, idx)


class TopN:
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
        b, _, s = z.shape
        n, w = self.vals.shape[0], self.acts.shape[1]
        best, pos, start, acts = windows(z, before, w)
        idx = start[:, None, :] + torch.arange(w, device=z.device)[None, :, None]
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


def quantile_edges(top_max: Tensor, n_quantiles: int) -> Tensor:
    """``[d_sae, n_quantiles + 1]`` float32 interval edges: latent i's interval q is
    ``(edges[i, q], edges[i, q + 1]]``, ``edges[i, q] = top_max[i] * q / n_quantiles``
    (exactly 0 and ``top_max[i]`` at the ends; ``top_max`` clamped at 0). The sampler assigns
    contexts with these very numbers, so a sampled context's maximum lies in its interval."""
    top_max = top_max.float().clamp_min(0)
    steps = torch.arange(n_quantiles + 1, dtype=torch.float32, device=top_max.device)
    edges = top_max[:, None] * steps / n_quantiles
    edges[:, 0] = 0.0
    edges[:, -1] = top_max
    return edges


class QuantileSample:
    """Per latent and interval, ``k`` contexts drawn uniformly without replacement among those
    whose maximum lies in the interval: priority sampling (each (context, latent) gets a random
    priority; the ``k`` highest in the interval are kept — a uniform k-subset), merged per
    batch like ``TopN``. Also counts the contexts per interval."""

    def __init__(self, top_max: Tensor, n_quantiles: int, k: int, w: int) -> None:
        s, dev = top_max.shape[0], top_max.device
        self.edges = quantile_edges(top_max, n_quantiles)
        self.interior = self.edges[:, 1:-1].T.contiguous()  # [n_q - 1, S]
        shape = (k, n_quantiles, s)
        self.prio = torch.full(shape, float("-inf"), device=dev)
        self.vals = torch.zeros(shape, device=dev)
        self.ctx = torch.full(shape, -1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(shape, dtype=torch.long, device=dev)
        self.start = torch.zeros(shape, dtype=torch.long, device=dev)
        self.acts = torch.zeros((k, n_quantiles, w, s), device=dev)
        self.counts = torch.zeros((n_quantiles, s), dtype=torch.long, device=dev)

    def merge(self, z: Tensor, prio: Tensor, first_ctx: int, before: int) -> None:
        """Merge a batch: ``z [B, T, S]`` and the priorities ``prio [B, S]`` of its contexts."""
        b, _, s = z.shape
        k, nq, w = self.prio.shape[0], self.prio.shape[1], self.acts.shape[2]
        best, pos, start, acts = windows(z, before, w)
        best = best.float()
        q = (best[:, None, :] > self.interior[None]).sum(1)  # [B, S] interval of the maximum
        hit = (q[:, None, :] == torch.arange(nq, device=z.device)[None, :, None]) & (best > 0)[:, None, :]
        self.counts += hit.sum(0)
        cand = torch.where(hit, prio[:, None, :], float("-inf"))  # [B, n_q, S]
        top = torch.cat([self.prio, cand]).topk(k, dim=0)
        self.prio = top.values
        new = top.indices >= k  # [k, n_q, S]: the slot now holds a context of this batch
        kept_i, new_i = top.indices.clamp_max(k - 1), (top.indices - k).clamp_min(0)

        def pick(kept: Tensor, fresh: Tensor) -> Tensor:  # kept [k, n_q, S], fresh [B, S]
            return torch.where(new, fresh[:, None, :].expand(b, nq, s).gather(0, new_i), kept.gather(0, kept_i))

        ctx = torch.arange(first_ctx, first_ctx + b, device=z.device)[:, None].expand(b, s)
        self.vals = pick(self.vals, best)
        self.ctx = pick(self.ctx, ctx)
        self.pos = pick(self.pos, pos)
        self.start = pick(self.start, start)
        big_new = new_i[:, :, None, :].expand(k, nq, w, s)
        fresh = acts.float()[:, None].expand(b, nq, w, s).gather(0, big_new)
        self.acts = torch.where(new[:, :, None, :], fresh, self.acts.gather(0, kept_i[:, :, None, :].expand(k, nq, w, s)))

    def result(self, contexts: Tensor) -> dict[str, Tensor]:
        """The ``quantile_*`` tensors of ``FeatureStats`` (on the CPU), each slot's window tokens
        read from ``contexts [n, T]``; within an interval the slots are sorted by the context's
        maximum, descending, empty ones (context -1, zeros elsewhere) last."""
        k, nq, w, s = self.acts.shape
        empty = self.prio == float("-inf")
        order = self.vals.masked_fill(empty, float("-inf")).sort(dim=0, descending=True, stable=True).indices
        empty = empty.gather(0, order)

        def arrange(x: Tensor, fill) -> Tensor:  # [k, n_q, S] -> [S, n_q, k]
            return x.gather(0, order).masked_fill(empty, fill).permute(2, 1, 0).contiguous().cpu()

        acts = self.acts.gather(0, order[:, :, None, :].expand(k, nq, w, s)).masked_fill(empty[:, :, None, :], 0.0)
        ctx, start = arrange(self.ctx, -1), arrange(self.start, 0)
        idx = start[..., None] + torch.arange(w)  # [S, n_q, k, w]
        tokens = contexts.cpu()[ctx.clamp_min(0)[..., None], idx].masked_fill((ctx < 0)[..., None], 0)
        return {"quantile_values": arrange(self.vals, 0.0), "quantile_contexts": ctx,
                "quantile_positions": arrange(self.pos, 0), "quantile_start": start,
                "quantile_acts": acts.permute(3, 1, 0, 2).contiguous().cpu(), "quantile_tokens": tokens,
                "quantile_counts": self.counts.T.contiguous().cpu()}


def decoder_neighbours(w_dec: Tensor, k: int, chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """``(ids [d_sae, k] int64, cos [d_sae, k] float32)``: each latent's ``k`` nearest other
    latents by cosine similarity of decoder rows, most similar first (itself excluded; ``k``
    capped at ``d_sae - 1``). Computed ``chunk`` rows at a time (default: about 2^24 entries of
    the similarity matrix at once), never the whole ``d_sae × d_sae`` matrix. A zero row has
    cosine 0 with everything."""
    s = w_dec.shape[0]
    k = max(0, min(k, s - 1))
    w = w_dec.detach().float()
    w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    chunk = chunk or max(1, (1 << 24) // max(s, 1))
    ids, cos = [], []
    for lo in range(0, s, chunk):
        sim = w[lo: lo + chunk] @ w.T  # [c, S]
        rows = torch.arange(sim.shape[0], device=sim.device)
        sim[rows, lo + rows] = float("-inf")
        top = sim.topk(k, dim=-1)
        ids.append(top.indices.cpu())
        cos.append(top.values.cpu())
    if not ids:
        return torch.zeros((0, k), dtype=torch.long), torch.zeros((0, k))
    return torch.cat(ids), torch.cat(cos).float()
