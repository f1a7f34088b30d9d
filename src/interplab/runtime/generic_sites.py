"""Sites of an arbitrary ``nn.Module``: their declaration, and which rows an item addresses.

A site is a tensor a module produces or receives (``SiteSpec``). Its *layout* says how its
rows (dim 0) split into *items*: ``dense`` / ``image`` rows are the batch items themselves (one
row each); ``nodes`` / ``edges`` rows are segmented by graph, from the ``Segments`` of the
inputs (a PyG ``Batch``'s ``batch`` vector, or ``batch=`` / ``edge_index`` given as tensors).
``RowIndex`` turns (items, rows local to each item) into global row indices for one activation,
checking every index against what this forward actually has.

torch_geometric is never imported here: a ``Data`` object can only exist once it is imported,
so ``sys.modules`` tells whether an input may be one.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import torch

from interplab.core.errors import InputError, PositionError, SiteError, choices

LAYOUTS = ("dense", "image", "nodes", "edges")
_TENSOR = re.compile(r"^(?:(output)|output\[(\d+)\]|input\[(\d+)\]|(message))$")
_ROW_NAME = {"dense": "row", "image": "row", "nodes": "node", "edges": "edge"}
_ITEM_NAME = {"dense": "batch item", "image": "batch item", "nodes": "graph", "edges": "graph"}


@dataclass(frozen=True)
class SiteSpec:
    """Where a site is on the module and how its rows split into items.

    ``path``: dotted module path as in ``module.named_modules()`` ("" is the root module).
    ``tensor``: "output", "output[i]" (element i of a tuple output), "input[i]" (the i-th
    positional input) or "message" (a torch_geometric ``MessagePassing``'s per-edge messages).
    ``layout``: "dense" / "image" (rows = dim 0 = batch items; "image" must be 4-D), "nodes" /
    "edges" (rows segmented by graph). ``call``: which call of a module called several times in
    one forward (0-based); None means it must run exactly once.
    """

    path: str
    tensor: str = "output"
    layout: str = "dense"
    call: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise SiteError(f"SiteSpec.path must be a dotted module path (str), got {self.path!r}.")
        if not isinstance(self.tensor, str) or not _TENSOR.match(self.tensor):
            raise SiteError(
                f"SiteSpec.tensor {self.tensor!r} is not one of 'output', 'output[i]', 'input[i]', "
                "'message' (i a non-negative integer)."
            )
        if self.layout not in LAYOUTS:
            raise SiteError(f"SiteSpec.layout {self.layout!r} is not one of {choices(LAYOUTS)}.")
        if self.call is not None and (isinstance(self.call, bool) or not isinstance(self.call, int)
                                      or self.call < 0):
            raise SiteError(f"SiteSpec.call must be None or a call index >= 0, got {self.call!r}.")
        if self.tensor == "message" and self.layout not in ("edges", "dense"):
            raise SiteError(
                f"SiteSpec({self.path!r}, tensor='message'): messages have one row per edge, so the "
                f"layout is 'edges', not {self.layout!r}."
            )

    @property
    def kind(self) -> str:
        """The hook it needs: "out" (forward hook), "in" (forward pre-hook) or "message"."""
        return {"o": "out", "i": "in", "m": "message"}[self.tensor[0]]

    @property
    def index(self) -> int | None:
        """The tuple element (output[i]) or positional input (input[i]); None for a whole tensor."""
        m = _TENSOR.match(self.tensor)
        i = m.group(2) or m.group(3)
        return None if i is None else int(i)

    @property
    def graph(self) -> bool:
        return self.layout in ("nodes", "edges")


def as_spec(spec) -> SiteSpec:
    if isinstance(spec, SiteSpec):
        return spec
    if isinstance(spec, str):
        return SiteSpec(spec)
    raise SiteError(f"A site is a SiteSpec or a module path (str), got {type(spec).__name__}: {spec!r}.")


# -- segments ------------------------------------------------------------------------------------
class Segments:
    """Which graph each node and edge of one forward's inputs belongs to (None: not known).

    Edges (``nodes[edge_index[0]]``) and the number of graphs are only computed when asked.
    """

    def __init__(self, nodes: torch.Tensor | None = None, edges: torch.Tensor | None = None,
                 n_items: int | None = None, edge_index: torch.Tensor | None = None) -> None:
        self.nodes, self._edges, self._n_items, self._edge_index = nodes, edges, n_items, edge_index

    @property
    def known(self) -> bool:
        return self.nodes is not None or self._edges is not None

    @property
    def edges(self) -> torch.Tensor | None:
        if self._edges is None and self.nodes is not None and self._edge_index is not None:
            self._edges = self.nodes.to(self._edge_index.device)[self._edge_index[0].long()]
        return self._edges

    @property
    def n_edges(self) -> int | None:
        """The length of ``edges`` without computing it."""
        if self._edges is not None:
            return int(self._edges.shape[0])
        if self.nodes is not None and self._edge_index is not None:
            return int(self._edge_index.shape[1])
        return None

    @property
    def n_items(self) -> int | None:
        if self._n_items is None and self.known:
            tops = [int(v.max()) + 1 for v in (self.nodes, self._edges) if v is not None and v.numel()]
            self._n_items = max(tops, default=0)
        return self._n_items

    def as_dict(self) -> dict:
        return {"nodes": self.nodes, "edges": self.edges}


def _graph_data(obj):
    """``obj`` when it is a torch_geometric ``Data`` / ``Batch``, else None (PyG not imported)."""
    data_mod = sys.modules.get("torch_geometric.data")
    cls = getattr(data_mod, "Data", None)
    return obj if cls is not None and isinstance(obj, cls) else None


def _vector(value, what: str, label: str | None = None) -> torch.Tensor:
    label = label or f"segments[{what!r}]"
    t = torch.as_tensor(value)
    if t.ndim != 1 or t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise InputError(f"{label} must be a 1-D integer tensor (one graph index per "
                         f"{what[:-1]}), got {t.dtype} of shape {tuple(t.shape)}.")
    if t.numel() and int(t.min()) < 0:
        raise InputError(f"{label} has a negative graph index ({int(t.min())}).")
    return t.long()


def _is_edge_index(t) -> bool:
    return isinstance(t, torch.Tensor) and not t.is_sparse and t.ndim == 2 and t.shape[0] == 2 \
        and not t.is_floating_point()


def find_segments(inputs: tuple, kwargs: dict, explicit: dict | None = None) -> Segments:
    """Segments from a PyG ``Data``/``Batch`` (first input, or kwarg ``data`` / ``batch``), or
    from tensors (kwarg ``batch`` = node -> graph, ``edge_index`` 2nd positional or kwarg);
    keys of ``explicit`` override what the inputs say."""
    nodes = edge_index = n_items = None
    data = None
    for cand in (inputs[0] if inputs else None, kwargs.get("data"), kwargs.get("batch")):
        data = _graph_data(cand)
        if data is not None:
            break
    if data is not None:
        edge_index = getattr(data, "edge_index", None)
        vec = getattr(data, "batch", None)
        if vec is not None:
            nodes, n_items = vec.long(), int(data.num_graphs)
        elif data.num_nodes is not None:  # a single graph
            device = edge_index.device if torch.is_tensor(edge_index) else None
            nodes = torch.zeros(int(data.num_nodes), dtype=torch.long, device=device)
            n_items = 1
    else:
        vec = kwargs.get("batch")
        if isinstance(vec, torch.Tensor):
            nodes = _vector(vec, "nodes", "The batch= vector (node -> graph)")
        edge_index = kwargs.get("edge_index", inputs[1] if len(inputs) > 1 else None)
    if not _is_edge_index(edge_index):
        edge_index = None
    explicit = dict(explicit or {})
    unknown = set(explicit) - {"nodes", "edges"}
    if unknown:
        raise InputError(f"segments= takes the keys 'nodes' and 'edges'; got {choices(sorted(unknown))}.")
    edges = None
    if explicit.get("nodes") is not None:
        nodes, n_items = _vector(explicit["nodes"], "nodes"), None
    if explicit.get("edges") is not None:
        edges, n_items = _vector(explicit["edges"], "edges"), None
    return Segments(nodes, edges, n_items, edge_index)


# -- rows of one activation ----------------------------------------------------------------------
class RowIndex:
    """The rows of one activation at one site, by item (graph or batch item) and local row.

    ``seg`` is the graph of each row (graph layouts; a tensor, or a function making it, of
    length ``n_seg``), or None: for dense / image layouts each row is its own item; for a graph
    layout with no segments the whole tensor is one graph. ``n_items`` is the number of graphs
    when the inputs say (else the largest segment + 1).
    """

    def __init__(self, name: str, spec: SiteSpec, n_rows: int, seg=None, n_items: int | None = None,
                 device=None, n_seg: int | None = None) -> None:
        self.name, self.spec, self.n_rows, self.device = name, spec, n_rows, device
        self._seg, self._n_items_hint = seg, n_items
        self._n_items = None
        if not spec.graph:
            self._n_items = n_rows
        elif seg is None:
            self._n_items = 1
        else:
            n_seg = int(seg.shape[0]) if n_seg is None else n_seg
            if n_seg != n_rows:
                raise InputError(
                    f"Site {name!r} ({spec.path} {spec.tensor}, layout {spec.layout!r}) has {n_rows} "
                    f"rows but the segments cover {n_seg} {spec.layout}: the layout does not "
                    "fit this tensor (a different layout, or segments= for these rows?)."
                )
        self._blocks = None

    @property
    def seg(self) -> torch.Tensor | None:
        if callable(self._seg):
            self._seg = self._seg()
        return self._seg

    @property
    def n_items(self) -> int:
        if self._n_items is None:
            seg = self.seg
            top = int(seg.max()) + 1 if seg.numel() else 0
            self._n_items = max(self._n_items_hint or 0, top)
        return self._n_items

    def _block_table(self):
        if self._blocks is None:
            seg = self.seg.to(self.device)
            counts = torch.bincount(seg, minlength=self.n_items)
            order = torch.argsort(seg, stable=True)
            starts = torch.cumsum(counts, 0) - counts
            self._blocks = (order, starts.tolist(), counts.tolist())
        return self._blocks

    def item_rows(self, item: int) -> torch.Tensor:
        """Global indices of one item's rows, in their order in the tensor."""
        if not self.spec.graph:
            return torch.tensor([item], dtype=torch.long, device=self.device)
        if self.seg is None:
            return torch.arange(self.n_rows, device=self.device)
        order, starts, counts = self._block_table()
        return order[starts[item]:starts[item] + counts[item]]

    def check_items(self, items) -> list[int]:
        what = _ITEM_NAME[self.spec.layout]
        bad = [i for i in items if not 0 <= i < self.n_items]
        if bad:
            dim0 = " (items of a dense layout index dim 0)" if not self.spec.graph else ""
            n = self.n_items
            raise PositionError(
                f"Item {bad[0]} out of range at site {self.name!r}: this forward has "
                f"{_count(n, what)}{dim0}{f', so items are 0..{n - 1}' if n else ''}."
            )
        return list(items)

    def index(self, items=None, rows=None) -> torch.Tensor | None:
        """Global row indices for ``items`` (all when None) and ``rows`` local to each item (all
        when None), in item order; None means every row of the tensor."""
        if items is None and rows is None:
            return None
        items = self.check_items(range(self.n_items) if items is None else items)
        parts = []
        for item in items:
            block = self.item_rows(item)
            if rows is None:
                parts.append(block)
                continue
            n = block.shape[0]
            bad = [r for r in rows if not 0 <= r < n]
            if bad:
                raise PositionError(
                    f"Row {bad[0]} out of range for item {item} at site {self.name!r}: that "
                    f"{_ITEM_NAME[self.spec.layout]} has {_count(n, _ROW_NAME[self.spec.layout])}"
                    f"{f' (rows 0..{n - 1})' if n else ''}."
                )
            parts.append(block[torch.as_tensor(list(rows), dtype=torch.long, device=self.device)])
        if not parts:
            return torch.zeros(0, dtype=torch.long, device=self.device)
        return torch.cat(parts)

    def count(self, items=None) -> int:
        """How many rows ``items`` have together."""
        if items is None:
            return self.n_rows
        return sum(int(self.item_rows(i).shape[0]) for i in self.check_items(items))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def check_image(name: str, spec: SiteSpec, act: torch.Tensor) -> None:
    if spec.layout == "image" and act.ndim != 4:
        raise SiteError(
            f"Site {name!r} ({spec.path} {spec.tensor}) has layout 'image', which needs a 4-D "
            f"[batch, C, H, W] tensor, but it is {act.ndim}-D {tuple(act.shape)}; use layout='dense'."
        )


def as_index_list(value, what: str) -> tuple[int, ...] | None:
    """Items or rows as a tuple of non-negative ints (None stays None)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1).tolist()
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise PositionError(f"{what} must be an int or a list of ints, got {value!r}.") from None
    if any(v < 0 for v in out):
        raise PositionError(f"{what} must be >= 0 (indices from the start), got {list(out)}.")
    return out
