"""The UI's live model over HTTP (a loopback server in this process, the tiny random Llama): the
prompt explorer's predictions, logit lens, attention patterns and dictionary features equal the
library's own computations; the steering playground's generations equal ``runtime.generate``
with and without the same steering (registered vectors, vectors moved to another site,
dictionary latents), its KL and probe scores equal the library's, and the scale moves the
output (0: unsteered); every bad input is a 4xx naming its field; the model loads in the
background (503 until it is ready, a clear 500 when it fails)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from interplab.analyses.logit_lens import LogitLensConfig, lens_logits, logit_lens
from interplab.analyses.steering import from_dictionary
from interplab.core.errors import InputError
from interplab.interventions import Steer
from interplab.runtime.generate import generate
from interplab.serve.generation import stop_token_ids
from interplab.serve.specs import Artifacts
from interplab.ui.app import create_ui_app
from interplab.ui.features import Features
from interplab.ui.live import Live
from interplab.ui.settings import UiSettings
from tests.integration.serving import live as serving

PROMPT = "the cat sat on the"
SETTINGS = UiSettings(max_new_tokens=10, max_prompt_tokens=40)


@pytest.fixture(scope="module")
def served(tiny, live_artifacts, tmp_path_factory):
    arts = Artifacts.load(tiny, **live_artifacts)
    live = Live.from_model(tiny, arts, name="tiny")
    features = Features.of([(live_artifacts["dictionaries"][0] / "features", "sae")])
    app = create_ui_app(tmp_path_factory.mktemp("runs"), SETTINGS, features=features, live=live)
    try:
        with serving(app) as url, httpx.Client(base_url=url, timeout=120) as client:
            yield client, tiny, arts
    finally:
        live.close()


def ids_of(model, text=PROMPT) -> list[int]:
    return model.tokenizer(text)["input_ids"]


def greedy(model, ids, n, interventions=()):
    """The library's greedy generation, cut after the first end-of-text token as the engine stops."""
    out = generate(model, torch.tensor([ids]), n, interventions)
    new = out.new_tokens[0].tolist()
    stops = stop_token_ids(model)
    cut = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))
    return new[:cut], out.logits[0, :cut]


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


# -- listing and health -------------------------------------------------------------------------
def test_live_lists_what_is_registered(served):
    client, model, _ = served
    info = ok(client.get("/api/live"))
    assert info["state"] == "ready" and info["model"] == "tiny" and info["error"] is None
    assert [v["name"] for v in info["vectors"]] == ["both", "up"]
    assert info["vectors"][1]["sites"] == ["L0.resid_post"]
    assert [(p["name"], p["reduction"], p["labels"]) for p in info["probes"]] == [
        ("m", "mean", ["calm", "excited"]), ("p", "last", ["calm", "excited"])]
    assert info["dictionaries"] == [{"name": "sae", "site": "L1.resid_post", "target_site": "L1.resid_post",
                                     "d_sae": 48, "arch": "topk", "feature_id": "sae"}]
    assert info["dims"]["n_layers"] == model.dims.n_layers and info["attention"] == "available"
    assert info["limits"] == {"max_new_tokens": 10, "max_prompt_tokens": 40}
    assert ok(client.get("/api/health"))["live"] == {"state": "ready", "model": "tiny", "error": None}


# -- the prompt explorer ------------------------------------------------------------------------
def test_explorer_predictions_equal_the_model(served):
    client, model, _ = served
    out = ok(client.post("/api/explore", json={"prompt": PROMPT, "top_k": 7}))
    ids = ids_of(model)
    assert out["ids"] == ids and out["tokens"] == [model.tokenizer.decode([i]) for i in ids]
    logits = model.run(torch.tensor([ids]))[0, -1].float()
    p = out["predictions"]
    assert p["ids"][0] == int(logits.argmax())
    top = logits.softmax(-1).topk(7)
    assert p["ids"] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor(p["probs"]), top.values, atol=1e-6, rtol=0)
    assert p["tokens"] == [model.tokenizer.decode([i]) for i in p["ids"]]


