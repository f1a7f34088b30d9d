"""Planted models reproduce their programs exactly on their whole test domains; truths round-trip
through JSON and refuse graphs the model does not have (pinned messages)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from interplab.core.dims import ModelDims
from interplab.core.errors import ConfigError, SiteError
from interplab.core.sites import Site, SiteKind
from interplab.groundtruth.planted import (
    induction_domain,
    induction_model,
    induction_program,
    induction_task,
    reproduce,
    reproduce_domain,
    successor_model,
    successor_program,
)
from interplab.groundtruth.truth import Truth, node_site

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the programs --------------------------------------------------------------------------------
def test_induction_program():
    assert induction_program([0, 3, 4, 5, 3, 4, 5]) == [None, None, None, None, 4, 5, 3]
    assert induction_program([0, 2, 2]) == [None, None, 2]
    assert induction_program([0, 1, 2, 1, 3, 1]) == [None, None, None, 2, None, 3]  # most recent


def test_successor_program():
    assert successor_program([0, 3, 7], 8) == [1, 4, 0]


def test_induction_domain_is_every_repeated_permutation():
    dom = induction_domain(5, 2)
    assert dom.shape == (4 * 3, 5)
    assert len({tuple(r) for r in dom.tolist()}) == 12
    assert (dom[:, 0] == 0).all() and torch.equal(dom[:, 1:3], dom[:, 3:5])


# -- exact on the whole test domain ----------------------------------------------------------------
@pytest.mark.parametrize("n_distractors", [0, 2, 5])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_induction_exact_on_whole_domain(m, n_distractors):
    planted = induction_model(vocab=8, n_ctx=9, n_distractors=n_distractors, m=m)
    result = reproduce_domain(planted)
    n_prompts = math.perm(7, m)
    assert result.n_prompts == n_prompts
    assert result.n_checked == n_prompts * m  # every position of the second half
    assert result.exact, result.failures


def test_induction_exact_on_a_larger_vocabulary_exhaustively():
    """vocab 16, m = 4: all 32,760 prompts, 131,040 claimed positions."""
    planted = induction_model(vocab=16, n_ctx=9, n_distractors=3)
    result = reproduce_domain(planted)
    assert result.n_checked == math.perm(15, 4) * 4
    assert result.exact, result.failures


def test_induction_task_long_prompts():
    """Longer contexts than can be enumerated: a random sample of 200 prompts of 41 tokens."""
    planted = induction_model(vocab=40, n_ctx=41, n_distractors=2)
    task = induction_task(vocab=40, n_ctx=41, n=200, seed=1)
    assert task.tokens.shape == (200, 41)
    assert torch.equal(task.answers, torch.tensor([induction_program(r)[-1] for r in task.tokens.tolist()]))
    assert reproduce(planted.model, task.tokens, planted.program).exact
    assert torch.equal(planted.model(task.tokens).logits[:, -1].argmax(-1), task.answers)


@pytest.mark.parametrize(("vocab", "length"), [(8, 3), (16, 2), (5, 5)])
def test_successor_exact_on_whole_domain(vocab, length):
    planted = successor_model(vocab=vocab, n_ctx=8, length=length)
    result = reproduce_domain(planted)
    assert result.n_prompts == vocab ** length
    assert result.n_checked == vocab ** length * length
    assert result.exact, result.failures


def test_planted_models_are_deterministic_and_untrained():
    a, b = induction_model(), induction_model()
    assert a.model.state_dict().keys() == b.model.state_dict().keys()
    assert all(torch.equal(a.model.state_dict()[k], b.model.state_dict()[k]) for k in a.model.state_dict())
    assert a.model.config.normalization == "none" and a.model.config.d_mlp == 0
    assert not any(p.requires_grad for p in a.model.parameters())


def test_a_broken_model_is_caught():
    planted = induction_model()
    with torch.no_grad():
        planted.model.model.layers[1].self_attn.o_proj.weight.zero_()
    result = reproduce_domain(planted)
    assert not result.exact and result.accuracy < 0.5
    assert len(result.failures) == 10


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match=r"induction_model needs vocab >= 3, 1 <= m <= vocab - 1, "
                                          r"2m \+ 1 <= n_ctx"):
        induction_model(vocab=8, n_ctx=9, m=5)
    with pytest.raises(ConfigError, match="successor_model needs"):
        successor_model(vocab=8, n_ctx=2, length=3)


# -- truths ---------------------------------------------------------------------------------------
def test_truths_of_the_planted_models():
    ind = induction_model(n_distractors=2).truth
    assert ind.nodes == ("embed", "L0.h1", "L1.h1", "logits")
    assert ("L0.h1", "L1.h1", "k") in ind.edges and ("embed", "L1.h1", "q") in ind.edges
    assert ind.heads() == [(0, 1), (1, 1)]
    assert induction_model(n_distractors=0).truth.heads() == [(0, 0), (1, 0)]
    succ = successor_model().truth
    assert succ.nodes == ("embed", "mlp0", "logits")
    assert succ.sites() == [Site(None, SiteKind.EMBED), Site(0, SiteKind.MLP_OUT),
                            Site(None, SiteKind.LOGITS)]
    assert node_site("L1.h3") == Site(1, SiteKind.Z, 3)


def test_truth_json_round_trip():
    for truth in (induction_model().truth, successor_model().truth):
        again = Truth.from_json(truth.to_json())
        assert again == truth
        assert isinstance(again.edges[0], tuple)


def test_truth_refuses_malformed_graphs():
    with pytest.raises(ConfigError, match=re.escape("Unknown truth node 'head3'. Nodes are 'embed', "
                                                    "'logits', 'L<layer>.h<head>'")):
        Truth(("embed", "head3"), ())
    with pytest.raises(ConfigError, match=re.escape("Truth edge ('embed', 'mlp1') names ['mlp1'], "
                                                    "which are not among the nodes")):
        Truth(("embed", "mlp0"), (("embed", "mlp1"),))
    with pytest.raises(ConfigError, match="an input is given only into a head"):
        Truth(("embed", "mlp0"), (("embed", "mlp0", "q"),))
    with pytest.raises(ConfigError, match="runs backwards"):
        Truth(("embed", "logits"), (("logits", "embed"),))
    with pytest.raises(ConfigError, match=re.escape("Unknown truth fields ['extra']")):
        Truth.from_dict({"nodes": [], "edges": [], "extra": 1})


def test_check_against_names_what_the_model_lacks():
    dims = ModelDims(n_layers=2, d_model=64, n_heads=3, n_kv_heads=3, d_head=16, d_mlp=0, d_vocab=8)
    induction_model(n_distractors=2).truth.check_against(dims)  # 3 heads, 2 layers: fits
    with pytest.raises(SiteError, match=re.escape(
            "Truth node 'L0.h5' names head 5, but the model has 3 heads per layer (valid: 0..2); "
            "this truth belongs to another model.")):
        Truth(("embed", "L0.h5"), (("embed", "L0.h5", "v"),)).check_against(dims)
    with pytest.raises(SiteError, match=re.escape(
            "Truth node 'L2.h0' is in layer 2, but the model has 2 layers (valid: 0..1)")):
        Truth(("L2.h0",), ()).check_against(dims)
    with pytest.raises(SiteError, match=re.escape(
            "Truth node 'mlp0' names an MLP, but the model is attention-only (d_mlp=0).")):
        successor_model().truth.check_against(dims)
