"""Evaluating a steering vector: does it move the behaviour, and what does it break?

For each scale of a sweep the prompts are run once, steered (``scale * vector`` at every token,
or at the configured positions). Reported:

* the target behaviour per prompt — a linear probe's score at the probe's site and reduction,
  read from the steered run's cache, or a logit difference between two answer tokens at the
  last position (the CAA behavioural measure, Rimsky et al. 2024);
* the steerability slope per prompt (least squares of score on scale), the bootstrap CI of
  its mean over prompts, and the fraction of prompts whose slope has the wrong sign with its
  CI (Tan et al. 2024, "Analyzing the Generalization and Reliability of Steering Vectors",
  show steerability varies per input and is sometimes of the wrong sign);
* side effects on a neutral corpus (default: the bundled classics) — KL(unsteered ‖ steered)
  of next-token distributions averaged over tokens, and the steered perplexity (the
  capability cost measured in ActAdd, Turner et al. 2023); and the length of greedy
  generations (new tokens up to and including the first EOS, or ``max_new_tokens``), with
  sample texts.

Scale 0 attaches no hook, so its numbers are those of the unsteered model bit for bit. A probe
read before the earliest steered site cannot see the steering; that is refused up front.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from interplab.analyses.steering import SteeringVector, site_order
from interplab.analyses.steering_apply import steer_interventions
from interplab.core.config import param
from interplab.core.errors import ConfigError, InputError, choices
from interplab.core.model import Model
from interplab.stats import CI, bootstrap_ci

log = logging.getLogger(__name__)

TARGETS = ("probe", "logit_diff")


@dataclass(frozen=True)
class SteeringEvalConfig:
    """A steering sweep: the scales, what to measure, and the side-effect budget."""

    scales: list = param([-4.0, -2.0, 0.0, 2.0, 4.0], help="Multiples of the vector to add; include 0 for the unsteered baseline.")  # noqa: RUF009
    target: str = param("probe", help="Behaviour measure: 'probe' (a probe's score) or 'logit_diff' (logit of target_tokens[0] minus target_tokens[1] at the last position).")
    target_tokens: list = param([], help="For target='logit_diff': two single-token strings (or token ids), the positive answer first.")  # noqa: RUF009
    positions: list | None = param(None, help="Token positions to steer (None: every token, prompt and generated).")  # noqa: RUF009
    neutral_source: str = param("classics", help="Corpus for side effects: 'classics', a text file/directory, or 'hf:<dataset>'.")
    n_contexts: int = param(4, help="Neutral-corpus contexts for KL and perplexity (0: skip).")
    ctx_len: int = param(32, help="Tokens per neutral-corpus context.")
    max_new_tokens: int = param(16, help="Tokens generated per sample (0: no generations).")
    n_samples: int = param(2, help="Prompts to generate from at each scale (the first n).")
    expected_sign: int = param(1, help="+1 if positive scales should raise the target, -1 if lower.")
    confidence: float = param(0.95, help="Coverage of the bootstrap CIs.")
    n_resamples: int = param(2000, help="Bootstrap resamples.")
    seed: int = param(0, help="Seeds the bootstrap.")

    def __post_init__(self) -> None:
        if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in self.scales):
            raise ConfigError(f"scales must be finite numbers; got {self.scales}.")
        if len(self.scales) < 2 or len(set(map(float, self.scales))) != len(self.scales):
            raise ConfigError(f"scales must be at least two distinct numbers for a slope; got {self.scales}.")
        if self.target not in TARGETS:
            raise ConfigError(f"Unknown steering target {self.target!r}; valid: {choices(TARGETS)}.")
        if self.target == "logit_diff" and len(self.target_tokens) != 2:
            raise ConfigError("target='logit_diff' needs target_tokens: two single-token answers, "
                              f"the positive first; got {self.target_tokens}.")
        if self.expected_sign not in (1, -1):
            raise ConfigError(f"expected_sign must be 1 or -1, got {self.expected_sign}.")
        if min(self.n_contexts, self.max_new_tokens, self.n_samples) < 0 or self.ctx_len < 2:
            raise ConfigError("n_contexts, max_new_tokens and n_samples must be >= 0 and ctx_len >= 2.")


@dataclass
class SteeringEval:
    """Results along the ``scale`` axis (and ``prompt`` for per-prompt scores)."""

    config: SteeringEvalConfig
    scales: torch.Tensor  # [scale]
    scores: torch.Tensor  # [prompt, scale] target behaviour
    mean_score: CI  # per scale, over prompts
    slopes: torch.Tensor  # [prompt] least-squares slope of score on scale
    slope: CI  # mean slope over prompts
    wrong_sign: CI  # fraction of prompts whose slope has the wrong sign
    kl: torch.Tensor | None  # [scale] mean KL(unsteered || steered) per neutral token, nats
    perplexity: torch.Tensor | None  # [scale] neutral-corpus perplexity under steering
    output_length: torch.Tensor | None  # [sample, scale] new tokens up to EOS (or max)
    samples: dict[float, list[str]] | None  # scale -> generated texts (with a tokenizer)
    sites: list[str]
    method: str
    # 95% bootstrap CIs over the neutral contexts (each context's mean KL / mean NLL; the
    # perplexity's ends are exp of the mean NLL's); None without side effects
    kl_ci: CI | None = None
    perplexity_low: torch.Tensor | None = None
    perplexity_high: torch.Tensor | None = None


def evaluate_steering(model: Model, vector: SteeringVector, prompts, cfg: SteeringEvalConfig,
                      probe=None, neutral: torch.Tensor | None = None, progress: bool = False) -> SteeringEval:
    """Sweep ``cfg.scales``; see the module docstring. ``neutral`` overrides the corpus with
    token ids ``[n, ctx]`` (e.g. for a model without a tokenizer). ``progress`` shows a bar
    over the sweep's steps (measure, side effects and generations at each scale)."""
    prompts = _prompt_list(prompts)
    if _n_prompts(prompts) < 2:
        raise InputError("evaluate_steering needs at least 2 prompts for a CI; got "
                         f"{_n_prompts(prompts)}.")
    vector.check(model)
    _check_positions(model, vector, prompts, cfg)
    measure = _measure(model, vector, cfg, probe)
    neutral = _neutral(model, cfg, neutral)
    scales = [float(s) for s in cfg.scales]

    generating = cfg.max_new_tokens > 0 and min(cfg.n_samples, _n_prompts(prompts)) > 0
    steps = len(scales) * (1 + (neutral is not None) + generating)
    with tqdm(total=steps, desc="scale sweep", unit="step", disable=not progress, dynamic_ncols=True) as bar:
        scores = []
        for s in scales:  # one batched forward per scale
            ivs = steer_interventions(vector, s, positions=cfg.positions)
            scores.append(measure(prompts, ivs))
            bar.update()
            log.info("steering scale %g: mean target %.4f", s, float(scores[-1].mean()))
        kl = ppl = per_context = None
        if neutral is not None:
            kl, ppl, per_context = _side_effects(model, vector, neutral, scales, cfg, bar.update)
        lengths, samples = _generations(model, vector, prompts, scales, cfg, bar.update)
    scores_t = torch.stack(scores, 1).double()
    scale_t = torch.tensor(scales, dtype=torch.float64)
    slopes = least_squares_slope(scale_t, scores_t)
    boot = dict(n_resamples=cfg.n_resamples, confidence=cfg.confidence, seed=cfg.seed)
    wrong = (slopes * cfg.expected_sign < 0).double()
    side: dict = {}
    if per_context is not None and per_context[0].shape[0] >= 2:  # a CI needs two contexts
        kl_ctx, nll_ctx = per_context
        nll_ci = bootstrap_ci(nll_ctx, **boot)
        side = {"kl_ci": bootstrap_ci(kl_ctx, **boot), "perplexity_low": nll_ci.low.exp(),
                "perplexity_high": nll_ci.high.exp()}
    return SteeringEval(
        config=cfg, scales=scale_t, scores=scores_t,
        mean_score=bootstrap_ci(scores_t, **boot),
        slopes=slopes, slope=bootstrap_ci(slopes, **boot),
        wrong_sign=bootstrap_ci(wrong, method="percentile", **boot),
        kl=kl, perplexity=ppl, output_length=lengths, samples=samples,
        sites=[str(s) for s in vector.sites], method=vector.method, **side,
    )


