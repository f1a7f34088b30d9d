"""The computational graph circuit discovery works on: nodes that write the residual stream,
edges from each node to each later node's input.

Technique. A transformer's residual stream at any point is a *sum* of what earlier nodes wrote
(Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits"): the embedding, every
attention head's ``z[h] @ W_O[h]`` and every MLP's output. A node *receives* a function of that
sum -- a head through its query, key and value inputs (three separate receivers, as in
Wang et al. 2022 and Conmy et al. 2023), an MLP through its input, the unembedding through the
final residual. An edge ``(s, r[, input])`` is one term of that sum as seen by one receiver, so
it can be ablated for that receiver alone (``edges.py``).

Names follow ``interplab.benchmarks.truth``: ``embed``, ``L<l>.h<h>``, ``mlp<l>``, ``logits``;
edges into a head carry ``q`` / ``k`` / ``v``.

Assumptions (checked in ``check_model``, refused with the reason otherwise):

* the residual stream is a plain sum of node outputs: no norm after a sublayer (Gemma's
  sandwich norms make a head's share of the residual a non-linear function of all heads);
* one key/value head per query head (under grouped-query attention a key input is shared by
  several query heads, so an edge into one head's ``k`` does not exist);
* ``embed`` is the input of block 0 (token + position embeddings, so learned positions ride on
  the embed node); out-projection biases are constant terms that belong to no node and are
  never ablated (they are the same on every input, so the corrupt run has them too);
* parallel-residual blocks (GPT-NeoX): the MLP of layer l reads the block input, so heads of
  layer l do not send to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from interplab.core.errors import ConfigError, UnsupportedArchitectureError

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
    head: int | None = None
    input: str | None = None  # q / k / v for heads
    n_senders: int = 0  # senders[:n_senders] feed it (senders are in residual order)
    start: int = 0  # index of its first edge in CircuitGraph.edges

    @property
    def name(self) -> str:
        return self.node if self.input is None else f"{self.node}.{self.input}"


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
    _index: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, n_layers: int, n_heads: int, has_mlp: bool, parallel: bool = False) -> CircuitGraph:
        """The graph of a model with these sizes (no model needed)."""
        if n_layers < 1 or n_heads < 1:
            raise ConfigError(f"A circuit graph needs n_layers >= 1 and n_heads >= 1; got "
                              f"{n_layers} and {n_heads}.")
        senders: list[Sender] = [Sender("embed", "embed")]
        receivers: list[Receiver] = []
        edges: list[tuple[str, ...]] = []

        def add(node, kind, layer=None, head=None, inp=None, n=0):
            receivers.append(Receiver(node, kind, layer, head, inp, n, len(edges)))
            for s in senders[:n]:
                edges.append((s.name, node, inp) if inp else (s.name, node))

        for layer in range(n_layers):
            n_before = len(senders)
            for h in range(n_heads):
                for inp in INPUTS:
                    add(f"L{layer}.h{h}", "head", layer, h, inp, n_before)
            senders += [Sender(f"L{layer}.h{h}", "head", layer, h) for h in range(n_heads)]
            if has_mlp:
                add(f"mlp{layer}", "mlp", layer, n=n_before if parallel else len(senders))
                senders.append(Sender(f"mlp{layer}", "mlp", layer))
        add("logits", "logits", n=len(senders))
        nodes = (*(s.name for s in senders), "logits")
        graph = cls(n_layers, n_heads, has_mlp, parallel, tuple(senders), tuple(receivers),
                    tuple(edges), nodes)
        graph._index.update({e: i for i, e in enumerate(edges)})
        return graph

    @classmethod
    def from_model(cls, model) -> CircuitGraph:
        """The graph of a ``HookedModel``; refuses a model whose residual is not a sum of
        per-node terms or whose heads share key/value inputs (see the module doc)."""
        check_model(model)
        d, a = model.dims, model.adapter
        parallel = bool(a.parallel_residual(0))
        return cls.build(d.n_layers, d.n_heads, d.d_mlp > 0, parallel)

    # -- lookups -----------------------------------------------------------------------------
    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def edge_index(self, edge) -> int:
        edge = tuple(edge)
        if edge not in self._index:
            raise ConfigError(f"Edge {edge!r} is not in this graph. Edges look like "
                              f"{self.edges[0]!r} or {self.edges[-1]!r}.")
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


def check_model(model) -> None:
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
            f"Supported families: {supported} (with n_kv_heads == n_heads). Use node-level "
            "patching (interplab.analyses.patching / path_patching) instead."
        )
    if d.n_kv_heads != d.n_heads:
        raise UnsupportedArchitectureError(
            f"Edge-level interventions need per-receiver input access: this {a.name!r} model "
            f"uses grouped-query attention ({d.n_heads} query heads share {d.n_kv_heads} "
            "key/value heads), so an edge into one head's k or v input does not exist on its "
            f"own. Supported: families {supported} with n_kv_heads == n_heads."
        )
