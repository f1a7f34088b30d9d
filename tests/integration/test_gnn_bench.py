"""GNN explanation methods and the ``gnn`` bench suite on the shipped BA-Shapes GCN and
BA-2Motifs GIN: exact patching's batched copies equal ablating one node or edge in the graph
alone; nothing outside a node's computation graph moves its logit; attribution is patching's
first-order estimate; integrated gradients are complete; AUROCs against the planted motifs, with
their nulls, pass counts and the SAE / probe rows."""

from __future__ import annotations

import math

import pytest
import torch

from interplab.groundtruth import gnn_bench
from interplab.groundtruth import gnn_methods as gm
from interplab.groundtruth.gnn_models import load_gnn, random_init
from interplab.runtime.generic import Ablate, HookedModule
from interplab.stats.auroc import auroc


@pytest.fixture(scope="module")
def motifs():
    model, ds = load_gnn("ba_2motifs")
    return model, ds, HookedModule(model, gm.sites_of(model))


@pytest.fixture(scope="module")
def shapes():
    model, ds = load_gnn("ba_shapes")
    return model, ds, HookedModule(model, gm.sites_of(model))


def target_of(model, ds, i):
    t = ds.truth(i)
    data = ds.graphs[t.graph]
    return gm.Target(data, t.node, gm.predicted(model, data, t.node)), t


def alone(hm, target, interventions):
    """The explained logit with ``interventions`` on the graph alone (no copies)."""
    data = target.data
    with torch.no_grad():
        if target.node is None:
            out = hm.run(data.x, data.edge_index, batch=torch.zeros(data.num_nodes, dtype=torch.long),
                         interventions=interventions)
        else:
            out = hm.run(data.x, data.edge_index, interventions=interventions)
    return float(gm.logit_fn(hm.module, target)(out))


@pytest.mark.parametrize("which", ["motifs", "shapes"])
def test_batched_patching_equals_ablating_in_the_graph_alone(which, request):
    model, ds, hm = request.getfixturevalue(which)
    target, _ = target_of(model, ds, int(ds.explained()[0]))
    scores = gm.patch(hm, target, chunk=16)
    clean = alone(hm, target, [])
    nodes, edges = gm.computation_graph(target, len(model.convs))
    for j in nodes[:6]:
        ablated = alone(hm, target, [Ablate(s, rows=[j]) for s in gm.node_sites(hm)])
        assert math.isclose(scores.nodes[j], clean - ablated, abs_tol=1e-5)
    for e in edges[:6]:
        ablated = alone(hm, target, [Ablate(s, rows=[e]) for s in gm.edge_sites(hm)])
        assert math.isclose(scores.edges[e], clean - ablated, abs_tol=1e-5)


def test_nothing_outside_a_nodes_computation_graph_moves_its_logit(shapes):
    model, ds, hm = shapes
    target, _ = target_of(model, ds, int(ds.explained()[0]))
    nodes, _ = gm.computation_graph(target, len(model.convs))
    outside = sorted(set(range(target.data.num_nodes)) - set(nodes))
    assert outside  # the 3-hop neighbourhood is not the whole graph here
    clean = alone(hm, target, [])
    for j in outside[:5]:
        assert alone(hm, target, [Ablate(s, rows=[j]) for s in gm.node_sites(hm)]) == clean


def test_attribution_is_patchings_first_order_estimate(motifs):
    model, ds, hm = motifs
    target, _ = target_of(model, ds, int(ds.explained()[0]))
    exact, estimate = gm.patch(hm, target), gm.attribute(hm, target)
    r = torch.corrcoef(torch.stack([exact.nodes, estimate.nodes]))[0, 1]
    assert r > 0.8  # same sign convention (clean − ablated), close to first order (0.88 on this graph)
    assert estimate.forward == 1 and estimate.backward == 1


def test_integrated_gradients_are_complete(motifs):
    """∑ over nodes = f(x) − f(0 features); ∑ over edges = f − f(every message zeroed) (GIN: no
    self-loop messages, so every message is an edge's)."""
    model, ds, hm = motifs
    target, _ = target_of(model, ds, int(ds.explained()[1]))
    scores = gm.ig(hm, target, steps=64)
    clean = alone(hm, target, [])
    no_features = alone(hm, target, [Ablate("x")])
    no_messages = alone(hm, target, [Ablate(s) for s in gm.edge_sites(hm)])
    assert math.isclose(float(scores.nodes.sum()), clean - no_features, rel_tol=0.05, abs_tol=0.05)
    assert math.isclose(float(scores.edges.sum()), clean - no_messages, rel_tol=0.05, abs_tol=0.05)


def test_instance_auroc_ranks_magnitudes_over_the_candidates_and_says_when_undefined():
    truth = torch.tensor([True, False, True, False, False])
    scores = torch.tensor([-3.0, 0.5, 2.0, -1.0, 0.0])
    assert gnn_bench.instance_auroc(scores, truth, [0, 1, 2, 3, 4]) == float(auroc(scores.abs(), truth))
    assert gnn_bench.instance_auroc(scores, truth, [0, 2]) is None  # one class only
    assert gnn_bench.instance_auroc(None, truth, [0, 1]) is None


@pytest.fixture(scope="module")
def small_rows(monkeypatch_module):
    monkeypatch_module.setattr(gnn_bench, "sizes", lambda quick: {
        "ba_shapes": 4, "ba_2motifs": 10, "epochs": 20, "pg_epochs": 3, "pg_train": 6, "ig_steps": 8})
    return gnn_bench.explanation_rows(True, 1)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_the_suite_scores_every_method_with_a_null_and_its_passes(small_rows):
    by = {(r.model.split(" ")[0], r.method, r.metric): r for r in small_rows}
    for dataset in ("BA-Shapes", "BA-2Motifs"):
        for method in gm.METHODS:
            name = gnn_bench.METHOD_NAMES[method]
            metrics = ["edge AUROC"] if method == "pgexplainer" else ["node AUROC", "edge AUROC"]
            for metric in metrics:
                r = by[(dataset, name, metric)]
                assert 0.0 <= r.score <= 1.0 and r.null is not None and 0.0 <= r.null <= 1.0
                assert r.low <= r.score <= r.high and r.passes
    # the motif is what the GIN reads (test_gnn_groundtruth): exact patching finds it, far above its null
    exact = by[("BA-2Motifs", gnn_bench.METHOD_NAMES["patch"], "node AUROC")]
    assert exact.score >= 0.95 and exact.null < 0.8


def test_the_sae_and_probe_rows(monkeypatch):
    rows = gnn_bench.sae_and_probe_rows(True, 1)
    assert [r.metric for r in rows][:4] == [f"best latent |r|: {m}" for m in ("in a house", "under the roof",
                                                                              "floor", "apex")]
    for r in rows:
        assert 0.0 <= r.score <= 1.0 and r.null is not None
    probe = rows[-1]
    assert probe.score > 0.95 and probe.score > probe.null


def test_random_init_is_the_null_model():
    a, b = random_init("ba_2motifs", seed=0), random_init("ba_2motifs", seed=0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
