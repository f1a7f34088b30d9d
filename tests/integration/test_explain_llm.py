"""Feature labelling with a language model (interplab.explain.llm) on the tiny random Llama with
a character tokenizer: LocalLM's generation and answer log-probs equal the runtime's, the judge's
probabilities are proper, the cache answers identically from memory and from disk (skipping a
corrupt line), EndpointLM against ``interplab serve`` on loopback agrees with LocalLM, a dead
port / malformed JSON / HTTP error / timeout are EndpointErrors naming the URL, and the
simulation, intruder and intervention scorers return well-formed, deterministic values. The
numbers mean nothing on a random model; a scripted fake LM checks the arithmetic."""

from __future__ import annotations

import json
import logging
import math
import socket
import time

import pytest
import torch

from interplab.explain.llm import (
    DIGITS,
    YES_NO,
    CachedLM,
    EndpointError,
    EndpointLM,
    LLMExplainer,
    LLMJudge,
    LMCache,
    LocalLM,
    clean_label,
    intervention_score,
    intruder,
    render,
    render_plain,
    simulation,
    simulation_score,
)
from interplab.explain.llm_backends import choice_probs
from interplab.explain.types import Example, LatentSample
from interplab.runtime.generate import generate

from .serving import CHAT_TEMPLATE, live

CONTEXT = 2048  # the tiny model is built for 64 positions; rotary Llama runs past it unchanged
TEXTS = ["the cat sat on the mat.", "a dog ran in the park.", "cats and dogs play.", "the sun is hot today."]


@pytest.fixture(scope="module")
def plain(tiny):
    """The tiny model without a chat template (prompts as "User: ... Assistant:")."""
    tiny.hf.config.max_position_embeddings = CONTEXT
    return tiny


@pytest.fixture(scope="module")
def chat(tiny_dir):
    """Another copy of the same weights with the servers' test chat template."""
    from interplab.runtime.loading import load

    model = load(tiny_dir)
    model.hf.config.max_position_embeddings = CONTEXT
    model.tokenizer.chat_template = CHAT_TEMPLATE
    return model


def example(model, text: str, i: int = 0, fire: tuple[int, ...] = (4, 5)) -> Example:
    ids = model.tokenizer(text)["input_ids"]
    acts = [1.0 + j if j in fire else 0.0 for j in range(len(ids))]
    return Example(ids, [model.tokenizer.decode([t]) for t in ids], acts, i, "top" if any(acts) else "random")


def sample(model) -> LatentSample:
    pos = [example(model, t, i) for i, t in enumerate(TEXTS)]
    neg = [example(model, t, 10 + i, fire=()) for i, t in enumerate(TEXTS)]
    return LatentSample(3, pos[:2], neg[:2], pos[2:], neg[2:], density=0.1)


class Counting:
    """An LM wrapper counting the calls that reach the model."""

    def __init__(self, lm):
        self.lm, self.calls = lm, 0

    def identity(self):
        return self.lm.identity()

    def complete(self, messages, max_tokens=64):
        self.calls += 1
        return self.lm.complete(messages, max_tokens)

    def logprobs(self, prompts, candidates):
        self.calls += 1
        return self.lm.logprobs(prompts, candidates)


class Scripted:
    """A fake LM whose answer log-probs are given per prompt by a function."""

    def __init__(self, fn):
        self.fn, self.prompts = fn, []

    def identity(self):
        return {"backend": "scripted"}

    def complete(self, messages, max_tokens=64):
        return "  \n\"Label: words about cats.\"\nmore"

    def logprobs(self, prompts, candidates):
        self.prompts += prompts
        return [self.fn(p, candidates) for p in prompts]


