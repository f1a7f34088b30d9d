"""The circuit graph's nodes, edges and names (no model), the AUROC and the config checks."""

from __future__ import annotations

import pytest
import torch

from interplab.analyses.circuits import (
    ACDCConfig,
    CircuitGraph,
    EAPConfig,
    EdgeScores,
    ExactConfig,
    FaithfulnessConfig,
    edge_auroc,
    node_auroc,
)
from interplab.analyses.circuits.faithfulness import log_sizes
from interplab.core.errors import ConfigError, InputError
from interplab.groundtruth.truth import Truth


def _n_edges(n_layers, n_heads, mlp, parallel=False):
    total, senders = 0, 1
    for _ in range(n_layers):
        total += 3 * n_heads * senders
        if mlp:
            total += senders if parallel else senders + n_heads
        senders += n_heads + int(mlp)
    return total + senders


@pytest.mark.parametrize("mlp,parallel", [(False, False), (True, False), (True, True)])
def test_counts_and_order(mlp, parallel):
    g = CircuitGraph.build(2, 3, mlp, parallel)
    assert g.n_edges == _n_edges(2, 3, mlp, parallel) == len(set(g.edges))
    mlps = ["mlp0", "mlp1"] if mlp else []
    assert g.nodes == ("embed", "L0.h0", "L0.h1", "L0.h2", *mlps[:1], "L1.h0", "L1.h1", "L1.h2",
                       *mlps[1:], "logits")
    # every receiver's edges are a contiguous block starting at its index
    for r in g.receivers:
        block = g.edges[r.start : r.start + r.n_senders]
        assert all(e[1] == r.node and (e[2:] == ((r.input,) if r.input else ())) for e in block)
    assert g.receivers[-1].name == "logits" and g.receivers[0].name == "L0.h0.q"


def test_attention_only_two_layers_exact_names():
    g = CircuitGraph.build(2, 2, has_mlp=False)
    # 6 edges into layer 0 (embed -> q/k/v of 2 heads), 2 * 3 * 3 into layer 1, 5 into logits
    assert g.n_edges == 6 + 18 + 5
    assert g.edges[:3] == (("embed", "L0.h0", "q"), ("embed", "L0.h0", "k"), ("embed", "L0.h0", "v"))
    assert ("L0.h1", "L1.h0", "k") in g.edges and ("L1.h1", "L1.h0", "q") not in g.edges
    assert g.edges[-5:] == tuple((s, "logits") for s in ("embed", "L0.h0", "L0.h1", "L1.h0", "L1.h1"))


def test_mlp_senders_sequential_vs_parallel():
    seq, par = CircuitGraph.build(1, 2, True), CircuitGraph.build(1, 2, True, parallel=True)
    assert ("L0.h1", "mlp0") in seq.edges and ("L0.h1", "mlp0") not in par.edges
    assert ("embed", "mlp0") in par.edges and ("mlp0", "logits") in par.edges


def test_truth_names_score_against_the_graph():
    g = CircuitGraph.build(2, 2, has_mlp=False)
    truth = Truth(nodes=("embed", "L0.h1", "L1.h1", "logits"),
                  edges=(("embed", "L0.h1", "q"), ("L0.h1", "L1.h1", "k"), ("L1.h1", "logits")))
    labels = g.labels(truth.edges)
    assert sum(labels) == 3
    with pytest.raises(ConfigError, match="not in this graph"):
        g.labels([("L1.h1", "L0.h1", "q")])


def _scores(values, g):
    v = torch.tensor(values, dtype=torch.float32)
    return EdgeScores("exact", g.edges, v, v[None], "logit_diff", "zero", True, 1, 0, 0.0)


