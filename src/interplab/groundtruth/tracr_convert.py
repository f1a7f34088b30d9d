"""A tracr-compiled transformer as an ``interplab-toy`` model, with its ground-truth circuit.

tracr (Lindner et al. 2023) assembles a haiku transformer with no layer norm, ReLU MLPs and
one-hot residual subspaces, each layer an attention sub-layer then an MLP sub-layer (either
may be all zeros). Its weights map one to one onto the toy family
(``models.toy``: ``normalization="none"``, learned positions, ``causal=False``):

* ``token_embed`` -> ``model.embed_tokens``; ``pos_embed`` (its row 0, the BOS position, is
  zero) -> ``model.pos_embed`` with ``n_ctx = max_seq_len + 1``;
* per layer, haiku ``query/key/value`` ``w [d_model, n_heads * key_size]`` -> ``q/k/v_proj``
  (transposed; tracr already pads narrower heads and missing heads with zeros), ``linear``
  -> ``o_proj``; ``mlp/linear_1`` -> ``up_proj``, ``mlp/linear_2`` -> ``down_proj``. tracr's
  biases are all zero, so the toy model has none. The attention scale is tracr's
  ``1/sqrt(key_size)`` (the toy default with ``d_head = key_size``).
* the unembedding reads tracr's output subspace. Categorical programs: logit ``i`` is the
  residual coordinate of output value ``output_vocab[i]``, so argmax is the program's output;
  the rows past the output values (the toy model's vocab is ``max(#inputs, #outputs)``) read
  ``-1`` (minus the one-hot token subspace) and never win. Numerical programs: logit 0 is the
  output coordinate (``ConvertedTracr.readout``), the other logits are constant ``-1``.

The truth (``groundtruth.truth.Truth``) is read off the compiler's graph: a node per head and
per MLP layer that implements a RASP operation; an edge ``s -> r`` (with ``q``, ``k`` or ``v``
into a head) wherever ``r`` reads a residual direction that ``s`` writes, ``s`` coming first
-- "reads" and "writes" through non-zero weights: a head's ``q`` / ``k`` are the rows /
columns of its QK bilinear map, ``v`` the rows of its OV map; an MLP reads its first layer's
rows. A direction a craft block declares but multiplies by zero (e.g. the BOS token in the
value space of a numerical aggregate) makes no edge.
``embed`` writes the ``tokens``, ``indices`` and ``one`` directions; ``logits`` reads the
output subspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from interplab.core.errors import InputError
from interplab.groundtruth.tracr_compile import CompiledProgram, import_tracr
from interplab.groundtruth.truth import Truth
from interplab.models.toy import ToyConfig, ToyForCausalLM

EMBED_NAMES = ("tokens", "indices", "one")


@dataclass(frozen=True)
class ConvertedTracr:
    """A compiled program as a toy model, with how to feed it and read its answer."""

    model: ToyForCausalLM
    truth: Truth
    compiled: CompiledProgram
    input_vocab: tuple  # token of each input id (tracr's encoding, BOS and pad included)
    output_vocab: tuple | None  # value of each output logit; None for a numerical program
    residual_labels: tuple[str, ...]  # the residual direction of each d_model coordinate
    operations: dict = field(default_factory=dict)  # truth node -> the RASP ops it implements

    @property
    def categorical(self) -> bool:
        return self.output_vocab is not None

    def encode(self, sequences: Sequence[Sequence]) -> torch.Tensor:
        """[n, 1 + len] input ids with BOS first; every sequence must have the same length."""
        lengths = {len(s) for s in sequences}
        if len(lengths) != 1:
            raise InputError(f"Encode sequences of one length at a time; got lengths "
                             f"{sorted(lengths)}.")
        ids = {tok: i for i, tok in enumerate(self.input_vocab)}
        unknown = {t for s in sequences for t in s} - set(self.compiled.vocab)
        if unknown or lengths.pop() > self.compiled.max_seq_len:
            raise InputError(f"Inputs must be sequences of at most {self.compiled.max_seq_len} "
                             f"tokens from {list(self.compiled.vocab)}; unknown: {unknown}.")
        return torch.tensor([[ids[self.compiled.bos]] + [ids[t] for t in s] for s in sequences])

    def readout(self, logits: torch.Tensor) -> torch.Tensor:
        """The program's answer at every non-BOS position: [n, len] argmax indices into
        ``output_vocab`` (categorical) or the numerical output coordinate."""
        logits = logits[:, 1:]
        return logits.argmax(-1) if self.categorical else logits[..., 0]

    def decode(self, logits: torch.Tensor) -> list[list]:
        """The program's outputs as values (categorical) or floats, one list per row."""
        out = self.readout(logits)
        if self.categorical:
            return [[self.output_vocab[i] for i in row] for row in out.tolist()]
        return out.tolist()


