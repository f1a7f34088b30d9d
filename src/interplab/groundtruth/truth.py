"""The ground truth of a planted model: which nodes compute its task and how they connect.

A node is ``embed``, ``logits``, a head ``L<layer>.h<head>`` or an MLP ``mlp<layer>``. An
edge is ``(sender, receiver)`` or, into a head, ``(sender, receiver, input)`` with input one
of ``q``, ``k``, ``v`` -- the path-patching vocabulary of Wang et al. 2022 (IOI) and Conmy et
al. 2023 (ACDC). Methods that recover circuits are scored against a ``Truth``
(``groundtruth.scoring``); ``check_against`` refuses a truth that names a part the model lacks,
so a score is never computed against a graph that cannot exist.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from interplab.core.errors import ConfigError, SiteError
from interplab.core.sites import Site, SiteKind

_HEAD = re.compile(r"^L(\d+)\.h(\d+)$")
_MLP = re.compile(r"^mlp(\d+)$")
INPUTS = ("q", "k", "v")


def parse_node(node: str) -> tuple[str, int | None, int | None]:
    """("embed" | "logits" | "head" | "mlp", layer, head) of a node name, or ConfigError."""
    if node in ("embed", "logits"):
        return node, None, None
    if m := _HEAD.match(node):
        return "head", int(m[1]), int(m[2])
    if m := _MLP.match(node):
        return "mlp", int(m[1]), None
    raise ConfigError(
        f"Unknown truth node {node!r}. Nodes are 'embed', 'logits', 'L<layer>.h<head>' "
        "(an attention head, e.g. 'L1.h0') or 'mlp<layer>' (e.g. 'mlp0')."
    )


def node_site(node: str) -> Site:
    """The site whose activation is the node's output (a head's z, an MLP's mlp_out)."""
    kind, layer, head = parse_node(node)
    if kind == "head":
        return Site(layer, SiteKind.Z, head)
    if kind == "mlp":
        return Site(layer, SiteKind.MLP_OUT)
    return Site(None, SiteKind(kind))


@dataclass(frozen=True)
class Truth:
    """Nodes and edges of the mechanism planted for ``task``."""

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, ...], ...]  # (sender, receiver) or (sender, receiver, q|k|v)
    description: str = ""
    task: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "edges", tuple(tuple(e) for e in self.edges))
        for node in self.nodes:
            parse_node(node)
        if len(set(self.nodes)) != len(self.nodes):
            raise ConfigError(f"Truth nodes repeat: {list(self.nodes)}.")
        for edge in self.edges:
            self._check_edge(edge)

    def _check_edge(self, edge: tuple[str, ...]) -> None:
        if len(edge) not in (2, 3):
            raise ConfigError(f"Truth edge {edge!r} must be (sender, receiver) or "
                              "(sender, receiver, input).")
        missing = [n for n in edge[:2] if n not in self.nodes]
        if missing:
            raise ConfigError(f"Truth edge {edge!r} names {missing}, which are not among the "
                              f"nodes {list(self.nodes)}.")
        if len(edge) == 3:
            if parse_node(edge[1])[0] != "head" or edge[2] not in INPUTS:
                raise ConfigError(f"Truth edge {edge!r}: an input is given only into a head and "
                                  f"is one of {INPUTS}.")
        if edge[0] == "logits" or edge[1] == "embed":
            raise ConfigError(f"Truth edge {edge!r} runs backwards: 'embed' only sends and "
                              "'logits' only receives.")

    # -- what it names --------------------------------------------------------------------
    def heads(self) -> list[tuple[int, int]]:
        return [(p[1], p[2]) for p in map(parse_node, self.nodes) if p[0] == "head"]

    def sites(self) -> list[Site]:
        """The output site of every node (heads: attn.z[h]; MLPs: mlp_out)."""
        return [node_site(n) for n in self.nodes]

    def check_against(self, model) -> None:
        """Raise SiteError naming the first node the model (HookedModel or ModelDims) lacks."""
        dims = getattr(model, "dims", model)
        for node in self.nodes:
            kind, layer, head = parse_node(node)
            if layer is not None and layer >= dims.n_layers:
                raise SiteError(
                    f"Truth node {node!r} is in layer {layer}, but the model has "
                    f"{dims.n_layers} layers (valid: 0..{dims.n_layers - 1}); this truth "
                    "belongs to another model."
                )
            if kind == "head" and head >= dims.n_heads:
                raise SiteError(
                    f"Truth node {node!r} names head {head}, but the model has {dims.n_heads} "
                    f"heads per layer (valid: 0..{dims.n_heads - 1}); this truth belongs to "
                    "another model."
                )
            if kind == "mlp" and dims.d_mlp == 0:
                raise SiteError(f"Truth node {node!r} names an MLP, but the model is "
                                "attention-only (d_mlp=0).")

    # -- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"nodes": list(self.nodes), "edges": [list(e) for e in self.edges],
                "description": self.description, "task": self.task}

    @classmethod
    def from_dict(cls, data: dict) -> Truth:
        unknown = sorted(set(data) - {"nodes", "edges", "description", "task"})
        if unknown:
            raise ConfigError(f"Unknown truth fields {unknown}; valid: nodes, edges, "
                              "description, task.")
        return cls(tuple(data["nodes"]), tuple(tuple(e) for e in data["edges"]),
                   data.get("description", ""), data.get("task", ""))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Truth:
        return cls.from_dict(json.loads(text))
