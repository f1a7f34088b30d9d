"""Packing the rows of a patching sweep into forwards of the size the hardware likes.

A row of a position sweep (one cell, one prompt) changes its prompt from position ``start`` on:
before it, its states equal the base run's (``runtime.prefix``), so only the ``n_pos - start``
suffix tokens need computing. Rows of one start have equal lengths and batch as they are, but
a sweep has rows of every length, and a batch of one length is small (one pair: 10 rows of a
few tokens each), where a CPU or GPU runs far below its rate. Here rows of *any* start are
packed, first-fit decreasing, into sequences of ``n_pos`` tokens (rows of one prompt share a
sequence: a suffix of t tokens pairs with one of ``n_pos - t``), and every sequence carries
its prompt's base keys and values as a prefix. An attention mask [seq, 1, query, prefix +
packed] lets each token see its own prompt's prefix before its row's start and the earlier
tokens of its own row, nothing else (and, on sliding-window layers, only keys within the
window by true position). Each token gets its true position id, so rotary and learned
position embeddings see what a full forward sees. Only each row's last token reaches the
unembedding (gathered by a pre-hook on it), so no logit is computed that is not read.

Equal to one forward per row up to float rounding (the tests bound it by 1e-5 on every family).
Needs causal attention, eager or SDPA attention (an explicit mask), and the base keys of every
layer (``prefix.base_states``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from interplab.runtime.context import ForwardContext
from interplab.runtime.inputs import Batch
from interplab.runtime.prefix import tail_blocks

PACKABLE_ATTENTION = ("eager", "sdpa", None)


@dataclass(frozen=True)
class Packing:
    """Where each row sits: packed sequence ``seq[r]``, first token at ``offset[r]``, its
    ``length[r]`` tokens; every sequence holds ``width`` token slots of one prompt."""

    seq: torch.Tensor  # [rows]
    offset: torch.Tensor  # [rows]
    length: torch.Tensor  # [rows]
    prompt_of_seq: torch.Tensor  # [seqs]
    width: int
    join_layer: torch.Tensor | None = None  # [seqs], nondecreasing: the block a sequence joins at

    @property
    def n_seqs(self) -> int:
        return int(self.prompt_of_seq.numel())

    def slots(self, rows: torch.Tensor) -> list[tuple[int, torch.Tensor, list[int]]]:
        """The first-token slots of ``rows``, grouped by slot: (slot, which of ``rows`` sit
        there [mask], their packed sequences) -- one intervention per group addresses them."""
        offsets = self.offset[rows]
        return [(o, offsets == o, self.seq[rows[offsets == o]].tolist()) for o in offsets.unique().tolist()]

    @property
    def tokens(self) -> int:
        """Token slots computed (the sequences' total, padding included)."""
        return self.n_seqs * self.width


def pack(prompts: torch.Tensor, starts: torch.Tensor, n_pos: int,
         layers: torch.Tensor | None = None) -> Packing:
    """Best-fit decreasing of each row's ``n_pos - start`` tokens into sequences of ``n_pos``
    slots, one prompt per sequence (so a sequence needs one prompt's prefix). With ``layers``
    (each row's first block), one layer per sequence too, sequences ordered by it: a ragged
    forward lets each sequence join at its layer."""
    prompts, starts = prompts.tolist(), starts.tolist()
    layer_of = [0] * len(prompts) if layers is None else layers.tolist()
    n = len(prompts)
    seq, offset = [0] * n, [0] * n
    prompt_of_seq: list[int] = []
    layer_of_seq: list[int] = []
    groups: dict[tuple[int, int], list[int]] = {}
    for r, p in enumerate(prompts):
        groups.setdefault((layer_of[r], p), []).append(r)
    for (layer, p), rows in sorted(groups.items()):
        rows.sort(key=lambda r: starts[r])  # longest suffix first
        free: list[list[int]] = [[] for _ in range(n_pos + 1)]  # free[c]: sequences with c slots left
        fill: dict[int, int] = {}
        for r in rows:
            need = n_pos - starts[r]
            room = next((c for c in range(need, n_pos + 1) if free[c]), None)
            if room is None:
                s = len(prompt_of_seq)
                prompt_of_seq.append(p)
                layer_of_seq.append(layer)
                fill[s], room = 0, n_pos
            else:
                s = free[room].pop()
            seq[r], offset[r] = s, fill[s]
            fill[s] += need
            free[room - need].append(s)
    length = [n_pos - s for s in starts]
    return Packing(torch.tensor(seq), torch.tensor(offset), torch.tensor(length),
                   torch.tensor(prompt_of_seq, dtype=torch.long), n_pos,
                   None if layers is None else torch.tensor(layer_of_seq, dtype=torch.long))


def can_pack(model) -> bool:
    """Packing needs an explicit attention mask the attention kernel honours, and a causal model."""
    config = model.hf.config
    return bool(getattr(config, "causal", True)) and getattr(config, "_attn_implementation", None) in PACKABLE_ATTENTION


def _layout(packing: Packing, starts: torch.Tensor):
    """Per token slot: its row (-1: padding) and its true position."""
    row = torch.full((packing.n_seqs, packing.width), -1, dtype=torch.long)
    pos = torch.zeros((packing.n_seqs, packing.width), dtype=torch.long)
    for r in range(len(starts)):
        s, o, t = int(packing.seq[r]), int(packing.offset[r]), int(packing.length[r])
        row[s, o : o + t] = r
        pos[s, o : o + t] = torch.arange(int(starts[r]), int(starts[r]) + t)
    return row, pos


def _allowed(row, pos, starts, n_prefix: int, window: int | None) -> torch.Tensor:
    """allowed[seq, query, key] over keys = the prompt's prefix, then the packed tokens."""
    real = row >= 0
    start = torch.where(real, starts[row.clamp(min=0)], 0)  # [s, q]
    key_pos = torch.arange(n_prefix)
    prefix = key_pos[None, None, :] < start[:, :, None]
    same = (row[:, :, None] == row[:, None, :]) & real[:, :, None]
    earlier = pos[:, None, :] <= pos[:, :, None]
    packed = same & earlier
    if window is not None:
        prefix = prefix & (pos[:, :, None] - key_pos[None, None, :] < window)
        packed = packed & (pos[:, :, None] - pos[:, None, :] < window)
    eye = torch.eye(row.shape[1], dtype=torch.bool)[None] & ~real[:, :, None]
    return torch.cat([prefix, packed | eye], dim=-1)  # padding sees only itself


def _masks(model, row, pos, starts, n_prefix: int, dtype: torch.dtype):
    """The 4D additive mask(s) for the HF forward: one tensor, or one per layer type."""
    config = model.hf.config

    def additive(window):
        allowed = _allowed(row, pos, starts, n_prefix, window)
        return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]

    types = set(getattr(config, "layer_types", None) or ())
    if "sliding_attention" not in types:
        return additive(None)
    window = getattr(config, "sliding_window", None)
    return {t: additive(window if t == "sliding_attention" else None) for t in types}


