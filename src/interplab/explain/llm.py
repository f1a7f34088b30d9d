"""Explaining and scoring dictionary latents with a language model (local or an endpoint).

* ``LLMExplainer``: the activating examples with their top tokens marked ``<<like this>>``, and
  a request for one short phrase naming the common pattern (after delphi / OpenAI's explainer).
* ``LLMJudge``: detection ("does the feature fire on this text?") and fuzzing ("are the
  highlighted tokens what the explanation describes?"), each P(Yes) from the Yes/No log-probs.
* ``simulation``: OpenAI's log-prob simulator one token at a time: the expected 0-9 digit for
  each token given the explanation and the text up to it; ``simulation_score``: Pearson r.
* ``intruder``: k activating examples and one non-activating, shuffled; is the argmax answer
  the intruder?
* ``intervention_score``: steer along the latent's decoder row; does the judge find the
  explanation in the steered continuations more than in the unsteered ones?

Everything is greedy and deterministic; wrap the model in ``CachedLM`` to make re-runs free.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence

from interplab.core.errors import InputError
from interplab.explain.llm_backends import (
    LM,
    EndpointError,
    LocalLM,
    choice_probs,
    render_plain,
)
from interplab.explain.llm_cache import CachedLM, LMCache
from interplab.explain.llm_endpoint import EndpointLM
from interplab.explain.types import Example, LatentSample

__all__ = ["LM", "CachedLM", "EndpointError", "EndpointLM", "LLMExplainer", "LLMJudge", "LMCache", "LocalLM",
           "clean_label", "intervention_score", "intruder", "render", "render_plain", "simulation",
           "simulation_score"]

YES_NO = ("Yes", "No")
DIGITS = tuple(str(d) for d in range(10))

EXPLAIN_SYSTEM = ("You are a meticulous AI researcher investigating what a neuron in a language model "
                  "responds to. You look for the pattern common to the text where it is active.")
EXPLAIN_USER = ("Below are text examples where the neuron is active. The tokens on which it fires most "
                "strongly are marked <<like this>>.\n\n{examples}\n\n"
                "In one short phrase (at most {words} words), what do the marked tokens have in common? "
                "Reply with the phrase only.")
JUDGE_SYSTEM = ("You judge whether text matches the description of a language-model feature. "
                "Answer with Yes or No only.")
DETECT_USER = ("Feature explanation: {explanation}\n\nText: {text}\n\n"
               "Does the feature fire on this text? Answer Yes or No.")
FUZZ_USER = ("Feature explanation: {explanation}\n\nText: {text}\n\n"
             "The tokens between << and >> are highlighted. Are the highlighted tokens ones the "
             "explanation describes? Answer Yes or No.")
SIMULATE_SYSTEM = ("We are studying neurons in a language model. Each neuron looks for one particular "
                   "thing in text. Given an explanation of a neuron, predict how strongly it fires on a token.")
SIMULATE_USER = ("Neuron explanation: {explanation}\n\nText: {text}\n\n"
                 "How strongly does the neuron fire on the last token, marked <<like this>>, from 0 "
                 "(not at all) to 9 (very strongly)? Answer with a single digit.")
INTRUDER_USER = ("Here are {n} text examples. A feature of a language model fires on all of them but one; "
                 "one example is different from the others.\n\n{examples}\n\n"
                 "Which example is the odd one out? Answer with its number only.")


def render(example: Example, marked: Sequence[int] = (), max_tokens: int | None = None) -> str:
    """The example's text with each run of ``marked`` positions wrapped in ``<< >>``."""
    tokens = example.tokens[:max_tokens] if max_tokens else example.tokens
    marks = set(marked)
    out, inside = [], False
    for i, tok in enumerate(tokens):
        if (i in marks) != inside:
            out.append("<<" if not inside else ">>")
            inside = not inside
        out.append(tok)
    if inside:
        out.append(">>")
    return "".join(out).replace("\n", " ")


def top_positions(example: Example, fraction: float) -> list[int]:
    """Positions where the latent fires at least ``fraction`` of the example's maximum."""
    top = example.max
    return [i for i, a in enumerate(example.acts) if a > 0 and a >= fraction * top]


