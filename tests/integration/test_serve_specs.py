"""The service's request specs: interventions and returned internals as JSON, errors naming the
field, feature clamping that keeps the SAE's error term, and internals that equal the library's
own computations on the engine's recorded activations."""

import base64
import json
import re

import pytest
import torch
from safetensors.torch import save

from interplab.analyses.probes import Probe
from interplab.analyses.steering import SteeringVector
from interplab.core.errors import InputError
from interplab.dictionary.base import DICTIONARIES, DictionaryConfig
from interplab.dictionary.clamp import ClampFeature
from interplab.runtime import HookedModel
from interplab.serve.artifacts import Artifacts
from interplab.serve.engine import Engine, GenRequest
from interplab.serve.specs import RequestSpec, internals, parse_spec
from interplab.serve.tensors import b64_tensor, decode_value

from .families import HIDDEN, build, tokens

SITE = "L1.resid_post"


def _save_artifacts(root, d_model=HIDDEN):
    g = torch.Generator().manual_seed(3)
    SteeringVector({SITE: torch.randn(d_model, generator=g)}).save(root / "vec" / "up")
    SteeringVector({"L0.resid_post": torch.randn(d_model, generator=g),
                    SITE: torch.randn(d_model, generator=g)}).save(root / "vec" / "both")
    w = torch.randn(d_model, generator=g)
    Probe(SITE, "last", "logistic", w / w.norm(), w, 0.25, torch.zeros(d_model)).save(root / "probe" / "p")
    sae = DICTIONARIES.get("topk")(DictionaryConfig(d_in=d_model, d_sae=128, k=4, input_site=SITE))
    with torch.no_grad():
        sae.b_enc.add_(0.05 * torch.randn(128, generator=g))
        sae.in_scale.fill_(0.5)
        sae.out_scale.fill_(0.5)
    sae.save(root / "dict" / "sae")
    return {"vectors": [root / "vec" / "up", root / "vec" / "both"], "probes": [root / "probe" / "p"],
            "dictionaries": [root / "dict" / "sae"]}


@pytest.fixture(scope="module")
def artifact_dirs(tmp_path_factory):
    return _save_artifacts(tmp_path_factory.mktemp("serve-artifacts"))


@pytest.fixture(scope="module")
def llama():
    return HookedModel(build("llama"))


@pytest.fixture(scope="module")
def arts(llama, artifact_dirs):
    return Artifacts.load(llama, **artifact_dirs)


# -- artifacts -----------------------------------------------------------------------------------
def test_artifacts_are_named_by_directory_and_clashes_are_refused(llama, arts, artifact_dirs, tmp_path):
    assert arts.names() == {"vectors": ["both", "up"], "probes": ["p"], "dictionaries": ["sae"]}
    other = _save_artifacts(tmp_path)  # another directory also called "up"
    with pytest.raises(InputError, match=r"--vectors: the name 'up' is given twice .* rename one"):
        Artifacts.load(llama, vectors=[*artifact_dirs["vectors"], other["vectors"][0]])
    SteeringVector({SITE: torch.ones(7)}).save(tmp_path / "narrow")
    with pytest.raises(Exception, match=r"--vectors .*narrow: .*width 7"):
        Artifacts.load(llama, vectors=[tmp_path / "narrow"])


# -- errors name the field ----------------------------------------------------------------------
def _steer(**kw):
    return {"op": "steer", "site": SITE, **kw}