# -- LocalLM ------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["plain", "chat"])
def test_local_generation_equals_generate(which, request):
    model = request.getfixturevalue(which)
    lm = LocalLM(model)
    messages = [{"role": "user", "content": "the cat sat on"}]
    ids = lm.encode(messages)
    if which == "plain":
        assert ids == model.tokenizer(render_plain(messages))["input_ids"]
    else:
        text = "user: the cat sat on\nassistant: "
        assert ids == model.tokenizer(text, add_special_tokens=False)["input_ids"]
    new = generate(model, torch.tensor([ids]), 12).new_tokens[0].tolist()
    eos = model.tokenizer.eos_token_id
    new = new[: new.index(eos) + 1] if eos in new else new
    assert lm.complete(messages, 12) == model.tokenizer.decode(new, skip_special_tokens=True)


def test_local_answer_logprobs_are_the_models(plain):
    lm = LocalLM(plain, batch_size=3)
    prompts = [f"feature: cats. text: {t} does it fire? answer yes or no." for t in TEXTS]
    got = lm.logprobs(prompts, YES_NO)
    tok = plain.tokenizer
    y, n = tok.convert_tokens_to_ids("y"), tok.convert_tokens_to_ids("n")
    for p, lp in zip(prompts, got, strict=True):
        row = plain.run(torch.tensor([lm.encode(p)]))[0, -1].float().log_softmax(-1)  # unbatched
        assert lp["Yes"] == pytest.approx(float(row[y]), abs=1e-4)  # "y" is the only token of "Yes" here
        assert lp["No"] == pytest.approx(float(row[n]), abs=1e-4)
        probs = choice_probs(lp, YES_NO)
        assert all(0 <= q <= 1 for q in probs) and sum(probs) == pytest.approx(1, abs=1e-12)
    digits = lm.logprobs(prompts[:1], DIGITS)[0]  # no digit among the characters: all -inf, uniform
    assert all(v == -math.inf for v in digits.values())
    assert choice_probs(digits, DIGITS) == [0.1] * 10


def test_judge_detect_and_fuzz_are_probabilities(plain):
    judge = LLMJudge(LocalLM(plain))
    s = sample(plain)
    examples = s.score_pos + s.score_neg
    det = judge.detect("the word cat", examples)
    fuzz = judge.fuzz("the word cat", examples, [[4, 5], [0], [], [1, 2, 3]])
    for ps in (det, fuzz):
        assert len(ps) == len(examples) and all(0 <= p <= 1 for p in ps)
    assert judge.detect("the word cat", examples) == det  # deterministic
    assert fuzz != det  # the highlighted prompt differs
    with pytest.raises(ValueError, match="marked"):
        judge.fuzz("x", examples, [[1]])


def test_explainer_returns_one_line_label(plain):
    explainer = LLMExplainer(LocalLM(plain), max_examples=2, max_tokens=16)
    s = sample(plain)
    label = explainer.explain(s)
    assert label and "\n" not in label and label == label.strip()
    assert explainer.explain(s) == label
    prompt = explainer.prompt(s)[-1]["content"]
    assert "<<" in prompt and ">>" in prompt and prompt.count("Example ") == 2
    assert render(s.explain[0], [4, 5]) == "the <<ca>>t sat on the mat."


def test_clean_label():
    assert clean_label("  \n\"Label: words about cats.\"\nmore") == "words about cats."
    assert clean_label("Explanation - the <<token>> 'the'") == "the token 'the'"
    assert clean_label(" \n \n") == "(no explanation)"
    assert clean_label("The pattern in these examples is:\n\n* The word 'in'.\n* more") == "The word 'in'."
    assert LLMExplainer(Scripted(None)).explain(sample_stub()) == "words about cats."


def sample_stub() -> LatentSample:
    e = Example([1, 2], ["a", "b"], [0.0, 2.0], 0, "top")
    return LatentSample(0, [e], [], [], [])


