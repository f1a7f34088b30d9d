"""HookedModule on arbitrary torch modules: an MLP, a CNN, a GCN and a GIN (torch_geometric).

Nothing attached / a cache only / identity writes are the plain forward bit for bit; hooks never
outlive a call, also when it raises; graph i of a PyG batch behaves as graph i run alone when
cached, patched or ablated (<= 1e-6) and the other graphs are untouched; gradients equal a
hand-made retain_grad computation; every bad input is a clear interplab error.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from interplab.core.errors import InputError, InterventionError, PositionError, SiteError
from interplab.runtime.generic import Ablate, Add, HookedModule, Identity, Patch, Set, SiteSpec

TOL = 1e-6
SIZES = [3, 5, 4, 7, 6, 3, 8, 5]  # nodes of the 8 graphs of the batch


# -- models ---------------------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.mlp(x)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        x = self.pool(self.conv1(x).relu())
        x = self.pool(self.conv2(x).relu())
        return self.fc(x.flatten(1))


class Pair(nn.Module):
    """A module whose output is a tuple, inside a model that uses both elements."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.a(x), self.b(x)


class TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair()
        self.out = nn.Bilinear(4, 4, 2)

    def forward(self, x):
        a, b = self.pair(x)
        return self.out(a, b)


def make_gcn():
    from torch_geometric.nn import GCNConv, global_mean_pool

    class GCN(nn.Module):
        """GCNConv x 3, a node-level head and a mean-pooled graph-level head."""

        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList([GCNConv(5, 8), GCNConv(8, 8), GCNConv(8, 8)])
            self.node_head = nn.Linear(8, 3)
            self.graph_head = nn.Linear(8, 2)

        def forward(self, x, edge_index, batch=None):
            for conv in self.convs:
                x = conv(x, edge_index).relu()
            return self.node_head(x), self.graph_head(global_mean_pool(x, batch))

    return GCN()


def make_gin():
    from torch_geometric.nn import GINConv, global_add_pool

    def mlp(i, o):
        return nn.Sequential(nn.Linear(i, o), nn.ReLU(), nn.Linear(o, o))

    class GIN(nn.Module):
        """GINConv layers in a loop, then one GINConv applied twice (``shared``); takes a PyG
        Data / Batch."""

        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList([GINConv(mlp(5, 8)), GINConv(mlp(8, 8))])
            self.shared = GINConv(mlp(8, 8))
            self.head = nn.Linear(8, 2)

        def forward(self, data):
            x, edge_index = data.x, data.edge_index
            for conv in self.convs:
                x = conv(x, edge_index).relu()
            x = self.shared(x, edge_index).relu()
            x = self.shared(x, edge_index)
            return self.head(global_add_pool(x, data.batch))

    return GIN()


def seeded(make):
    torch.manual_seed(0)
    return make().eval()


def random_graph(n: int, gen: torch.Generator):
    from torch_geometric.data import Data

    e = torch.randint(0, n, (2, 3 * n), generator=gen)
    e = e[:, e[0] != e[1]]  # GCNConv adds its own self-loops
    return Data(x=torch.randn(n, 5, generator=gen), edge_index=e)


def all_hooks(module: nn.Module) -> int:
    n = 0
    for m in module.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks)
        for attr in ("_message_forward_hooks", "_propagate_forward_pre_hooks"):
            n += len(getattr(m, attr, {}))
    return n


def assert_clean(hm: HookedModule) -> None:
    assert hm.n_torch_hooks == 0
    assert all_hooks(hm.module) == 0


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    return torch.equal(a, b)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pyg():
    return pytest.importorskip("torch_geometric")


@pytest.fixture(scope="module")
def graphs(pyg):
    gen = torch.Generator().manual_seed(1)
    return [random_graph(n, gen) for n in SIZES]


@pytest.fixture(scope="module")
def batch(graphs):
    from torch_geometric.data import Batch

    return Batch.from_data_list(graphs)