def test_explorer_lens_equals_the_library(served):
    client, model, _ = served
    out = ok(client.post("/api/explore", json={"prompt": PROMPT}))
    ids = ids_of(model)
    sites = [f"L{n}.resid_post" for n in range(model.dims.n_layers)]
    _, cache = model.run_with_cache(torch.tensor([ids]), sites)
    lens = out["lens"]
    assert lens["layers"] == list(range(model.dims.n_layers))
    for row, site in enumerate(sites):
        probs = lens_logits(model, cache[site][0]).softmax(-1)
        assert lens["ids"][row] == probs.argmax(-1).tolist()
        torch.testing.assert_close(torch.tensor(lens["probs"][row]), probs.max(-1).values, atol=1e-6, rtol=0)
        assert lens["tokens"][row] == [model.tokenizer.decode([i]) for i in lens["ids"][row]]
    # the library's logit-lens analysis at the last position, and the model itself at the last layer
    ref = logit_lens(model, LogitLensConfig(prompt=PROMPT, top_k=1))
    assert [r[-1] for r in lens["ids"]] == ref.top_ids[:, 0].tolist()
    torch.testing.assert_close(torch.tensor([r[-1] for r in lens["probs"]]), ref.top_probs[:, 0], atol=1e-6, rtol=0)
    assert lens["ids"][-1] == model.run(torch.tensor([ids]))[0].argmax(-1).tolist()


@pytest.mark.parametrize("layer", [0, 1])
def test_explorer_attention_equals_run_with_cache(served, layer):
    client, model, _ = served
    out = ok(client.post("/api/explore", json={"prompt": PROMPT, "layer": layer}))
    a = out["attention"]
    assert a["available"] and a["layer"] == layer and a["n_heads"] == model.dims.n_heads
    got = torch.tensor(a["patterns"])
    n = len(ids_of(model))
    assert got.shape == (model.dims.n_heads, n, n)
    torch.testing.assert_close(got.sum(-1), torch.ones(model.dims.n_heads, n), atol=1e-5, rtol=0)
    assert torch.all(got.triu(1) == 0)  # causal: no query attends ahead
    _, cache = model.run_with_cache(torch.tensor([ids_of(model)]), [f"L{layer}.attn.pattern"])
    torch.testing.assert_close(got, cache[f"L{layer}.attn.pattern"][0], atol=1e-6, rtol=0)


def test_explorer_features_equal_the_dictionary(served):
    client, model, arts = served
    out = ok(client.post("/api/explore", json={"prompt": PROMPT, "feature_k": 3}))
    (f,) = out["features"]
    assert (f["dictionary"], f["site"], f["d_sae"], f["k"], f["feature_id"]) == ("sae", "L1.resid_post", 48, 3, "sae")
    _, cache = model.run_with_cache(torch.tensor([ids_of(model)]), ["L1.resid_post"])
    top = arts.dictionaries["sae"].encode(cache["L1.resid_post"][0]).topk(3)
    assert f["indices"] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor(f["values"]), top.values.detach(), atol=1e-5, rtol=0)
    assert all(v > 0 for row in f["values"] for v in row[:1])  # every token has an active latent


# -- the steering playground --------------------------------------------------------------------
def _kl(steered_logits, model, ids, new):
    """KL(steered || unsteered) per step: the unsteered model's logits on the steered text."""
    p = len(ids)
    unsteered = model.run(torch.tensor([ids + new]))[0, p - 1: p - 1 + len(new)].float()
    log_p, log_q = steered_logits.float().log_softmax(-1), unsteered.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0)


CASES = [
    ({"vector": "up", "scale": 6.0}, lambda arts, m: arts.vectors["up"].interventions(6.0)),
    ({"vector": "up", "scale": -6.0, "site": "L1.resid_post"},
     lambda arts, m: [Steer("L1.resid_post", vector=arts.vectors["up"].vector, scale=-6.0)]),
    ({"vector": "both", "scale": 3.0}, lambda arts, m: arts.vectors["both"].interventions(3.0)),
    ({"dictionary": "sae", "latent": 5, "scale": 12.0},
     lambda arts, m: from_dictionary(arts.dictionaries["sae"], 5).interventions(12.0)),
]


