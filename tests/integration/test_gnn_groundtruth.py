"""GNNs with planted motifs (``groundtruth.gnn_data`` / ``gnn_models`` / ``gnn_train``; needs the
``gnn`` extra). The claims:

* BA-Shapes and BA-2Motifs are generated deterministically from their seed (and a different
  seed gives different graphs), leaving the caller's random state alone;
* their ground truth is right: every house is 5 nodes / 6 undirected edges (12 directed) with
  the house's shape and roles, every 5-cycle 5 nodes / 5 edges, the per-instance truth holds the
  explained node and lines up with ``edge_index``; the splits are disjoint, complete, stratified;
* the shipped models load (hash checked: a changed weights file is refused) and reach >= 0.95
  test accuracy, recomputed here; their decisions follow the motifs (swapping a house for a
  5-cycle flips the GIN, one base edge more or less does not; removing a node's own house
  changes the GCN's label for it, removing another house does not);
* the random-init null has the same architecture, other weights and near-chance accuracy;
* training is deterministic; without torch_geometric every entry point names the install.
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from interplab.core.artifacts import ArtifactError
from interplab.core.errors import ConfigError, InputError, MissingDependencyError
from interplab.groundtruth import gnn_data, gnn_models
from interplab.groundtruth.gnn_data import BA2MotifsConfig, BAShapesConfig, ba_2motifs, ba_shapes, gnn_dataset
from interplab.groundtruth.gnn_models import (
    DATA,
    GCN,
    GIN,
    SHIPPED,
    GCNConfig,
    GINConfig,
    accuracy,
    gnn_meta,
    load_gnn,
    random_init,
)
from interplab.groundtruth.gnn_train import GCNTrainConfig, GINTrainConfig, train_gcn, train_gin

pytestmark = pytest.mark.usefixtures("one_thread")

HOUSE_DEGREES = [2, 2, 2, 3, 3]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shapes():
    return load_gnn("ba_shapes")


@pytest.fixture(scope="module")
def motifs():
    return load_gnn("ba_2motifs")


def undirected(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in edge_index.t().tolist()}


def degrees(edges: set[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for a, b in edges:
        out[a], out[b] = out.get(a, 0) + 1, out.get(b, 0) + 1
    return out


def symmetric(edge_index: torch.Tensor) -> bool:
    pairs = set(map(tuple, edge_index.t().tolist()))
    return all((b, a) in pairs for a, b in pairs)


def same_graphs(a, b) -> bool:
    return len(a.graphs) == len(b.graphs) and all(
        torch.equal(getattr(g, k), getattr(h, k)) for g, h in zip(a.graphs, b.graphs)
        for k in ("x", "edge_index", "y", "node_mask", "edge_mask", "motif", "edge_motif")
    ) and all(torch.equal(getattr(a, s), getattr(b, s)) for s in ("train", "val", "test"))


# -- datasets -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [ba_shapes, ba_2motifs], ids=["ba_shapes", "ba_2motifs"])
def test_generation_is_deterministic_and_leaves_the_random_state(make, shapes, motifs):
    shipped = shapes[1] if make is ba_shapes else motifs[1]
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    again = make()
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert same_graphs(again, shipped)
    other = make((BAShapesConfig if make is ba_shapes else BA2MotifsConfig)(seed=1))
    assert not torch.equal(other.graphs[0].edge_index, shipped.graphs[0].edge_index)
    assert not torch.equal(other.test, shipped.test)


def test_ba_shapes_ground_truth(shapes):
    ds = shapes[1]
    assert ds.name == "ba_shapes" and ds.task == "node" and len(ds.graphs) == 1
    g = ds.graphs[0]
    assert g.num_nodes == 700 and g.x.shape == (700, 10) and bool((g.x == 1).all())
    assert g.node_mask.dtype == g.edge_mask.dtype == torch.bool
    assert g.y.bincount().tolist() == [300, 160, 160, 80] and ds.num_classes == 4
    assert torch.equal(g.node_mask, g.y > 0) and torch.equal(g.node_mask, g.motif >= 0)
    assert torch.equal(g.edge_mask, g.edge_motif >= 0)
    assert g.edge_mask.shape == (g.edge_index.shape[1],) and symmetric(g.edge_index)
    assert int(g.edge_mask.sum()) == 80 * 12
    src, dst = g.edge_index
    for k in range(80):
        nodes = (g.motif == k).nonzero().flatten()
        assert len(nodes) == 5
        inside = g.edge_motif == k
        assert int(inside.sum()) == 12 and symmetric(g.edge_index[:, inside])
        edges = undirected(g.edge_index[:, inside])
        assert len(edges) == 6
        deg = degrees(edges)
        assert sorted(deg.values()) == HOUSE_DEGREES
        role = {v: int(g.y[v]) for v in nodes.tolist()}
        assert sorted(role.values()) == [1, 1, 2, 2, 3]
        apex = next(v for v, r in role.items() if r == 3)
        assert deg[apex] == 2 and all(role[b if a == apex else a] == 1 for a, b in edges if apex in (a, b))
        assert {tuple(sorted(role[v] for v in e)) for e in edges} == {(1, 1), (1, 2), (2, 2), (1, 3)}
        # one undirected edge joins the house to the base graph
        leaving = (g.motif[src] == k) != (g.motif[dst] == k)
        assert int(leaving.sum()) == 2 and bool((g.motif[torch.cat([src[leaving], dst[leaving]])] <= k).all())
        assert int((g.motif[src[leaving]] == -1).sum()) == 1


def test_ba_shapes_instance_truth(shapes):
    ds = shapes[1]
    g = ds.graphs[0]
    explained = ds.explained("test")
    assert len(explained) == 40 and bool((g.y[explained] > 0).all())
    for v in explained.tolist():
        t = ds.truth(v)
        assert t.graph == 0 and t.node == v and t.node_mask[v] and len(t.nodes) == 5 and len(t.edges) == 12
        assert set(g.edge_index[:, t.edge_mask].flatten().tolist()) == set(t.nodes)
        # the masked edges are exactly the edges among the house's nodes
        among = t.node_mask[g.edge_index[0]] & t.node_mask[g.edge_index[1]]
        assert torch.equal(among, t.edge_mask)
        assert bool((g.node_mask | ~t.node_mask).all()) and bool((g.edge_mask | ~t.edge_mask).all())
    with pytest.raises(InputError, match="Node 0 is a base node of ba_shapes .* no ground-truth explanation"):
        ds.truth(0)
    with pytest.raises(InputError, match="Node 700 is not in ba_shapes"):
        ds.truth(700)


def test_ba_2motifs_ground_truth(motifs):
    ds = motifs[1]
    assert ds.name == "ba_2motifs" and ds.task == "graph" and len(ds.graphs) == 1000
    assert ds.labels().bincount().tolist() == [500, 500]
    for i, g in enumerate(ds.graphs):
        cls = int(g.y)
        assert g.num_nodes == 25 and g.x.shape == (25, 10) and symmetric(g.edge_index)
        assert g.node_mask.dtype == g.edge_mask.dtype == torch.bool
        assert g.node_mask.tolist() == [False] * 20 + [True] * 5
        assert int(g.edge_mask.sum()) == (12 if cls == 0 else 10)
        edges = undirected(g.edge_index[:, g.edge_mask])
        assert len(edges) == (6 if cls == 0 else 5) and {v for e in edges for v in e} == set(range(20, 25))
        assert sorted(degrees(edges).values()) == (HOUSE_DEGREES if cls == 0 else [2] * 5)
        among = g.node_mask[g.edge_index[0]] & g.node_mask[g.edge_index[1]]
        assert torch.equal(among, g.edge_mask)
        t = ds.truth(i)
        assert t.graph == i and t.node is None
        assert torch.equal(t.node_mask, g.node_mask) and torch.equal(t.edge_mask, g.edge_mask)
    # a 5-cycle is one cycle, not a triangle and a pair
    g = ds.graphs[ds.labels().tolist().index(1)]
    edges, seen, v = undirected(g.edge_index[:, g.edge_mask]), [20], 20
    while len(seen) < 5:
        v = next(b if a == v else a for a, b in edges if v in (a, b) and (b if a == v else a) not in seen)
        seen.append(v)
    assert (min(seen[0], seen[-1]), max(seen[0], seen[-1])) in edges
    batch = ds.batch([0, 999])
    assert batch.num_graphs == 2 and batch.node_mask.shape == (50,) and batch.edge_mask.shape == (batch.edge_index.shape[1],)


@pytest.mark.parametrize("name,sizes", [("ba_shapes", (560, 70, 70)), ("ba_2motifs", (800, 100, 100))])
def test_splits_are_disjoint_complete_and_stratified(name, sizes, shapes, motifs):
    ds = shapes[1] if name == "ba_shapes" else motifs[1]
    parts = [ds.split(s) for s in ("train", "val", "test")]
    assert tuple(len(p) for p in parts) == sizes
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(sum(sizes)))
    y = ds.labels()
    for p, share in zip(parts, (0.8, 0.1, 0.1)):
        assert (y[p].bincount(minlength=ds.num_classes) - share * y.bincount()).abs().max() <= 1
    with pytest.raises(InputError, match="Unknown split 'dev'"):
        ds.split("dev")


# -- the shipped models -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ba_shapes", "ba_2motifs"])
def test_shipped_models_are_accurate(name, shapes, motifs):
    model, ds = shapes if name == "ba_shapes" else motifs
    meta = gnn_meta(name)
    assert meta["seed"] == 0 and meta["data_seed"] == 0 and len(meta["sha256"]) == 64
    assert set(meta["versions"]) >= {"torch", "torch_geometric"}
    assert type(model) is (GCN if name == "ba_shapes" else GIN) and not model.training
    test = accuracy(model, ds, "test")
    assert test >= 0.95  # measured 1.000 on both
    assert abs(test - meta["metrics"]["test_accuracy"]) <= 0.02
    assert accuracy(model, ds, "train") >= 0.95


def test_module_names_and_forward_signatures(shapes, motifs):
    gcn, ds = shapes
    names = dict(gcn.named_modules())
    assert {"convs.0", "convs.1", "convs.2", "acts.0", "acts.1", "acts.2", "head"} <= set(names)
    g = ds.graphs[0]
    with torch.no_grad():
        logits = gcn(g.x, g.edge_index)
        assert logits.shape == (700, 4)
        torch.testing.assert_close(gcn(g.x, g.edge_index, torch.ones(g.edge_index.shape[1])), logits)
    gin, ds2 = motifs
    assert {"convs.0", "convs.0.nn.0", "convs.2", "acts.2", "pool", "head"} <= set(dict(gin.named_modules()))
    b = ds2.batch([0, 1, 2])
    with torch.no_grad():
        out = gin(b.x, b.edge_index, b.batch)
        assert out.shape == (3, 2)
        one = ds2.graphs[1]
        torch.testing.assert_close(gin(one.x, one.edge_index), out[1:2])


def test_gin_follows_the_motif_not_the_edge_count(motifs):
    """Swapping the motif (house <-> 5-cycle, same nodes) flips the prediction; one base edge
    more (cycle graphs) or less (house graphs), which moves the edge count across the classes',
    does not."""
    model, ds = motifs
    house = torch.tensor([[0, 0, 0, 1, 1, 2], [1, 3, 4, 4, 2, 3]])
    cycle = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])
    gen = torch.Generator().manual_seed(0)
    flips = kept = 0

    def pred(g, edge_index) -> int:
        with torch.no_grad():
            return int(model(g.x, edge_index).argmax())

    for i in ds.test.tolist():
        g = ds.graphs[i]
        cls, ei = int(g.y), g.edge_index
        new = (cycle if cls == 0 else house) + 20
        flips += pred(g, torch.cat([ei[:, ~g.edge_mask], new, new.flip(0)], 1)) == 1 - cls
        if cls == 1:
            present = undirected(ei)
            pairs = [(a, b) for a in range(20) for b in range(a + 1, 20) if (a, b) not in present]
            a, b = pairs[int(torch.randint(len(pairs), (1,), generator=gen))]
            changed = torch.cat([ei, torch.tensor([[a, b], [b, a]])], 1)
        else:
            base = sorted(e for e in undirected(ei[:, ~g.edge_mask]) if max(e) < 20)
            a, b = base[int(torch.randint(len(base), (1,), generator=gen))]
            changed = ei[:, ~(((ei[0] == a) & (ei[1] == b)) | ((ei[0] == b) & (ei[1] == a)))]
        kept += pred(g, changed) == cls
    assert flips >= 0.95 * len(ds.test) and kept >= 0.95 * len(ds.test)  # measured 100 / 100


def test_gcn_reads_the_explained_nodes_own_house(shapes):
    model, ds = shapes
    g = ds.graphs[0]
    with torch.no_grad():
        clean = model(g.x, g.edge_index).argmax(-1)
    own = other = 0
    explained = ds.explained("test").tolist()
    for v in explained:
        t = ds.truth(v)
        with torch.no_grad():
            own += int(model(g.x, g.edge_index[:, ~t.edge_mask]).argmax(-1)[v]) != int(clean[v])
            far = (t.motif + 7) % 80
            other += int(model(g.x, g.edge_index[:, g.edge_motif != far]).argmax(-1)[v]) != int(clean[v])
    assert own >= 0.5 * len(explained)  # measured 29 / 40
    assert other <= 0.05 * len(explained)  # measured 0 / 40


def test_changed_weights_are_refused(tmp_path):
    for name in ("ba_shapes", "ba_2motifs"):
        for suffix in (".json", ".safetensors"):
            shutil.copy(DATA / f"{SHIPPED[name]}{suffix}", tmp_path)
    model, _ = load_gnn("ba_2motifs", tmp_path)  # an intact copy loads
    assert isinstance(model, GIN)
    weights = tmp_path / f"{SHIPPED['ba_shapes']}.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1
    weights.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="gnn_ba_shapes_seed0.safetensors is corrupt: its SHA-256 differs"):
        load_gnn("ba_shapes", tmp_path)
    (tmp_path / f"{SHIPPED['ba_2motifs']}.json").unlink()
    with pytest.raises(ArtifactError, match="gnn_ba_2motifs_seed0.json is missing"):
        load_gnn("ba_2motifs", tmp_path)


@pytest.mark.parametrize("name", ["ba_shapes", "ba_2motifs"])
def test_random_init_is_the_same_architecture_near_chance(name, shapes, motifs):
    model, ds = shapes if name == "ba_shapes" else motifs
    null = random_init(name, seed=0)
    assert type(null) is type(model) and not null.training
    trained, fresh = model.state_dict(), null.state_dict()
    assert trained.keys() == fresh.keys()
    assert all(trained[k].shape == fresh[k].shape for k in trained)
    assert any(not torch.equal(trained[k], fresh[k]) for k in trained)
    again, other = random_init(name, seed=0).state_dict(), random_init(name, seed=1).state_dict()
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)
    assert any(not torch.equal(fresh[k], other[k]) for k in fresh)
    majority = float(ds.labels()[ds.test].bincount().max()) / len(ds.test)
    assert accuracy(null, ds, "test") <= majority + 0.1  # measured 0.43 / 0.50 (one class for all)


# -- training, configs and errors ---------------------------------------------------------------------
def test_training_is_deterministic():
    a, ma = train_gcn(0, GCNTrainConfig(epochs=5, hidden=8))
    b, _ = train_gcn(0, GCNTrainConfig(epochs=5, hidden=8))
    c, _ = train_gcn(1, GCNTrainConfig(epochs=5, hidden=8))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    assert set(ma) >= {"train_accuracy", "val_accuracy", "test_accuracy", "epochs", "seconds"}
    threads = torch.get_num_threads()
    d, md = train_gin(0, GINTrainConfig(epochs=1, hidden=8, batch_size=400))
    e, _ = train_gin(0, GINTrainConfig(epochs=1, hidden=8, batch_size=400))
    assert all(torch.equal(x, y) for x, y in zip(d.state_dict().values(), e.state_dict().values()))
    assert md["epochs"] == 1 and torch.get_num_threads() == threads


def test_config_and_name_errors():
    with pytest.raises(InputError, match="Unknown GNN ground-truth model 'ba_house'; valid: 'ba_shapes', 'ba_2motifs'"):
        load_gnn("ba_house")
    with pytest.raises(InputError, match="Unknown GNN dataset 'mutag'"):
        gnn_dataset("mutag")
    with pytest.raises(ConfigError, match="graphs must be even"):
        BA2MotifsConfig(graphs=9)
    with pytest.raises(ConfigError, match="must leave a test set"):
        BAShapesConfig(train_fraction=0.9, val_fraction=0.1)
    with pytest.raises(ConfigError):
        GINConfig(pool="max")
    with pytest.raises(InputError, match="one graph"):
        ba_shapes(BAShapesConfig(base_nodes=20, motifs=2)).batch()


@pytest.fixture
def no_pyg(monkeypatch):
    """Make torch_geometric (and its already imported submodules) unimportable."""
    for name in ["torch_geometric", *[m for m in sys.modules if m.startswith("torch_geometric.")]]:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("call", [
    lambda: gnn_data.ba_shapes(),
    lambda: gnn_data.ba_2motifs(),
    lambda: gnn_models.GCN(GCNConfig()),
    lambda: gnn_models.GIN(GINConfig()),
    lambda: gnn_models.load_gnn("ba_shapes"),
    lambda: gnn_models.random_init("ba_2motifs"),
], ids=["ba_shapes", "ba_2motifs", "GCN", "GIN", "load_gnn", "random_init"])
def test_missing_torch_geometric_names_the_install_command(no_pyg, call):
    with pytest.raises(MissingDependencyError, match=r"needs torch_geometric.*pip install 'interplab\[gnn\]'"):
        call()