@pytest.fixture
def mlp():
    return HookedModule(seeded(MLP), {"fc1": "mlp.0", "fc2": "mlp.2", "out": "mlp.4",
                                      "in2": SiteSpec("mlp.2", tensor="input[0]")})


@pytest.fixture
def cnn():
    return HookedModule(seeded(CNN), {"conv1": SiteSpec("conv1", layout="image"),
                                      "conv2": SiteSpec("conv2", layout="image"),
                                      "fc_in": SiteSpec("fc", tensor="input[0]"), "fc": "fc"})


@pytest.fixture
def gcn(pyg):
    return HookedModule(seeded(make_gcn), {
        "conv1": SiteSpec("convs.0", layout="nodes"),
        "conv2": SiteSpec("convs.1", layout="nodes"),
        "msg1": SiteSpec("convs.1", tensor="message", layout="edges"),
        "conv3": SiteSpec("convs.2", layout="nodes"),
        "pooled": SiteSpec("graph_head", tensor="input[0]"),
    })


@pytest.fixture
def gin(pyg):
    return HookedModule(seeded(make_gin), {
        "conv1": SiteSpec("convs.0", layout="nodes"),
        "msg2": SiteSpec("convs.1", tensor="message", layout="edges"),
        "shared0": SiteSpec("shared", layout="nodes", call=0),
        "shared1": SiteSpec("shared", layout="nodes", call=1),
        "shared_msg1": SiteSpec("shared", tensor="message", layout="edges", call=1),
        "head": "head",
    })


@pytest.fixture(scope="module")
def x_mlp():
    return torch.randn(4, 6, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def x_img():
    return torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(3))


def gcn_args(g):
    """GCN inputs for a batch (with its batch vector) or a single graph (without)."""
    batch = getattr(g, "batch", None)
    return (g.x, g.edge_index), ({} if batch is None else {"batch": batch})


# -- bit identity ---------------------------------------------------------------------------------
def test_nothing_attached_is_the_plain_forward(mlp, cnn, gcn, gin, x_mlp, x_img, batch):
    with torch.no_grad():
        assert torch.equal(mlp.run(x_mlp), mlp.module(x_mlp))
        assert torch.equal(cnn.run(x_img), cnn.module(x_img))
        args, kw = gcn_args(batch)
        assert same(gcn.run(*args, **kw), gcn.module(*args, **kw))
        assert torch.equal(gin.run(batch), gin.module(batch))
    for hm in (mlp, cnn, gcn, gin):
        assert_clean(hm)


def test_a_cache_leaves_outputs_bit_identical(mlp, cnn, gcn, gin, x_mlp, x_img, batch):
    with torch.no_grad():
        out, cache = mlp.run_with_cache(x_mlp)
        assert torch.equal(out, mlp.module(x_mlp)) and set(cache) == set(mlp.sites)
        assert torch.equal(cache["fc1"], mlp.module.mlp[0](x_mlp))
        assert torch.equal(cache["in2"], mlp.module.mlp[1](cache["fc1"]))
        out, cache = cnn.run_with_cache(x_img)
        assert torch.equal(out, cnn.module(x_img))
        assert torch.equal(cache["conv1"], cnn.module.conv1(x_img))
        args, kw = gcn_args(batch)
        out, cache = gcn.run_with_cache(*args, **kw)
        assert same(out, gcn.module(*args, **kw))
        assert torch.equal(cache["conv1"], gcn.module.convs[0](batch.x, batch.edge_index))
        out, cache = gin.run_with_cache(batch)
        assert torch.equal(out, gin.module(batch))
    for hm in (mlp, cnn, gcn, gin):
        assert_clean(hm)


