"""Feature statistics: a planted feature is found exactly; batched equals a naive per-latent
loop; logit effects follow the stated formula; quantile samples lie in their intervals, are
distinct, seeded and leave empty slots at -1; decoder neighbours equal a brute-force top-k; the
vocab covers every window; save / load / describe round-trip, an old directory included."""

from __future__ import annotations

import pytest
import torch

from interplab.core.artifacts import write_artifact
from interplab.core.config import to_dict
from interplab.core.errors import ConfigError, InputError
from interplab.dictionary import DICTIONARIES, Dictionary, DictionaryConfig
from interplab.dictionary.features import (
    FORMAT,
    TENSORS,
    FeatureConfig,
    FeatureStats,
    feature_stats,
    logit_effects,
)
from interplab.dictionary.features_select import decoder_neighbours
from interplab.dictionary.neuronpedia import neuronpedia_feature
from interplab.runtime import HookedModel

from .families import VOCAB, assert_clean, build, tokens

QUIET = dict(progress=False)


class Planted(Dictionary):
    """Test double at the embed site: latent j is 1 exactly where the token is j (its input
    equals row j of the embedding table), 0 elsewhere."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(DictionaryConfig(d_in=table.shape[1], d_sae=table.shape[0], input_site="embed"))
        self.register_buffer("table", table.clone())

    def activation(self, pre):
        return pre

    def encode(self, x):
        return (x[:, None, :] == self.table[None]).all(-1).float()


def planted(model) -> Planted:
    with torch.no_grad():
        return Planted(model.adapter.embed()(torch.arange(VOCAB)))


def test_planted_feature_found_exactly(model):
    ids = tokens(12, 10, seed=5)
    dic = planted(model)
    cfg = FeatureConfig(n_top=4, window=6, batch_size=5, **QUIET)
    fs = feature_stats(model, dic, ids, cfg)
    assert_clean(model)
    assert fs.n_tokens == 120 and fs.n_contexts == 12
    counts = torch.bincount(ids.flatten(), minlength=VOCAB)
    assert torch.equal(fs.density, counts.double() / 120)
    for j in range(VOCAB):
        holding = [c for c in range(12) if (ids[c] == j).any()]
        want = holding[:4]  # ties: the earliest contexts
        got = fs.top_contexts[j].tolist()
        assert got == want + [-1] * (4 - len(want)), j
        for slot, c in enumerate(want):
            p = int((ids[c] == j).nonzero()[0])  # the first occurrence
            assert int(fs.top_positions[j, slot]) == p
            assert float(fs.top_values[j, slot]) == 1.0
            start = int(fs.window_start[j, slot])
            assert start == min(max(p - cfg.before, 0), 10 - 6)
            assert torch.equal(fs.window_tokens[j, slot], ids[c, start:start + 6])
            assert torch.equal(fs.window_acts[j, slot], (ids[c, start:start + 6] == j).float())
        if counts[j]:
            assert float(fs.mean_activation[j]) == 1.0
            assert int(fs.hist_counts[j].sum()) == int(counts[j])
            assert int((fs.hist_counts[j] > 0).sum()) == 1
        else:
            assert torch.isnan(fs.mean_activation[j]) and int(fs.hist_counts[j].sum()) == 0


def test_bos_excluded(model):
    ids = tokens(3, 6, seed=2)
    ids[:, 0] = 1
    fs = feature_stats(model, planted(model), ids, FeatureConfig(n_top=2, window=3, **QUIET))
    assert fs.n_tokens == 15 and float(fs.density[1]) == 0.0 and fs.top_contexts[1].tolist() == [-1, -1]
    fs_all = feature_stats(model, planted(model), ids, FeatureConfig(n_top=2, window=3, exclude_bos=False, **QUIET))
    assert fs_all.n_tokens == 18 and fs_all.top_contexts[1].tolist() == [0, 1]


# -- batched equals naive -----------------------------------------------------------------------
@pytest.fixture(params=["llama", "gpt2"])
def small(request):
    m = HookedModel(build(request.param))
    yield m
    assert_clean(m)


def _sae(site="L0.resid_post"):
    # ReLU: about half the latents fire on a token, with continuous (tie-free) values.
    sae = DICTIONARIES.get("relu")(DictionaryConfig(arch="relu", d_in=64, d_sae=48, input_site=site))
    with torch.no_grad():
        sae.b_enc.copy_(0.3 * torch.randn(48, generator=torch.Generator().manual_seed(3)))
    return sae


def _z(model, sae, ids, batch_size):
    """Every latent on every token, ``[n, T, d_sae]``, in the batches feature_stats uses: equal
    numbers, not just close."""
    with torch.no_grad():
        zs = []
        for lo in range(0, ids.shape[0], batch_size):
            b = ids[lo:lo + batch_size]
            _, cache = model.run_with_cache(b, [sae.cfg.input_site])
            zs.append(sae.encode(cache[sae.cfg.input_site].reshape(b.numel(), -1)).reshape(*b.shape, -1))
        return torch.cat(zs)


def _naive(model, sae, ids, cfg):
    n, t = ids.shape
    w = min(cfg.window, t)
    z = _z(model, sae, ids, cfg.batch_size)
    width = (cfg.hist_high - cfg.hist_low) / cfg.hist_bins
    out = {k: [] for k in ("ctx", "pos", "val", "start", "acts", "toks", "hist", "density", "mean")}
    for j in range(z.shape[-1]):
        zj = z[..., j]
        rows = []
        for c in range(n):
            m = float(zj[c].max())
            p = next(i for i in range(t) if float(zj[c, i]) == m)
            rows.append((m, c, p))
        rows = [r for r in sorted(rows, key=lambda r: (-r[0], r[1])) if r[0] > 0][: cfg.n_top]
        ctx, pos, val, start, acts, toks = [], [], [], [], [], []
        for m, c, p in rows:
            s = min(max(p - cfg.before, 0), t - w)
            ctx.append(c)
            pos.append(p)
            val.append(m)
            start.append(s)
            acts.append(zj[c, s:s + w])
            toks.append(ids[c, s:s + w])
        pad = cfg.n_top - len(rows)
        out["ctx"].append(torch.tensor(ctx + [-1] * pad))
        out["pos"].append(torch.tensor(pos + [0] * pad))
        out["val"].append(torch.tensor(val + [0.0] * pad))
        out["start"].append(torch.tensor(start + [0] * pad))
        out["acts"].append(torch.stack(acts + [torch.zeros(w)] * pad))
        out["toks"].append(torch.stack(toks + [torch.zeros(w, dtype=torch.long)] * pad))
        fired = zj[zj != 0]
        bins = ((fired.abs().log10() - cfg.hist_low) / width).floor().long().clamp(0, cfg.hist_bins - 1)
        out["hist"].append(torch.bincount(bins, minlength=cfg.hist_bins))
        out["density"].append(fired.numel() / zj.numel())
        out["mean"].append(float(fired.double().sum()) / fired.numel() if fired.numel() else float("nan"))
    return {k: torch.stack(v) if isinstance(v[0], torch.Tensor) else torch.tensor(v, dtype=torch.float64)
            for k, v in out.items()}


def test_batched_equals_naive(small):
    ids = tokens(10, 9, seed=7)
    sae = _sae()
    cfg = FeatureConfig(n_top=3, window=4, batch_size=3, hist_bins=12, hist_low=-2.0, hist_high=1.0, **QUIET)
    fs = feature_stats(small, sae, ids, cfg)
    ref = _naive(small, sae, ids, cfg)
    assert torch.equal(fs.top_contexts, ref["ctx"])
    assert torch.equal(fs.top_positions, ref["pos"])
    assert torch.equal(fs.top_values, ref["val"].float())
    assert torch.equal(fs.window_start, ref["start"])
    assert torch.equal(fs.window_acts, ref["acts"])
    assert torch.equal(fs.window_tokens, ref["toks"])
    assert torch.equal(fs.hist_counts, ref["hist"])
    assert torch.equal(fs.density, ref["density"])
    assert torch.allclose(fs.mean_activation, ref["mean"], rtol=1e-12, equal_nan=True)
    assert (fs.top_contexts[:, -1] >= 0).sum() > 30 and ((fs.density > 0) & (fs.density < 1)).sum() >= 3


# -- logit effects --------------------------------------------------------------------------------
def test_logit_effects_formula(small):
    sae = _sae()
    with torch.no_grad():
        sae.out_scale.fill_(2.0)
    top_ids, top_vals, bot_ids, bot_vals = logit_effects(small, sae, 5)
    norm = small.adapter.final_norm()
    d = sae.W_dec.detach() / 2.0
    if isinstance(norm, torch.nn.LayerNorm):
        d = d - d.mean(-1, keepdim=True)
    eff = (d * norm.weight.detach()) @ small.adapter.unembed().weight.detach().T
    want = eff.topk(5, dim=-1)
    assert torch.equal(top_ids, want.indices)
    assert torch.allclose(top_vals, want.values, atol=1e-6)
    low = eff.topk(5, dim=-1, largest=False)
    assert torch.equal(bot_ids, low.indices)
    assert torch.allclose(bot_vals, low.values, atol=1e-6)
    assert (top_vals[:, 0] >= bot_vals[:, 0]).all()
    hidden = DICTIONARIES.get("topk")(DictionaryConfig(d_in=128, d_sae=16, k=2, input_site="L0.mlp.hidden"))
    assert logit_effects(small, hidden, 5) is None


# -- artifacts and description ------------------------------------------------------------------
class CharTokenizer:
    def decode(self, ids):
        return "".join(chr(ord("a") + i % 26) for i in ids)


def test_save_load_describe(small, tmp_path):
    ids = tokens(6, 8, seed=9)
    fs = feature_stats(small, _sae(), ids, FeatureConfig(n_top=2, window=5, n_logits=3, **QUIET))
    fs.save(tmp_path / "fs")
    back = FeatureStats.load(tmp_path / "fs")
    assert back.config == fs.config and back.n_tokens == fs.n_tokens
    for name in ("density", "mean_activation", "top_contexts", "window_acts", "hist_counts", "logit_top_ids"):
        a, b = getattr(back, name), getattr(fs, name)
        assert a.dtype == b.dtype and torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0)), name
    assert (tmp_path / "fs" / "provenance.json").is_file()
    i = int(fs.density.argmax())
    desc = back.describe(i, CharTokenizer())
    c, p, s = int(fs.top_contexts[i, 0]), int(fs.top_positions[i, 0]), int(fs.window_start[i, 0])
    letter = chr(ord("a") + int(ids[c, p]) % 26)
    assert f"«{letter}»({float(fs.top_values[i, 0]):.3g})" in desc.examples[0]
    assert desc.examples[0].endswith(CharTokenizer().decode(ids[c, p + 1:s + 5].tolist()))
    assert len(desc.top_logits) == 3 and "promotes" in str(desc)
    assert f"<{int(ids[c, p])}>" in back.describe(i).examples[0]
    with pytest.raises(FileExistsError):
        fs.save(tmp_path / "fs")


def test_refusals(small):
    with pytest.raises(InputError, match="vocabulary"):
        feature_stats(small, _sae(), torch.full((2, 4), VOCAB), FeatureConfig(**QUIET))
    with pytest.raises(ConfigError, match="expects width"):
        feature_stats(small, _sae("L0.mlp.hidden"), tokens(2, 4), FeatureConfig(**QUIET))
    with pytest.raises(ConfigError, match="n_top must be >= 1"):
        FeatureConfig(n_top=0)
    with pytest.raises(ConfigError, match="n_per_quantile must be >= 1"):
        FeatureConfig(n_per_quantile=0)
    with pytest.raises(ConfigError, match="n_quantiles must be >= 0"):
        FeatureConfig(n_quantiles=-1)
    with pytest.raises(ConfigError, match="n_neighbours must be >= 0"):
        FeatureConfig(n_neighbours=-1)


# -- quantile samples -------------------------------------------------------------------------------
NEW = ("quantile_values", "quantile_contexts", "quantile_positions", "quantile_start", "quantile_acts",
       "quantile_tokens", "quantile_counts", "neighbour_ids", "neighbour_cos")
QCFG = dict(n_top=2, window=4, batch_size=6, n_quantiles=4, n_per_quantile=3, n_logits=0, **QUIET)


def test_quantile_samples_lie_in_their_intervals(small):
    ids = tokens(40, 9, seed=11)
    sae = _sae()
    cfg = FeatureConfig(**QCFG)
    fs = feature_stats(small, sae, ids, cfg)
    z = _z(small, sae, ids, cfg.batch_size).float()
    m = z.max(1).values  # [n, S] each context's maximum
    edges = fs.quantile_edges()
    assert edges.shape == (48, 5) and (edges[:, 0] == 0).all() and torch.equal(edges[:, -1], fs.top_values[:, 0])
    assert fs.quantile_acts.shape == (48, 4, 3, 4) and fs.quantile_tokens.dtype == torch.long
    filled = sampled_some = 0
    for j in range(48):
        for q in range(4):
            inside = [c for c in range(40) if edges[j, q] < m[c, j] <= edges[j, q + 1]]
            assert int(fs.quantile_counts[j, q]) == len(inside), (j, q)
            got = fs.quantile_contexts[j, q].tolist()
            kept = [c for c in got if c >= 0]
            assert got == kept + [-1] * (3 - len(kept))  # empty slots last
            assert len(kept) == min(3, len(inside)) and len(set(kept)) == len(kept) and set(kept) <= set(inside)
            vals = fs.quantile_values[j, q]
            assert torch.equal(vals[:len(kept)], m[kept, j]) and (vals[:len(kept)].diff() <= 0).all()
            for slot, c in enumerate(kept):
                p, start = int(fs.quantile_positions[j, q, slot]), int(fs.quantile_start[j, q, slot])
                assert p == int((z[c, :, j] == m[c, j]).nonzero()[0])  # the first position of the maximum
                assert start == min(max(p - cfg.before, 0), 9 - 4)
                assert torch.equal(fs.quantile_acts[j, q, slot], z[c, start:start + 4, j])
                assert torch.equal(fs.quantile_tokens[j, q, slot], ids[c, start:start + 4])
            rest = slice(len(kept), None)
            assert (fs.quantile_acts[j, q, rest] == 0).all() and (fs.quantile_tokens[j, q, rest] == 0).all()
            assert (vals[rest] == 0).all() and (fs.quantile_positions[j, q, rest] == 0).all()
            filled += len(kept)
            sampled_some += len(inside) > 3
    assert filled > 150 and sampled_some > 40  # enough slots, and enough intervals with a real choice
    # the neighbours came along (default n_neighbours=8)
    want_ids, want_cos = decoder_neighbours(sae.W_dec, 8)
    assert torch.equal(fs.neighbour_ids, want_ids) and torch.equal(fs.neighbour_cos, want_cos)


def test_quantile_sample_is_seeded(small):
    ids = tokens(40, 9, seed=11)
    sae = _sae()
    a = feature_stats(small, sae, ids, FeatureConfig(**QCFG, n_neighbours=0))
    b = feature_stats(small, sae, ids, FeatureConfig(**QCFG, n_neighbours=0))
    c = feature_stats(small, sae, ids, FeatureConfig(**QCFG, n_neighbours=0, seed=1))
    for name in NEW[:7]:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.neighbour_ids is None and a.neighbour_cos is None
    assert torch.equal(a.quantile_counts, c.quantile_counts)  # the same intervals ...
    assert not torch.equal(a.quantile_contexts, c.quantile_contexts)  # ... another sample of them


def test_quantile_empty_slots(model):
    ids = tokens(12, 10, seed=5)
    cfg = FeatureConfig(n_top=2, window=6, batch_size=5, n_quantiles=3, n_per_quantile=4, **QUIET)
    fs = feature_stats(model, planted(model), ids, cfg)
    few = none = 0
    for j in range(VOCAB):
        holding = [c for c in range(12) if (ids[c] == j).any()]
        # Every activation is 1, so every maximum lies in the top interval (2/3, 1]; the others are empty.
        assert fs.quantile_counts[j].tolist() == [0, 0, len(holding)]
        assert (fs.quantile_contexts[j, :2] == -1).all()
        got = fs.quantile_contexts[j, 2].tolist()
        kept = [c for c in got if c >= 0]
        assert got == kept + [-1] * (4 - len(kept)) and len(kept) == min(4, len(holding))
        assert set(kept) <= set(holding) and len(set(kept)) == len(kept)
        few += 0 < len(holding) < 4
        none += not holding
    assert few >= 1 and none >= 1  # latents with some empty slots, latents with all of them empty


# -- neighbours ---------------------------------------------------------------------------------
def test_neighbours_equal_brute_force():
    w = _sae().W_dec.detach().clone()
    w[5] = 0.0  # a dead decoder row: cosine 0 with everything
    unit = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sim = unit @ unit.T
    sim.fill_diagonal_(float("-inf"))
    want = sim.topk(6, dim=-1)
    for chunk in (None, 1, 7, 100):
        ids, cos = decoder_neighbours(w, 6, chunk=chunk)
        assert ids.dtype == torch.long and cos.dtype == torch.float32 and ids.shape == (48, 6)
        assert torch.allclose(cos, want.values, atol=1e-6)
        live = torch.ones(48, dtype=torch.bool)
        live[5] = False  # its row is all ties at 0
        assert torch.equal(ids[live], want.indices[live]), chunk
        assert not (ids == torch.arange(48)[:, None]).any()
    assert decoder_neighbours(w[:4], 10)[0].shape == (4, 3)  # capped at d_sae - 1


# -- vocab, save / load -----------------------------------------------------------------------------
def test_vocab_and_round_trip(tiny, tmp_path):
    ids = tokens(8, 12, seed=3)
    cfg = FeatureConfig(n_top=2, window=5, batch_size=3, n_quantiles=2, n_per_quantile=2, n_logits=3, **QUIET)
    fs = feature_stats(tiny, _sae(), ids, cfg)
    seen = set()
    for name in ("window_tokens", "quantile_tokens", "logit_top_ids", "logit_bottom_ids"):
        seen |= set(getattr(fs, name).flatten().tolist())
    assert seen <= set(fs.vocab) and fs.context_len == 12
    assert all(fs.vocab[i] == tiny.tokenizer.decode([i]) == fs.token_str(i) for i in seen)
    assert fs.token_str(10 ** 6) == "<1000000>"
    fs.save(tmp_path / "fs")
    back = FeatureStats.load(tmp_path / "fs")
    assert back.config == fs.config and back.vocab == fs.vocab and back.context_len == 12
    for name in TENSORS:
        a, b = getattr(back, name), getattr(fs, name)
        assert a is not None and a.dtype == b.dtype and torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0)), name
    assert torch.equal(back.quantile_edges(), fs.quantile_edges())


def test_old_directory_still_loads(small, tmp_path):
    ids = tokens(6, 8, seed=9)
    fs = feature_stats(small, _sae(), ids, FeatureConfig(n_top=2, window=5, n_logits=3, **QUIET))
    # What the code before quantiles / neighbours / vocab wrote: its config fields and tensors only.
    old_cfg = {k: v for k, v in to_dict(fs.config).items()
               if k not in ("n_quantiles", "n_per_quantile", "seed", "n_neighbours")}
    meta = {"format": FORMAT, "config": old_cfg, "input_site": fs.input_site, "target_site": fs.target_site,
            "n_contexts": fs.n_contexts, "n_tokens": fs.n_tokens}
    old = [k for k in TENSORS if k not in NEW]
    write_artifact(tmp_path / "old", meta, {k: getattr(fs, k) for k in old}, "stats.safetensors")
    back = FeatureStats.load(tmp_path / "old")
    assert all(getattr(back, k) is None for k in NEW) and back.vocab is None and back.context_len is None
    assert back.config.n_quantiles == 0 and back.config.n_neighbours == 0 and back.config.n_top == 2
    for k in old:
        assert torch.equal(getattr(back, k).nan_to_num(-7.0), getattr(fs, k).nan_to_num(-7.0)), k
    i = int(fs.density.argmax())
    assert back.describe(i) == fs.describe(i) and back.quantile_edges() is None and back.token_str(7) == "<7>"
    exported = neuronpedia_feature(back, i)
    assert len(exported["activations"]) == 2 and all(a["bin_min"] == -1 for a in exported["activations"])