BAD = [
    ({"interventions": [_steer(vector_name="x")]},
     "interplab.interventions[0].vector_name: unknown vector 'x'; registered: both, up"),
    ({"interventions": [_steer(vector_name="up"), _steer(vector=[1.0] * 7)]},
     "interplab.interventions[1].vector: has 7 numbers, the site L1.resid_post has d_model=64"),
    ({"interventions": [_steer(site="L1.mlp.hidden", vector_name="up")]},
     "interplab.interventions[0].vector_name: vector 'up' has 64 numbers, the site L1.mlp.hidden has d_mlp=128"),
    ({"interventions": [_steer(site="L9.resid_post", vector=[0.0] * 64)]},
     "interplab.interventions[0].site: Site L9.resid_post: layer 9 is out of range; this model has 2 layers (valid: 0..1)"),
    ({"interventions": [{"op": "clamp_feature", "dictionary": "sae", "latent": 500, "value": 1}]},
     "interplab.interventions[0].latent: latent 500 is out of range; dictionary 'sae' has d_sae=128 (valid 0..127)"),
    ({"interventions": [{"op": "clamp_feature", "dictionary": "nope", "latent": 1, "value": 1}]},
     "interplab.interventions[0].dictionary: unknown dictionary 'nope'; registered: sae"),
    ({"interventions": [{"op": "ablate", "site": SITE}] * 65},
     "interplab.interventions: 65 interventions, more than the limit of 64 (max_interventions)"),
    ({"interventions": [{"op": "apply", "site": SITE}]},
     "interplab.interventions[0].op: 'apply' runs code and is refused"),
    ({"interventions": [{"op": "steer", "site": SITE, "vector": [0.0] * 64, "code": "import os"}]},
     "interplab.interventions[0].code: fields that carry code are refused"),
    ({"interventions": [{"op": "ablate", "site": SITE, "rows": [0]}]},
     "interplab.interventions[0].rows: a request owns exactly its own batch row"),
    ({"interventions": [{"op": "explode", "site": SITE}]},
     "interplab.interventions[0].op: unknown intervention op 'explode'; valid ops: 'patch', 'ablate', 'steer', 'clamp_feature'"),
    ({"interventions": [_steer(vector={"safetensors_b64": "not base64!"})]},
     "interplab.interventions[0].vector.safetensors_b64 is not valid base64"),
    ({"interventions": [_steer(vector=[float("nan")] * 64)]}, "interplab.interventions[0].vector has 64 non-finite"),
    ({"interventions": [_steer(vector_name="up", scale="big")]}, "interplab.interventions[0].scale must be a number"),
    ({"return": {"probes": ["nope"]}}, "interplab.return.probes[0]: unknown probe 'nope'; registered: p"),
    ({"return": {"features": {"dictionary": "sae", "k": 0}}}, "interplab.return.features.k: k must be an integer in 1..100"),
    ({"return": {"activations": {"sites": ["L0.resid_post", "L5.mlp_out"]}}},
     "interplab.return.activations.sites[1]: Site L5.mlp_out: layer 5 is out of range"),
    ({"return": {"activations": {"sites": [SITE], "reduce": "max"}}},
     "interplab.return.activations.reduce: 'max' is not one of 'none', 'mean', 'last'"),
    ({"return": {"activations": {"sites": [SITE], "positions": "middle"}}},
     "interplab.return.activations.positions: 'middle' is not one of 'prompt', 'generated', 'all'"),
    ({"return": {"logit_lens": {"sites": ["L0.mlp.hidden"]}}},
     "interplab.return.logit_lens.sites[0]: the logit lens reads the residual stream"),
    ({"return": {"activations": {"sites": ["L0.attn.pattern"]}}},
     "interplab.return.activations.sites[0]: L0.attn.pattern holds attention probabilities"),
    ({"retrun": {}}, "interplab.retrun: unknown field; valid: 'interventions', 'return', 'compare_unsteered'"),
]


@pytest.mark.parametrize(("body", "message"), BAD, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(BAD)])
def test_every_error_names_the_field(llama, arts, body, message):
    with pytest.raises(InputError, match=re.escape(message)):
        parse_spec(body, llama, arts)


def test_positions_are_checked_against_the_request_naming_the_item(llama, arts):
    def spec(pos):
        return parse_spec({"interventions": [_steer(vector_name="up"), _steer(vector_name="up", positions=pos)]},
                          llama, arts)

    spec([6, -4]).check(llama, prompt_len=4, max_new_tokens=3)  # the 4 prompt + 3 new tokens' range
    for bad in ([7], [-5]):
        with pytest.raises(InputError, match=rf"interplab.interventions\[1\]: .*positions \{bad} out of range"):
            spec(bad).check(llama, prompt_len=4, max_new_tokens=3)


