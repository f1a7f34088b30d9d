"""The computational graph circuit discovery works on: nodes that write the residual stream,
edges from each node to each later node's input.

Technique. A transformer's residual stream at any point is a *sum* of what earlier nodes wrote
(Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits"): the embedding, every
attention head's ``z[h] @ W_O[h]`` and every MLP's output. A node *receives* a function of that
sum -- a head through its query, key and value inputs (three separate receivers, as in
Wang et al. 2022 and Conmy et al. 2023), an MLP through its input, the unembedding through the
final residual. An edge ``(s, r[, input])`` is one term of that sum as seen by one receiver, so
it can be ablated for that receiver alone (``edges.py``).

Names follow ``interplab.groundtruth.truth``: ``embed``, ``L<l>.h<h>``, ``mlp<l>``, ``logits``;
edges into a head carry ``q`` / ``k`` / ``v``.

Grouped-query attention (GQA: ``n_kv_heads < n_heads``, e.g. SmolLM2, Qwen). The query input
stays per query head, but the ``G = n_heads // n_kv_heads`` query heads ``gG .. gG+G-1`` of
group ``g`` read one key and one value: the key input of KV head ``g`` is a single receiver
(ablating an edge into it changes the keys all ``G`` heads attend with). Its edges are named
after the *first* query head of the group -- ``(sender, "L<l>.h<gG>", "k")`` and ``"v"`` --
and the other heads of the group have no ``k`` / ``v`` edges. So a ``Truth`` addresses a KV
receiver with its ordinary vocabulary, and for multi-head attention (``G = 1``) the rule is the
plain one: every head has its own q / k / v. ``CircuitGraph.kv_node`` maps any query head to
the name its group's k / v edges carry; the runtime site of that receiver is
``L<l>.attn.k[h<g>]`` (k / v sites index KV heads).

Assumptions (checked in ``check_model``, refused with the reason otherwise):

* the residual stream is a plain sum of node outputs: no norm after a sublayer (Gemma's
  sandwich norms make a head's share of the residual a non-linear function of all heads);
* under grouped-query attention a k / v receiver is a KV head (see above): an edge into it
  is shared by the query heads of its group, never into one of them alone;
* ``embed`` is the input of block 0 (token + position embeddings, so learned positions ride on
  the embed node); out-projection biases are constant terms that belong to no node and are
  never ablated (they are the same on every input, so the corrupt run has them too);
* parallel-residual blocks (GPT-NeoX): the MLP of layer l reads the block input, so heads of
  layer l do not send to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from interplab.core.errors import ConfigError, UnsupportedArchitectureError
from interplab.core.model import Model

SUPPORTED_ADAPTERS = ("toy", "llama", "qwen", "gpt2", "gpt_neox")
INPUTS = ("q", "k", "v")


@dataclass(frozen=True)
class Sender:
    """A node whose output is a term of the residual stream."""

    name: str
    kind: str  # "embed" | "head" | "mlp"
    layer: int | None = None
    head: int | None = None


@dataclass(frozen=True)
class Receiver:
    """One input of a node: a head's q / k / v, an MLP's input, or the logits' input."""

    node: str
    kind: str  # "head" | "mlp" | "logits"
    layer: int | None = None
    head: int | None = None  # the query head (for k / v: the first one of its KV group)
    input: str | None = None  # q / k / v for heads
    n_senders: int = 0  # senders[:n_senders] feed it (senders are in residual order)
    start: int = 0  # index of its first edge in CircuitGraph.edges
    kv_head: int | None = None  # k / v receivers: the KV head (== head without GQA)

    @property
    def name(self) -> str:
        return self.node if self.input is None else f"{self.node}.{self.input}"

    @property
    def site_head(self) -> int | None:
        """The head index of its ``attn.q/k/v`` site (k / v sites index KV heads)."""
        return self.head if self.input == "q" else self.kv_head