def test_identity_interventions_change_nothing(mlp, cnn, gcn, gin, x_mlp, x_img, batch):
    def every(hm):
        return [Identity(name) for name in hm.sites]

    with torch.no_grad():
        assert torch.equal(mlp.run(x_mlp, interventions=every(mlp)), mlp.module(x_mlp))
        assert torch.equal(cnn.run(x_img, interventions=every(cnn)), cnn.module(x_img))
        args, kw = gcn_args(batch)
        assert same(gcn.run(*args, interventions=every(gcn), **kw), gcn.module(*args, **kw))
        assert torch.equal(gin.run(batch, interventions=every(gin)), gin.module(batch))
        tm = HookedModule(seeded(TupleModel), {"a": SiteSpec("pair", tensor="output[0]"),
                                               "b": SiteSpec("pair", tensor="output[1]")})
        x = torch.randn(3, 4)
        assert torch.equal(tm.run(x, interventions=[Identity("a"), Identity("b")]), tm.module(x))
    for hm in (mlp, cnn, gcn, gin, tm):
        assert_clean(hm)


# -- hooks never survive ---------------------------------------------------------------------------
class Boom:
    def __init__(self, site: str) -> None:
        self.site = site

    def __call__(self, act, rows):
        raise RuntimeError("boom")


class Probe:
    """Records how many torch hooks interplab has on while the forward runs."""

    def __init__(self, site: str, hm: HookedModule) -> None:
        self.site, self.hm, self.seen = site, hm, None

    def __call__(self, act, rows):
        self.seen = self.hm.n_torch_hooks


def test_hooks_are_on_during_the_call_only(gcn, batch):
    args, kw = gcn_args(batch)
    probe = Probe("conv1", gcn)
    gcn.run_with_cache(*args, sites=["msg1"], interventions=[probe], **kw)
    assert probe.seen == 3  # conv1's forward hook, msg1's message hook and its edge_index hook
    assert_clean(gcn)


def test_hooks_removed_when_an_intervention_or_the_forward_raises(gcn, gin, mlp, batch, x_mlp):
    args, kw = gcn_args(batch)
    with pytest.raises(RuntimeError, match="boom"):
        gcn.run_with_cache(*args, sites=["msg1", "conv3"], interventions=[Boom("msg1")], **kw)
    assert_clean(gcn)
    with pytest.raises(RuntimeError, match="boom"):
        gin.run(batch, interventions=[Identity("conv1"), Boom("shared_msg1")])
    assert_clean(gin)
    bad = batch.x[:, :3]  # the wrong number of features: the forward itself raises
    with pytest.raises(RuntimeError):
        gcn.run_with_cache(bad, batch.edge_index, batch=batch.batch, interventions=[Identity("msg1")])
    assert_clean(gcn)
    with pytest.raises(RuntimeError):
        mlp.gradients(lambda y: y.sum(), x_mlp[:, :2], sites=["fc2"])
    assert_clean(mlp)
    assert all(p.requires_grad for p in mlp.module.parameters())


# -- a batch of graphs: item i is graph i ---------------------------------------------------------
def test_cached_item_equals_the_graph_alone(gcn, gin, graphs, batch):
    args, kw = gcn_args(batch)
    for i in (0, 3, 7):
        _, in_batch = gcn.run_with_cache(*args, items=[i], **kw)
        _, alone = gcn.run_with_cache(graphs[i].x, graphs[i].edge_index, items=[0])
        for name in ("conv1", "conv2", "msg1", "conv3"):
            assert in_batch[name].shape == alone[name].shape, name
            assert (in_batch[name] - alone[name]).abs().max() <= TOL, (name, i)
        n_msgs = graphs[i].edge_index.shape[1] + SIZES[i]  # GCNConv adds one self-loop per node
        assert in_batch["msg1"].shape[0] == n_msgs
        _, in_batch = gin.run_with_cache(batch, items=[i, 0])
        _, alone_i = gin.run_with_cache(graphs[i])
        _, alone_0 = gin.run_with_cache(graphs[0])
        for name in ("conv1", "msg2", "shared0", "shared1", "shared_msg1", "head"):
            both = torch.cat([alone_i[name], alone_0[name]])
            assert (in_batch[name] - both).abs().max() <= TOL, (name, i)