@pytest.mark.parametrize(("body", "library"), CASES, ids=["vector", "vector-moved", "two-sites", "feature"])
def test_steering_equals_the_library(served, body, library):
    client, model, arts = served
    out = ok(client.post("/api/steer", json={"prompt": PROMPT, **body}))
    ids = ids_of(model)
    assert out["prompt_tokens"] == len(ids) and out["max_tokens"] == 10
    unsteered, _ = greedy(model, ids, 10)
    steered, logits = greedy(model, ids, 10, library(arts, model))
    assert out["unsteered"]["ids"] == unsteered
    assert out["steered"]["ids"] == steered
    assert steered != unsteered  # these scales move this model's greedy text
    for side, new in (("steered", steered), ("unsteered", unsteered)):
        assert out[side]["text"] == model.tokenizer.decode(new, skip_special_tokens=True)
        assert out[side]["tokens"] == [model.tokenizer.decode([i]) for i in new]
    kl = _kl(logits, model, ids, steered)
    torch.testing.assert_close(torch.tensor(out["kl"]["per_step"]), kl, atol=1e-5, rtol=1e-4)
    assert out["kl"]["mean"] == pytest.approx(sum(out["kl"]["per_step"]) / len(steered), rel=1e-6)
    for name in ("m", "p"):
        probe = arts.probes[name]
        got = out["probes"][name]
        assert (got["site"], got["reduction"], got["labels"]) == ("L1.resid_post", probe.reduction, ["calm", "excited"])
        for side, new in (("steered", steered), ("unsteered", unsteered)):
            assert got[side] == pytest.approx(float(probe(model, torch.tensor([ids + new]))[0]), abs=1e-4)


def test_scale_moves_the_output_and_zero_is_unsteered(served):
    client, model, _ = served
    texts = {}
    for scale in (0.0, 2.0, 6.0, -6.0):
        out = ok(client.post("/api/steer", json={"prompt": PROMPT, "vector": "up", "scale": scale, "max_tokens": 6}))
        assert out["max_tokens"] == 6 and len(out["steered"]["ids"]) <= 6
        texts[scale] = out["steered"]["text"]
        if scale == 0:
            assert out["steered"] == out["unsteered"]
            assert out["kl"]["mean"] < 1e-5
            assert out["probes"]["p"]["steered"] == pytest.approx(out["probes"]["p"]["unsteered"], abs=1e-5)
        else:
            assert out["kl"]["mean"] > 1e-4
    assert texts[0.0] == model.tokenizer.decode(greedy(model, ids_of(model), 6)[0], skip_special_tokens=True)
    assert len({texts[0.0], texts[6.0], texts[-6.0]}) == 3


