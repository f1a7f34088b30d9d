import pytest
import torch

from interplab.core.errors import InterventionError, PositionError
from interplab.core.sites import Site
from interplab.interventions import Ablate, Apply, Intervention, Patch, Steer, from_json, to_json
from interplab.runtime.context import CheckInfo, ForwardContext

INFO = CheckInfo(Site.parse("L0.resid_pre"), (8,), 3, (5, 4, 6), (5, 4, 6))


def _ctx():
    # Row 1 is left-padded by two tokens; row 2 by one.
    positions = torch.tensor([[0, 1, 2, 3, 4], [-1, 0, 1, 2, 3], [0, 1, 2, 3, 4]])
    return ForwardContext(positions, torch.tensor([5, 4, 5]))


def test_json_round_trip_keeps_every_field_and_tensor():
    specs = [
        Patch("L0.resid_pre", value=torch.randn(2, 8), positions=[0, -1], rows=[1]),
        Ablate("L1.attn.z[h2]", mode="resample", value=torch.randn(4, 8), seed=3),
        Ablate("L1.mlp_out", mode="zero"),
        Steer("L0.resid_post", vector=torch.randn(8), scale=-2.5, positions=[-1]),
    ]
    back = from_json(to_json(specs))
    for a, b in zip(specs, back):
        assert type(a) is type(b)
        assert a.to_dict() == b.to_dict()
    assert torch.equal(back[0].value, specs[0].value)
    assert back[0].site == Site.parse("L0.resid_pre") and back[0].rows == (1,)


def test_callable_refuses_to_serialise():
    with pytest.raises(InterventionError, match="cannot be serialised"):
        Apply("L0.resid_pre", fn=lambda x: x).to_json()


def test_unknown_op_and_fields_are_named():
    with pytest.raises(InterventionError, match="Valid ops: 'ablate', 'apply', 'patch', 'steer'"):
        Intervention.from_dict({"op": "nudge", "site": "L0.resid_pre"})
    with pytest.raises(InterventionError, match="unknown fields"):
        Intervention.from_dict({"op": "ablate", "site": "L0.resid_pre", "strength": 2})
    with pytest.raises(InterventionError, match="Valid modes"):
        Ablate("L0.resid_pre", mode="shuffle")


def test_positions_follow_the_mask_and_rows_are_respected():
    act = torch.zeros(3, 5, 8)
    out = Steer("L0.resid_pre", vector=torch.ones(8), positions=[0, -1], rows=[1, 2])(act, _ctx())
    touched = out.abs().sum(-1) > 0
    expected = torch.zeros(3, 5, dtype=torch.bool)
    expected[1, [1, 4]] = True  # row 1: first real token is at index 1, last at 4
    expected[2, [0, 4]] = True
    assert torch.equal(touched, expected)


def test_per_row_per_position_values():
    act = torch.zeros(3, 5, 8)
    value = torch.arange(2 * 2 * 8, dtype=torch.float32).reshape(2, 2, 8)
    out = Patch("L0.resid_pre", value=value, positions=[1, 2], rows=[0, 2])(act, _ctx())
    assert torch.equal(out[0, 1], value[0, 0]) and torch.equal(out[0, 2], value[0, 1])
    assert torch.equal(out[2, 1], value[1, 0]) and torch.equal(out[2, 2], value[1, 1])
    assert out[1].abs().sum() == 0


def test_resample_is_deterministic_in_its_seed():
    pool = torch.randn(10, 8)
    act = torch.zeros(3, 5, 8)
    a = Ablate("L0.resid_pre", mode="resample", value=pool, seed=1)(act, _ctx())
    b = Ablate("L0.resid_pre", mode="resample", value=pool, seed=1)(act, _ctx())
    c = Ablate("L0.resid_pre", mode="resample", value=pool, seed=2)(act, _ctx())
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert all(any(torch.equal(a[1, 2], p) for p in pool) for _ in [0])


@pytest.mark.parametrize(
    "spec, error, message",
    [
        (Steer("L0.resid_pre", vector=torch.ones(7)), InterventionError, r"vector has shape \(7,\)"),
        (Patch("L0.resid_pre", value=torch.ones(3, 8), positions=[0, 1]), InterventionError,
         "gives 3 positions, but the intervention lists 2"),
        (Steer("L0.resid_pre", vector=torch.ones(8), positions=[4]), PositionError,
         r"positions \[4\] out of range for row 1, whose prompt has 4 tokens \(valid: -4..3\)"),
        (Steer("L0.resid_pre", vector=torch.ones(8), rows=[3]), PositionError,
         r"rows \[3\] out of range for a batch of 3"),
        (Ablate("L0.resid_pre", mode="resample", value=torch.ones(8)), InterventionError,
         "the pool has shape"),
    ],
)
def test_checks_explain_the_problem(spec, error, message):
    with pytest.raises(error, match=message):
        spec.check(INFO)