def corrupted(g, seed: int):
    from torch_geometric.data import Data

    noise = torch.randn(g.x.shape, generator=torch.Generator().manual_seed(seed))
    return Data(x=g.x + noise, edge_index=g.edge_index)


@pytest.mark.parametrize("site", ["conv1", "msg1"])
def test_patching_graph_i_in_the_batch_equals_patching_it_alone(gcn, graphs, batch, site):
    args, kw = gcn_args(batch)
    with torch.no_grad():
        clean_nodes, clean_graphs = gcn.run(*args, **kw)
        for i in (1, 6):
            bad = corrupted(graphs[i], seed=i)
            _, source = gcn.run_with_cache(bad.x, bad.edge_index, sites=[site], items=[0])
            nodes, graph_out = gcn.run(*args, interventions=[Patch(site, source, items=[i])], **kw)
            alone_nodes, alone_graph = gcn.run(graphs[i].x, graphs[i].edge_index,
                                               interventions=[Patch(site, source, items=[0])])
            mine = batch.batch == i
            assert (nodes[mine] - alone_nodes).abs().max() <= TOL
            assert (graph_out[i] - alone_graph[0]).abs().max() <= TOL
            assert (graph_out[i] - clean_graphs[i]).abs().max() > 1e-4  # the patch did something
            assert torch.equal(nodes[~mine], clean_nodes[~mine])
            others = torch.arange(len(graphs)) != i
            assert torch.equal(graph_out[others], clean_graphs[others])
            # the patched graph alone is the corrupted graph alone
            bad_nodes, _ = gcn.module(bad.x, bad.edge_index)
            if site == "conv1":
                assert (alone_nodes - bad_nodes).abs().max() <= TOL
    assert_clean(gcn)


def test_patching_some_rows_from_a_whole_item_source(gcn, graphs, batch):
    args, kw = gcn_args(batch)
    i = 4
    bad = corrupted(graphs[i], seed=10)
    with torch.no_grad():
        _, source = gcn.run_with_cache(bad.x, bad.edge_index, sites=["conv2"], items=[0])
        _, got = gcn.run_with_cache(*args, sites=["conv2"], items=[i],
                                    interventions=[Patch("conv2", source, items=[i], rows=[1, 4])], **kw)
        _, clean = gcn.run_with_cache(*args, sites=["conv2"], items=[i], **kw)
    assert torch.equal(got["conv2"][[1, 4]], source["conv2"][[1, 4]])
    keep = [0, 2, 3, 5]
    assert torch.equal(got["conv2"][keep], clean["conv2"][keep])


def test_ablating_node_j_of_graph_i_changes_only_graph_i(gcn, gin, batch):
    args, kw = gcn_args(batch)
    with torch.no_grad():
        _, clean = gcn.run(*args, **kw)
        _, got = gcn.run(*args, interventions=[Ablate("conv1", items=[5], rows=[2])], **kw)
        others = torch.arange(len(SIZES)) != 5
        assert torch.equal(got[others], clean[others])
        assert (got[5] - clean[5]).abs().max() > 1e-5
        clean = gin.run(batch)
        got = gin.run(batch, interventions=[Ablate("shared1", items=[2], rows=[0], value="mean")])
        others = torch.arange(len(SIZES)) != 2
        assert torch.equal(got[others], clean[others])
        assert (got[2] - clean[2]).abs().max() > 1e-5


def test_mean_ablation_uses_the_mean_over_all_rows(gcn, batch):
    args, kw = gcn_args(batch)
    _, clean = gcn.run_with_cache(*args, sites=["conv2"], **kw)
    _, got = gcn.run_with_cache(*args, sites=["conv2"], interventions=[
        Ablate("conv2", items=[0, 3], rows=[1], value="mean")], **kw)
    mean = clean["conv2"].mean(0)
    rows = [1, sum(SIZES[:3]) + 1]
    assert torch.allclose(got["conv2"][rows], mean.expand(2, -1), atol=0)
    others = torch.ones(sum(SIZES), dtype=torch.bool)
    others[rows] = False
    assert torch.equal(got["conv2"][others], clean["conv2"][others])


