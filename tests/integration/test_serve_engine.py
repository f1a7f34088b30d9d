"""The continuous-batching engine: concurrent requests, each with its own steering and sites,
equal their solo runs; requests join and leave between steps; bad requests are refused first."""

import threading
import time

import pytest
import torch

from interplab.core.errors import InputError
from interplab.interventions import Steer
from interplab.runtime import HookedModel
from interplab.runtime.generate import generate
from interplab.serve.engine import Engine, GenRequest, QueueFull

from .families import BY_NAME, tokens


def _requests(model, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = model.dims.d_model
    out = []
    for i in range(n):
        length = 3 + i % 5
        prompt = torch.randint(3, 32, (length,), generator=g).tolist()
        vec = torch.randn(d, generator=g)
        layer = i % model.dims.n_layers
        steer = [] if i % 4 == 0 else [Steer(f"L{layer}.resid_post", vector=vec, scale=0.5 + i % 3)]
        out.append(GenRequest(prompt, max_new_tokens=2 + i % 4, interventions=steer, keep_logits=True,
                              capture=[model.site(f"L{(i + 1) % model.dims.n_layers}.resid_pre")]))
    return out


def _solo(model, req):
    return generate(model, torch.tensor([req.prompt]), req.max_new_tokens, req.interventions)


def test_concurrent_requests_equal_their_solo_runs(model):
    reqs = _requests(model, 12)
    engine = Engine(model, max_batch=5)
    try:
        handles = []
        for i, req in enumerate(reqs):  # staggered arrival: some join while others decode
            handles.append(engine.submit(req))
            if i % 3 == 2:
                time.sleep(0.01)
        results = [h.result(timeout=60) for h in handles]
    finally:
        engine.close()
    for req, res in zip(reqs, results):
        solo = _solo(model, req)
        assert res.tokens == req.prompt + solo.new_tokens[0].tolist()
        torch.testing.assert_close(res.logits, solo.logits[0], atol=2e-4, rtol=0)
        # recorded activations equal run_with_cache on the same tokens, under the same edits
        site = req.capture[0]
        _, cache = model.run_with_cache(torch.tensor([res.tokens[:-1]]), [site], req.interventions)
        torch.testing.assert_close(res.activations[site], cache[site][0], atol=2e-4, rtol=0)
    assert max(engine.stats.batch_sizes) > 1  # they did share forwards


def test_a_short_request_finishes_while_a_long_one_runs():
    fam = BY_NAME["llama"]  # a tiny Llama with room for 206 positions
    torch.manual_seed(0)
    model = HookedModel(fam.model_cls(fam.config(attn_implementation="eager", max_position_embeddings=256)).eval())
    engine = Engine(model, max_batch=4)
    try:
        long = engine.submit(GenRequest(tokens(6).tolist(), max_new_tokens=200))
        first = next(long.events(timeout=30))  # the long generation has started
        assert first.token >= 0
        short = engine.submit(GenRequest(tokens(4, seed=1).tolist(), max_new_tokens=2))
        short.result(timeout=30)
        done_short = time.perf_counter()
        pending = long._events.qsize()  # steps of the long request not yet read
        assert pending < 50, "the short request waited for most of the long generation"
        rest = long.result(timeout=120)
        assert time.perf_counter() > done_short and len(rest.tokens) == 6 + 200
    finally:
        engine.close()


def test_cancelled_requests_free_their_row_and_others_go_on(model):
    engine = Engine(model, max_batch=2)
    try:
        a = engine.submit(GenRequest(tokens(5).tolist(), max_new_tokens=58))
        a.cancel()  # at once: the prefill alone takes longer than this
        assert a.result(timeout=30).reason == "cancelled"
        b = engine.submit(GenRequest(tokens(5, seed=2).tolist(), max_new_tokens=3))
        assert b.result(timeout=30).reason == "length"
        assert engine.stats.active <= 1
    finally:
        engine.close()


def test_bad_requests_are_refused_before_they_queue(model):
    engine = Engine(model, max_batch=1, max_queue=1)
    try:
        with pytest.raises(InputError, match="prompt"):
            engine.submit(GenRequest([]))
        with pytest.raises(InputError, match="token ids must be in"):
            engine.submit(GenRequest([10_000]))
        with pytest.raises(InputError, match="context of 64"):
            engine.submit(GenRequest([3, 4], max_new_tokens=63))
        with pytest.raises(Exception, match="vector"):
            engine.submit(GenRequest([3, 4], interventions=[Steer("L0.resid_post", vector=torch.ones(3))]))
        gate = threading.Event()
        engine._lock.acquire()  # hold the loop so the queue fills
        try:
            engine._waiting.append(object())  # one waiting request already
            with pytest.raises(QueueFull):
                engine.submit(GenRequest([3, 4]))
            engine._waiting.clear()
        finally:
            engine._lock.release()
        gate.set()
    finally:
        engine.close()


def test_no_row_reaches_another_request_over_many_rounds(model):
    """32 requests a round, each marked by its own steering vector and prompt; every round
    each one's tokens and activations must be its own solo run's."""
    reqs = _requests(model, 32, seed=7)
    for req in reqs:
        req.keep_logits = False
    solo = [(_solo(model, r).new_tokens[0].tolist(),
             model.run_with_cache(torch.tensor([r.prompt]), r.capture, r.interventions)[1][r.capture[0]][0])
            for r in reqs]
    engine = Engine(model, max_batch=32)
    try:
        for round_ in range(4):
            order = torch.randperm(len(reqs), generator=torch.Generator().manual_seed(round_)).tolist()
            handles = {}
            for k, i in enumerate(order):
                handles[i] = engine.submit(reqs[i])
                if k % 8 == 7:
                    time.sleep(0.005)
            for i, h in handles.items():
                res = h.result(timeout=60)
                tokens, prompt_acts = solo[i]
                assert res.tokens[len(reqs[i].prompt):] == tokens, (round_, i)
                got = res.activations[reqs[i].capture[0]][: len(reqs[i].prompt)]
                torch.testing.assert_close(got, prompt_acts, atol=2e-4, rtol=0)
    finally:
        engine.close()


def test_seeded_sampling_draws_what_generate_draws(model):
    reqs = [GenRequest(tokens(4 + i, seed=i).tolist(), max_new_tokens=5, do_sample=True,
                       temperature=0.8 + 0.1 * i, top_k=[None, 5, 10][i], seed=100 + i) for i in range(3)]
    engine = Engine(model, max_batch=3)
    try:
        handles = [engine.submit(r) for r in reqs]
        results = [h.result(timeout=60) for h in handles]
    finally:
        engine.close()
    for req, res in zip(reqs, results):
        solo = generate(model, torch.tensor([req.prompt]), req.max_new_tokens, do_sample=True,
                        temperature=req.temperature, top_k=req.top_k, seed=req.seed)
        assert res.tokens[len(req.prompt):] == solo.new_tokens[0].tolist()


def test_a_request_without_interventions_equals_plain_hf_generate(model):
    prompts = [tokens(n, seed=n).tolist() for n in (3, 6, 9)]
    engine = Engine(model, max_batch=3)
    try:
        handles = [engine.submit(GenRequest(p, max_new_tokens=6)) for p in prompts]
        results = [h.result(timeout=60) for h in handles]
    finally:
        engine.close()
    for p, res in zip(prompts, results):
        with torch.no_grad():
            ref = model.hf.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False,
                                    pad_token_id=0, eos_token_id=None, min_new_tokens=6)
        assert res.tokens == ref[0].tolist()
