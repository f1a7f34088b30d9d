"""Feature statistics: a planted feature is found exactly; batched equals a naive per-latent
loop; logit effects follow the stated formula; save / load / describe round-trip."""

from __future__ import annotations

import pytest
import torch

from interplab.core.errors import ConfigError, InputError
from interplab.dictionary import DICTIONARIES, Dictionary, DictionaryConfig
from interplab.dictionary.features import FeatureConfig, FeatureStats, feature_stats, logit_effects
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


def _naive(model, sae, ids, cfg):
    n, t = ids.shape
    w = min(cfg.window, t)
    with torch.no_grad():
        zs = []
        for lo in range(0, n, cfg.batch_size):  # the same batches: equal numbers, not just close
            b = ids[lo:lo + cfg.batch_size]
            _, cache = model.run_with_cache(b, [sae.cfg.input_site])
            zs.append(sae.encode(cache[sae.cfg.input_site].reshape(b.numel(), -1)).reshape(*b.shape, -1))
        z = torch.cat(zs)
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