# -- the cache ----------------------------------------------------------------------------------
def test_cache_hits_misses_and_disk(plain, tmp_path, caplog):
    path = tmp_path / "lm.jsonl"
    inner = Counting(LocalLM(plain))
    lm = CachedLM(inner, LMCache(path))
    first = lm.complete("the cat", 6)
    assert (lm.hits, lm.misses, inner.calls) == (0, 1, 1)
    assert lm.complete("the cat", 6) == first and (lm.hits, inner.calls) == (1, 1)
    lm.complete("the dog", 6)  # a different prompt: a miss
    lm.complete("the cat", 7)  # a different parameter: a miss
    assert (lm.hits, lm.misses, inner.calls) == (1, 3, 3)
    lp = lm.logprobs(["a", "b"], YES_NO)
    lp2 = lm.logprobs(["b", "c", "a"], YES_NO)  # two hits, one miss in one batched call
    assert lp2[0] == lp[1] and lp2[2] == lp[0] and inner.calls == 5
    assert lm.logprobs(["a"], DIGITS)[0].keys() == set(DIGITS)  # other candidates: another key
    lines = path.read_text().splitlines()
    assert len(lines) == 7 and all(len(json.loads(x)["key"]) == 64 for x in lines)
    # a new cache over the same file answers everything from disk, identically
    again = Counting(LocalLM(plain))
    lm2 = CachedLM(again, LMCache(path))
    assert lm2.complete("the cat", 6) == first
    assert lm2.logprobs(["a", "b", "c"], YES_NO) == [lp[0], lp[1], lp2[1]]
    assert again.calls == 0 and lm2.misses == 0
    # a corrupt line (and a torn last line) is skipped with a warning, the rest still loads
    path.write_text(lines[0] + "\n{not json\n" + "\n".join(lines[1:]) + "\n{\"key\": \"ab")
    with caplog.at_level(logging.WARNING, logger="interplab.explain.llm_cache"):
        cache = LMCache(path)
    assert cache.corrupt == 2 and len(cache) == 7
    assert sum("not a cache entry" in r.message for r in caplog.records) == 2
    lm3 = CachedLM(Counting(LocalLM(plain)), cache)
    lm3.complete("the bird", 4)  # appended on a line of its own after the torn one
    reread = LMCache(path)
    assert len(reread) == 8 and reread.corrupt == 2


def test_cache_key_includes_the_backend(plain, chat, tmp_path):
    cache = LMCache(tmp_path / "c.jsonl")
    a = CachedLM(LocalLM(plain), cache)
    b = CachedLM(LocalLM(chat), cache)  # same weights, another chat template: another answer
    a.complete("hi", 3)
    b.complete("hi", 3)
    assert cache.misses == 2 and len(cache) == 2


# -- EndpointLM against interplab serve on loopback --------------------------------------------
@pytest.fixture(scope="module")
def server(chat, tiny_dir, tmp_path_factory):
    from interplab.serve.app import create_app
    from interplab.serve.engine import Engine
    from interplab.serve.settings import Settings

    engine = Engine(chat, max_batch=4, max_queue=16)
    settings = Settings(model_name="tiny", token="tok", max_new_tokens=32, max_prompt_tokens=CONTEXT,
                        runs_dir=tmp_path_factory.mktemp("runs"))
    with live(create_app(chat, engine, None, settings)) as url:
        yield url
    engine.close()


def judge_prompts():
    return [[{"role": "user", "content": f"feature: {f}. text: {t} does it fire? yes or no."}]
            for f in ("cats", "the letter e") for t in TEXTS]