def test_interventions_at_one_site_apply_in_order(mlp, x_mlp):
    value = torch.full((1, 16), 2.0)
    vec = torch.arange(16.0)
    _, cache = mlp.run_with_cache(x_mlp, sites=["fc1"], interventions=[
        Set("fc1", value, items=[1]), Add("fc1", vec, scale=0.5, items=[1])])
    assert torch.equal(cache["fc1"][1], 2.0 + 0.5 * vec)
    _, cache = mlp.run_with_cache(x_mlp, sites=["fc1"], interventions=[
        Add("fc1", vec, items=[1]), Set("fc1", value, items=[1])])
    assert torch.equal(cache["fc1"][1], value[0])


def test_call_selects_one_call_of_a_module_used_twice(gin, batch):
    seen = []
    handle = gin.module.shared.register_forward_hook(lambda m, a, o: seen.append(o.detach().clone()))
    try:
        with torch.no_grad():
            _, cache = gin.run_with_cache(batch, sites=["shared0", "shared1"])
    finally:
        handle.remove()
    assert len(seen) == 2
    assert torch.equal(cache["shared0"], seen[0]) and torch.equal(cache["shared1"], seen[1])


def test_input_and_tuple_output_sites_write_back(mlp, x_mlp):
    value = torch.randn(4, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = mlp.run(x_mlp, interventions=[Set("in2", value)])
        m = mlp.module.mlp
        assert torch.equal(got, m[4](m[3](m[2](value))))
        tm = HookedModule(seeded(TupleModel), {"b": SiteSpec("pair", tensor="output[1]")})
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(6))
        got = tm.run(x, interventions=[Ablate("b", items=[2])])
        a, b = tm.module.pair(x)
        b[2] = 0.0
        assert torch.equal(got, tm.module.out(a, b))


# -- dense and image layouts ----------------------------------------------------------------------
@pytest.mark.parametrize("site, vector", [("fc_in", torch.ones(24)), ("conv1", torch.ones(4, 1, 1)),
                                          ("conv2", torch.ones(6, 4, 4))])
def test_add_on_item_2_changes_only_row_2(cnn, x_img, site, vector):
    with torch.no_grad():
        clean = cnn.run(x_img)
        got = cnn.run(x_img, interventions=[Add(site, vector, scale=3.0, items=[2])])
    keep = torch.arange(5) != 2
    assert torch.equal(got[keep], clean[keep])
    assert (got[2] - clean[2]).abs().max() > 1e-4
    assert_clean(cnn)


# -- gradients -------------------------------------------------------------------------------------
def manual_grads(module, call, metric, handles_for):
    """Activation gradients by hand: retain_grad in forward hooks, then backward."""
    acts = {}

    def keep(key):
        def hook(module, args, output):
            output.retain_grad()
            acts[key] = output
        return hook

    handles = [mod.register_forward_hook(keep(key)) for key, mod in handles_for.items()]
    try:
        value = metric(call())
        value.backward()
    finally:
        for h in handles:
            h.remove()
        module.zero_grad(set_to_none=True)
    return value.detach(), {k: (a.detach(), a.grad) for k, a in acts.items()}