# -- encodings ----------------------------------------------------------------------------------
def test_list_and_base64_values_give_the_dict_form(llama, arts):
    value = torch.randn(3, HIDDEN)
    forms = [{"shape": [3, HIDDEN], "dtype": "float32", "data": value.flatten().tolist()},
             value.tolist(), {"safetensors_b64": b64_tensor(value)}]
    parsed = [parse_spec({"interventions": [{"op": "patch", "site": SITE, "positions": [0, 1, 2], "value": f}]},
                         llama, arts).interventions[0] for f in forms]
    for iv in parsed:
        assert iv.to_dict() == parsed[0].to_dict()
        assert torch.equal(iv.value, value)
    half = decode_value({"safetensors_b64": b64_tensor(value.half())}, "v")
    assert torch.equal(half, value.half())
    two = base64.b64encode(save({"a": value, "b": value.clone()})).decode()
    with pytest.raises(InputError, match=r"v.safetensors_b64 must hold exactly one tensor; it holds 2: \['a', 'b'\]"):
        decode_value({"safetensors_b64": two}, "v")


def test_named_vectors_steer_at_their_sites(llama, arts):
    spec = parse_spec({"interventions": [{"op": "steer", "vector_name": "both", "scale": 2.0},
                                         _steer(site="L0.resid_pre", vector_name="up", positions=[1])]},
                      llama, arts)
    assert spec.origins == [0, 0, 1]
    both = arts.vectors["both"]
    assert [str(iv.site) for iv in spec.interventions] == ["L0.resid_post", SITE, "L0.resid_pre"]
    assert torch.equal(spec.interventions[1].vector, both.vectors[llama.site(SITE)])
    assert spec.interventions[2].positions == (1,) and spec.interventions[0].scale == 2.0
    unsteered = spec.unsteered()
    assert unsteered.interventions == [] and spec.interventions  # the flag's baseline is a copy
    assert parse_spec({"compare_unsteered": True}, llama, arts).compare_unsteered


# -- feature clamping ---------------------------------------------------------------------------
def test_clamping_a_latent_to_its_own_value_changes_nothing(model, family, artifact_dirs):
    arts = Artifacts.load(model, **artifact_dirs)
    sae = arts.dictionaries["sae"]
    ids = tokens(1, 6, seed=4)
    logits, cache = model.run_with_cache(ids, [SITE])
    act = cache[SITE][0]
    z = sae.encode(act).detach()
    p = 3
    latent = int(z[p].argmax())
    own = float(z[p, latent])

    def clamp(value, positions=(p,)):
        body = {"interventions": [{"op": "clamp_feature", "dictionary": "sae", "latent": latent,
                                   "value": value, "positions": list(positions)}]}
        return parse_spec(body, model, arts).interventions

    same, _ = model.run_with_cache(ids, [SITE], clamp(own))
    assert (same - logits).abs().max() <= 1e-5
    moved, moved_cache = model.run_with_cache(ids, [SITE], clamp(own + 5.0))
    assert (moved - logits).abs().max() > 1e-3
    # the edit is x + decode(z') - decode(z) at the clamped token only: the error term is kept
    z_new = z[p].clone()
    z_new[latent] = own + 5.0
    expect = act.clone()
    expect[p] = act[p] + (sae.decode(z_new) - sae.decode(z[p])).detach()
    torch.testing.assert_close(moved_cache[SITE][0], expect, atol=1e-5, rtol=0)
    assert isinstance(clamp(1.0)[0], ClampFeature)


