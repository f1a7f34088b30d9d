"""Feature labelling against planted ground truth: 24 token-set latents over real text (the
default model's tokenizer from the installed GGUF, the offline "classics" corpus), explained by
the rule explainer and scored by the rule judge with shuffled and random controls. Also the
dictionary activation source on the tiny random model."""

from __future__ import annotations

import pytest
import torch

from interplab.explain.planted import planted_check, token_set_f1, token_set_latents
from interplab.explain.rules import format_label
from interplab.explain.sampling import DictionaryActivations, SampleConfig, sample


@pytest.fixture(scope="module")
def text():
    from transformers import AutoTokenizer

    from interplab.activations import CorpusConfig, iter_documents, pack
    from interplab.core.errors import MissingDependencyError, ModelNotFoundError
    from interplab.models.loading import convert_gguf, resolve

    try:
        tok = AutoTokenizer.from_pretrained(str(convert_gguf(resolve("smollm2-135m")[1])))
        contexts = pack(tok, iter_documents(CorpusConfig()), 64, max_contexts=800)
    except (ModelNotFoundError, MissingDependencyError) as err:  # `make test` installs both
        pytest.fail(f"the default model's tokenizer and the classics corpus are needed here: {err}")
    return tok, contexts


@pytest.fixture(scope="module")
def report(text):
    tok, contexts = text
    return planted_check(tok, contexts, n_latents=24, seed=0)


def test_planted_latents_are_disjoint_and_fire(text):
    tok, contexts = text
    source, sets = token_set_latents(tok, contexts, n_latents=24, seed=0)
    assert len(sets) == 24 and all(3 <= len(s) <= 8 for s in sets)
    assert sum(len(s) for s in sets) == len(set().union(*sets))
    fires_in = (source.acts(contexts) != 0).any(1).sum(0)
    assert (fires_in >= 0.02 * contexts.shape[0]).all()
    assert token_set_f1(format_label([tok.decode([t]) for t in sets[0]]), sets[0], tok) == 1.0


def test_rule_explainer_recovers_planted_sets(report):
    latents = report["latents"]
    assert len(latents) == 24
    print(f"\nplanted: F1 mean {report['f1_mean']:.3f} min {report['f1_min']:.3f}")
    assert report["f1_mean"] >= 0.9
    assert report["f1_min"] >= 0.75  # a rare member of a set can be missing from the 20 explanation windows


def test_detection_beats_its_controls(report):
    d = report["summary"]["detection"]
    print(f"\ndetection BA {d['mean_score']:.3f} shuffled {d['mean_shuffled']:.3f} random {d['mean_random']:.3f} "
          f"gap {d['gap_shuffled']['mean']:.3f} [{d['gap_shuffled']['low']:.3f}, {d['gap_shuffled']['high']:.3f}] "
          f"p {d['gap_shuffled']['p']:.2g}")
    assert d["n_latents"] == 24
    assert d["mean_score"] >= 0.9
    assert d["mean_shuffled"] <= 0.6 and d["mean_random"] <= 0.6
    assert d["gap_shuffled"]["low"] > 0.3 and d["gap_shuffled"]["p"] < 0.05
    assert d["gap_random"]["p"] < 0.05


def test_fuzzing_beats_its_controls(report):
    f = report["summary"]["fuzzing"]
    print(f"\nfuzzing BA {f['mean_score']:.3f} shuffled {f['mean_shuffled']:.3f} random {f['mean_random']:.3f}")
    assert f["mean_score"] >= 0.9 and f["mean_shuffled"] <= 0.6
    assert f["gap_shuffled"]["low"] > 0.3 and f["gap_shuffled"]["p"] < 0.05


def test_intervals_contain_their_estimates(report):
    for lat in report["latents"]:
        for scorer in ("detection", "fuzzing"):
            for c in ("score", "shuffled", "random"):
                s = lat[scorer][c]
                assert s["ba_low"] <= s["balanced_accuracy"] <= s["ba_high"], (lat["latent"], scorer, c)
                assert s["auroc_low"] <= s["auroc"] <= s["auroc_high"], (lat["latent"], scorer, c)
    for scorer in ("detection", "fuzzing"):
        for c in ("gap_shuffled", "gap_random"):
            g = report["summary"][scorer][c]
            assert g["low"] <= g["mean"] <= g["high"]


def test_dictionary_activations(tiny):
    from interplab.dictionary.base import DictionaryConfig
    from interplab.dictionary.splice import bos_id
    from interplab.dictionary.topk import TopK

    site = "L1.resid_post"
    torch.manual_seed(0)
    d_model = tiny.hf.config.hidden_size
    dictionary = TopK(DictionaryConfig(d_in=d_model, d_sae=32, k=6, input_site=site))
    gen = torch.Generator().manual_seed(0)
    vocab = tiny.hf.config.vocab_size
    bos = bos_id(tiny)
    contexts = torch.randint(3, vocab, (20, 16), generator=gen)
    contexts[:, 0] = bos
    latents = [0, 5, 31]
    source = DictionaryActivations(tiny, dictionary, latents)
    acts = source.acts(contexts[:4])
    _, cache = tiny.run_with_cache(contexts[:4], [site])
    z = dictionary.encode(cache[site].reshape(-1, d_model)).reshape(4, 16, -1)[..., latents]
    assert acts.shape == (4, 16, 3)
    assert (acts[:, 0] == 0).all() and torch.allclose(acts[:, 1:], z[:, 1:].float())
    samples = sample(source, contexts, {i: f"<{i}>" for i in range(vocab)},
                     SampleConfig(window=6, n_top=2, n_quantile=2, n_explain_neg=2, n_score_pos=3, n_score_neg=3,
                                  batch_size=7))
    assert sorted(samples) == latents
    for s in samples.values():
        assert all(e.fires for e in s.explain + s.score_pos)
        assert all(not e.fires and not any(e.acts) for e in s.explain_neg + s.score_neg)
    with pytest.raises(Exception, match="Latents"):
        DictionaryActivations(tiny, dictionary, [32])