def test_gradients_equal_a_manual_autograd_computation(mlp, gcn, batch, x_mlp):
    def metric(y):
        return y[:, 0].sum() - y[:, 2].square().mean()

    mlp.module.mlp[4].bias.requires_grad_(False)  # a frozen parameter stays frozen
    flags = [p.requires_grad for p in mlp.module.parameters()]
    value, got = mlp.gradients(metric, x_mlp, sites=["fc1", "fc2"])
    want_value, want = manual_grads(mlp.module, lambda: mlp.module(x_mlp), metric,
                                    {"fc1": mlp.module.mlp[0], "fc2": mlp.module.mlp[2]})
    assert torch.allclose(value, want_value, atol=TOL)
    for name in ("fc1", "fc2"):
        assert torch.equal(got[name][0], want[name][0])
        assert torch.allclose(got[name][1], want[name][1], atol=TOL)
        assert not got[name][0].requires_grad and not got[name][1].requires_grad
    assert [p.requires_grad for p in mlp.module.parameters()] == flags
    assert all(p.grad is None for p in mlp.module.parameters())

    args, kw = gcn_args(batch)

    def graph_metric(out):
        return out[1][:, 1].sum() + out[0].square().mean()

    value, got = gcn.gradients(graph_metric, *args, sites=["conv2", "pooled"], **kw)
    convs = gcn.module.convs
    want_value, want = manual_grads(gcn.module, lambda: gcn.module(*args, **kw), graph_metric,
                                    {"conv2": convs[1]})
    assert torch.allclose(value, want_value, atol=TOL)
    assert torch.allclose(got["conv2"][1], want["conv2"][1], atol=TOL)
    assert got["conv2"][1].abs().max() > 0
    assert got["pooled"][1].shape == (len(SIZES), 8)
    assert torch.allclose(got["pooled"][1], gcn.module.graph_head.weight[1].detach().expand(8, -1))
    assert all(p.requires_grad for p in gcn.module.parameters())
    assert_clean(gcn)
    assert_clean(mlp)


def test_gradients_at_a_message_site(gin, batch):
    def metric(y):
        return y[:, 0].sum()

    _, got = gin.gradients(metric, batch, sites=["shared_msg1", "shared0"])
    msgs = []

    def keep(module, inputs, out):
        out.retain_grad()
        msgs.append(out)

    handle = gin.module.shared.register_message_forward_hook(keep)
    try:
        metric(gin.module(batch)).backward()
    finally:
        handle.remove()
        gin.module.zero_grad(set_to_none=True)
    assert len(msgs) == 2
    assert torch.equal(got["shared_msg1"][0], msgs[1].detach())
    assert torch.allclose(got["shared_msg1"][1], msgs[1].grad, atol=TOL)
    assert got["shared_msg1"][1].abs().max() > 0 and got["shared0"][1].abs().max() > 0
    assert_clean(gin)


def test_gradients_flow_through_writing_interventions(mlp, x_mlp):
    def metric(y):
        return y.sum()

    _, plain = mlp.gradients(metric, x_mlp, sites=["fc1"])
    _, added = mlp.gradients(metric, x_mlp, sites=["fc1"],
                             interventions=[Add("fc2", torch.ones(16), items=[0])])
    assert added["fc1"][1].abs().max() > 0
    assert torch.equal(plain["fc1"][1][1:], added["fc1"][1][1:])  # only item 0's path changed
    _, cut = mlp.gradients(metric, x_mlp, sites=["fc1"], interventions=[Ablate("fc2", items=[3])])
    assert torch.equal(cut["fc1"][1][3], torch.zeros(16))
    assert torch.equal(cut["fc1"][1][:3], plain["fc1"][1][:3])


# -- segments --------------------------------------------------------------------------------------
def test_segments_from_batch_data_and_tensors(gcn, gin, graphs, batch):
    from_batch = gin.segments(batch)
    assert torch.equal(from_batch["nodes"], batch.batch)
    assert torch.equal(from_batch["edges"], batch.batch[batch.edge_index[0]])
    one = gin.segments(graphs[2])
    assert torch.equal(one["nodes"], torch.zeros(SIZES[2], dtype=torch.long))
    assert one["edges"].shape == (graphs[2].edge_index.shape[1],) and int(one["edges"].max()) == 0
    args, kw = gcn_args(batch)
    raw = gcn.segments(*args, **kw)
    assert torch.equal(raw["nodes"], from_batch["nodes"]) and torch.equal(raw["edges"], from_batch["edges"])
    assert gcn.segments(batch.x, edge_index=batch.edge_index, batch=batch.batch)["edges"] is not None
    assert gcn.segments(batch.x, batch.edge_index) == {"nodes": None, "edges": None}
    assert torch.equal(gin.segments(data=batch)["nodes"], batch.batch)
    assert torch.equal(gin.segments(batch=batch)["edges"], from_batch["edges"])