def _unquote(s: str) -> str:
    s = s.strip().strip("*`").strip()
    while len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1].strip()
    return s


def clean_label(text: str, max_chars: int = 200) -> str:
    """The first non-empty line of a model's answer that is not a lead-in ending in ':', without
    quotes, markers, a list bullet or a 'Label:' prefix; at most ``max_chars`` characters."""
    for line in text.splitlines():
        line = _unquote(line.replace("<<", "").replace(">>", ""))
        if line.endswith(":"):  # a lead-in ("The pattern is:"); the answer follows
            continue
        line = _unquote(re.sub(r"^([-*\u2022]|\d+[.)])\s+", "", line))  # a list bullet
        line = _unquote(re.sub(r"^(the\s+)?(explanation|description|answer|pattern|label|phrase)\s*[:\-]\s*",
                               "", line, flags=re.IGNORECASE))
        line = " ".join(line.split())
        if line:
            return line[:max_chars]
    return "(no explanation)"


class LLMExplainer:
    """A short label for a latent from its activating examples (greedy, one model call)."""

    name = "llm"

    def __init__(self, lm: LM, max_examples: int = 10, max_tokens: int = 48, mark_fraction: float = 0.5,
                 max_example_tokens: int = 64, max_words: int = 15):
        self.lm, self.max_examples, self.max_tokens = lm, max_examples, max_tokens
        self.mark_fraction, self.max_example_tokens, self.max_words = mark_fraction, max_example_tokens, max_words

    def prompt(self, sample: LatentSample) -> list[dict]:
        shown = [e for e in sample.explain if e.fires][: self.max_examples]
        if not shown:
            raise InputError(f"Latent {sample.latent} has no activating examples to explain.")
        lines = [f"Example {i}: {render(e, top_positions(e, self.mark_fraction), self.max_example_tokens)}"
                 for i, e in enumerate(shown, 1)]
        return [{"role": "system", "content": EXPLAIN_SYSTEM},
                {"role": "user", "content": EXPLAIN_USER.format(examples="\n".join(lines), words=self.max_words)}]

    def explain(self, sample: LatentSample) -> str:
        return clean_label(self.lm.complete(self.prompt(sample), self.max_tokens))


class LLMJudge:
    """Detection and fuzzing judgements: P(Yes) from the Yes/No answer log-probs."""

    name = "llm"

    def __init__(self, lm: LM, max_example_tokens: int = 64):
        self.lm, self.max_example_tokens = lm, max_example_tokens

    def _ask(self, prompts: list[list[dict]]) -> list[float]:
        return [choice_probs(lp, YES_NO)[0] for lp in self.lm.logprobs(prompts, YES_NO)]

    def detect(self, explanation: str, examples: list[Example]) -> list[float]:
        return self._ask([[{"role": "system", "content": JUDGE_SYSTEM},
                           {"role": "user", "content": DETECT_USER.format(
                               explanation=explanation, text=render(e, (), self.max_example_tokens))}]
                          for e in examples])

    def fuzz(self, explanation: str, examples: list[Example], marked: list[list[int]]) -> list[float]:
        if len(marked) != len(examples):
            raise InputError(f"fuzz: {len(examples)} examples but {len(marked)} lists of marked positions.")
        return self._ask([[{"role": "system", "content": JUDGE_SYSTEM},
                           {"role": "user", "content": FUZZ_USER.format(
                               explanation=explanation, text=render(e, m, self.max_example_tokens))}]
                          for e, m in zip(examples, marked, strict=True)])


def simulation(lm: LM, explanation: str, examples: list[Example], max_tokens: int = 32) -> list[list[float]]:
    """Per example, the predicted activation (expected digit, 0-9) of each of its first
    ``max_tokens`` tokens: one prompt per token, the text up to it with it marked. A model
    whose answer tokens include no digit predicts 4.5 (uniform) there."""
    prompts, shape = [], []
    for e in examples:
        n = min(len(e.tokens), max_tokens)
        shape.append(n)
        for i in range(n):
            text = render(Example(e.ids[: i + 1], e.tokens[: i + 1], e.acts[: i + 1], e.context, e.kind), [i])
            prompts.append([{"role": "system", "content": SIMULATE_SYSTEM},
                            {"role": "user", "content": SIMULATE_USER.format(explanation=explanation, text=text)}])
    flat = [sum(d * p for d, p in enumerate(choice_probs(lp, DIGITS))) for lp in lm.logprobs(prompts, DIGITS)]
    out, at = [], 0
    for n in shape:
        out.append(flat[at:at + n])
        at += n
    return out