# -- bad input ----------------------------------------------------------------------------------
EXPLORE_BAD = [
    ({"prompt": ""}, 422, "prompt"),
    ({}, 422, "prompt"),
    ({"prompt": "x" * 41}, 400, "prompt"),  # 41 tokens: over max_prompt_tokens
    ({"prompt": PROMPT, "top_k": 0}, 422, "top_k"),
    ({"prompt": PROMPT, "top_k": 101}, 422, "top_k"),
    ({"prompt": PROMPT, "top_k": 33}, 400, "top_k"),  # more than the 32-token vocabulary
    ({"prompt": PROMPT, "top_k": "many"}, 422, "top_k"),
    ({"prompt": PROMPT, "layer": 2}, 400, "layer"),
    ({"prompt": PROMPT, "layer": -1}, 422, "layer"),
    ({"prompt": PROMPT, "feature_k": 0}, 422, "feature_k"),
    ({"prompt": PROMPT, "topk": 3}, 422, "topk"),
]
STEER_BAD = [
    ({"prompt": "", "vector": "up", "scale": 1}, 422, "prompt"),
    ({"prompt": "x" * 41, "vector": "up", "scale": 1}, 400, "prompt"),
    ({"prompt": PROMPT, "vector": "nope", "scale": 1}, 400, "vector"),
    ({"prompt": PROMPT, "scale": 1}, 400, "vector"),
    ({"prompt": PROMPT, "vector": "up", "dictionary": "sae", "latent": 1, "scale": 1}, 400, "vector"),
    ({"prompt": PROMPT, "dictionary": "nope", "latent": 1, "scale": 1}, 400, "dictionary"),
    ({"prompt": PROMPT, "dictionary": "sae", "scale": 1}, 400, "latent"),
    ({"prompt": PROMPT, "dictionary": "sae", "latent": 48, "scale": 1}, 400, "latent"),
    ({"prompt": PROMPT, "dictionary": "sae", "latent": -1, "scale": 1}, 400, "latent"),
    ({"prompt": PROMPT, "dictionary": "sae", "latent": "first", "scale": 1}, 422, "latent"),
    ({"prompt": PROMPT, "vector": "up"}, 422, "scale"),
    ({"prompt": PROMPT, "vector": "up", "scale": "big"}, 422, "scale"),
    ({"prompt": PROMPT, "vector": "up", "scale": 1e300}, 422, "scale"),
    ({"prompt": PROMPT, "vector": "up", "scale": 1, "site": "L9.resid_post"}, 400, "site"),
    ({"prompt": PROMPT, "vector": "up", "scale": 1, "site": "L0.mlp.hidden"}, 400, "site"),
    ({"prompt": PROMPT, "vector": "up", "scale": 1, "site": "nowhere"}, 400, "site"),
    ({"prompt": PROMPT, "vector": "both", "scale": 1, "site": "L0.resid_pre"}, 400, "site"),
    ({"prompt": PROMPT, "dictionary": "sae", "latent": 1, "scale": 1, "site": "L1.mlp.hidden"}, 400, "site"),
    ({"prompt": PROMPT, "vector": "up", "scale": 1, "max_tokens": 0}, 422, "max_tokens"),
    ({"prompt": PROMPT, "vector": "up", "scale": 1, "max_tokens": 11}, 400, "max_tokens"),
    ({"prompt": PROMPT, "vector": "up", "scale": 1, "colour": "red"}, 422, "colour"),
]


@pytest.mark.parametrize(("path", "body", "status", "field"),
                         [("/api/explore", *c) for c in EXPLORE_BAD] + [("/api/steer", *c) for c in STEER_BAD],
                         ids=[f"explore-{i}-{c[2]}" for i, c in enumerate(EXPLORE_BAD)]
                         + [f"steer-{i}-{c[2]}" for i, c in enumerate(STEER_BAD)])
