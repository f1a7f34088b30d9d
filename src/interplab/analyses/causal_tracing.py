"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", ROME,
arXiv:2202.05262): which hidden states carry what the model recalls about a subject?

Three kinds of run per prompt. *Clean*: the prompt as is. *Corrupted*: Gaussian noise added to
the token embeddings (site ``embed``) at the subject's positions, which usually destroys the
recall. *Restored*: the corrupted run with clean states put back at one position p — the
residual stream after layer L (``kind="resid_post"``, one state), or, with ``kind="mlp_out"`` /
``"attn_out"``, the outputs of a window of ``window`` consecutive MLP / attention layers centred
on L (layers L − window//2 .. L + ceil(window/2) − 1, clipped to the model, as ROME's
``trace_important_window``). The metric is p(answer) at the last position (``prob``, ROME's) or
logit(answer) − logit(wrong) (``logit_diff``), averaged over noise draws. Effects are reported
per prompt on the scale 0 = corrupted, 1 = clean, using the batch means of both baselines
(``metrics.normalise``), with bootstrap CIs and tests per cell (``stats.summarize``).

Noise: std = ``noise_scale`` (3, ROME's "s3") × the standard deviation of the embedding site
over the whole vocabulary (every entry of the embedding matrix, after any embedding scale such
as Gemma's sqrt(d_model); GPT-2's embed site has no position embedding). ROME measured the std
over its dataset's subject-token embeddings (``collect_embedding_std``); the vocabulary makes it
independent of the prompt set. ``noise_std`` sets the absolute std instead. Every prompt gets its
own ``n_noise`` draws, seeded from (seed, prompt index, draw): deterministic in ``seed``, and two
identical prompts are corrupted differently. (ROME reseeded one generator on every call, so
every prompt saw the same noise; it averaged 10 draws per prompt.) Within a prompt and draw all
restorations share the noise, so differences between cells are not differences of noise.

Assumptions: all prompts have one token length (positions are an axis of the result; split a
task by template otherwise); subject positions are given per prompt; answers are single tokens.
Speed: every restoration of one prompt × draw is a row of one batched forward with its own
``Patch`` interventions, and tokens before the first subject token — identical in every row —
are computed once (``runtime.prefix``); restoring a clean state there changes nothing, so those
cells equal the corrupted run either way. ``naive=True`` runs one full forward per cell.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from interplab.analyses.metrics import answer_metric, normalise
from interplab.core.config import check_fields, param
from interplab.core.errors import ConfigError, InputError, choices
from interplab.core.model import Model
from interplab.core.shapes import AnswerIds
from interplab.core.sites import Site, SiteKind
from interplab.interventions import Patch
from interplab.runtime.inputs import Batch
from interplab.runtime.prefix import is_causal, prefix_states, run_suffix
from interplab.stats import EffectSummary, summarize

log = logging.getLogger(__name__)

KINDS = ("resid_post", "mlp_out", "attn_out")
TRACING_METRICS = ("prob", "logit_diff")


@dataclass(frozen=True)
class CausalTracingConfig:
    """One causal-tracing sweep over layers × positions."""

    kind: str = param("resid_post", help=f"What to restore: one of {', '.join(KINDS)}.")
    window: int = param(10, help="Layers restored together for mlp_out / attn_out, centred on each layer (ROME: 10); resid_post restores one.", ge=1)
    noise_scale: float = param(3.0, help="Noise std as a multiple of the embedding std over the vocabulary.")
    noise_std: float | None = param(None, help="Absolute noise std; overrides noise_scale when set.")
    n_noise: int = param(1, help="Noise draws per prompt; the metric is averaged over them.", ge=1)
    metric: str = param("prob", help="prob (p(answer)) or logit_diff (needs wrong answers).")
    layers: tuple[int, ...] | None = param(None, help="Layers to sweep (default: all).")
    positions: tuple[int, ...] | None = param(None, help="Positions to sweep (default: all).")
    max_rows: int = param(512, help="Most rows (cell × noise draw) in one forward pass.", ge=1)
    reuse_prefix: bool = param(True, help="Compute the clean prefix before the first subject token once.")
    naive: bool = param(False, help="Reference path: one full forward per prompt, draw and cell (slow).")
    seed: int = param(0, help="Seed of the noise, the bootstrap and the permutation tests.")
    confidence: float = param(0.95, help="Confidence level of the bootstrap intervals.", gt=0.0, lt=1.0)
    n_resamples: int = param(2000, help="Bootstrap resamples.", ge=2)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"Unknown kind {self.kind!r}. Valid kinds: {choices(KINDS)}.")
        if self.metric not in TRACING_METRICS:
            raise ConfigError(f"Unknown metric {self.metric!r}. Valid: {choices(TRACING_METRICS)}.")
        check_fields(self)  # the declared ranges
        if self.noise_scale < 0 or (self.noise_std is not None and self.noise_std < 0):
            raise ConfigError("noise_scale and noise_std must be >= 0 (a standard deviation).")
        if self.layers == () or self.positions == ():
            raise ConfigError("layers / positions is empty; leave it None to sweep them all.")


@dataclass
class CausalTracingResult:
    """Per-prompt effects [prompt, layer, pos] of restoring clean states into corrupted runs."""

    config: CausalTracingConfig
    axes: dict[str, list]  # {"layer": [...], "pos": [...]}
    effects: torch.Tensor  # [prompt, layer, pos]; 0 = corrupted, 1 = clean (NaN if they coincide)
    raw: torch.Tensor  # [prompt, layer, pos], the metric averaged over noise draws
    clean_metric: torch.Tensor  # [prompt]
    corrupt_metric: torch.Tensor  # [prompt], averaged over noise draws
    noise_std: float
    subject_positions: list[list[int]]
    summary: EffectSummary | None = None  # over [layer, pos]; None for 1 prompt / NaN effects
    position_labels: list[str] = field(default_factory=list)


def embedding_std(model: Model, chunk: int = 8192) -> float:
    """Std of the embed site's values over every token of the vocabulary (all entries)."""
    embed, n = model.adapter.embed(), model.dims.d_vocab
    total = square = 0.0
    with torch.no_grad():
        for lo in range(0, n, chunk):
            x = embed(torch.arange(lo, min(lo + chunk, n), device=model.device)).double()
            total, square = total + float(x.sum()), square + float((x * x).sum())
    count = n * model.dims.d_model
    mean = total / count
    return float(np.sqrt(max(square / count - mean * mean, 0.0) * count / (count - 1)))


def noise_draws(seed: int, prompt: int, n_noise: int, n_tokens: int, d_model: int) -> torch.Tensor:
    """Standard-normal noise [n_noise, n_tokens, d_model] of one prompt, from (seed, prompt, draw)."""
    out = torch.empty(n_noise, n_tokens, d_model)
    for k in range(n_noise):
        state = np.random.SeedSequence([seed, prompt, k]).generate_state(2, np.uint64)
        gen = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
        out[k] = torch.randn(n_tokens, d_model, generator=gen)
    return out


def restored_layers(layer: int, config: CausalTracingConfig, n_layers: int) -> list[int]:
    """The layers a cell at ``layer`` restores (ROME's window for mlp_out / attn_out)."""
    if config.kind == "resid_post":
        return [layer]
    w = config.window
    return list(range(max(0, layer - w // 2), min(n_layers, layer - (-w // 2))))


def _check_inputs(model: Model, batch: Batch, subjects, answers, wrong, config) -> list[list[int]]:
    n, n_pos = batch.shape
    if batch.padded:
        raise InputError(
            "Causal tracing needs every prompt to have the same token length (no padding), so "
            "that a position means one token across prompts. Split the prompts by template / length."
        )
    for name, t in (("answers", answers), ("wrong", wrong)):
        if t is not None and (t.shape != (n,) or int(t.min()) < 0 or int(t.max()) >= model.dims.d_vocab):
            raise InputError(f"{name} must be [n_prompts] = [{n}] token ids in 0..{model.dims.d_vocab - 1}.")
    if config.metric == "logit_diff" and wrong is None:
        raise ConfigError("metric='logit_diff' needs wrong answers; pass wrong= or use metric='prob'.")
    if len(subjects) != n:
        raise InputError(f"subject_positions gives {len(subjects)} lists for {n} prompts; give one per prompt.")
    out = []
    for i, pos in enumerate(subjects):
        pos = [int(p) for p in pos]
        if not pos or any(not -n_pos <= p < n_pos for p in pos):
            raise InputError(
                f"subject_positions[{i}] = {pos}: give at least one position in {-n_pos}..{n_pos - 1} "
                f"(the prompts have {n_pos} tokens)."
            )
        out.append(sorted({p % n_pos for p in pos}))
    for axis, values, top in (("layers", config.layers, model.dims.n_layers), ("positions", config.positions, n_pos)):
        bad = [v for v in values or () if not -top <= v < top]
        if bad:
            raise ConfigError(f"{axis} {bad} out of range (valid {-top}..{top - 1}).")
    return out


def causal_tracing(model: Model, prompts, subject_positions, answers: AnswerIds, wrong: AnswerIds | None = None,
                   config: CausalTracingConfig = CausalTracingConfig()) -> CausalTracingResult:
    """Trace every (layer, position) cell of ``config``; see the module docstring."""
    batch = model.to_batch(prompts)
    answers = torch.as_tensor(answers).long().reshape(-1)
    wrong = None if wrong is None else torch.as_tensor(wrong).long().reshape(-1)
    subjects = _check_inputs(model, batch, subject_positions, answers, wrong, config)
    answers = answers.to(model.device)
    wrong = None if wrong is None else wrong.to(model.device)
    n, n_pos = batch.shape
    n_layers = model.dims.n_layers
    layers = list(range(n_layers)) if config.layers is None else [v % n_layers for v in config.layers]
    positions = list(range(n_pos)) if config.positions is None else [v % n_pos for v in config.positions]
    cells = [(L, p) for L in layers for p in positions]
    std = config.noise_std if config.noise_std is not None else config.noise_scale * embedding_std(model)
    kind = SiteKind(config.kind)
    needed = sorted({Site(x, kind) for L in layers for x in restored_layers(L, config, n_layers)})
    logits, cache = model.run_with_cache(batch, [Site(None, SiteKind.EMBED), *needed])
    wrong_ids = answers if wrong is None else wrong

    def score(last_logits, i):
        r = last_logits.shape[0]
        return answer_metric(config.metric, last_logits, answers[i].repeat(r), wrong_ids[i].repeat(r)).float()

    clean_m = torch.stack([score(logits[i : i + 1, -1], i)[0] for i in range(n)]).cpu()
    trace = _naive if config.naive else _batched
    raw, corrupt_m = torch.empty(n, len(cells)), torch.empty(n)
    for i in tqdm(range(n), desc="causal tracing", disable=n * len(cells) * config.n_noise < 2000):
        one = Batch(batch.input_ids[i : i + 1], batch.attention_mask[i : i + 1],
                    batch.positions[i : i + 1], batch.lengths[i : i + 1])
        noise = noise_draws(config.seed, i, config.n_noise, len(subjects[i]), model.dims.d_model)
        noised = cache.acts[Site(None, SiteKind.EMBED)][i, subjects[i]] + std * noise.to(logits.device)
        values = trace(model, config, one, i, cache.acts, subjects[i], noised, cells, score)
        means = values.mean(0)  # average over noise draws; column 0 is the corrupted run
        corrupt_m[i], raw[i] = means[0], means[1:]
    shape = (n, len(layers), len(positions))
    raw = raw.reshape(shape)
    if float((clean_m.mean() - corrupt_m.mean()).abs()) < 1e-8:
        log.warning("Clean and corrupted runs give the same mean %s (noise std %.3g): effects are "
                    "undefined (NaN). Raise noise_scale to corrupt the subject.", config.metric, std)
        effects = torch.full(shape, float("nan"))
    else:
        effects = normalise(config.metric, raw, clean_m[:, None, None], corrupt_m[:, None, None])
    summary = None
    if n >= 2 and bool(torch.isfinite(effects).all()):
        summary = summarize(effects, seed=config.seed, confidence=config.confidence,
                            n_resamples=config.n_resamples)
    labels = []
    if model.tokenizer is not None:
        labels = [model.tokenizer.decode([t]) for t in batch.input_ids[0].tolist()]
    return CausalTracingResult(config, {"layer": layers, "pos": positions}, effects, raw, clean_m,
                               corrupt_m, float(std), subjects, summary, labels)


def _edits(config, rows_cells, prompt, clean_acts, subject, noised, cells, n_layers) -> list[Patch]:
    """Interventions for rows given as (noise draw, cell index or -1 for the corrupted run)."""
    embed, kind = Site(None, SiteKind.EMBED), SiteKind(config.kind)
    by_draw, by_state = defaultdict(list), defaultdict(list)
    for r, (k, c) in enumerate(rows_cells):
        by_draw[k].append(r)
        if c >= 0:
            layer, pos = cells[c]
            for x in restored_layers(layer, config, n_layers):
                by_state[(x, pos)].append(r)
    edits = [Patch(embed, value=noised[k], positions=subject, rows=rows) for k, rows in by_draw.items()]
    for (x, pos), rows in by_state.items():
        value = clean_acts[Site(x, kind)][prompt, pos]
        edits.append(Patch(Site(x, kind), value=value, positions=[pos], rows=rows))
    return edits


def _naive(model: Model, config, one, prompt, clean_acts, subject, noised, cells, score) -> torch.Tensor:
    out = torch.empty(config.n_noise, len(cells) + 1)
    for k in range(config.n_noise):
        for c in range(-1, len(cells)):
            edits = _edits(config, [(k, c)], prompt, clean_acts, subject, noised, cells, model.dims.n_layers)
            out[k, c + 1] = float(score(model.run(one, edits)[:, -1], prompt)[0])
    return out


def _batched(model: Model, config, one, prompt, clean_acts, subject, noised, cells, score) -> torch.Tensor:
    start = min(subject) if config.reuse_prefix and is_causal(model) else 0
    kv = prefix_states(model, one) if start > 0 else None
    if kv is not None and any(k.shape[2] < one.shape[1] for k, _ in kv):
        # Sliding-window layers keep only their window in the cache, so the prefix cannot be
        # sliced back out of it; run full forwards instead.
        start, kv = 0, None
    pairs = [(k, c) for k in range(config.n_noise) for c in range(-1, len(cells))]
    out = torch.empty(config.n_noise, len(cells) + 1)
    for lo in range(0, len(pairs), config.max_rows):
        chunk = pairs[lo : lo + config.max_rows]
        edits = _edits(config, chunk, prompt, clean_acts, subject, noised, cells, model.dims.n_layers)
        rows = torch.zeros(len(chunk), dtype=torch.long, device=one.input_ids.device)
        values = score(run_suffix(model, one, start, kv, rows, edits)[:, -1], prompt)
        ks, cs = torch.tensor([k for k, _ in chunk]), torch.tensor([c + 1 for _, c in chunk])
        out[ks, cs] = values.cpu()
    return out
