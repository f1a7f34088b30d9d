"""The quantile sampler of feature_stats on made-up latents: it keeps exactly the highest
priorities in each interval (priority sampling), so every context of an interval is drawn with
probability k / (contexts in it); the result does not depend on how the contexts are batched."""

from __future__ import annotations

import math

import torch

from interplab.dictionary.features_select import QuantileSample, quantile_edges

N, T, S, NQ, K, W = 30, 5, 3000, 2, 3, 4


def _run(z, prio, top_max, batch, contexts):
    sample = QuantileSample(top_max, NQ, K, W)
    for lo in range(0, N, batch):
        sample.merge(z[lo:lo + batch], prio[lo:lo + batch], lo, 2)
    return sample.result(contexts)


def test_priority_sampling_uniform_and_batch_free():
    g = torch.Generator().manual_seed(0)
    base = 0.01 * torch.rand(N, T, generator=g) + 0.001  # positive, distinct; a uniform maximum planted in each
    base[torch.arange(N), torch.randint(0, T, (N,), generator=g)] = 0.05 + 0.9 * torch.rand(N, generator=g)
    base[:4] = 0.0  # contexts where nothing fires: never sampled
    z = base[..., None].expand(N, T, S).contiguous()  # every latent sees the same contexts: S independent draws
    prio = torch.rand(N, S, generator=g)
    top_max = z.max(1).values.max(0).values
    contexts = torch.arange(N * T).reshape(N, T)  # token = where it came from
    a, b = _run(z, prio, top_max, 4, contexts), _run(z, prio, top_max, 7, contexts)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    m = base.max(1).values
    edges = quantile_edges(top_max, NQ)[0]
    got = a["quantile_contexts"]  # [S, NQ, K]
    for q in range(NQ):
        inside = (m > edges[q]) & (m <= edges[q + 1])
        n_in = int(inside.sum())
        assert n_in > K and (a["quantile_counts"][:, q] == n_in).all()
        # exactly the K highest priorities among the contexts in the interval
        want = prio.masked_fill(~inside[:, None], float("-inf")).topk(K, dim=0).indices.T.sort(-1).values
        assert torch.equal(got[:, q].sort(-1).values, want)
        # hence uniform: each context of the interval in about K / n_in of the S draws
        freq = (got[:, q, :, None] == torch.arange(N)).any(1).double().mean(0)
        p = K / n_in
        assert (freq[~inside] == 0).all()
        assert ((freq[inside] - p).abs() < 5 * math.sqrt(p * (1 - p) / S)).all()
    # the windows: around the first maximum, tokens and activations of that context
    c, start = got[0, 0, 0], a["quantile_start"][0, 0, 0]
    assert torch.equal(a["quantile_tokens"][0, 0, 0], contexts[c, start:start + W])
    assert torch.equal(a["quantile_acts"][0, 0, 0], base[c, start:start + W])
    assert float(a["quantile_values"][0, 0, 0]) == float(m[c])


def test_edges():
    e = quantile_edges(torch.tensor([3.0, 0.0, -1.0, 0.7]), 3)
    assert e.shape == (4, 4) and e.dtype == torch.float32
    assert torch.equal(e[0], torch.tensor([0.0, 1.0, 2.0, 3.0])) and (e[1:3] == 0).all()
    assert float(e[3, -1]) == float(torch.tensor(0.7)) and float(e[3, 0]) == 0.0