# -- internals equal the library's own computations ---------------------------------------------
def test_engine_internals_equal_the_library(model, family, artifact_dirs):
    arts = Artifacts.load(model, **artifact_dirs)
    last = f"L{family.n_layers - 1}.resid_post"
    value = torch.randn(2, HIDDEN, generator=torch.Generator().manual_seed(1))
    body = {"interventions": [{"op": "steer", "vector_name": "up", "scale": 3.0},
                              {"op": "patch", "site": "L0.resid_pre", "positions": [0, 1],
                               "value": {"safetensors_b64": b64_tensor(value)}},
                              {"op": "clamp_feature", "dictionary": "sae", "latent": 7, "value": 2.0}],
            "return": {"activations": {"sites": ["L0.attn.z", SITE], "positions": "all"},
                       "features": {"dictionary": "sae", "k": 3, "positions": "generated"},
                       "probes": ["p"],
                       "logit_lens": {"sites": [last, "L0.resid_post"], "k": 4, "positions": [0, -1, 7]}}}
    spec = parse_spec(body, model, arts)
    assert spec.capture == list(dict.fromkeys(model.site(s) for s in ("L0.attn.z", SITE, last, "L0.resid_post")))
    prompt = tokens(5, seed=2).tolist()
    spec.check(model, len(prompt), 3)
    engine = Engine(model, max_batch=2)
    try:
        finished = engine.submit(GenRequest(prompt, 3, spec.interventions, capture=spec.capture)).result(timeout=60)
    finally:
        engine.close()
    out = internals(spec, finished, model, arts, len(prompt))
    assert json.loads(json.dumps(out, allow_nan=False)) == out  # plain JSON, no NaN
    seq = finished.tokens[:-1]
    assert out["tokens"] == finished.tokens and out["recorded_tokens"] == len(seq) == 7
    logits, cache = model.run_with_cache(torch.tensor([seq]), spec.capture, spec.interventions)
    for site in ("L0.attn.z", SITE):
        got = out["activations"][site]
        assert got["positions"] == list(range(7))
        t = torch.tensor(got["data"]).reshape(got["shape"])
        torch.testing.assert_close(t, cache[site][0].float(), atol=2e-4, rtol=0)
    acts = finished.activations
    sae = arts.dictionaries["sae"]
    top = sae.encode(acts[model.site(SITE)][5:7].float()).topk(3)
    assert out["features"]["sae"]["positions"] == [5, 6]
    assert out["features"]["sae"]["indices"] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor(out["features"]["sae"]["values"]), top.values.detach())
    scores = arts.probes["p"].score(acts[model.site(SITE)])
    torch.testing.assert_close(torch.tensor(out["probes"]["p"]["scores"], dtype=torch.float64), scores)
    lens = out["logit_lens"][last]
    assert lens["positions"] == [0, 4]  # -1 is the prompt's last token; 7 was never computed
    own = logits[0, [0, 4]].float().softmax(-1).topk(4)  # the last layer's lens is the model itself
    assert lens["ids"] == own.indices.tolist()
    torch.testing.assert_close(torch.tensor(lens["probs"]), own.values, atol=1e-4, rtol=0)


def test_reductions_formats_and_token_strings(tiny, tmp_path):
    arts = Artifacts.load(tiny, **_save_artifacts(tmp_path, tiny.dims.d_model))
    prompt = tiny.tokenizer("hello world")["input_ids"]
    sites = {"sites": [SITE]}
    spec = parse_spec({"return": {"logit_lens": {"sites": [SITE], "k": 2}}}, tiny, arts)
    engine = Engine(tiny)
    try:
        finished = engine.submit(GenRequest(prompt, 2, capture=[tiny.site(SITE)])).result(timeout=60)
    finally:
        engine.close()
    act = finished.activations[tiny.site(SITE)]
    out = {}
    for reduce in ("none", "mean", "last"):
        for fmt in ("json", "safetensors_b64"):
            body = {"return": {"activations": {**sites, "positions": "prompt", "reduce": reduce, "format": fmt}}}
            got = internals(parse_spec(body, tiny, arts), finished, tiny, arts, len(prompt))["activations"][SITE]
            assert got["positions"] == list(range(len(prompt)))
            out[reduce, fmt] = decode_value({k: v for k, v in got.items() if k != "positions"}, "x")
    prompt_acts = act[: len(prompt)]
    for fmt in ("json", "safetensors_b64"):
        torch.testing.assert_close(out["none", fmt], prompt_acts)
        torch.testing.assert_close(out["mean", fmt], prompt_acts.mean(0))
        torch.testing.assert_close(out["last", fmt], prompt_acts[-1])
    lens = internals(spec, finished, tiny, arts, len(prompt))["logit_lens"][SITE]
    assert lens["tokens"] == [[tiny.tokenizer.decode([i]) for i in row] for row in lens["ids"]]
    assert internals(RequestSpec(), finished, tiny, arts, len(prompt)) == {
        "tokens": finished.tokens, "prompt_tokens": len(prompt), "recorded_tokens": len(finished.tokens) - 1}


def test_the_lens_ignores_hooks_another_thread_holds(model):
    """The server reads the lens in a request thread while the engine's forward may hold hooks on
    the final norm and unembedding: they must not fire on (record or edit) the lens."""
    from interplab.analyses.logit_lens import lens_logits
    from interplab.interventions import Ablate

    resid = torch.randn(3, HIDDEN, generator=torch.Generator().manual_seed(5))
    free = lens_logits(model, resid)
    with model.attached([Ablate("ln_final"), Ablate("logits")]):
        torch.testing.assert_close(lens_logits(model, resid), free, atol=0, rtol=0)