@dataclass(frozen=True)
class CircuitGraph:
    """Nodes, senders, receivers and edges of one model, in forward order."""

    n_layers: int
    n_heads: int
    has_mlp: bool
    parallel: bool
    senders: tuple[Sender, ...]
    receivers: tuple[Receiver, ...]
    edges: tuple[tuple[str, ...], ...]
    nodes: tuple[str, ...]
    n_kv_heads: int | None = None  # None: n_heads (multi-head attention)
    _index: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)

    @classmethod
    def build(cls, n_layers: int, n_heads: int, has_mlp: bool, parallel: bool = False,
              n_kv_heads: int | None = None) -> CircuitGraph:
        """The graph of a model with these sizes (no model needed); ``n_kv_heads`` < ``n_heads``
        for grouped-query attention (k / v receivers per KV head, see the module doc)."""
        if n_layers < 1 or n_heads < 1:
            raise ConfigError(f"A circuit graph needs n_layers >= 1 and n_heads >= 1; got "
                              f"{n_layers} and {n_heads}.")
        n_kv = n_heads if n_kv_heads is None else n_kv_heads
        if n_kv < 1 or n_heads % n_kv:
            raise ConfigError(f"n_kv_heads must divide n_heads (each key/value head serves a "
                              f"group of query heads); got {n_kv} for {n_heads} heads.")
        group = n_heads // n_kv
        senders: list[Sender] = [Sender("embed", "embed")]
        receivers: list[Receiver] = []
        edges: list[tuple[str, ...]] = []

        def add(node, kind, layer=None, head=None, inp=None, n=0, kv=None):
            receivers.append(Receiver(node, kind, layer, head, inp, n, len(edges), kv))
            for s in senders[:n]:
                edges.append((s.name, node, inp) if inp else (s.name, node))

        for layer in range(n_layers):
            n_before = len(senders)
            for h in range(n_heads):
                for inp in INPUTS:  # k / v: once per KV group, on its first query head
                    if inp == "q" or h % group == 0:
                        kv = None if inp == "q" else h // group
                        add(f"L{layer}.h{h}", "head", layer, h, inp, n_before, kv)
            senders += [Sender(f"L{layer}.h{h}", "head", layer, h) for h in range(n_heads)]
            if has_mlp:
                add(f"mlp{layer}", "mlp", layer, n=n_before if parallel else len(senders))
                senders.append(Sender(f"mlp{layer}", "mlp", layer))
        add("logits", "logits", n=len(senders))
        nodes = (*(s.name for s in senders), "logits")
        graph = cls(n_layers, n_heads, has_mlp, parallel, tuple(senders), tuple(receivers),
                    tuple(edges), nodes, n_kv)
        graph._index.update({e: i for i, e in enumerate(edges)})
        return graph

    @classmethod
    def from_model(cls, model) -> CircuitGraph:
        """The graph of a ``HookedModel``; refuses a model whose residual is not a sum of
        per-node terms (see the module doc)."""
        check_model(model)
        d, a = model.dims, model.adapter
        parallel = bool(a.parallel_residual(0))
        return cls.build(d.n_layers, d.n_heads, d.d_mlp > 0, parallel, d.n_kv_heads)

    # -- lookups -----------------------------------------------------------------------------
    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @property
    def group(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    def kv_node(self, layer: int, head: int) -> str:
        """The node name the k / v edges of query head ``head``'s KV group carry: the group's
        first query head (``head`` itself without grouped-query attention)."""
        return f"L{layer}.h{head - head % self.group}"

    def reader_nodes(self, r: Receiver) -> list[str]:
        """The nodes whose output depends on receiver ``r``: the node itself, or for a k / v
        receiver every query head of its KV group; none for the logits."""
        if r.kind == "logits":
            return []
        if r.kind == "head" and r.input != "q":
            return [f"L{r.layer}.h{h}" for h in range(r.head, r.head + self.group)]
        return [r.node]

    def edge_index(self, edge) -> int:
        edge = tuple(edge)
        if edge not in self._index:
            hint = ""
            if len(edge) == 3 and edge[2] in ("k", "v") and self.group > 1:
                hint = (f" Under grouped-query attention ({self.n_heads} query heads, "
                        f"{self.n_kv_heads} key/value heads) k / v edges go into a KV head and "
                        "are named after its group's first query head (CircuitGraph.kv_node), "
                        f"e.g. ('embed', 'L0.h0', 'k') for KV head 0 of layer 0 (query heads "
                        f"0..{self.group - 1}).")
            raise ConfigError(f"Edge {edge!r} is not in this graph. Edges look like "
                              f"{self.edges[0]!r} or {self.edges[-1]!r}.{hint}")
        return self._index[edge]

    def labels(self, edges) -> list[bool]:
        """For each graph edge: is it among ``edges`` (e.g. a ``Truth``'s)? Unknown names raise."""
        wanted = {tuple(e) for e in edges}
        for e in wanted:
            self.edge_index(e)
        return [e in wanted for e in self.edges]

    def receiver_of(self, edge_idx: int) -> Receiver:
        for r in self.receivers:
            if r.start <= edge_idx < r.start + r.n_senders:
                return r
        raise IndexError(edge_idx)


def check_model(model: Model) -> None:
    """Raise naming the reason when edge-level interventions cannot be exact on ``model``."""
    a, d = model.adapter, model.dims
    supported = ", ".join(SUPPORTED_ADAPTERS)
    if a.name not in SUPPORTED_ADAPTERS:
        why = ("its blocks normalise each sublayer's output before adding it to the residual "
               "(sandwich norms), so a head's share of the residual is not its own term"
               if a.name == "gemma3" else "its residual layout has not been checked")
        raise UnsupportedArchitectureError(
            f"Edge-level interventions need per-receiver input access and a residual stream "
            f"that is a sum of node outputs; the {a.name!r} family is not supported: {why}. "
            f"Supported families: {supported} (grouped-query attention included). Use "
            "node-level patching (interplab.analyses.patching / path_patching) instead."
        )
    if d.n_kv_heads < 1 or d.n_heads % d.n_kv_heads:
        raise UnsupportedArchitectureError(
            f"Edge-level interventions need each key/value head to serve a whole group of "
            f"query heads; this {a.name!r} model has {d.n_heads} query heads and "
            f"{d.n_kv_heads} key/value heads, which does not divide."
        )