def simulation_score(pred: Sequence[Sequence[float]], true: Sequence[Sequence[float]]) -> float:
    """Pearson r between predicted and true activations over all tokens (each true list cut to
    its prediction's length); NaN when there are fewer than 2 tokens or either side is constant."""
    import numpy as np

    p, t = [], []
    for pe, te in zip(pred, true, strict=True):
        if len(te) < len(pe):
            raise InputError(f"simulation_score: {len(pe)} predictions for an example of {len(te)} tokens.")
        p += list(pe)
        t += list(te[: len(pe)])
    a, b = np.asarray(p, dtype=np.float64), np.asarray(t, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def intruder(lm: LM, examples_pos: list[Example], example_neg: Example, seed: int = 0,
             max_example_tokens: int = 64) -> bool:
    """Show up to 8 activating examples and the non-activating one in an order drawn from
    ``seed``; correct when the most likely number answered is the intruder's (False when no
    digit is among the model's answer tokens)."""
    if not examples_pos:
        raise InputError("intruder needs at least one activating example.")
    items = [(e, False) for e in examples_pos[:8]] + [(example_neg, True)]
    random.Random(seed).shuffle(items)
    lines = [f"Example {i}: {render(e, (), max_example_tokens)}" for i, (e, _) in enumerate(items, 1)]
    answers = tuple(str(i) for i in range(1, len(items) + 1))
    prompt = [{"role": "user", "content": INTRUDER_USER.format(n=len(items), examples="\n".join(lines))}]
    lp = lm.logprobs([prompt], answers)[0]
    values = [lp[a] for a in answers]
    if all(math.isinf(v) and v < 0 for v in values):
        return False
    return items[max(range(len(values)), key=values.__getitem__)][1]


def _continuations(model, prompts: Sequence[str], interventions, max_new_tokens: int, kind: str) -> list[Example]:
    from interplab.runtime.generate import generate

    result = generate(model, list(prompts), max_new_tokens, interventions)
    stops = LocalLM(model).stop_ids()
    out = []
    for i, row in enumerate(result.new_tokens.tolist()):
        cut = next((j for j, t in enumerate(row) if t in stops), len(row))
        ids = row[:cut]
        tokens = [model.tokenizer.decode([t]) for t in ids]
        out.append(Example(ids, tokens, [0.0] * len(ids), i, kind))
    return out


def intervention_score(model, dictionary, latent: int, explanation: str, judge, prompts: Sequence[str],
                       scale: float, max_new_tokens: int = 16) -> dict:
    """Generate greedy continuations of ``prompts`` with ``scale`` times the latent's decoder
    direction added at its site on every token (``from_dictionary``), and without; the judge's
    P(the explanation's feature is in the continuation) for each. ``score`` is the mean steered
    minus the mean unsteered probability (0 at scale 0, where the added vector is zero)."""
    from interplab.analyses.steering import from_dictionary

    if not prompts:
        raise InputError("intervention_score needs at least one prompt.")
    steer = from_dictionary(dictionary, latent).interventions(float(scale))
    plain = _continuations(model, prompts, [], max_new_tokens, "unsteered")
    steered = _continuations(model, prompts, steer, max_new_tokens, "steered")
    p_steered, p_plain = judge.detect(explanation, steered), judge.detect(explanation, plain)
    return {"steered": p_steered, "unsteered": p_plain,
            "score": sum(p_steered) / len(p_steered) - sum(p_plain) / len(p_plain),
            "steered_texts": ["".join(e.tokens) for e in steered],
            "unsteered_texts": ["".join(e.tokens) for e in plain]}
