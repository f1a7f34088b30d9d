"""Interventions survive a JSON round trip: equal fields, equal tensors, identical effect."""

from __future__ import annotations

import json

import pytest
import torch

from interplab.core.errors import InterventionError
from interplab.interventions import Ablate, Apply, Intervention, Patch, Steer, from_json, to_json

from .families import left_pad, tokens


def _specs(family, cache):
    g = torch.Generator().manual_seed(9)
    dh = family.d_head
    return [
        Patch("L1.resid_pre", value=cache["L1.resid_pre"][:, 2:4], positions=[2, -1]),
        Patch("L0.attn.z[h2]", value=torch.randn(dh, generator=g), rows=[1]),
        Ablate("L0.attn_out", positions=[0]),
        Ablate("L1.mlp.hidden", mode="mean", value=torch.randn(128, generator=g), rows=[0, 1]),
        Ablate("L0.attn.v[h1]", mode="resample", value=torch.randn(6, dh, generator=g), seed=4),
        Steer("L0.resid_post", vector=torch.randn(64, generator=g).double(), scale=-2.5),
        Steer("L1.attn.q", vector=torch.randn(family.n_heads, dh, generator=g).bfloat16(),
              positions=[1], rows=[0]),
        Steer("embed", vector=torch.randn(10, 64, generator=g)),  # one per token, 7 + 3 new
    ]


def _equal(a: Intervention, b: Intervention) -> None:
    assert type(a) is type(b)
    for name in ("site", "positions", "rows", "mode", "seed", "scale"):
        assert getattr(a, name, None) == getattr(b, name, None), name
    for name in a.tensor_fields:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape
            assert torch.equal(x, y), name


def test_round_trip_each(model, family, ids):
    _, cache = model.run_with_cache(ids, ["L1.resid_pre"])
    for spec in _specs(family, cache):
        back = Intervention.from_json(spec.to_json())
        _equal(spec, back)
        assert json.loads(back.to_json()) == json.loads(spec.to_json())
        assert torch.equal(model.run(ids, [spec]), model.run(ids, [back])), spec.op


def test_round_trip_list_has_identical_effect(model, family, ids):
    _, cache = model.run_with_cache(ids, ["L1.resid_pre"])
    specs = _specs(family, cache)
    text = to_json(specs)
    back = from_json(text)
    assert len(back) == len(specs)
    for a, b in zip(specs, back):
        _equal(a, b)
    ours = model.run(ids, specs)
    assert not torch.equal(ours, model.run(ids))
    assert torch.equal(ours, model.run(ids, back))
    # and through generation
    a = model.generate(ids, max_new_tokens=3, interventions=specs[2:])
    b = model.generate(ids, max_new_tokens=3, interventions=from_json(to_json(specs[2:])))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logits, b.logits)


def test_round_trip_on_padded_batch(model, family):
    batch = left_pad([tokens(7, seed=60), tokens(4, seed=61)])
    _, cache = model.run_with_cache(tokens(2, 7), ["L1.resid_pre"])
    specs = _specs(family, cache)
    assert torch.equal(model.run(batch, specs), model.run(batch, from_json(to_json(specs))))


def test_json_is_plain_data():
    spec = Steer("L3.attn.z[h7]", vector=[1.0, 2.0], positions=-1, rows=[0, 2], scale=0.5)
    data = spec.to_dict()
    assert data == {
        "op": "steer", "site": "L3.attn.z[h7]", "positions": [-1], "rows": [0, 2],
        "vector": {"shape": [2], "dtype": "float32", "data": [1.0, 2.0]}, "scale": 0.5,
    }
    assert from_json(json.dumps(data))[0].to_dict() == data  # a single object is accepted too


def test_apply_does_not_serialise():
    with pytest.raises(InterventionError, match="wraps a Python callable and cannot be serialised"):
        Apply("L0.resid_pre", fn=lambda x: x).to_json()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"op": "scale", "site": "L0.resid_pre"}, "Unknown intervention op 'scale'. Valid ops:"),
        ({"op": "steer", "site": "L0.resid_pre", "vector": [1.0], "gain": 2},
         r"steer: unknown fields \['gain'\]"),
        ({"op": "ablate", "site": "L0.resid_pre", "mode": "half"}, "Unknown ablation mode 'half'"),
        ({"op": "patch", "site": "L0.resid_pre"}, "patch at L0.resid_pre needs a value tensor"),
    ],
)
def test_bad_json_is_refused(data, match):
    with pytest.raises(InterventionError, match=match):
        Intervention.from_dict(data)
