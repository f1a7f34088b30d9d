"""Activation patching (Vig et al. 2020; Meng et al. 2022; Wang et al. 2022), batched.

Run the model on a *base* prompt while replacing the activation at one site (and position)
with its value from a *source* prompt, and measure how much of the clean behaviour returns.
Denoising patches clean activations into the corrupt run (is this site *sufficient* to restore
the behaviour?); noising patches corrupt activations into the clean run (is it *necessary*?).
Effects are reported on one scale, 0 = the corrupt run, 1 = the clean run (``metrics``), per
prompt, with bootstrap CIs, permutation p-values and Benjamini–Hochberg q-values per cell.

Assumptions: clean and corrupt prompts have one token length, so positions align across the
pair and the batch; a patch replaces one site at one position, everything downstream is
recomputed. Speed: every (cell, prompt) pair is one row of a batched forward carrying its own
interventions; cells that patch position p share the prefix before p, whose keys and values
are computed once (``runtime.prefix``); only the last position's logits are computed.
``naive=True`` runs the reference one-forward-per-cell loop, which the tests compare against.
The sweeps ``queries`` / ``keys`` / ``values`` patch one head's q / k / v (before QK-norm and
rotary embeddings; k and v per key/value head) at every position; ``cells`` restricts any sweep
to a list of its cells (``analyses.verified`` checks an estimate's top cells with it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from interplab.analyses.metrics import answer_metric, check_metric, normalise
from interplab.analyses.patching_rows import plan_rows, run_rows, run_states
from interplab.core.config import check_fields, param
from interplab.core.errors import ConfigError, InputError, choices
from interplab.core.model import Model
from interplab.core.shapes import AnswerIds, Effects, PerPrompt
from interplab.core.sites import Site, SiteKind
from interplab.interventions import Patch
from interplab.runtime.flops import SweepCost
from interplab.runtime.inputs import Batch
from interplab.stats import EffectSummary, summarize

log = logging.getLogger(__name__)

SWEEPS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "heads",
          "heads_by_position", "queries", "keys", "values")
# One head's q, k or v at every position (k and v: key/value heads under grouped-query attention).
HEAD_INPUTS = {"queries": SiteKind.Q, "keys": SiteKind.K, "values": SiteKind.V}
DIRECTIONS = ("denoising", "noising")


@dataclass(frozen=True)
class PatchingConfig:
    """One activation-patching sweep."""

    sweep: str = param("resid_pre", help=f"What to sweep: one of {', '.join(SWEEPS)}.")
    direction: str = param("denoising", help="denoising (clean into corrupt) or noising (corrupt into clean).")
    metric: str = param("logit_diff", help="logit_diff, prob, loss or kl.")
    layers: tuple[int, ...] | None = param(None, help="Layers to sweep (default: all).")
    positions: tuple[int, ...] | None = param(None, help="Positions to sweep (default: all).")
    max_rows: int = param(512, help="Most rows (cell × prompt) in one forward pass.", ge=1)
    reuse_prefix: bool = param(True, help="Compute the unchanged prefix before a patched position once.")
    layer_buckets: int = param(0, help="Rows start at the first layer of their cell's group (where the adapter allows): 0 = the cheapest grouping for the device, k = k equal groups, 1 = always layer 0.", ge=0)
    pack: bool = param(True, help="Pack rows of different start positions into shared forwards (position sweeps of causal models).")
    naive: bool = param(False, help="Reference path: one forward per cell and prompt (slow).")
    confidence: float = param(0.95, help="Confidence level of the bootstrap intervals.", gt=0.0, lt=1.0)
    n_resamples: int = param(2000, help="Bootstrap resamples.", ge=2)
    seed: int = param(0, help="Seed of the bootstrap and permutation tests.")

    def __post_init__(self) -> None:
        if self.sweep not in SWEEPS:
            raise ConfigError(f"Unknown sweep {self.sweep!r}. Valid sweeps: {choices(SWEEPS)}.")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"Unknown direction {self.direction!r}. Valid: {choices(DIRECTIONS)}.")
        check_metric(self.metric)
        check_fields(self)  # the declared ranges


@dataclass
class PatchingResult:
    """Normalised effects [prompt, *cells] with their axes, summary statistics and baselines."""

    config: PatchingConfig
    axes: dict[str, list]  # e.g. {"layer": [...], "pos": [...]} in the order of the cell axes
    effects: Effects  # 0 = corrupt, 1 = clean
    raw: Effects  # the metric itself
    clean_metric: PerPrompt
    corrupt_metric: PerPrompt
    summary: EffectSummary | None = None  # over the cells
    position_labels: list[str] = field(default_factory=list)
    cost: SweepCost | None = None  # FLOPs needed and done, and the time (batched sweeps)


@dataclass(frozen=True)
class _Cell:
    layer: int
    head: int | None
    pos: int | None


def pair_inputs(model: Model, clean, corrupt, answers, wrong) -> tuple[Batch, Batch, torch.Tensor, torch.Tensor]:
    """Clean / corrupt prompts as batches and the answer ids as tensors, checked for what every
    patching-like analysis assumes (one token length, matching sizes, ids in the vocabulary)."""
    clean, corrupt = model.to_batch(clean), model.to_batch(corrupt)
    answers, wrong = torch.as_tensor(answers).long(), torch.as_tensor(wrong).long()
    _check_inputs(model, clean, corrupt, answers, wrong)
    return clean, corrupt, answers, wrong


def _check_inputs(model: Model, clean: Batch, corrupt: Batch, answers, wrong) -> None:
    if clean.shape[0] == 0:
        raise InputError("Empty prompt set: patching needs at least one clean/corrupt pair.")
    if clean.shape != corrupt.shape:
        raise InputError(
            f"Clean and corrupt batches differ in shape: {clean.shape} vs {corrupt.shape}. "
            "Each pair must have the same token length so positions align."
        )
    if clean.padded or corrupt.padded:
        raise InputError(
            "Patching needs every prompt to have the same token length (no padding), so that "
            "a position means the same token in every prompt. Split the task by template / length."
        )
    n = clean.shape[0]
    if answers.shape != (n,) or wrong.shape != (n,):
        raise InputError(
            f"answers and wrong must be [n_prompts] = [{n}] token ids; got "
            f"{tuple(answers.shape)} and {tuple(wrong.shape)}."
        )
    vocab = model.dims.d_vocab
    if int(answers.max()) >= vocab or int(wrong.max()) >= vocab or int(answers.min()) < 0:
        raise InputError(f"Answer token ids must be in 0..{vocab - 1}.")


def _cells(model: Model, config: PatchingConfig, n_pos: int) -> tuple[list[_Cell], dict[str, list]]:
    layers = list(range(model.dims.n_layers)) if config.layers is None else list(config.layers)
    for layer in layers:
        model.site(Site(layer, SiteKind.RESID_PRE))  # range check with a teaching message
    positions = list(range(n_pos)) if config.positions is None else [
        p % n_pos if -n_pos <= p < n_pos else _bad_pos(p, n_pos) for p in config.positions
    ]
    heads = list(range(model.dims.n_heads))
    if config.sweep in ("keys", "values"):
        heads = list(range(model.dims.n_kv_heads))
    if config.sweep == "heads" or config.sweep in HEAD_INPUTS:
        return [_Cell(L, h, None) for L in layers for h in heads], {"layer": layers, "head": heads}
    if config.sweep == "heads_by_position":
        cells = [_Cell(L, h, p) for L in layers for h in heads for p in positions]
        return cells, {"layer": layers, "head": heads, "pos": positions}
    return [_Cell(L, None, p) for L in layers for p in positions], {"layer": layers, "pos": positions}


def _bad_pos(p: int, n: int):
    raise ConfigError(f"Position {p} is outside the prompts' {n} tokens (valid {-n}..{n - 1}).")


def _site(config: PatchingConfig, cell: _Cell) -> Site:
    if config.sweep in HEAD_INPUTS:
        return Site(cell.layer, HEAD_INPUTS[config.sweep], cell.head)
    if config.sweep.startswith("heads"):
        return Site(cell.layer, SiteKind.Z, cell.head)
    return Site(cell.layer, SiteKind(config.sweep))


def _value(source_acts, cell: _Cell, site: Site, prompts: torch.Tensor) -> torch.Tensor:
    """The source activation for these prompts: [rows, n_positions, *site]."""
    acts = source_acts[Site(site.layer, site.kind)][prompts]  # [rows, pos, (heads,) d]
    if cell.head is not None:
        acts = acts[:, :, cell.head]
    return acts if cell.pos is None else acts[:, cell.pos : cell.pos + 1]


def _chosen(grid: list[_Cell], axes: dict[str, list], cells, n_pos: int
            ) -> tuple[list[_Cell], dict[str, list]]:
    """The listed cells of the grid, in the order given, under one axis ``cell`` of labels."""
    names = list(axes)
    where = {tuple(getattr(c, k) for k in names): c for c in grid}
    picked = []
    for coords in cells:
        key = tuple(int(v) for v in coords)
        if len(key) == len(names) and "pos" in names:
            i = names.index("pos")
            key = (*key[:i], key[i] % n_pos if -n_pos <= key[i] < n_pos else key[i], *key[i + 1 :])
        if key not in where:
            grid_text = ", ".join(f"{k}: {v}" for k, v in axes.items())
            raise ConfigError(f"Cell {tuple(coords)} is not in this sweep's grid ({'/'.join(names)} "
                              f"coordinates from {{{grid_text}}}).")
        picked.append(where[key])
    if not picked or len(set(picked)) != len(picked):
        raise ConfigError(f"cells must list at least one cell, each once; got {list(cells)}.")
    labels = [".".join(f"{k[0] if k != 'layer' else 'L'}{getattr(c, k)}" for k in names) for c in picked]
    return picked, {"cell": labels}


def activation_patching(model: Model, clean: Batch, corrupt: Batch, answers: AnswerIds,
                        wrong: AnswerIds, config: PatchingConfig = PatchingConfig(),
                        cells: Sequence[Sequence[int]] | None = None) -> PatchingResult:
    """Sweep ``config.sweep`` over layers (× heads) (× positions); see the module docstring.

    ``cells`` restricts the sweep to those cells of its grid, given as coordinates in the
    order of the grid's axes ((layer, head) for heads / queries / keys / values, (layer, pos)
    for the residual sweeps, (layer, head, pos) for heads_by_position); the result then has
    one axis ``cell`` (labels such as ``L1.h2``, ``L0.p3``), in the order given, and its
    statistics (q-values included) are over those cells only."""
    clean, corrupt, answers, wrong = pair_inputs(model, clean, corrupt, answers, wrong)
    n, n_pos = clean.shape
    cells, axes = _cells(model, config, n_pos) if cells is None else _chosen(
        *_cells(model, config, n_pos), cells, n_pos)
    base, source = (corrupt, clean) if config.direction == "denoising" else (clean, corrupt)
    kinds = {Site(c.layer, _site(config, c).kind) for c in cells}
    cost = None
    if config.naive:
        with torch.no_grad():  # one forward each: the source's logits come with its cache
            source_logits, source_cache = model.run_with_cache(source, sorted(kinds))
            source_acts, source_last, base_last = source_cache.acts, source_logits[:, -1], model.run(base)[:, -1]
    else:
        plan = plan_rows(model, config, cells, n, n_pos)
        states = run_states(model, plan, source, base, kinds)
        source_acts, source_last, base_last = states.source_acts, states.source_last, states.base_last
    clean_logits, corrupt_logits = (
        (source_last, base_last) if config.direction == "denoising" else (base_last, source_last))
    metric = config.metric

    def score(last_logits, prompts):
        return answer_metric(metric, last_logits, answers[prompts], wrong[prompts], clean_logits[prompts])

    all_p = torch.arange(n)
    clean_m, corrupt_m = score(clean_logits, all_p), score(corrupt_logits, all_p)
    if config.naive:
        raw = _naive(model, config, base, source_acts, cells, n, score)
    else:
        raw, cost = run_rows(model, config, plan, base, states, cells, n, score,
                             lambda c, s, p: _value(source_acts, c, s, p), lambda c: _site(config, c))
    effects = normalise(metric, raw, clean_m[:, None], corrupt_m[:, None],
                        base="corrupt" if config.direction == "denoising" else "clean")
    shape = (n, *[len(v) for v in axes.values()])
    effects, raw = effects.reshape(shape), raw.reshape(shape)
    # Test against "no effect": 0 when denoising (still corrupt), 1 when noising (still clean).
    null = 0.0 if config.direction == "denoising" else 1.0
    summary = None
    if n < 2:
        log.warning("One prompt: no confidence intervals or tests (they need >= 2 prompts).")
    else:
        summary = summarize(effects, confidence=config.confidence,
                            n_resamples=config.n_resamples, seed=config.seed, null=null)
    labels = []
    if model.tokenizer is not None:
        labels = [model.tokenizer.decode([t]) for t in clean.input_ids[0].tolist()]
    return PatchingResult(config, axes, effects, raw, clean_m, corrupt_m, summary, labels, cost)


def _naive(model: Model, config, base: Batch, source_acts, cells, n, score) -> torch.Tensor:
    out = torch.empty(n, len(cells))
    for ci, cell in enumerate(tqdm(cells, desc="patching (naive)", disable=len(cells) < 50)):
        site = _site(config, cell)
        for i in range(n):
            one = torch.tensor([i])
            row = Batch(base.input_ids[one], base.attention_mask[one], base.positions[one], base.lengths[one])
            value = _value(source_acts, cell, site, one)
            pos = None if cell.pos is None else [cell.pos]
            logits = model.run(row, [Patch(site, value=value, positions=pos)])
            out[i, ci] = score(logits[:, -1], one)[0]
    return out