def test_endpoint_generation_equals_local(server, chat):
    ep = EndpointLM(server + "/v1", api_key="tok", model="tiny")
    local = LocalLM(chat)
    for prompt in ("the cat sat on", [{"role": "system", "content": "be brief."},
                                      {"role": "user", "content": "a dog ran"}]):
        assert ep.complete(prompt, 16) == local.complete(prompt, 16)
    assert EndpointLM(server, api_key="tok").model == "tiny"  # from GET /v1/models
    assert ep.identity()["url"] == server


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_endpoint_logprobs_equal_local(server, chat, plain, api):
    ep = EndpointLM(server, api_key="tok", model="tiny", logprob_api=api)
    local = LocalLM(chat if api == "chat" else plain)  # completions: the plain-text prompt
    tok = local.model.tokenizer
    letters = set("abcdefghijklmnopqrstuvwxyz")
    for prompt in judge_prompts():
        full = local.next_logprobs([prompt])[0]
        top = ep.top(prompt)
        assert len(top) == 20
        for text, lp in top:  # every alternative the endpoint returns is the local log-prob
            assert lp == pytest.approx(float(full[tok.convert_tokens_to_ids(text)]), abs=1e-4)
        # on this random model "y"/"n" rank below the top 20; answers whose tokens are among
        # the endpoint's alternatives agree, and the others are -inf there
        a, b = [t for t, _ in top if t in letters][:2]
        answers = (a.upper() + "es", b.upper() + "o")
        got, want = ep.logprobs([prompt], answers)[0], local.logprobs([prompt], answers)[0]
        assert got == pytest.approx(want, abs=1e-4)
        assert choice_probs(got, answers)[0] == pytest.approx(choice_probs(want, answers)[0], abs=1e-4)
        got, want = ep.logprobs([prompt], YES_NO)[0], local.logprobs([prompt], YES_NO)[0]
        present = {t for t, _ in top}
        for c, letter in zip(YES_NO, "yn", strict=True):
            assert got[c] == (pytest.approx(want[c], abs=1e-4) if letter in present else -math.inf)


def test_endpoint_explainer_and_judge(server, chat):
    ep, local = EndpointLM(server, api_key="tok", model="tiny"), LocalLM(chat)
    s = sample(chat)
    assert LLMExplainer(ep, max_tokens=12).explain(s) == LLMExplainer(local, max_tokens=12).explain(s)
    ps = LLMJudge(ep).detect("cats", s.score_pos + s.score_neg)
    assert len(ps) == 4 and all(0 <= p <= 1 for p in ps)


def test_endpoint_errors(server):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(EndpointError, match=f"{dead}/v1/chat/completions: cannot reach the server"):
        EndpointLM(dead, model="m").complete("hi")
    with pytest.raises(EndpointError, match="HTTP 401"):  # no token
        EndpointLM(server, model="tiny").complete("hi", 2)
    with pytest.raises(EndpointError, match=r"HTTP 404 .*serves 'tiny'"):  # the server's message
        EndpointLM(server, api_key="tok", model="other").complete("hi", 2)
    with pytest.raises(ValueError, match="logprob_api"):
        EndpointLM(server, logprob_api="x")
    with pytest.raises(ValueError, match="http"):
        EndpointLM("localhost:8000")


@pytest.fixture(scope="module")
def broken():
    """A server answering malformed JSON, JSON without the fields, and slowly."""
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat_completions():
        return PlainTextResponse("{'choices': [", media_type="application/json")

    @app.post("/v1/completions")
    def completions():
        return {"choices": [{"text": "x", "logprobs": None}]}

    @app.get("/v1/models")
    def models():
        time.sleep(1.5)
        return {"data": [{"id": "m"}]}

    with live(app) as url:
        yield url


def test_endpoint_malformed_answers(broken):
    with pytest.raises(EndpointError, match=rf"{broken}/v1/chat/completions: malformed answer, not JSON"):
        EndpointLM(broken, model="m").complete("hi")
    with pytest.raises(EndpointError, match=r"/v1/completions: malformed answer, no \['choices'\]\[0\]\['logprobs'\]"):
        EndpointLM(broken, model="m", logprob_api="completions").logprobs(["hi"], YES_NO)
    with pytest.raises(EndpointError, match=rf"{broken}/v1/models: no answer within 0.3 s"):
        _ = EndpointLM(broken, timeout=0.3).model


# -- simulation, intruder, intervention ---------------------------------------------------------
def test_simulation_on_the_tiny_model(plain):
    s = sample(plain)
    lm = LocalLM(plain)
    pred = simulation(lm, "the word cat", s.score_pos, max_tokens=5)
    assert [len(p) for p in pred] == [5, 5]
    assert all(0 <= v <= 9 for p in pred for v in p)
    assert pred == simulation(lm, "the word cat", s.score_pos, max_tokens=5)
    assert math.isnan(simulation_score(pred, [e.acts for e in s.score_pos]))  # no digit tokens: constant


