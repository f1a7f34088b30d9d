"""Sites of a HookedModule without a model: SiteSpec, segments, rows by item, Patch's row picking."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from interplab.core.errors import InputError, PositionError, SiteError
from interplab.runtime.generic import HookedModule, Patch, SiteSpec
from interplab.runtime.generic_sites import RowIndex, as_index_list, find_segments

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sitespec_kind_and_index():
    assert (SiteSpec("a").kind, SiteSpec("a").index) == ("out", None)
    assert (SiteSpec("a", "output[2]").kind, SiteSpec("a", "output[2]").index) == ("out", 2)
    assert (SiteSpec("a", "input[0]").kind, SiteSpec("a", "input[0]").index) == ("in", 0)
    spec = SiteSpec("a", "message", "edges", call=1)
    assert (spec.kind, spec.index, spec.graph) == ("message", None, True)
    assert not SiteSpec("a", layout="image").graph
    with pytest.raises(SiteError, match="is not one of 'output'"):
        SiteSpec("a", "input[-1]")
    with pytest.raises(SiteError, match="call must be None"):
        SiteSpec("a", call=True)


def test_as_index_list():
    assert as_index_list(None, "items") is None
    assert as_index_list(3, "items") == (3,)
    assert as_index_list(torch.tensor([[1, 2]]), "rows") == (1, 2)
    with pytest.raises(PositionError, match="rows must be an int or a list of ints"):
        as_index_list(["a"], "rows")
    with pytest.raises(PositionError, match=r"items must be >= 0.*\[1, -2\]"):
        as_index_list([1, -2], "items")


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=30), st.data())
def test_rows_by_item_match_a_naive_scan(seg, data):
    """Item i's rows are the rows whose segment is i, in tensor order, for any (unsorted) segments."""
    n_items = max(seg) + 1
    spec = SiteSpec("m", layout="nodes")
    rows = RowIndex("s", spec, len(seg), torch.tensor(seg), n_items, torch.device("cpu"))
    items = data.draw(st.lists(st.integers(0, n_items - 1), max_size=4))
    naive = [[r for r, s in enumerate(seg) if s == i] for i in range(n_items)]
    assert rows.index(items, None).tolist() == [r for i in items for r in naive[i]]
    assert rows.count(items) == sum(len(naive[i]) for i in items)
    if items and min(len(naive[i]) for i in items) > 0:
        local = data.draw(st.lists(st.integers(0, min(len(naive[i]) for i in items) - 1), max_size=3))
        assert rows.index(items, local).tolist() == [naive[i][j] for i in items for j in local]
    assert rows.index(None, None) is None


def test_rows_of_dense_and_single_graph_layouts():
    dense = RowIndex("s", SiteSpec("m"), 4, None, None, torch.device("cpu"))
    assert dense.n_items == 4 and dense.index([2, 0], None).tolist() == [2, 0]
    assert dense.index(None, [0]).tolist() == [0, 1, 2, 3]
    with pytest.raises(PositionError, match="Row 1 out of range for item 3 .* has 1 row "):
        dense.index([3], [1])
    one = RowIndex("s", SiteSpec("m", layout="edges"), 5, None, None, torch.device("cpu"))
    assert one.n_items == 1 and one.index([0], [4]).tolist() == [4]
    with pytest.raises(PositionError, match="this forward has 1 graph,"):
        one.index([1], None)
    with pytest.raises(InputError, match="has 5 rows but the segments cover 4 nodes"):
        RowIndex("s", SiteSpec("m", layout="nodes"), 5, torch.zeros(4, dtype=torch.long), 1,
                 torch.device("cpu"))


def test_find_segments_from_tensors_and_explicit():
    nodes = torch.tensor([0, 0, 1, 1, 1])
    edge_index = torch.tensor([[0, 2, 4, 1], [1, 3, 2, 0]])
    segs = find_segments((torch.zeros(5, 2), edge_index), {"batch": nodes})
    assert segs.edges.tolist() == [0, 1, 1, 0] and segs.n_items == 2
    segs = find_segments((torch.zeros(5, 2),), {"batch": nodes, "edge_index": edge_index},
                         {"nodes": torch.tensor([0, 1, 2, 3, 3])})
    assert segs.edges.tolist() == [0, 2, 3, 1] and segs.n_items == 4
    assert find_segments((torch.zeros(5, 2),), {}).as_dict() == {"nodes": None, "edges": None}
    with pytest.raises(InputError, match="segments= takes the keys 'nodes' and 'edges'"):
        find_segments((), {}, {"graphs": nodes})
    with pytest.raises(InputError, match=r"segments\['nodes'\] must be a 1-D integer tensor"):
        find_segments((), {}, {"nodes": torch.zeros(3)})


class EdgeModel(nn.Module):
    """Per-edge features through an MLP: an ``edges`` layout that is not a message."""

    def __init__(self) -> None:
        super().__init__()
        self.edge_mlp = nn.Linear(3, 3)

    def forward(self, edge_attr, batch=None):
        return self.edge_mlp(edge_attr)


def test_edges_layout_needs_to_know_the_graph_of_each_edge():
    torch.manual_seed(0)
    hm = HookedModule(EdgeModel(), {"e": SiteSpec("edge_mlp", layout="edges")})
    attr = torch.randn(4, 3)
    with pytest.raises(InputError, match="do not say which graph each of its rows belongs to"):
        hm.run_with_cache(attr, batch=torch.tensor([0, 0, 1]), items=[1])
    assert hm.n_torch_hooks == 0
    _, cache = hm.run_with_cache(attr, batch=torch.tensor([0, 0, 1]), items=[1],
                                 segments={"edges": torch.tensor([0, 1, 1, 0])})
    assert torch.equal(cache["e"], hm.module.edge_mlp(attr)[[1, 2]])
    _, alone = hm.run_with_cache(attr, items=[0])  # no segments at all: one graph
    assert alone["e"].shape == (4, 3)


def test_patch_picks_local_rows_from_whole_items():
    spec = SiteSpec("m", layout="nodes")
    rows = RowIndex("s", spec, 7, torch.tensor([0, 0, 0, 1, 1, 1, 1]), 2, torch.device("cpu"))
    source = torch.arange(7.0)[:, None] * 10  # every row of items 0 and 1, as a cache holds them
    act = torch.zeros(7, 1)
    got = Patch("s", source, items=[0, 1], rows=[0, 2])(act, rows)
    assert got[:, 0].tolist() == [0, 0, 20, 30, 0, 50, 0]


def test_importing_the_module_does_not_import_torch_geometric():
    code = ("import sys, torch, interplab.runtime.generic as g\n"
            "hm = g.HookedModule(torch.nn.Linear(2, 2), {'a': ''})\n"
            "hm.run_with_cache(torch.ones(1, 2), items=[0])\n"
            "assert not [m for m in sys.modules if m.startswith('torch_geometric')]\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
