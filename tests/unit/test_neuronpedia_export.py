"""export_neuronpedia on hand-made feature statistics: the keys SAEDashboard's Neuronpedia batches
have (and the importer reads), the numbers of the stats, batching, rounding, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from interplab.core.errors import ConfigError
from interplab.dictionary import export_neuronpedia
from interplab.dictionary.features import FeatureConfig, FeatureStats
from interplab.dictionary.neuronpedia import neuronpedia_feature

# The keys of SAEDashboard's NeuronpediaDashboardBatch / Feature / Activation.to_dict().
BATCH_KEYS = {"model_id", "layer", "sae_set", "sae_id_suffix", "features"}
FEATURE_KEYS = {
    "feature_index", "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
    "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson",
    "correlated_features_indices", "correlated_features_l1", "correlated_features_pearson", "neg_str",
    "neg_values", "pos_str", "pos_values", "frac_nonzero", "freq_hist_data_bar_values",
    "freq_hist_data_bar_heights", "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
    "n_prompts_total", "n_tokens_in_prompt", "dataset", "decoder_weights_dist", "activations", "vector"}
ACTIVATION_KEYS = {"bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index"}

D, N_TOP, W, NQ, K, T, VOCAB, BINS = 5, 3, 4, 2, 2, 10, 50, 6


def _slots(g, ctx: torch.Tensor, top: torch.Tensor):
    """Positions, window starts, activations (the maximum ``top`` at the position) and tokens
    for slots with contexts ``ctx`` (-1: empty, all zeros)."""
    filled = ctx >= 0
    pos = torch.randint(0, T, ctx.shape, generator=g) * filled
    start = (pos - 3).clamp(0, T - W) * filled
    acts = torch.rand(*ctx.shape, W, generator=g) * 0.5 * top[..., None]
    acts.scatter_(-1, (pos - start)[..., None], top[..., None])
    toks = torch.randint(0, VOCAB, (*ctx.shape, W), generator=g)
    return pos, start, acts * filled[..., None], toks * filled[..., None]


def make_stats(quantiles: bool = True, logits: bool = True, vocab: bool = True) -> FeatureStats:
    g = torch.Generator().manual_seed(0)
    top_ctx = torch.tensor([[0, 3, -1], [2, -1, -1], [-1, -1, -1], [1, 4, 5], [6, 7, 8]])
    top_vals = (torch.rand(D, N_TOP, generator=g) + 1).sort(-1, descending=True).values * (top_ctx >= 0)
    pos, start, acts, toks = _slots(g, top_ctx, top_vals)
    cfg = FeatureConfig(n_top=N_TOP, window=W, hist_bins=BINS, n_quantiles=NQ if quantiles else 0,
                        n_per_quantile=K, n_logits=3 if logits else 0, n_neighbours=0)
    fs = FeatureStats(
        config=cfg, input_site="L3.resid_post", target_site="L3.resid_post", n_contexts=12, n_tokens=120,
        density=torch.tensor([0.25, 0.125, 0.0, 0.5, 0.0625], dtype=torch.float64),
        mean_activation=torch.tensor([1.0, 2.0, float("nan"), 3.0, 4.0], dtype=torch.float64),
        top_values=top_vals, top_contexts=top_ctx, top_positions=pos, window_start=start, window_acts=acts,
        window_tokens=toks, hist_counts=torch.randint(0, 9, (D, BINS), generator=g),
        hist_edges=torch.linspace(-3.0, 3.0, BINS + 1, dtype=torch.float64), context_len=T)
    if quantiles:
        qctx = torch.tensor([[[9, -1], [0, 3]], [[-1, -1], [2, -1]], [[-1, -1], [-1, -1]],
                             [[10, 11], [1, 4]], [[-1, -1], [6, 7]]])
        top_max = top_vals[:, :1, None]
        qvals = torch.where(torch.arange(NQ)[None, :, None] == 0, 0.3, 0.8) * top_max * (qctx >= 0)
        qpos, qstart, qacts, qtoks = _slots(g, qctx, qvals)
        fs.quantile_values, fs.quantile_contexts, fs.quantile_positions, fs.quantile_start = qvals, qctx, qpos, qstart
        fs.quantile_acts, fs.quantile_tokens = qacts, qtoks
        fs.quantile_counts = torch.tensor([[1, 5], [0, 1], [0, 0], [4, 3], [0, 2]])
    if logits:
        fs.logit_top_ids = torch.randint(0, VOCAB, (D, 3), generator=g)
        fs.logit_top_values = torch.rand(D, 3, generator=g).sort(-1, descending=True).values
        fs.logit_bottom_ids = torch.randint(0, VOCAB, (D, 3), generator=g)
        fs.logit_bottom_values = -torch.rand(D, 3, generator=g).sort(-1, descending=True).values
    if vocab:
        fs.vocab = {i: f"t{i}" for i in range(0, VOCAB, 2)}  # odd ids missing: "<id>"
    return fs


def test_files_and_keys(tmp_path):
    fs = make_stats()
    paths = export_neuronpedia(fs, tmp_path / "np", "gpt2-small", "res-il", batch_size=2, dataset="some/corpus")
    assert [p.name for p in paths] == ["batch-0.json", "batch-1.json", "batch-2.json"]
    assert sorted(p.name for p in (tmp_path / "np").iterdir()) == [p.name for p in paths]  # no temp files left
    index = []
    for p in paths:
        batch = json.loads(p.read_text())
        assert set(batch) == BATCH_KEYS
        assert (batch["model_id"], batch["layer"], batch["sae_set"], batch["sae_id_suffix"]) == \
            ("gpt2-small", 3, "res-il", None)
        for f in batch["features"]:
            assert set(f) == FEATURE_KEYS and all(set(a) == ACTIVATION_KEYS for a in f["activations"])
            assert f["dataset"] == "some/corpus" and f["n_prompts_total"] == 12 and f["n_tokens_in_prompt"] == T
            for key in ("logits_hist_data_bar_heights", "neuron_alignment_indices", "correlated_features_l1",
                        "decoder_weights_dist", "vector"):
                assert f[key] == []
            index.append(f["feature_index"])
    assert index == list(range(D))


def test_numbers_equal_the_stats():
    fs = make_stats()
    edges = fs.quantile_edges()
    centres = (fs.hist_edges[:-1] + fs.hist_edges[1:]) / 2
    for i in range(D):
        f = neuronpedia_feature(fs, i, decimals=None)
        assert f["frac_nonzero"] == float(fs.density[i])
        assert f["freq_hist_data_bar_heights"] == fs.hist_counts[i].tolist()
        assert f["freq_hist_data_bar_values"] == pytest.approx((10 ** centres).tolist(), rel=1e-12)
        assert f["pos_str"] == [fs.token_str(t) for t in fs.logit_top_ids[i].tolist()]
        assert torch.equal(torch.tensor(f["pos_values"]), fs.logit_top_values[i])
        assert torch.equal(torch.tensor(f["neg_values"]), fs.logit_bottom_values[i])
        # the top contexts first, then the quantile samples from the highest interval down
        want = [(j, None) for j in range(N_TOP) if fs.top_contexts[i, j] >= 0]
        want += [(j, q) for q in reversed(range(NQ)) for j in range(K) if fs.quantile_contexts[i, q, j] >= 0]
        assert len(f["activations"]) == len(want)
        for a, (j, q) in zip(f["activations"], want, strict=True):
            if q is None:
                acts, toks, pos, start = (fs.window_acts[i, j], fs.window_tokens[i, j], fs.top_positions[i, j],
                                          fs.window_start[i, j])
                assert (a["bin_min"], a["bin_max"], a["bin_contains"]) == (-1, float(fs.top_values[i, 0]), -1)
            else:
                acts, toks, pos, start = (fs.quantile_acts[i, q, j], fs.quantile_tokens[i, q, j],
                                          fs.quantile_positions[i, q, j], fs.quantile_start[i, q, j])
                assert (a["bin_min"], a["bin_max"]) == (float(edges[i, q]), float(edges[i, q + 1]))
                assert a["bin_contains"] == int(fs.quantile_counts[i, q]) / fs.n_contexts
            assert torch.equal(torch.tensor(a["values"]), acts)
            assert a["tokens"] == [fs.vocab.get(t, f"<{t}>") for t in toks.tolist()]
            assert a["qualifying_token_index"] == int(pos - start)
            assert max(a["values"]) == a["values"][a["qualifying_token_index"]]  # the importer's maxValueTokenIndex
    assert neuronpedia_feature(fs, 2)["activations"] == []  # dead: no contexts


def test_rounding_and_missing_parts(tmp_path):
    fs = make_stats()
    f = neuronpedia_feature(fs, 3)  # decimals=3, as SAEDashboard
    assert f["activations"][0]["values"] == [round(float(x), 3) for x in fs.window_acts[3, 0]]
    assert f["pos_values"] == [round(float(x), 3) for x in fs.logit_top_values[3]]
    bare = make_stats(quantiles=False, logits=False, vocab=False)
    g = neuronpedia_feature(bare, 3, decimals=None)
    assert len(g["activations"]) == 3 and g["pos_str"] == g["neg_values"] == []
    assert g["activations"][0]["tokens"] == [f"<{t}>" for t in bare.window_tokens[3, 0].tolist()]
    path = export_neuronpedia(bare, tmp_path, "m", "s", layer=7, sae_id_suffix="l0-50", latents=[4, 0])[0]
    batch = json.loads(path.read_text())
    assert (batch["layer"], batch["sae_id_suffix"]) == (7, "l0-50")
    assert [f["feature_index"] for f in batch["features"]] == [4, 0]


def test_overwrite_and_refusals(tmp_path):
    fs = make_stats()
    export_neuronpedia(fs, tmp_path, "m", "s", batch_size=2)
    with pytest.raises(FileExistsError):
        export_neuronpedia(fs, tmp_path, "m", "s")
    export_neuronpedia(fs, tmp_path, "m", "s", batch_size=4, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch-0.json", "batch-1.json"]  # batch-2 removed
    assert len(json.loads((tmp_path / "batch-1.json").read_text())["features"]) == 1
    with pytest.raises(ConfigError, match="batch_size"):
        export_neuronpedia(fs, tmp_path / "x", "m", "s", batch_size=0)
    with pytest.raises(ConfigError, match="out of range"):
        export_neuronpedia(fs, tmp_path / "x", "m", "s", latents=[5])