def _w(params, key: str, transpose: bool = True) -> torch.Tensor:
    w = np.asarray(params[key]["w"] if "w" in params[key] else params[key]["embeddings"])
    if "b" in params[key] and np.any(np.asarray(params[key]["b"])):
        raise NotImplementedError(f"tracr parameter {key}/b is non-zero; the converter assumes "
                                  "bias-free tracr weights (tracr-pypi 1.0.0).")
    return torch.tensor(w.T if transpose else w, dtype=torch.float32)


def to_toy(compiled: CompiledProgram) -> tuple[ToyForCausalLM, tuple, tuple | None]:
    """The toy model of a compiled program, its input vocab and output vocab (None: numeric)."""
    asm = compiled.assembled
    cfg, params = asm.model_config, asm.params
    labels = list(asm.residual_labels)
    n_in = len(asm.input_encoder.encoding_map)
    out_dirs = [str(d) for d in compiled.sink[import_tracr()["nodes"].OUTPUT_BASIS]]
    has_mlp = any(type(b).__name__ == "MLP" for b in compiled.craft_model.blocks)
    config = ToyConfig(
        vocab_size=max(n_in, len(out_dirs)), n_ctx=compiled.max_seq_len + 1,
        d_model=len(labels), n_layers=cfg.num_layers, n_heads=cfg.num_heads,
        d_head=cfg.key_size, d_mlp=cfg.mlp_hidden_size if has_mlp else 0,
        positional="learned", normalization="none", bias=False, causal=False, use_cache=False,
    )
    model = ToyForCausalLM(config).eval()
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed.zero_()  # ids past tracr's input vocab (when outputs outnumber inputs) are unused
        embed[:n_in] = _w(params, "token_embed", transpose=False)
        model.model.pos_embed.weight.copy_(_w(params, "pos_embed", transpose=False))
        for i, block in enumerate(model.model.layers):
            pre = f"transformer/layer_{i}"
            for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "linear")):
                getattr(block.self_attn, f"{ours}_proj").weight.copy_(_w(params, f"{pre}/attn/{theirs}"))
            if block.mlp is not None:
                block.mlp.up_proj.weight.copy_(_w(params, f"{pre}/mlp/linear_1"))
                block.mlp.down_proj.weight.copy_(_w(params, f"{pre}/mlp/linear_2"))
            elif np.any(np.asarray(params[f"{pre}/mlp/linear_1"]["w"])):
                raise AssertionError("an MLP with weights in a model without MLP blocks")
        head = torch.zeros(config.vocab_size, config.d_model)
        tokens_dims = [j for j, lab in enumerate(labels) if lab.startswith("tokens:")]
        head[:, tokens_dims] = -1.0  # the token subspace is one-hot: these rows read -1
        for i, lab in enumerate(out_dirs):
            head[i] = 0.0
            head[i, labels.index(lab)] = 1.0
        model.lm_head.weight.copy_(head)
    decode = {i: tok for tok, i in asm.input_encoder.encoding_map.items()}
    input_vocab = tuple(decode[i] for i in range(n_in))
    output_vocab = None
    if compiled.categorical:
        enc = asm.output_encoder.encoding_map
        output_vocab = tuple(sorted(enc, key=enc.get))
    return model, input_vocab, output_vocab


