"""HookedModule: any ``nn.Module`` with user-declared sites, caching, interventions, gradients.

The sites are declared up front (``SiteSpec``: a module path, which tensor of it, how its rows
split into items). With nothing attached ``run`` is literally ``module(*inputs, **kwargs)`` —
no hook is registered, so the output is the plain forward's bit for bit — and a cache only
reads. Hooks are attached for one call and removed in ``finally``, also when the forward or an
intervention raises. Graph models are first-class: a torch_geometric ``Batch`` (or ``batch=`` /
``edge_index`` tensors) segments node and edge rows by graph, so an intervention or a cache can
address graph *i* of a batch, node or edge *j* of it; torch_geometric itself is only touched
when the inputs or a ``message`` site already involve it.

Items are batch items (dim 0) for ``dense`` / ``image`` sites — one row each — and graphs for
``nodes`` / ``edges`` sites, whose rows are local to the graph (node j of graph i, edge k of
graph i in edge_index order). Without any segments a graph site is one graph (item 0). The rows
of a ``message`` site are the messages ``propagate`` computes, in the order of the edge_index it
was given: for GCNConv that is the input's edges followed by the self-loops it adds, and graph i's
messages in a batch are, in the same order, those of graph i run alone.

    hm = HookedModule(gcn, {"conv1": SiteSpec("convs.0", layout="nodes"), "fc": "head"})
    out, cache = hm.run_with_cache(batch, sites=["conv1"], items=[3])
    out = hm.run(batch, interventions=[Patch("conv1", other_cache, items=[3])])
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from interplab.core.errors import (
    InputError,
    InterventionError,
    PositionError,
    SiteError,
    choices,
    did_you_mean,
)
from interplab.runtime.generic_hooks import CACHE, GRAD, INTERVENE, CallHooks, where
from interplab.runtime.generic_ops import Ablate, Add, Identity, Patch, Set
from interplab.runtime.generic_sites import (
    RowIndex,
    Segments,
    SiteSpec,
    as_index_list,
    as_spec,
    check_image,
    find_segments,
)

__all__ = ["Ablate", "Add", "HookedModule", "Identity", "Patch", "Set", "SiteSpec"]


class HookedModule:
    """An ``nn.Module`` with named sites (``{name: SiteSpec | module path}``).

    The module is used as given (its train / eval mode and parameters are left alone).
    """

    def __init__(self, module: nn.Module, sites: Mapping[str, SiteSpec | str]) -> None:
        if not isinstance(module, nn.Module):
            raise InputError(f"HookedModule wraps a torch.nn.Module, got {type(module).__name__}.")
        if not isinstance(sites, Mapping):
            raise SiteError("sites must be a dict {name: SiteSpec or module path}, got "
                            f"{type(sites).__name__}.")
        self.module = module
        self.sites: dict[str, SiteSpec] = {str(name): as_spec(spec) for name, spec in sites.items()}
        paths = dict(module.named_modules())
        self._modules: dict[str, nn.Module] = {}
        for name, spec in self.sites.items():
            if spec.path not in paths:
                near = difflib.get_close_matches(spec.path, [p for p in paths if p], n=5, cutoff=0.3)
                near = near or [p for p in paths if p][:5]
                raise SiteError(
                    f"Site {name!r}: {spec.path!r} is not a module path of {type(module).__name__}."
                    f"{did_you_mean(spec.path, paths)} Nearest module paths: "
                    f"{choices(near) or '(none: the module has no submodules)'} "
                    "(the names in module.named_modules(); '' is the module itself)."
                )
            sub = paths[spec.path]
            if spec.tensor == "message" and not _is_message_passing(sub):
                raise SiteError(
                    f"Site {name!r}: tensor='message' needs a torch_geometric MessagePassing, but "
                    f"{spec.path or '<root module>'} is a {type(sub).__name__}; use tensor='output'."
                )
            self._modules[name] = sub
        self._active: list[CallHooks] = []  # the calls in flight (hooks on the module now)

    @property
    def n_torch_hooks(self) -> int:
        """How many torch hooks interplab has on the module right now (0 when idle)."""
        return sum(h.n_hooks for h in self._active)

    # -- public calls ------------------------------------------------------------------------------
    def run(self, *inputs, interventions: Iterable = (), segments: Mapping | None = None, **kwargs):
        """``module(*inputs, **kwargs)`` with the interventions applied (none: exactly that call)."""
        interventions = list(interventions)
        if not interventions:
            return self.module(*inputs, **kwargs)
        return self._call(inputs, kwargs, interventions, segments, [])

    def run_with_cache(self, *inputs, sites: Iterable[str] | None = None, items=None,
                       interventions: Iterable = (), segments: Mapping | None = None, **kwargs):
        """(output, {name: activation}) for ``sites`` (all declared sites when None), each after
        the interventions at that site; ``items`` keeps only those items' rows, in item order."""
        names = self._names(sites)
        items = as_index_list(items, "items")
        cache: dict[str, torch.Tensor] = {}

        def store(name):
            def fn(act, rows: RowIndex):
                idx = rows.index(items, None)
                act = act.detach()
                cache[name] = act.clone() if idx is None else act[idx]
            return fn

        out = self._call(inputs, kwargs, list(interventions), segments,
                         [(n, store(n), CACHE) for n in names], items=items)
        return out, cache

    def gradients(self, metric: Callable, *inputs, sites: Iterable[str] | None = None,
                  interventions: Iterable = (), segments: Mapping | None = None, **kwargs):
        """(metric value, {name: (activation, gradient)}) from one backward of ``metric(output)``.

        Parameters are frozen for the call (their ``requires_grad`` is restored after), and the
        earliest asked activation becomes a leaf, so autograd records only what is needed. The
        gradient at an ``input[i]`` site is the one through that module's use of the input.
        """
        names = self._names(sites)
        if not names:
            raise InputError("gradients() needs at least one site.")
        acts: dict[str, torch.Tensor] = {}

        def tap(name):
            def fn(act, rows):
                if not act.is_floating_point():
                    raise InputError(f"Site {name!r} is a {act.dtype} tensor, which has no gradient.")
                act = act.detach().requires_grad_(True) if not act.requires_grad else act.view_as(act)
                acts[name] = act
                return act
            return fn

        frozen = [p for p in self.module.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                out = self._call(inputs, kwargs, list(interventions), segments,
                                 [(n, tap(n), GRAD) for n in names])
                value = metric(out)
                if not isinstance(value, torch.Tensor) or value.numel() != 1:
                    raise InputError(
                        "The metric must return a scalar tensor (e.g. a mean over the batch); got "
                        f"{type(value).__name__} of shape {tuple(getattr(value, 'shape', ()))}."
                    )
                taps = [acts[n] for n in names]
                if value.requires_grad:
                    grads = torch.autograd.grad(value.reshape(()), taps, allow_unused=True)
                else:
                    grads = [None] * len(taps)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        result = {}
        for name, act, g in zip(names, taps, grads, strict=True):
            g = torch.zeros_like(act) if g is None else g
            result[name] = (act.detach().clone(), g.detach())
        return value.detach(), result

    def segments(self, *inputs, **kwargs) -> dict:
        """{"nodes": node -> graph, "edges": edge -> graph} of these inputs (None where unknown)."""
        return find_segments(inputs, kwargs).as_dict()

    # -- one instrumented forward -----------------------------------------------------------------
    def _call(self, inputs, kwargs, interventions: list, segments, extra: list, items=None):
        prepared = [(self._check_intervention(iv), iv) for iv in interventions]
        used = {n for n, _ in prepared} | {n for n, _, _ in extra}
        graph = any(self.sites[n].graph for n in used)
        segs = find_segments(inputs, kwargs, segments) if graph else Segments()
        for name, iv in prepared:  # item ranges of graph sites are known before the forward
            self._check_items(name, getattr(iv, "items", None), segs)
        for name, _, _ in extra:
            self._check_items(name, items, segs)

        def rows_for(name, spec, act, edge_index):
            check_image(name, spec, act)
            n_rows = act.shape[0] if act.ndim else 1
            if not spec.graph:
                return RowIndex(name, spec, n_rows, device=act.device)
            seg, n_seg = self._segment_vector(name, spec, segs, edge_index)
            return RowIndex(name, spec, n_rows, seg, segs.n_items, act.device, n_seg)

        hooks = CallHooks(rows_for)
        for name, iv in prepared:
            hooks.add(name, self.sites[name], self._modules[name], iv, INTERVENE)
        for name, fn, priority in extra:
            hooks.add(name, self.sites[name], self._modules[name], fn, priority)
        self._active.append(hooks)
        try:
            hooks.install()
            out = self.module(*inputs, **kwargs)
            hooks.verify()
        finally:
            hooks.remove()
            self._active.remove(hooks)
        return out

    def _names(self, sites) -> list[str]:
        if sites is None:
            return list(self.sites)
        if isinstance(sites, str):
            sites = [sites]
        names = list(dict.fromkeys(sites))
        for name in names:
            self._known(name)
        return names

    def _known(self, name) -> str:
        if name not in self.sites:
            near = difflib.get_close_matches(str(name), list(self.sites), n=3, cutoff=0.5)
            raise SiteError(
                f"Unknown site {name!r}.{did_you_mean(name, self.sites)} "
                f"{'Nearest names: ' + choices(near) + '. ' if near else ''}"
                f"This HookedModule's sites: {choices(self.sites)}."
            )
        return name

    def _check_intervention(self, iv) -> str:
        site = getattr(iv, "site", None)
        if site is None or not callable(iv):
            raise InterventionError(
                f"{iv!r} is not an intervention: it needs a 'site' and a __call__(act, rows). Use "
                "Set, Ablate, Add, Patch or Identity from interplab.runtime.generic."
            )
        return self._known(site)

    def _check_items(self, name: str, items, segs: Segments) -> None:
        if not items or not self.sites[name].graph:
            return
        n = segs.n_items if segs.known else 1
        bad = [i for i in items if i >= n]
        if bad:
            _raise_items(name, bad[0], n)

    def _segment_vector(self, name: str, spec: SiteSpec, segs: Segments, edge_index):
        """(the graph of each row at a graph-layout site, or a function making it; its length).
        (None, None): no segments, the whole tensor is one graph."""
        if not segs.known:
            return None, None
        nodes = segs.nodes
        if spec.kind == "message" and nodes is not None and edge_index is not None:
            # the edges message() actually sees (GCNConv adds self-loops after the input's edges)
            return (lambda: nodes.to(edge_index.device)[edge_index[0].long()]), int(edge_index.shape[1])
        if spec.layout == "nodes" and nodes is not None:
            return nodes, int(nodes.shape[0])
        if spec.layout == "edges" and segs.n_edges is not None:
            return (lambda: segs.edges), segs.n_edges
        missing = "node -> graph vector (batch=)" if spec.layout == "nodes" else \
            "edge_index (2nd positional input or edge_index=)"
        raise InputError(
            f"Site {name!r} ({where(spec)}) has layout {spec.layout!r}, but the inputs do not say "
            f"which graph each of its rows belongs to: pass the {missing}, a torch_geometric "
            f"Batch, or segments={{{spec.layout!r}: ...}}."
        )

    def __repr__(self) -> str:
        sites = ", ".join(f"{n}={s.path or '<root>'}:{s.tensor}/{s.layout}" for n, s in self.sites.items())
        return f"HookedModule({type(self.module).__name__}: {sites})"


def _raise_items(name: str, item: int, n: int):
    raise PositionError(
        f"Item {item} out of range at site {name!r}: the inputs have {n} graph{'s' if n != 1 else ''}"
        f"{f', so items are 0..{n - 1}' if n else ''}."
    )


def _is_message_passing(module: nn.Module) -> bool:
    try:
        from torch_geometric.nn import MessagePassing
    except ImportError:
        return False
    return isinstance(module, MessagePassing)