def test_explicit_segments_override(gcn, graphs, batch):
    # The whole batch declared as two items: graphs 0-3 and 4-7.
    halves = (batch.batch >= 4).long()
    args, _ = gcn_args(batch)
    _, cache = gcn.run_with_cache(*args, batch=batch.batch, sites=["conv1"], items=[1],
                                  segments={"nodes": halves})
    assert cache["conv1"].shape[0] == sum(SIZES[4:])


# -- errors ----------------------------------------------------------------------------------------
def test_bad_paths_and_specs_are_clear_errors(pyg):
    gcn = seeded(make_gcn)
    with pytest.raises(SiteError, match=r"'convs\.5' is not a module path of GCN.*'convs\.0'"):
        HookedModule(gcn, {"c": "convs.5"})
    with pytest.raises(SiteError, match="Did you mean 'node_head'"):
        HookedModule(gcn, {"c": "node_haed"})
    with pytest.raises(SiteError, match="needs a torch_geometric MessagePassing.*node_head is a Linear"):
        HookedModule(gcn, {"m": SiteSpec("node_head", tensor="message", layout="edges")})
    with pytest.raises(SiteError, match="SiteSpec.tensor 'outputs' is not one of"):
        SiteSpec("convs.0", tensor="outputs")
    with pytest.raises(SiteError, match="SiteSpec.layout 'node' is not one of"):
        SiteSpec("convs.0", layout="node")
    with pytest.raises(SiteError, match="call must be None or a call index"):
        SiteSpec("convs.0", call=-1)
    with pytest.raises(SiteError, match="messages have one row per edge"):
        SiteSpec("convs.0", tensor="message", layout="nodes")
    with pytest.raises(InterventionError, match="Ablate.value must be a number or 'mean'"):
        Ablate("conv1", value="median")
    with pytest.raises(PositionError, match="must be >= 0"):
        Ablate("conv1", items=[-1])


def test_call_count_errors(pyg, batch):
    gin = HookedModule(seeded(make_gin), {"shared": SiteSpec("shared", layout="nodes"),
                                          "late": SiteSpec("shared", layout="nodes", call=2),
                                          "msg": SiteSpec("shared", tensor="message", layout="edges")})
    with pytest.raises(SiteError, match=r"shared ran 2 times in this forward: give SiteSpec\(call=\.\.\.\)"):
        gin.run_with_cache(batch, sites=["shared"])
    assert_clean(gin)
    with pytest.raises(SiteError, match=r"shared\.message\(\) ran 2 times in this forward"):
        gin.run(batch, interventions=[Identity("msg")])
    assert_clean(gin)
    with pytest.raises(SiteError, match="asks for call 2 of shared, which ran 2 times"):
        gin.run_with_cache(batch, sites=["late"])
    assert_clean(gin)


def test_layout_errors(gcn, cnn, mlp, batch, x_img, x_mlp):
    args, kw = gcn_args(batch)
    hm = HookedModule(gcn.module, {"pool_as_nodes": SiteSpec("graph_head", tensor="input[0]", layout="nodes"),
                                   "root": SiteSpec("")})
    with pytest.raises(InputError, match=r"has 8 rows but the segments cover 41 nodes"):
        hm.run_with_cache(*args, **kw, sites=["pool_as_nodes"])
    assert_clean(hm)
    with pytest.raises(SiteError, match=r"a 2-tuple: give tensor='output\[i\]'"):
        hm.run_with_cache(*args, **kw, sites=["root"])
    flat = HookedModule(cnn.module, {"fc": SiteSpec("fc", layout="image")})
    with pytest.raises(SiteError, match=r"layout 'image', which needs a 4-D .* it is 2-D \(5, 5\)"):
        flat.run_with_cache(x_img)
    with pytest.raises(PositionError, match=r"Item 4 out of range .* 4 batch items \(items of a dense layout "
                                            r"index dim 0\)"):
        mlp.run_with_cache(x_mlp, items=[4])
    with pytest.raises(PositionError, match="Row 1 out of range for item 0 .* has 1 row "):
        mlp.run(x_mlp, interventions=[Ablate("fc1", items=[0], rows=[1])])
    assert_clean(mlp)