# -- the ground truth -------------------------------------------------------------------------------
def _module_slots(blocks) -> list[tuple[int, str]]:
    """(layer, "attn" | "mlp") of each craft block, as tracr's assembler places them: the next
    sub-layer of the right kind (a skipped sub-layer stays all zeros)."""
    slots, slot = [], 0  # slot 2l is layer l's attention, 2l + 1 its MLP
    for block in blocks:
        kind = "mlp" if type(block).__name__ == "MLP" else "attn"
        while (slot % 2 == 1) != (kind == "mlp"):
            slot += 1
        slots.append((slot // 2, kind))
        slot += 1
    return slots


def _dirs(space, matrix=None, axis: int = 1) -> frozenset[str]:
    """The directions of ``space``; with ``matrix``, only those whose row (``axis=1``) or
    column (``axis=0``) is non-zero -- the directions the map really reads or writes."""
    if matrix is None:
        return frozenset(str(d) for d in space.basis)
    used = np.abs(np.asarray(matrix)).sum(axis=axis) > 0
    return frozenset(str(d) for d, u in zip(space.basis, used, strict=True) if u)


def _components(block) -> list:
    """The attention heads and MLPs inside a graph node's craft block."""
    name = type(block).__name__
    if name == "SeriesWithResiduals":
        return [c for b in block.blocks for c in _components(b)]
    if name == "MultiAttentionHead":
        return list(block.heads())
    return [block]


def tracr_truth(compiled: CompiledProgram) -> tuple[Truth, dict[str, list[str]]]:
    """The circuit the compiler built, and the RASP operations each node implements."""
    t = import_tracr()
    nodes_mod = t["nodes"]
    # which RASP expression each head / MLP came from (heads by identity; MLPs are combined
    # per layer by tracr, so by the directions they write)
    head_op, mlp_ops = {}, []
    for _, node in compiled.graph.nodes.items():
        if nodes_mod.MODEL_BLOCK not in node or node[nodes_mod.MODEL_BLOCK] is None:
            continue
        expr = node[nodes_mod.EXPR]
        op = f"{type(expr).__name__} {expr.label}"
        for comp in _components(node[nodes_mod.MODEL_BLOCK]):
            if type(comp).__name__ == "MLP":
                mlp_ops.append((_dirs(comp.snd.output_space), op))
            else:
                head_op[id(comp)] = op
    order, reads, writes, operations = {"embed": (-1, 0)}, [], {}, {}
    labels = compiled.assembled.residual_labels
    writes["embed"] = frozenset(lab for lab in labels if lab.split(":")[0] in EMBED_NAMES)
    for block, (layer, kind) in zip(compiled.craft_model.blocks, _module_slots(compiled.craft_model.blocks), strict=True):
        if kind == "mlp":
            node = f"mlp{layer}"
            order[node] = (layer, 1)
            writes[node] = _dirs(block.snd.output_space, block.snd.matrix, axis=0)
            reads.append((node, None, _dirs(block.fst.input_space, block.fst.matrix)))
            operations[node] = [op for out, op in mlp_ops if out <= writes[node]]
            continue
        for h, head in enumerate(block.as_multi().heads()):
            node = f"L{layer}.h{h}"
            order[node] = (layer, 0)
            qk, ov = head.w_qk, head.w_ov  # the QK and OV circuits (Elhage et al. 2021)
            writes[node] = _dirs(ov.output_space, ov.matrix, axis=0)
            reads += [(node, "q", _dirs(qk.left_space, qk.matrix)),
                      (node, "k", _dirs(qk.right_space, qk.matrix, axis=0)),
                      (node, "v", _dirs(ov.input_space, ov.matrix))]
            operations[node] = [head_op[id(head)]]
    order["logits"] = (10**9, 0)
    reads.append(("logits", None, frozenset(str(d) for d in compiled.sink[nodes_mod.OUTPUT_BASIS])))
    edges = []
    for receiver, inp, read in reads:
        for sender, wrote in writes.items():
            if order[sender] < order[receiver] and wrote & read:
                edges.append((sender, receiver) if inp is None else (sender, receiver, inp))
    names = sorted(order, key=lambda n: (order[n], n))
    truth = Truth(tuple(names), tuple(edges), task=f"tracr:{compiled.name}", description=(
        f"tracr-compiled RASP program {compiled.name!r} (vocab {list(compiled.vocab)}, "
        f"max_seq_len {compiled.max_seq_len}); " + "; ".join(
            f"{n}: {', '.join(ops)}" for n, ops in operations.items())))
    return truth, operations


def convert(compiled: CompiledProgram) -> ConvertedTracr:
    """The toy model, truth and input/output vocabularies of a compiled program."""
    model, input_vocab, output_vocab = to_toy(compiled)
    truth, operations = tracr_truth(compiled)
    return ConvertedTracr(model, truth, compiled, input_vocab, output_vocab,
                          tuple(compiled.assembled.residual_labels), operations)
