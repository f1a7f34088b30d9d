"""The batched patching sweep: which rows share a forward, and running them.

Every (cell, prompt) pair is one row carrying its own patch. Rows of a cell at position p
start at p (the prefix before it is the base run's, ``runtime.prefix``) and at the first layer
of their cell's layer group (below it they equal the base run). Position sweeps of causal
models pack rows of every start into sequences of the prompt length (``runtime.packing``);
other sweeps batch rows of one start together. Layer groups are chosen by
``packing.plan_layer_groups`` (or ``layer_buckets`` equal ones). One forward over source and
base prompts together gives the source's activations, both runs' logits and the base's keys,
values and resid_pre where groups start. ``SweepCost`` counts the FLOPs needed and done.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from interplab.core.sites import Site, SiteKind
from interplab.interventions import Patch
from interplab.runtime.flops import FlopModel, SweepCost, causal_pairs
from interplab.runtime.inputs import Batch
from interplab.runtime.packing import can_pack, pack, plan_layer_groups, run_packed
from interplab.runtime.prefix import base_states, can_skip_layers, is_causal, run_suffix

# What one forward costs beyond its tokens, in tokens (small matmuls run below the hardware's
# rate): on this project's 2-core CPU a plain forward of 112 tokens ran at ~0.75 of the rate of
# one of 2,100 tokens, i.e. ~50-80 tokens of overhead; GPUs need thousands of tokens to fill.
OVERHEAD_TOKENS = {"cpu": 64, "other": 2048}


@dataclass
class RowPlan:
    """Rows grouped by (start position, first layer); ``packed``: starts share forwards."""

    groups: dict[tuple[int, int], list[int]]
    packed: bool
    starts: list[int] = field(default_factory=list)  # per cell
    joins: list[int] = field(default_factory=list)  # per cell: its first block (packed: ragged)

    @property
    def first_layers(self) -> list[int]:
        return sorted({*self.joins, *(layer for _, layer in self.groups)})


def plan_rows(model, config, cells, n: int, n_pos: int) -> RowPlan:
    causal = is_causal(model)  # a bidirectional model's prefix depends on later tokens
    starts = [c.pos if (config.reuse_prefix and causal and c.pos is not None) else 0 for c in cells]
    packed = (config.pack and causal and config.reuse_prefix and can_pack(model)
              and all(c.pos is not None for c in cells))
    skip = config.reuse_prefix and config.layer_buckets != 1 and can_skip_layers(model)
    if packed:  # one ragged forward per chunk: each row joins at its own layer
        joins = [c.layer if skip else 0 for c in cells]
        return RowPlan({(0, 0): list(range(len(cells)))}, True, starts, joins)
    first = _layer_groups(model, config, cells, starts, n, n_pos) if skip else [0]
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for ci, cell in enumerate(cells):
        layer0 = max(layer for layer in first if layer <= cell.layer)
        groups[(starts[ci], layer0)].append(ci)
    return RowPlan(dict(groups), False, starts)


def _layer_groups(model, config, cells, starts, n, n_pos) -> list[int]:
    """``layer_buckets`` equal groups, or (0, the default) the cheapest split for the device."""
    n_layers = model.dims.n_layers
    if config.layer_buckets > 0:
        return list(range(0, n_layers, -(-n_layers // config.layer_buckets)))
    tokens_at: dict[int, int] = defaultdict(int)
    for cell, start in zip(cells, starts):
        tokens_at[cell.layer] += n * (n_pos - start)
    device = next(model.hf.parameters()).device.type
    overhead = OVERHEAD_TOKENS.get(device, OVERHEAD_TOKENS["other"])
    return sorted({0, *plan_layer_groups(tokens_at, n_layers, overhead, config.max_rows * n_pos)})


@dataclass
class States:
    """From the one forward over source and base: what the rows reuse."""

    source_acts: dict
    source_last: torch.Tensor  # [n, vocab] last-position logits
    base_last: torch.Tensor
    kv: list
    resid: dict[int, torch.Tensor]  # first layer -> base resid_pre there


def run_states(model, plan: RowPlan, source: Batch, base: Batch, kinds) -> States:
    n = source.shape[0]
    resid_sites = {Site(layer, SiteKind.RESID_PRE) for layer in plan.first_layers if layer > 0}
    both = Batch(*(torch.cat([getattr(source, f), getattr(base, f)]) for f in
                   ("input_ids", "attention_mask", "positions", "lengths")))
    kv, cache, last = base_states(model, both, sorted(set(kinds) | resid_sites))
    source_acts = {s: a[:n] for s, a in cache.acts.items() if s in kinds}
    resid = {s.layer: cache[s][n:] for s in resid_sites}
    kv = [(k[n:], v[n:]) for k, v in kv]
    return States(source_acts, last[:n, -1], last[n:, -1], kv, resid)


def run_rows(model, config, plan: RowPlan, base: Batch, states: States, cells, n, score,
             value_of, site_of) -> tuple[torch.Tensor, SweepCost]:
    """The metric for every (prompt, cell) [n, cells] and what computing it cost."""
    flops, n_pos = FlopModel.of(model), base.shape[1]
    cost = SweepCost(needed_flops=sum(
        n * flops.suffix(n_pos, start, flops.n_layers - c.layer - _after(site_of(c)))
        for c, start in zip(cells, plan.starts)))
    out = torch.empty(n, len(cells))
    total = len(cells) * n
    began = time.perf_counter()
    pending: list = []  # packed rows' final hidden states, unembedded together (one large matmul)
    with tqdm(total=total, desc=f"patching {config.sweep}", disable=total < 2000) as bar:
        for (start, layer0), cell_ids in sorted(plan.groups.items()):
            pairs = [(ci, i) for ci in cell_ids for i in range(n)]
            if plan.packed:  # rows of one layer and prompt together: they share packed sequences
                pairs.sort(key=lambda pair: (plan.joins[pair[0]], pair[1], plan.starts[pair[0]]))
            for lo in range(0, len(pairs), config.max_rows):
                chunk = pairs[lo : lo + config.max_rows]
                prompts = torch.tensor([i for _, i in chunk])
                args = (model, base, states, cells, chunk, prompts, layer0, value_of, site_of, flops, cost)
                cols = torch.tensor([ci for ci, _ in chunk])
                if plan.packed:
                    pending.append((_packed(*args, plan), prompts, cols))
                else:
                    out[prompts, cols] = score(_suffix(*args, start), prompts).float()
                bar.update(len(chunk))
    _unembed_pending(model, pending, out, score, config.max_rows)
    cost.seconds = time.perf_counter() - began
    return out, cost


def _unembed_pending(model, pending, out, score, max_rows: int) -> None:
    if not pending:
        return
    hidden = torch.cat([h for h, _, _ in pending])
    prompts, cols = torch.cat([p for _, p, _ in pending]), torch.cat([c for _, _, c in pending])
    unembed = model.adapter.unembed()
    with torch.no_grad():
        for lo in range(0, len(hidden), max_rows):
            part = slice(lo, lo + max_rows)
            logits = unembed(hidden[part][None])[0]
            out[prompts[part], cols[part]] = score(logits, prompts[part]).float()


def _after(site: Site) -> int:
    """0 when a patch at layer L leaves block L to compute (resid_pre), else 1 (counted
    conservatively: block L's work after the patched point is not counted as needed)."""
    return 0 if site.kind == SiteKind.RESID_PRE else 1


def _by_cell(chunk) -> dict[int, list[int]]:
    rows_of: dict[int, list[int]] = defaultdict(list)
    for r, (ci, _) in enumerate(chunk):
        rows_of[ci].append(r)
    return rows_of


def _suffix(model, base, states, cells, chunk, prompts, layer0, value_of, site_of, flops, cost, start):
    """Rows of one start position: one batch of equal-length suffixes."""
    edits = []
    for ci, rows in _by_cell(chunk).items():
        cell, site = cells[ci], site_of(cells[ci])
        pos = None if cell.pos is None else [cell.pos]
        edits.append(Patch(site, value=value_of(cell, site, prompts[rows]), positions=pos, rows=rows))
    logits = run_suffix(model, base, start, states.kv, prompts, edits, start_layer=layer0,
                        resid=states.resid.get(layer0))
    n_pos, rows = base.shape[1], len(chunk)
    pairs = rows * causal_pairs(start, n_pos)
    _count(cost, flops.blocks(rows * (n_pos - start), pairs, flops.n_layers - layer0)
           + flops.unembedding(rows), rows * (n_pos - start))
    return logits[:, -1]


def _packed(model, base, states, cells, chunk, prompts, layer0, value_of, site_of, flops, cost, plan):
    """Rows of any start and layer packed into sequences of the prompt length, each joining
    the forward at its layer (``runtime.packing``); one Patch per (site, packed slot) sets
    every row's first token there."""
    row_starts = torch.tensor([plan.starts[ci] for ci, _ in chunk])
    joins = torch.tensor([plan.joins[ci] for ci, _ in chunk])
    packing = pack(prompts, row_starts, base.shape[1], joins)
    by_site: dict[Site, list] = defaultdict(list)
    for ci, rows in _by_cell(chunk).items():
        site = site_of(cells[ci])
        by_site[site].append((torch.tensor(rows), value_of(cells[ci], site, prompts[rows])[:, 0]))
    edits = []
    for site, parts in by_site.items():
        rows, value = torch.cat([r for r, _ in parts]), torch.cat([v for _, v in parts])
        for slot, sel, seqs in packing.slots(rows):
            edits.append(Patch(site, value=value[sel][:, None], positions=[slot], rows=seqs))
    width, n_pos = packing.width, base.shape[1]
    layers = float((flops.n_layers - packing.join_layer).sum())  # block runs of one sequence each
    # every slot scores its prompt's prefix and its own sequence
    _count(cost, flops.blocks(layers * width, layers * width * (n_pos + width), 1)
           + flops.unembedding(len(chunk)), packing.tokens)
    return run_packed(model, base, states.kv, prompts, row_starts, packing, edits,
                      resid=states.resid, unembed=False)


def _count(cost: SweepCost, flops: float, tokens: int) -> None:
    cost.executed_flops += flops
    cost.forwards += 1
    cost.tokens = max(cost.tokens, tokens)