def test_item_and_row_errors(gcn, batch):
    args, kw = gcn_args(batch)
    with pytest.raises(PositionError, match=r"Item 8 out of range at site 'conv1': the inputs have 8 graphs"):
        gcn.run(*args, interventions=[Ablate("conv1", items=[8])], **kw)
    with pytest.raises(PositionError, match=r"Item 9 out of range at site 'msg1'"):
        gcn.run_with_cache(*args, sites=["msg1"], items=[9], **kw)
    with pytest.raises(PositionError, match=r"Row 3 out of range for item 0 at site 'conv1': that graph has "
                                            r"3 nodes \(rows 0\.\.2\)"):
        gcn.run(*args, interventions=[Ablate("conv1", items=[0], rows=[3])], **kw)
    assert_clean(gcn)


def test_unknown_site_names(gcn, batch):
    args, kw = gcn_args(batch)
    with pytest.raises(SiteError, match=r"Unknown site 'conv'.*'conv1'"):
        gcn.run_with_cache(*args, sites=["conv"], **kw)
    with pytest.raises(SiteError, match=r"Unknown site 'cnov1'\. Did you mean 'conv1'"):
        gcn.run(*args, interventions=[Ablate("cnov1")], **kw)
    with pytest.raises(InterventionError, match="is not an intervention"):
        gcn.run(*args, interventions=[lambda a, r: a], **kw)
    assert_clean(gcn)


def test_value_shape_errors(gcn, graphs, batch, mlp, x_mlp):
    args, kw = gcn_args(batch)
    with pytest.raises(InterventionError, match=r"Set at site 'conv1': the value has shape \(2, 8\) but the "
                                                r"addressed rows have shape \(3, 8\)"):
        gcn.run(*args, interventions=[Set("conv1", torch.zeros(2, 8), items=[0])], **kw)
    _, source = gcn.run_with_cache(graphs[1].x, graphs[1].edge_index, sites=["conv1"])
    with pytest.raises(InterventionError, match="the source has 5 rows but 7 rows are addressed"):
        gcn.run(*args, interventions=[Patch("conv1", source, items=[3])], **kw)
    with pytest.raises(InterventionError, match="the source cache has no 'conv2'"):
        Patch("conv2", source)
    with pytest.raises(InterventionError, match=r"a vector of shape \(5,\) does not broadcast"):
        mlp.run(x_mlp, interventions=[Add("fc1", torch.ones(5))])
    with pytest.raises(InputError, match="The metric must return a scalar tensor"):
        mlp.gradients(lambda y: y, x_mlp, sites=["fc1"])
    with pytest.raises(InputError, match="needs at least one site"):
        mlp.gradients(lambda y: y.sum(), x_mlp, sites=[])
    assert_clean(gcn)
    assert_clean(mlp)
    assert all(p.requires_grad for p in mlp.module.parameters())


def test_a_single_graph_is_one_item(gin, graphs):
    with pytest.raises(PositionError, match=r"Item 1 out of range at site 'conv1': the inputs have 1 graph, "
                                            r"so items are 0\.\.0"):
        gin.run(graphs[0], interventions=[Ablate("conv1", items=[1])])
    assert_clean(gin)
    _, whole = gin.run_with_cache(graphs[0], sites=["conv1"])
    _, item0 = gin.run_with_cache(graphs[0], sites=["conv1"], items=[0])
    assert torch.equal(whole["conv1"], item0["conv1"])
    # a raw tensor works as a Patch source too
    out = gin.run(graphs[0], interventions=[Patch("conv1", whole["conv1"] * 0)])
    assert torch.equal(out, gin.run(graphs[0], interventions=[Ablate("conv1")]))