def test_simulation_and_intruder_arithmetic():
    def digit_lm(prompt, candidates):  # P(digit) concentrated on the count of 'x' in the marked token
        text = prompt[-1]["content"].split("Text: ", 1)[1].split("\n\n")[0]
        assert text.endswith(">>") and text.count("<<") == 1  # the text up to the token, it marked
        marked = text[text.rindex("<<") + 2:-2]
        want = str(min(marked.count("x"), 9))
        return {c: (0.0 if c == want else -30.0) for c in candidates}

    ex = Example([0, 1, 2, 3], ["a", "x", "xx", "b"], [0.0, 1.0, 2.0, 0.0], 0, "top")
    pred = simulation(Scripted(digit_lm), "x", [ex], max_tokens=3)
    assert [[round(v, 6) for v in p] for p in pred] == [[0.0, 1.0, 2.0]]
    assert simulation_score(pred, [ex.acts]) == pytest.approx(1.0)
    assert simulation_score([[1.0, 2.0, 3.0]], [[3.0, 2.0, 1.0, 9.0]]) == pytest.approx(-1.0)

    pos = [Example([0], [f"cat {i}"], [1.0], i, "top") for i in range(4)]
    neg = Example([0], ["dog"], [0.0], 9, "random")

    def picks_dog(prompt, candidates):
        lines = [x for x in prompt[-1]["content"].splitlines() if x.startswith("Example ")]
        return {c: (0.0 if "dog" in lines[int(c) - 1] else -5.0) for c in candidates}

    seen = set()
    for seed in range(6):
        lm = Scripted(picks_dog)
        assert intruder(lm, pos, neg, seed) is True
        assert intruder(Scripted(lambda p, c: {x: (0.0 if x == "1" else -5.0) for x in c}), pos, neg, seed) == (
            "dog" in next(x for x in lm.prompts[0][-1]["content"].splitlines() if x.startswith("Example ")))
        seen.add(lm.prompts[0][-1]["content"])
    assert len(seen) > 1  # the seed shuffles
    assert intruder(Scripted(lambda p, c: dict.fromkeys(c, -math.inf)), pos, neg, 0) is False


def test_intruder_on_the_tiny_model(plain):
    s = sample(plain)
    lm = LocalLM(plain)
    got = [intruder(lm, s.score_pos + s.explain, s.score_neg[0], seed) for seed in range(3)]
    assert all(isinstance(g, bool) for g in got)
    assert got == [intruder(lm, s.score_pos + s.explain, s.score_neg[0], seed) for seed in range(3)]


def test_intervention_score_on_the_tiny_model(plain):
    from interplab.dictionary.base import DICTIONARIES, DictionaryConfig

    torch.manual_seed(0)
    sae = DICTIONARIES.get("relu")(DictionaryConfig(arch="relu", d_in=plain.dims.d_model, d_sae=16,
                                                    input_site="L0.resid_post"))
    judge = LLMJudge(LocalLM(plain))
    prompts = ["the cat sat", "a dog"]
    zero = intervention_score(plain, sae, 3, "cats", judge, prompts, 0.0, max_new_tokens=6)
    assert zero["steered"] == zero["unsteered"] and zero["score"] == 0.0
    assert zero["steered_texts"] == zero["unsteered_texts"]
    big = intervention_score(plain, sae, 3, "cats", judge, prompts, 40.0, max_new_tokens=6)
    assert len(big["steered"]) == len(big["unsteered"]) == 2
    assert all(0 <= p <= 1 for p in big["steered"] + big["unsteered"])
    assert big["unsteered"] == zero["unsteered"]
    assert big["steered_texts"] != big["unsteered_texts"]  # a large push changes the greedy text
    assert big["score"] == pytest.approx(sum(big["steered"]) / 2 - sum(big["unsteered"]) / 2)
    assert intervention_score(plain, sae, 3, "cats", judge, prompts, 40.0, max_new_tokens=6) == big
