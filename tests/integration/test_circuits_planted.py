"""Circuit discovery against the planted induction circuit (groundtruth.planted), whose
edges are known exactly: embed -> L0.h1 (q, k: positions; v: token), L0.h1 -> L1.h1.k,
embed -> L1.h1 (q, v), L1.h1 -> logits, among 3 distractor heads per layer.

Which ablation identifies it. Under **zero** ablation every truth edge breaks the task
(|effect| ~ 9-10 logits) and every other edge moves the logit difference by < 0.1 (distractors
write at most 0.5 x a token average to the logits), so exact patching separates them
perfectly. Under **corrupt** (or mean) ablation the previous-token head's q and k read only the
position embeddings, which clean and corrupt prompts share, so those two truth edges have
exactly zero effect: not identifiable by any method under that ablation.
"""

from __future__ import annotations

import pytest
import torch

from interplab.analyses.circuits import (
    ACDCConfig,
    CircuitGraph,
    CircuitTask,
    EAPConfig,
    ExactConfig,
    FaithfulnessConfig,
    acdc,
    auroc_ci_over_prompts,
    eap,
    edge_auroc,
    exact_edge_patching,
    faithfulness,
    node_auroc,
)
from interplab.groundtruth.planted import induction_model, induction_task
from interplab.models.toy import ToyForCausalLM
from interplab.runtime import HookedModel

VOCAB, N_CTX = 8, 9


@pytest.fixture(scope="module")
def planted():
    return induction_model(vocab=VOCAB, n_ctx=N_CTX, n_distractors=3)


@pytest.fixture(scope="module")
def task():
    clean = induction_task(VOCAB, N_CTX, 24, seed=1).tokens
    # corrupt: the repeated half replaced by other random tokens (no induction signal)
    g = torch.Generator().manual_seed(7)
    corrupt = clean.clone()
    corrupt[:, 5:] = torch.randint(1, VOCAB, (24, 4), generator=g)
    return CircuitTask(clean, answers=clean[:, 1], wrong=clean[:, 2], corrupt=corrupt)


@pytest.fixture(scope="module")
def hooked(planted):
    return HookedModel(planted.model)


@pytest.fixture(scope="module")
def exact_zero(hooked, task):
    return exact_edge_patching(hooked, task, ExactConfig(ablation="zero"))


def test_exact_patching_recovers_the_planted_edges_perfectly(planted, exact_zero):
    assert edge_auroc(exact_zero, planted.truth.edges) == 1.0
    assert edge_auroc(exact_zero, planted.truth.edges, "signed") == 1.0
    assert node_auroc(exact_zero, planted.truth.nodes) == 1.0
    top = set(exact_zero.top(len(planted.truth.edges)))
    assert top == set(planted.truth.edges)


def test_corrupt_ablation_cannot_see_the_positional_edges(planted, hooked, task):
    res = exact_edge_patching(hooked, task, ExactConfig(ablation="corrupt"))
    g = CircuitGraph.from_model(hooked)
    for inp in "qk":
        assert res.scores[g.edge_index(("embed", "L0.h1", inp))] == 0.0
    assert edge_auroc(res, planted.truth.edges) < 1.0


@pytest.mark.parametrize("metric", ["logit_diff", "loss"])
def test_eap_ig_recovers_the_planted_edges(planted, hooked, task, metric):
    res = eap(hooked, task, EAPConfig(ablation="zero", steps=5, metric=metric))
    est, lo, hi = auroc_ci_over_prompts(res, planted.truth.edges, n_resamples=200)
    print(f"EAP-IG (m=5, zero, {metric}) edge AUROC {est:.3f} [{lo:.3f}, {hi:.3f}], "
          f"{res.n_forward}F + {res.n_backward}B")
    assert est >= 0.95 and lo >= 0.9
    assert res.n_forward <= 2 + 5 and res.n_backward == 5


def test_eap_zero_gradient_failure_at_saturated_softmax(planted, hooked, task):
    """The planted heads' attention scores are ~20 apart: softmax saturated, so the gradient
    into their q / k (and into what feeds a key) is ~0 while ablating those edges costs the
    task. With the loss metric the distractors' small logit writes give the non-truth edges
    non-zero scores, so the failure shows in the ranking too."""
    g = CircuitGraph.from_model(hooked)
    first = eap(hooked, task, EAPConfig(ablation="zero", metric="loss"))
    exact = exact_edge_patching(hooked, task, ExactConfig(ablation="zero", metric="loss"))
    assert (first.n_forward, first.n_backward) == (1, 1)  # zero ablation: no corrupt run
    blind = [("embed", "L0.h1", "q"), ("embed", "L0.h1", "k"), ("embed", "L0.h1", "v"),
             ("L0.h1", "L1.h1", "k"), ("embed", "L1.h1", "q")]
    idx = [g.edge_index(e) for e in blind]
    assert first.scores[idx].abs().max() < 1e-6 and exact.scores[idx].abs().min() > 1.0
    others = [i for i, e in enumerate(g.edges) if e not in planted.truth.edges]
    assert first.scores[others].abs().max() > 1e-6  # non-truth edges outrank the blind ones
    eap_auc, exact_auc = edge_auroc(first, planted.truth.edges), edge_auroc(exact, planted.truth.edges)
    print(f"loss metric, zero ablation: EAP edge AUROC {eap_auc:.3f}, exact {exact_auc:.3f}")
    assert eap_auc < exact_auc == 1.0


def test_null_model_scores_near_chance(planted, task):
    values = []
    for seed in range(3):
        torch.manual_seed(seed)
        null = HookedModel(ToyForCausalLM(planted.model.config).eval())
        res = exact_edge_patching(null, task, ExactConfig(ablation="zero"))
        values.append(edge_auroc(res, planted.truth.edges))
    print(f"null edge AUROC per seed {[round(v, 3) for v in values]}")
    assert 0.2 <= sum(values) / len(values) <= 0.8


@pytest.mark.parametrize("metric,tau", [("kl", 0.5), ("logit_diff", 1.0)])
def test_acdc_recovers_the_truth(planted, hooked, task, metric, tau):
    res = acdc(hooked, task, ACDCConfig(threshold=tau, metric=metric, ablation="zero"))
    kept, truth = set(res.circuit), set(planted.truth.edges)
    precision, recall = len(kept & truth) / max(len(kept), 1), len(kept & truth) / len(truth)
    print(f"ACDC {metric} tau={tau}: precision {precision}, recall {recall}, "
          f"{res.n_forward} forwards ({res.n_tested} edges tested of {len(res.edges)})")
    assert kept == truth
    assert res.n_forward < len(res.edges) + 3


def test_faithfulness_of_the_exact_ordering(planted, hooked, task, exact_zero):
    res = faithfulness(hooked, task, exact_zero, FaithfulnessConfig(ablation="zero"))
    assert res.sizes[0] == 1 and res.sizes[-1] == len(exact_zero.edges)
    by_size = dict(zip(res.sizes, res.recovered.tolist()))
    assert by_size[8] >= 0.95 and by_size[4] < 0.5  # the 7 truth edges carry the task
    seven = faithfulness(hooked, task, exact_zero, FaithfulnessConfig(ablation="zero", sizes=(7,)))
    assert float(seven.recovered[0]) >= 0.95