@contextlib.contextmanager
def _gathered_unembedding(model, seq: torch.Tensor, last: torch.Tensor, keep: list | None):
    """Only the listed tokens reach the unembedding: [1, rows, d_model] instead of every slot;
    with ``keep`` a list, they are appended to it instead and the unembedding gets none."""

    def gather(module, args):
        hidden = args[0]
        picked = hidden[seq.to(hidden.device), last.to(hidden.device)]
        if keep is not None:
            keep.append(picked)
            return (hidden[:, :0], *args[1:])
        return (picked[None], *args[1:])

    handle = model.adapter.unembed().register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


SLICED_KWARGS = ("attention_mask", "position_ids", "position_embeddings")


@contextlib.contextmanager
def _joining(model, packing: Packing, prompt: torch.Tensor, pos: torch.Tensor, resid: dict):
    """A ragged forward: sequences join the batch at the block of their ``join_layer`` (their
    input: the base run's resid_pre there), so no block computes a row below its own layer.
    A pre-hook on each block appends the joining sequences to the hidden states and cuts the
    per-sequence arguments (mask, positions, rotary tables; made for every sequence) to the
    sequences present."""
    join = packing.join_layer
    total = packing.n_seqs

    def cut(x, m):
        if torch.is_tensor(x) and x.dim() > 0 and x.shape[0] == total:
            return x[:m]
        if isinstance(x, tuple) and x and all(torch.is_tensor(t) for t in x):
            return tuple(cut(t, m) for t in x)
        return x

    def hook_for(layer: int):
        present = int((join <= layer).sum())

        def hook(module, args, kwargs):
            hidden = args[0]
            if hidden.shape[0] < present:
                new = torch.arange(hidden.shape[0], present)
                hidden = torch.cat([hidden, resid[layer][prompt[new], pos[new]].to(hidden.dtype)])
            kwargs = {k: cut(v, present) if k in SLICED_KWARGS else v for k, v in kwargs.items()}
            return (hidden, *(cut(a, present) for a in args[1:])), kwargs
        return hook

    blocks = model.adapter.blocks()  # the whole list: enter this before ``tail_blocks``
    handles = [blocks[layer].register_forward_pre_hook(hook_for(layer), with_kwargs=True, prepend=True)
               for layer in range(int(join[0]), len(blocks))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_packed(model, batch: Batch, kv, prompts: torch.Tensor, starts: torch.Tensor,
               packing: Packing, interventions=(), resid: dict | None = None,
               unembed: bool = True) -> torch.Tensor:
    """Last-token logits [rows, vocab] (``unembed=False``: the final hidden states [rows,
    d_model] that the unembedding would read, so a caller can unembed many forwards' rows in
    one large matmul) of rows (prompt ``prompts[r]`` changed from position ``starts[r]`` on),
    packed as ``packing`` says; with ``packing.join_layer``, each sequence from that block on
    (a ragged forward, ``_joining``), else from block 0.

    ``interventions`` address packed slots: rows are packed sequences, positions slots within
    them (``Packing.slots`` says where a row's first token sits). ``kv`` is the base run's keys
    and values of every layer (``prefix.base_states``), ``resid`` its resid_pre [prompt, pos,
    d_model] at every join layer above 0."""
    row, pos = _layout(packing, starts)
    prompt = packing.prompt_of_seq[:, None].expand_as(row)
    dtype = kv[0][0].dtype
    join = packing.join_layer if packing.join_layer is not None else torch.zeros(packing.n_seqs, dtype=torch.long)
    first = int(join[0])
    kwargs: dict = {"position_ids": pos, "use_cache": True, "logits_to_keep": 0,
                    "attention_mask": _masks(model, row, pos, starts, batch.shape[1], dtype)}
    present = int((join <= first).sum())
    if first > 0:
        kwargs["inputs_embeds"] = resid[first][prompt[:present], pos[:present]]
    else:
        kwargs["input_ids"] = batch.input_ids[prompt[:present], pos[:present]]
    cache = DynamicCache()
    for layer, (k, v) in enumerate(kv):
        here = packing.prompt_of_seq[: max(1, int((join <= layer).sum()))]
        cache.update(k[here], v[here], layer)
    kwargs["past_key_values"] = cache
    n_seqs, width = row.shape
    slots = torch.arange(width).expand(n_seqs, width)
    labels = Batch(torch.zeros_like(row), torch.ones_like(row), slots, torch.full((n_seqs,), width))
    ctx = ForwardContext(slots, labels.lengths, "decode")  # positions here label packed slots
    last = packing.offset + packing.length - 1
    skip = tail_blocks(model, first) if first > 0 else contextlib.nullcontext()
    ragged = _joining(model, packing, prompt, pos, resid) if present < n_seqs else contextlib.nullcontext()
    keep = None if unembed else []
    with (model.attached(interventions, batch=labels), torch.no_grad(), ragged, skip,
          _gathered_unembedding(model, packing.seq, last, keep)):
        logits = model.call_hf(ctx, **kwargs).logits[0]
    return logits if unembed else keep[0]


def plan_layer_groups(tokens_at: dict[int, int], n_layers: int, overhead_tokens: int,
                      max_tokens: int) -> list[int]:
    """The first layers of the forwards a sweep runs, chosen to spend the fewest token-layers.

    ``tokens_at[L]``: tokens of the rows whose edit sits at layer L. Rows grouped from layer
    l0 run blocks l0..n_layers-1, so a group costs (n_layers - l0) × (its tokens + one
    ``overhead_tokens`` per forward of at most ``max_tokens``): the overhead is what a forward
    costs beyond its tokens (small matmuls run below the hardware's rate), in tokens. Few large
    groups recompute the layers between l0 and a row's own layer; many small ones pay the
    overhead: dynamic programming over contiguous groups of layers picks the cheapest split."""
    layers = sorted(tokens_at)
    prefix = [0]
    for layer in layers:
        prefix.append(prefix[-1] + tokens_at[layer])
    best = [0.0] + [float("inf")] * len(layers)  # best[j]: cheapest plan of layers[:j]
    cut = [0] * (len(layers) + 1)
    for j in range(1, len(layers) + 1):
        for i in range(j):
            tokens = prefix[j] - prefix[i]
            cost = best[i] + (n_layers - layers[i]) * (tokens + overhead_tokens * -(-tokens // max_tokens))
            if cost < best[j]:
                best[j], cut[j] = cost, i
    starts, j = [], len(layers)
    while j > 0:
        starts.append(layers[cut[j]])
        j = cut[j]
    return sorted(starts)