def test_every_bad_input_is_a_4xx_naming_its_field(served, path, body, status, field):
    client, _, _ = served
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == field and err["message"].startswith(f"{field}:"), err


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_non_finite_scale_is_refused(served, raw):
    client, _, _ = served
    body = b'{"prompt": "the cat", "vector": "up", "scale": ' + raw + b"}"
    r = client.post("/api/steer", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "scale", r.text


def test_a_long_prompt_leaves_room_or_is_refused(tiny, live_artifacts, tmp_path):
    """The tiny model has 64 positions: the cap on new tokens shrinks to what fits (one position
    stays free to read the texts back), asking for more names max_tokens, and a prompt that
    leaves no room names the prompt."""
    live = Live.from_model(tiny, Artifacts.load(tiny, vectors=live_artifacts["vectors"]), name="tiny")
    try:
        client = TestClient(create_ui_app(tmp_path, UiSettings(max_new_tokens=10, max_prompt_tokens=64), live=live))
        prompt = "ab" * 29  # 58 tokens: 5 new ones fit
        out = ok(client.post("/api/steer", json={"prompt": prompt, "vector": "up", "scale": 1.0}))
        assert out["max_tokens"] == 5
        assert out["unsteered"]["ids"] == greedy(tiny, ids_of(tiny, prompt), 5)[0]
        r = client.post("/api/steer", json={"prompt": prompt, "vector": "up", "scale": 1.0, "max_tokens": 6})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
        for path, body in (("/api/steer", {"vector": "up", "scale": 1.0}), ("/api/explore", {})):
            r = client.post(path, json={"prompt": "a" * 64, **body})
            assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
            assert "context of 64" in r.json()["error"]["message"]
    finally:
        live.close()


# -- the model's lifecycle ----------------------------------------------------------------------
def test_503_while_loading_then_ready(tiny, tiny_dir, live_artifacts, tmp_path):
    release = threading.Event()

    def loader(name):
        assert name == tiny_dir
        release.wait(60)
        return tiny

    t0 = time.monotonic()
    live = Live.start(tiny_dir, vectors=live_artifacts["vectors"], probes=live_artifacts["probes"],
                      dictionaries=live_artifacts["dictionaries"], settings=SETTINGS, loader=loader)
    assert time.monotonic() - t0 < 1.0  # returns at once; the model loads in the background
    try:
        client = TestClient(create_ui_app(tmp_path, SETTINGS, live=live))
        assert client.get("/api/health").json()["live"] == {"state": "loading", "model": tiny_dir, "error": None}
        for method, path, body in (("GET", "/api/live", None), ("POST", "/api/explore", {"prompt": PROMPT}),
                                   ("POST", "/api/steer", {"prompt": PROMPT, "vector": "up", "scale": 1})):
            r = client.request(method, path, json=body)
            assert r.status_code == 503, r.text
            assert "still loading" in r.json()["error"]["message"] and r.headers["retry-after"] == "2"
        assert client.get("/explore").status_code == 200  # the pages themselves are served at once
        release.set()
        assert live.wait(60) and live.status()["state"] == "ready"
        out = client.post("/api/explore", json={"prompt": PROMPT}).json()
        assert out["predictions"]["ids"][0] == int(tiny.run(torch.tensor([ids_of(tiny)]))[0, -1].argmax())
        assert [v["name"] for v in client.get("/api/live").json()["vectors"]] == ["both", "up"]
    finally:
        release.set()
        live.close()
    r = client.post("/api/explore", json={"prompt": PROMPT})
    assert r.status_code == 503 and "shut down" in r.json()["error"]["message"]


def test_a_failed_load_is_a_clear_error(tiny, tmp_path):
    def loader(name):
        raise InputError(f"no model called {name!r} here")

    live = Live.start("nowhere-model", settings=SETTINGS, loader=loader)
    assert live.wait(30)
    try:
        assert live.status() == {"state": "error", "model": "nowhere-model",
                                 "error": "no model called 'nowhere-model' here"}
        client = TestClient(create_ui_app(tmp_path, SETTINGS, live=live))
        r = client.post("/api/explore", json={"prompt": PROMPT})
        assert r.status_code == 500
        assert r.json()["error"]["message"].startswith("The model 'nowhere-model' failed to load: no model called")
        assert client.get("/api/health").json()["live"]["state"] == "error"
    finally:
        live.close()


def test_a_bad_artifact_fails_the_load_naming_it(tiny, tmp_path):
    (tmp_path / "notavector").mkdir()
    live = Live.start("tiny", vectors=[tmp_path / "notavector"], settings=SETTINGS, loader=lambda name: tiny)
    assert live.wait(30)
    assert live.status()["state"] == "error" and "notavector" in live.status()["error"]
    live.close()


def test_closing_while_loading_closes_the_engine_once_loaded(tiny):
    release = threading.Event()
    before = set(threading.enumerate())
    live = Live.start("tiny", loader=lambda name: (release.wait(60), tiny)[1])
    live.close()
    release.set()
    assert live.wait(30)
    engines = [t for t in threading.enumerate() if t.name == "interplab-engine" and t not in before]
    assert not any(t.is_alive() for t in engines)
    with pytest.raises(Exception, match="shut down"):
        live.require()
