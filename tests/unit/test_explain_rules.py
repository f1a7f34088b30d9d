"""explain.rules: the label format round-trips; the rule explainer finds token sets and
context-dependent pairs; the rule judge's detect / fuzz, exact, graded and word fallback."""

from __future__ import annotations

from interplab.explain.rules import (
    RuleExplainer,
    RuleJudge,
    format_label,
    label_pairs,
    label_tokens,
    parse_label,
)
from interplab.explain.types import Example, LatentSample


def ex(tokens: list[str], fire: set[str] | None = None, acts: list[float] | None = None) -> Example:
    acts = acts if acts is not None else [1.0 if t in (fire or set()) else 0.0 for t in tokens]
    return Example(ids=list(range(len(tokens))), tokens=tokens, acts=acts, context=0, kind="random")


def test_label_round_trip_with_awkward_strings():
    toks = [' "quoted"', "]", ", ", "\n", "naïve", "fires on the tokens ", "\\"]
    pairs = [(" New", " York"), ("[", "]")]
    label = format_label(toks, pairs)
    assert label_tokens(label) == toks and label_pairs(label) == pairs
    assert parse_label(format_label([" cat"])) == ([" cat"], [])
    assert parse_label("Some prose. " + format_label([" a"]) + " More prose.") == ([" a"], [])
    assert parse_label(format_label([])) == ([], [])


def test_free_text_is_not_a_rule_label():
    for text in ("words about animals", "fires on the tokens [broken", 'fires on the tokens [1, 2]', ""):
        assert parse_label(text) is None and label_tokens(text) == []


def test_explainer_recovers_a_token_set():
    fire = {" cat", " dog"}
    sample = LatentSample(
        latent=0,
        explain=[ex([" the", " cat", " sat"], fire), ex([" a", " dog", " ran", " cat"], fire)],
        explain_neg=[ex([" the", " mat", " sat"], fire), ex([" a", " ran"], fire)],
        score_pos=[], score_neg=[])
    label = RuleExplainer().explain(sample)
    assert sorted(label_tokens(label)) == [" cat", " dog"] and label_pairs(label) == []
    assert RuleExplainer(max_tokens=1).rules(sample)[0] in ([" cat"], [" dog"])


def test_explainer_finds_a_pair_when_context_matters():
    # fires on " York" only after " New"
    def acts(tokens):
        return [1.0 if t == " York" and i and tokens[i - 1] == " New" else 0.0 for i, t in enumerate(tokens)]

    windows = [[" New", " York", " is"], [" old", " York", " was"], [" New", " York"], [" in", " York"]]
    sample = LatentSample(0, [ex(w, acts=acts(w)) for w in windows if any(acts(w))],
                          [ex(w, acts=acts(w)) for w in windows if not any(acts(w))], [], [])
    assert RuleExplainer().rules(sample) == ([], [(" New", " York")])
    assert RuleExplainer(ngrams=False).rules(sample) == ([" York"], [])


def test_explainer_with_nothing_firing():
    sample = LatentSample(0, [], [ex([" a", " b"])], [], [])
    assert RuleExplainer().explain(sample) == format_label([]) and label_tokens(format_label([])) == []


def test_judge_detect_and_fuzz():
    judge = RuleJudge()
    label = format_label([" cat"], [(" New", " York")])
    examples = [ex([" a", " cat"]), ex([" old", " York"]), ex([" New", " York"]), ex([" cats"])]
    assert judge.detect(label, examples) == [1.0, 0.0, 1.0, 0.0]
    assert judge.fuzz(label, examples[:3], [[1], [1], [0]]) == [1.0, 0.0, 0.0]
    graded = RuleJudge(graded=True).fuzz(label, [ex([" cat", " x", " cat"]), ex([" x"])], [[0, 1], []])
    assert graded == [1 / 3, 1.0]


def test_judge_word_fallback_for_free_text():
    judge = RuleJudge()
    examples = [ex([" The", " Cat", " sat"]), ex([" a", " dog"]), ex([" the", " and"])]
    assert judge.detect("Mentions of cats or a cat", examples) == [1.0, 0.0, 0.0]
    assert judge.fuzz("the word cat", examples[:1], [[1]]) == [1.0]
