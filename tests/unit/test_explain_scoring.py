"""explain.scoring: balanced accuracy of perfect and constant judges (property test), CIs around
their estimates, fuzzing items, the controls' derangement and random labels, the summary."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interplab.explain.rules import RuleJudge, format_label, label_tokens
from interplab.explain.scoring import (
    Score,
    balanced_accuracy,
    detection,
    fuzz_items,
    fuzzing,
    random_explanation,
    score_with_controls,
    shuffled_explanation,
    summarize,
)
from interplab.explain.types import Example, LatentSample

pytestmark = pytest.mark.usefixtures("one_thread")


def ex(tokens, fire=(), kind="random"):
    return Example(ids=list(range(len(tokens))), tokens=list(tokens), acts=[1.0 if t in fire else 0.0 for t in tokens],
                   context=0, kind=kind)


class Perfect:
    name = "perfect"

    def detect(self, explanation, examples):
        return [1.0 if e.fires else 0.0 for e in examples]

    def fuzz(self, explanation, examples, marked):
        return [1.0 if sorted(m) == [i for i, a in enumerate(e.acts) if a] else 0.0 for e, m in zip(examples, marked)]


class Constant:
    name = "constant"

    def __init__(self, p):
        self.p = p

    def detect(self, explanation, examples):
        return [self.p] * len(examples)

    def fuzz(self, explanation, examples, marked):
        return [self.p] * len(examples)


def make_sample(latent, n_pos, n_neg, fire=(" a",), other=(" b", " c", " d")):
    pos = [ex([other[i % len(other)], fire[i % len(fire)], " z"], fire, "quantile") for i in range(n_pos)]
    neg = [ex([other[i % len(other)], " z", " y"], fire) for i in range(n_neg)]
    return LatentSample(latent, pos[:2], neg[:2], pos, neg)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 30), st.integers(1, 30), st.floats(0, 1))
def test_perfect_judge_scores_one_and_constant_judge_one_half(n_pos, n_neg, p):
    s = make_sample(0, n_pos, n_neg)
    for scorer in (detection, fuzzing):
        perfect = scorer(Perfect(), "x", s, n_resamples=200)
        assert perfect.balanced_accuracy == 1.0 and perfect.auroc == 1.0
        const = scorer(Constant(p), "x", s, n_resamples=200)
        assert const.balanced_accuracy == 0.5 and const.auroc == 0.5
    labels = [1] * n_pos + [0] * n_neg
    assert balanced_accuracy(labels, labels) == 1.0
    assert balanced_accuracy([p] * len(labels), labels) == 0.5


def test_cis_contain_estimates_and_json():
    s = make_sample(0, 20, 20, fire=(" a", " e"))
    sc = detection(RuleJudge(), format_label([" a"]), s, n_resamples=500)  # misses " e": BA 0.75
    assert sc.balanced_accuracy == pytest.approx(0.75) and sc.n_pos == 20 and sc.n_neg == 20
    assert sc.ba_low <= sc.balanced_accuracy <= sc.ba_high and sc.ba_low < sc.ba_high
    assert sc.auroc_low <= sc.auroc <= sc.auroc_high
    d = sc.to_dict()
    assert d["judge"] == "rules" and d["labels"] == [1] * 20 + [0] * 20
    empty = detection(RuleJudge(), "x", make_sample(0, 0, 3))
    assert math.isnan(empty.balanced_accuracy) and empty.to_dict()["auroc"] is None
    assert isinstance(empty, Score)


def test_fuzz_items():
    s = make_sample(7, 6, 4)
    examples, marked, labels = fuzz_items(s, seed=1)
    assert labels == [1, 0] * 6 + [0] * 4
    for e, m, y in zip(examples, marked, labels):
        firing = [i for i, a in enumerate(e.acts) if a]
        if y:
            assert m == firing
        elif e.fires:
            assert len(m) == len(firing) and not set(m) & set(firing)
        else:
            assert len(m) >= 1
    assert fuzz_items(s, seed=1) == (examples, marked, labels)


def test_shuffled_is_a_seeded_derangement():
    labels = {i: f"label {i}" for i in (3, 5, 8, 9, 20)}
    for seed in range(5):
        images = [shuffled_explanation(labels, k, seed) for k in labels]
        assert sorted(images) == sorted(labels.values())
        assert all(img != labels[k] for k, img in zip(labels, images))
        assert images == [shuffled_explanation(labels, k, seed) for k in labels]
    with pytest.raises(Exception, match="at least 2"):
        shuffled_explanation({1: "a"}, 1)


def test_random_explanation():
    vocab = [f" w{i}" for i in range(100)]
    label = random_explanation(vocab, seed=2, n_tokens=5)
    toks = label_tokens(label)
    assert len(set(toks)) == 5 and set(toks) <= set(vocab)
    assert random_explanation(vocab, 2, 5) == label != random_explanation(vocab, 3, 5)


def test_controls_and_summary():
    # four latents each firing on its own token, explained exactly
    toks = [" a", " b", " c", " d"]
    samples = {i: make_sample(i, 12, 12, fire=(t,), other=tuple(x for x in toks if x != t)) for i, t in enumerate(toks)}
    for s in samples.values():  # negatives must not contain the latent's token
        assert not any(e.fires for e in s.score_neg)
    labels = {i: format_label([t]) for i, t in enumerate(toks)}
    res = score_with_controls(detection, RuleJudge(), labels, samples, seed=0)
    for r in res.values():
        assert r["score"].balanced_accuracy == 1.0
        assert r["gap_shuffled"] == r["score"].balanced_accuracy - r["shuffled"].balanced_accuracy
        assert label_tokens(r["random"].explanation) and r["shuffled"].explanation != r["score"].explanation
    summ = summarize(res)
    assert summ["n_latents"] == 4 and summ["mean_score"] == 1.0
    assert summ["gap_shuffled"]["low"] <= summ["gap_shuffled"]["mean"] <= summ["gap_shuffled"]["high"]
    assert summ["mean_shuffled"] < 1.0
