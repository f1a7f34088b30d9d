"""collect() and probes on the tiny random models: reductions equal a hand computation from
run_with_cache on a padded batch, sites are checked before any forward, and a fitted probe
called on a model equals its score of collected activations."""

from __future__ import annotations

import pytest
import torch

from interplab.analyses.collect import collect
from interplab.analyses.probes import ProbeConfig, fit_probe, probe_layers
from interplab.core.errors import ConfigError, InputError, SiteError
from interplab.runtime import HookedModel
from interplab.tasks.labelled import make_dataset

from .families import left_pad, tokens

CHARS = "abcdefghijklmnopqrstuvwxyz ."


def char_tokenizer():
    """Characters as tokens (vocab 32), with a BOS token prepended to every prompt."""
    from tokenizers import Tokenizer, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{c: 4 + i for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


SITES = ["L0.resid_post", "L1.mlp_out"]


def test_collect_last_and_mean_equal_a_hand_computation(model):
    rows = [tokens(n, seed=30 + i) for i, n in enumerate((7, 4, 5, 2, 6))]
    _, cache = model.run_with_cache(left_pad(rows), SITES)
    mask = left_pad(rows)["attention_mask"].float()
    for reduction in ("last", "mean"):
        got = collect(model, rows, SITES, reduction, batch_size=2)  # per-batch padding differs
        for s in SITES:
            act = cache[s].float()
            want = act[:, -1] if reduction == "last" else (
                (act * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
            assert got[s].dtype == torch.float32 and got[s].device.type == "cpu"
            torch.testing.assert_close(got[s], want, atol=1e-5, rtol=1e-4)
    # An unpadded id tensor gives the same as the list of its rows.
    ids = tokens(3, 5)
    torch.testing.assert_close(collect(model, ids, SITES)[SITES[0]],
                               collect(model, list(ids), SITES)[SITES[0]])


def test_mean_leaves_out_bos(hf_model, tok):
    model = HookedModel(hf_model, tokenizer=tok)
    texts = ["the cat sat.", "a dog", "hi"]
    batch = model.to_batch(texts)
    assert (batch.input_ids[batch.attention_mask.bool()] == 1).sum() == 3  # one BOS each
    _, cache = model.run_with_cache(batch, ["L0.resid_post"])
    keep = batch.attention_mask.clone()
    keep[torch.arange(3), (batch.attention_mask == 0).sum(1)] = 0  # drop each row's BOS
    act = cache["L0.resid_post"]
    want = (act * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
    torch.testing.assert_close(collect(model, texts, ["L0.resid_post"], "mean")["L0.resid_post"],
                               want, atol=1e-5, rtol=1e-4)


def test_errors_come_before_any_forward(model, forward_calls):
    with pytest.raises(ConfigError, match=r"Unknown reduction 'max'.*Choose one of 'last', "
                                          r"'mean'"):
        collect(model, tokens(2, 3), SITES, "max")
    with pytest.raises(InputError, match=r"Empty prompt list: collect\(\) needs at least one"):
        collect(model, [], SITES)
    with pytest.raises(SiteError):
        collect(model, tokens(2, 3), ["L99.resid_post"])
    ds = make_dataset("sentiment", n=40)
    with pytest.raises(SiteError):
        probe_layers(model, ds, ["L0.resid_post", "L99.resid_post"])
    one = type(ds)("one", ds.texts[:4], (1, 1, 1, 1), (0, 1, 2, 3))
    with pytest.raises(InputError, match="Labels of one class only"):
        probe_layers(model, one, ["L0.resid_post"])
    assert forward_calls.calls == 0


def test_probe_end_to_end_and_call_equals_score_of_collect(hf_model, tok):
    model = HookedModel(hf_model, tokenizer=tok)
    ds = make_dataset("sentiment", n=60, seed=1)
    cfg = ProbeConfig(n_resamples=100, max_iter=100)
    sweep = probe_layers(model, ds, ["L0.resid_post", "L1.resid_post"], cfg)
    assert sweep.sites == ("L0.resid_post", "L1.resid_post")
    assert sweep.test_accuracy.shape == (2,) and torch.equal(sweep.layers, torch.tensor([0, 1]))
    r = sweep["L1.resid_post"]
    assert r.probe.site == "L1.resid_post" and sum(r.n.values()) == 60
    texts = list(ds.texts[:7])
    acts = collect(model, texts, ["L1.resid_post"])["L1.resid_post"]
    assert torch.equal(r.probe(model, texts), r.probe.score(acts))
    # Same activations, same config: fit_probe reproduces the sweep's probe.
    again = fit_probe(collect(model, list(ds.texts), ["L1.resid_post"])["L1.resid_post"],
                      ds.labels, ds.groups, cfg)
    torch.testing.assert_close(again.probe.weight, r.probe.weight)
