"""The official ``openai`` client against ``interplab serve`` on a tiny model, unchanged: completions,
chat (streamed too), logprobs, models, the interplab object through ``extra_body``, and its error
types for our 400 / 401 / 404 answers."""

from __future__ import annotations

import openai
import pytest
import torch

from interplab.runtime.generate import generate
from interplab.serve.app import create_app
from interplab.serve.engine import Engine
from interplab.serve.settings import Settings

from .serving import CHAT_TEMPLATE, live

TOKEN = "openai-test-token"


@pytest.fixture(scope="module")
def api(tiny, tiny_dir):
    tiny.tokenizer.chat_template = CHAT_TEMPLATE
    engine = Engine(tiny, max_batch=4, max_queue=16)
    app = create_app(tiny, engine, None, Settings(model_name=tiny_dir, token=TOKEN, max_new_tokens=24))
    with live(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=TOKEN, timeout=60, max_retries=0)
        yield client, tiny, tiny_dir, url
        client.close()
    engine.close()


def greedy_text(model, ids, n):
    new = generate(model, torch.tensor([ids]), n).new_tokens[0].tolist()
    return model.tokenizer.decode(new, skip_special_tokens=True)


def test_completions_equal_generate(api):
    client, model, name, _ = api
    out = client.completions.create(model=name, prompt="a dog ran", max_tokens=7, temperature=0,
                                    logprobs=2, extra_body={"ignore_eos": True})
    ids = model.tokenizer("a dog ran")["input_ids"]
    assert out.choices[0].text == greedy_text(model, ids, 7)
    assert out.usage.prompt_tokens == len(ids) and out.usage.completion_tokens == 7
    assert len(out.choices[0].logprobs.token_logprobs) == 7
    streamed = client.completions.create(model=name, prompt="a dog ran", max_tokens=7, temperature=0,
                                         stream=True, extra_body={"ignore_eos": True})
    assert "".join(chunk.choices[0].text for chunk in streamed) == out.choices[0].text


def test_chat_whole_and_streamed(api):
    client, model, name, _ = api
    messages = [{"role": "user", "content": "hello"}]
    out = client.chat.completions.create(model=name, messages=messages, max_tokens=6, temperature=0,
                                         logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    text = model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert out.choices[0].message.content == greedy_text(model, ids, 6)
    assert out.choices[0].message.role == "assistant" and out.choices[0].finish_reason == "length"
    assert [len(t.top_logprobs) for t in out.choices[0].logprobs.content] == [3] * 6
    stream = client.chat.completions.create(model=name, messages=messages, max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == out.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 6


def test_models_and_the_interplab_object_through_extra_body(api):
    client, model, name, _ = api
    assert [m.id for m in client.models.list()] == [name]
    spec = {"interventions": [{"op": "ablate", "site": "L0.mlp_out"}],
            "return": {"activations": {"sites": ["L1.resid_post"], "positions": "prompt", "reduce": "mean"}}}
    out = client.completions.create(model=name, prompt="the sun", max_tokens=3, temperature=0,
                                    extra_body={"interplab": spec, "ignore_eos": True})
    internals = out.model_extra["interplab"]
    got = internals["activations"]["L1.resid_post"]
    assert got["shape"] == [model.dims.d_model]
    from interplab.interventions import Ablate

    ids = model.tokenizer("the sun")["input_ids"]
    _, cache = model.run_with_cache(torch.tensor([ids]), ["L1.resid_post"], [Ablate("L0.mlp_out")])
    torch.testing.assert_close(torch.tensor(got["data"]), cache["L1.resid_post"][0].mean(0), atol=2e-4, rtol=0)


def test_errors_are_the_clients_own_types(api):
    client, _, name, url = api
    with pytest.raises(openai.BadRequestError, match="max_tokens.*limit of 24"):
        client.completions.create(model=name, prompt="x", max_tokens=100)
    with pytest.raises(openai.BadRequestError, match="interplab.interventions\\[0\\]"):
        client.completions.create(model=name, prompt="x", max_tokens=2,
                                  extra_body={"interplab": {"interventions": [{"op": "steer", "site": "L9.resid_post",
                                                                               "vector": [1.0]}]}})
    with pytest.raises(openai.NotFoundError, match="serves"):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    stranger = openai.OpenAI(base_url=url + "/v1", api_key="wrong", timeout=30, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    stranger.close()