def least_squares_slope(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Slope of ``y[i, :]`` on ``x`` for each row ``i`` (ordinary least squares)."""
    xc = x - x.mean()
    return ((y - y.mean(1, keepdim=True)) * xc).sum(1) / (xc * xc).sum()


# -- the target measure -----------------------------------------------------------------------
def _measure(model: Model, vector: SteeringVector, cfg: SteeringEvalConfig, probe):
    if cfg.target == "logit_diff":
        a, b = (_single_token(model, t) for t in cfg.target_tokens)

        def logit_diff(prompts, ivs):
            logits = model.run(prompts, ivs)[:, -1].float()  # left-padded: last column is last
            return (logits[:, a] - logits[:, b]).cpu()
        return logit_diff

    if probe is None:
        raise ConfigError("target='probe' needs probe=...; or set target='logit_diff'.")
    site = model.site(probe.site)
    first = min(vector.sites, key=site_order)
    if site_order(site) < site_order(first):
        raise ConfigError(
            f"The probe reads {site}, before the earliest steered site {first}, so steering "
            "cannot change its score. Train the probe at or after the steering site."
        )
    from interplab.analyses.collect import check_reduction, position_weights

    reduction = getattr(probe, "reduction", "last")
    check_reduction(reduction)
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None

    def probe_score(prompts, ivs):
        batch = model.to_batch(prompts)
        _, cache = model.run_with_cache(batch, [site], ivs, stop_after_last_site=True)
        act = cache[site].float()
        act = act.reshape(act.shape[0], act.shape[1], -1)
        # the same position weights collect() uses, so the probe sees what it was trained on
        w = position_weights(batch.input_ids, batch.attention_mask, reduction, bos)
        reduced = torch.einsum("bp,bpd->bd", w.to(act.device, act.dtype), act).cpu()
        return torch.as_tensor(probe.score(reduced)).double().flatten().cpu()
    return probe_score


def _single_token(model: Model, token) -> int:
    if isinstance(token, int):
        return token
    if model.tokenizer is None:
        raise ConfigError(f"target token {token!r} is a string but the model has no tokenizer; give ids.")
    ids = model.tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise ConfigError(f"target token {token!r} is {len(ids)} tokens {ids}; logit_diff needs "
                          "single-token answers (try a leading space, e.g. ' Yes').")
    return int(ids[0])


# -- checks -----------------------------------------------------------------------------------
def _prompt_list(prompts):
    """Strings stay a list; token ids become a left-padded ``{input_ids, attention_mask}``."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, torch.Tensor):
        prompts = prompts if prompts.ndim == 2 else prompts[None]
        return {"input_ids": prompts, "attention_mask": torch.ones_like(prompts)}
    if isinstance(prompts, Mapping):
        return dict(prompts)
    prompts = list(prompts)
    if prompts and all(isinstance(p, torch.Tensor) for p in prompts):
        width = max(p.numel() for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - p.numel():] = p.flatten().long().cpu()
            mask[i, width - p.numel():] = 1
        return {"input_ids": ids, "attention_mask": mask}
    return prompts


def _n_prompts(prompts) -> int:
    return prompts["input_ids"].shape[0] if isinstance(prompts, dict) else len(prompts)


def _first(prompts, n: int):
    if isinstance(prompts, dict):
        return {k: v[:n] for k, v in prompts.items()}
    return prompts[:n]


def _check_positions(model: Model, vector, prompts, cfg) -> None:
    """Run the Steer checks (widths, rows, positions) on the real batch before any forward."""
    batch = model.to_batch(prompts)
    nonzero = [s for s in cfg.scales if float(s) != 0.0] or [1.0]
    ivs = steer_interventions(vector, float(nonzero[0]), positions=cfg.positions)
    with model.attached(ivs, batch=batch, max_new_tokens=cfg.max_new_tokens):
        pass


def _neutral(model: Model, cfg: SteeringEvalConfig, neutral):
    if neutral is not None:
        neutral = torch.as_tensor(neutral).long()
        if neutral.ndim != 2 or neutral.shape[1] < 2:
            raise InputError(f"neutral token ids must be [n, ctx >= 2]; got {tuple(neutral.shape)}.")
        return neutral
    if cfg.n_contexts == 0:
        return None
    if model.tokenizer is None:
        raise InputError("The neutral corpus needs a tokenizer; pass neutral=<token ids [n, ctx]> "
                         "or set n_contexts=0 to skip the side effects.")
    from interplab.activations import CorpusConfig, iter_documents, pack

    docs = iter_documents(CorpusConfig(source=cfg.neutral_source))
    return pack(model.tokenizer, docs, cfg.ctx_len, max_contexts=cfg.n_contexts)


# -- side effects -----------------------------------------------------------------------------
def _side_effects(model: Model, vector, neutral, scales, cfg, tick=lambda: None):
    """(mean KL [scale], perplexity [scale], (KL [context, scale], NLL [context, scale])): the
    per-context means behind the bootstrap CIs (contexts are equally long, so the mean of their
    means is the mean over tokens)."""
    base = torch.log_softmax(model.run(neutral).double(), -1)
    kls, ppls, kl_ctx, nll_ctx = [], [], [], []
    for s in scales:
        if s == 0.0:
            logp = base
        else:
            ivs = steer_interventions(vector, s, positions=cfg.positions)
            logp = torch.log_softmax(model.run(neutral, ivs).double(), -1)
        kl = (base.exp() * (base - logp)).sum(-1)  # [n, ctx]
        kls.append(kl.mean())
        nll = -logp[:, :-1].gather(-1, neutral[:, 1:, None].to(logp.device)).squeeze(-1)
        ppls.append(nll.mean().exp())
        kl_ctx.append(kl.mean(1))
        nll_ctx.append(nll.mean(1))
        tick()
    per_context = (torch.stack(kl_ctx, 1).cpu(), torch.stack(nll_ctx, 1).cpu())
    return torch.stack(kls).cpu(), torch.stack(ppls).cpu(), per_context


def _generations(model: Model, vector, prompts, scales, cfg, tick=lambda: None):
    n = min(cfg.n_samples, _n_prompts(prompts))
    if cfg.max_new_tokens == 0 or n == 0:
        return None, None
    sample_prompts = _first(prompts, n)
    eos = _eos(model)
    lengths, samples = [], {} if model.tokenizer is not None else None
    for s in scales:
        ivs = steer_interventions(vector, s, positions=cfg.positions)
        out = model.generate(sample_prompts, max_new_tokens=cfg.max_new_tokens, interventions=ivs)
        lengths.append(_until_eos(out.new_tokens, eos))
        if samples is not None:
            samples[s] = out.texts
        tick()
    return torch.stack(lengths, 1), samples


def _eos(model: Model) -> int | None:
    tok = model.tokenizer
    if tok is not None and tok.eos_token_id is not None:
        return int(tok.eos_token_id)
    eos = getattr(model.hf.config, "eos_token_id", None)
    return eos[0] if isinstance(eos, Sequence) else eos


def _until_eos(new_tokens: torch.Tensor, eos: int | None) -> torch.Tensor:
    """New tokens up to and including the first EOS, or all of them."""
    n = new_tokens.shape[1]
    if eos is None:
        return torch.full((new_tokens.shape[0],), n)
    hit = new_tokens == eos
    first = torch.where(hit, torch.arange(n).expand_as(hit), n).amin(1)
    return torch.where(first < n, first + 1, n)