def test_auroc_is_exact_mann_whitney_with_ties():
    g = CircuitGraph.build(1, 1, has_mlp=False)  # edges: embed->q,k,v ; embed,L0.h0 -> logits
    assert g.n_edges == 5
    truth = [("embed", "L0.h0", "v"), ("L0.h0", "logits")]
    # truth scores -3, -2 (|.| 3, 2); others -1, 0, -2 : pairs (3>1,3>0,3>2, 2>1,2>0,2=2) = 5.5/6
    s = _scores([-1.0, 0.0, -3.0, -2.0, -2.0], g)
    assert edge_auroc(s, truth) == pytest.approx(5.5 / 6)
    assert edge_auroc(s, truth, "signed") == pytest.approx(5.5 / 6)  # higher is better: -score
    assert edge_auroc(_scores([1.0, 1.0, 1.0, 1.0, 1.0], g), truth) == 0.5
    assert node_auroc(s, ["embed", "logits"]) != node_auroc(s, ["embed", "logits"])  # nan: 1 class
    with pytest.raises(InputError, match="not in the graph"):
        edge_auroc(s, [("L3.h0", "logits")])


def test_log_grid_and_configs_refuse_bad_values():
    assert log_sizes(81) == (1, 2, 4, 8, 16, 32, 64, 81)
    assert log_sizes(8) == (1, 2, 4, 8)
    with pytest.raises(ConfigError, match="Unknown edge ablation 'resample'"):
        ExactConfig(ablation="resample")
    with pytest.raises(ConfigError, match="steps must be >= 0"):
        EAPConfig(steps=-1)
    with pytest.raises(ConfigError, match="Unknown edge ordering"):
        FaithfulnessConfig(ordering="random")
    with pytest.raises(ConfigError, match="threshold"):
        ACDCConfig(threshold=-1.0)
    with pytest.raises(ConfigError, match="n_layers >= 1"):
        CircuitGraph.build(0, 2, False)


# -- grouped-query attention ----------------------------------------------------------------------
def _n_edges_gqa(n_layers, n_heads, n_kv, mlp):
    total, senders = 0, 1
    for _ in range(n_layers):
        total += (n_heads + 2 * n_kv) * senders  # q per query head, k / v per KV head
        if mlp:
            total += senders + n_heads
        senders += n_heads + int(mlp)
    return total + senders


@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_gqa_receivers_are_q_per_query_head_and_k_v_per_kv_head(n_kv):
    g = CircuitGraph.build(2, 4, True, n_kv_heads=n_kv)
    assert (g.n_kv_heads, g.group) == (n_kv, 4 // n_kv)
    assert g.n_edges == _n_edges_gqa(2, 4, n_kv, True) == len(set(g.edges))
    heads = [r for r in g.receivers if r.kind == "head" and r.layer == 1]
    assert [r.name for r in heads if r.input == "q"] == [f"L1.h{h}.q" for h in range(4)]
    kv = [r for r in heads if r.input != "q"]
    firsts = [f"L1.h{kv_head * g.group}" for kv_head in range(n_kv)]
    assert [r.name for r in kv] == [f"{f}.{i}" for f in firsts for i in "kv"]
    assert [r.site_head for r in kv] == [h for h in range(n_kv) for _ in "kv"]
    assert [g.kv_node(1, h) for h in range(4)] == [firsts[h // g.group] for h in range(4)]
    assert g.reader_nodes(kv[-1]) == [f"L1.h{h}" for h in range(4 - g.group, 4)]
    assert g.reader_nodes(heads[0]) == ["L1.h0"] and g.reader_nodes(g.receivers[-1]) == []


def test_gqa_without_grouping_is_the_mha_graph():
    assert CircuitGraph.build(2, 3, True, n_kv_heads=3) == CircuitGraph.build(2, 3, True)
    assert CircuitGraph.build(2, 3, True).n_kv_heads == 3


def test_gqa_truth_names_a_kv_head_by_its_groups_first_query_head():
    g = CircuitGraph.build(2, 4, False, n_kv_heads=2)
    truth = Truth(nodes=("embed", "L0.h1", "L1.h2", "L1.h3", "logits"),
                  edges=(("L0.h1", "L1.h2", "k"), ("L0.h1", "L1.h3", "q"), ("L1.h3", "logits")))
    assert sum(g.labels(truth.edges)) == 3
    with pytest.raises(ConfigError, match=r"named after its group's first query head.*'L0.h0', 'k'"):
        g.edge_index(("L0.h1", "L1.h3", "k"))  # L1.h3 reads the k of KV head 1, named L1.h2
    with pytest.raises(ConfigError, match="n_kv_heads must divide n_heads"):
        CircuitGraph.build(2, 4, False, n_kv_heads=3)
