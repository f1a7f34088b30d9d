"""Path patching (Wang et al. 2022, "Interpretability in the Wild", §3 and App. B).

Measures the effect of sender heads on the metric *through* chosen receivers only. For each
sender head s, on the base (clean) prompts:

1. run with s's output (``attn.z[h]``) taken from the corrupt prompt and every other head's
   output frozen to its base value (MLPs and norms recompute), and record the receivers'
   activations — typically a receiver head's query / key / value (``attn.q[h]`` ...);
2. run the base prompt again with only the receivers set to the values recorded in step 1.

The change in the metric is the effect of the path s → receivers. Effects are on the same
scale as patching (1 = the clean run, 0 = the corrupt run; a path that matters moves it
towards 0). Assumptions: clean / corrupt prompts of one length; senders lie in layers before
every receiver. Batched: each (sender, prompt) is one row, two forwards for the whole sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interplab.analyses.metrics import answer_metric, check_metric, normalise
from interplab.analyses.patching import pair_inputs
from interplab.core.config import check_fields, param
from interplab.core.errors import ConfigError
from interplab.core.model import Model
from interplab.core.shapes import AnswerIds
from interplab.core.sites import Site, SiteKind
from interplab.interventions import Patch
from interplab.runtime.inputs import Batch
from interplab.stats import EffectSummary, summarize


@dataclass(frozen=True)
class PathPatchingConfig:
    """Senders (heads) → receivers (sites, e.g. name-mover queries)."""

    receivers: tuple[str, ...] = param((), help="Receiver sites, e.g. ('L9.attn.q[h9]', 'L10.attn.q[h7]').")
    sender_layers: tuple[int, ...] | None = param(None, help="Layers whose heads are senders (default: all before the first receiver).")
    metric: str = param("logit_diff", help="logit_diff, prob, loss or kl.")
    max_rows: int = param(256, help="Most rows (sender × prompt) per forward.", ge=1)
    naive: bool = param(False, help="Reference path: one sender and prompt at a time.")
    n_resamples: int = param(2000, help="Bootstrap resamples.", ge=2)
    seed: int = param(0, help="Seed of the statistics.")

    def __post_init__(self) -> None:
        if not self.receivers:
            raise ConfigError("Path patching needs at least one receiver site, e.g. 'L9.attn.q[h9]'.")
        object.__setattr__(self, "receivers", tuple(str(Site.parse(r)) for r in self.receivers))
        check_metric(self.metric)
        check_fields(self)  # the declared ranges


@dataclass
class PathPatchingResult:
    config: PathPatchingConfig
    axes: dict[str, list]  # {"layer": [...], "head": [...]}
    effects: torch.Tensor  # [prompt, layer, head]
    raw: torch.Tensor
    clean_metric: torch.Tensor
    corrupt_metric: torch.Tensor
    summary: EffectSummary | None = None


def path_patching(model: Model, clean, corrupt, answers: AnswerIds, wrong: AnswerIds,
                  config: PathPatchingConfig) -> PathPatchingResult:
    clean, corrupt, answers, wrong = pair_inputs(model, clean, corrupt, answers, wrong)
    receivers = [model.site(r) for r in config.receivers]
    first = min(r.layer if r.layer is not None else model.dims.n_layers for r in receivers)
    layers = list(range(first)) if config.sender_layers is None else list(config.sender_layers)
    if not layers or max(layers) >= first:
        raise ConfigError(
            f"Sender layers {layers} must be non-empty and before the first receiver's layer {first}; "
            "a head cannot reach a receiver in its own or an earlier layer."
        )
    heads = list(range(model.dims.n_heads))
    senders = [(layer, h) for layer in layers for h in heads]
    z_sites = [Site(layer, SiteKind.Z) for layer in range(model.dims.n_layers)]
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean, z_sites)
        corrupt_logits, corrupt_cache = model.run_with_cache(corrupt, z_sites)
    n = clean.shape[0]

    def score(last, prompts):
        return answer_metric(config.metric, last, answers[prompts], wrong[prompts], clean_logits[prompts, -1])

    all_p = torch.arange(n)
    clean_m, corrupt_m = score(clean_logits[:, -1], all_p), score(corrupt_logits[:, -1], all_p)
    pairs = [(s, i) for s in range(len(senders)) for i in range(n)]
    step = 1 if config.naive else config.max_rows
    raw = torch.empty(n, len(senders))
    for lo in range(0, len(pairs), step):
        chunk = pairs[lo : lo + step]
        prompts = torch.tensor([i for _, i in chunk])
        rows = Batch(clean.input_ids[prompts], clean.attention_mask[prompts],
                     clean.positions[prompts], clean.lengths[prompts])
        # Step 1: freeze every head to its clean value, then let each row's sender read corrupt.
        edits = [Patch(s, value=clean_cache[s][prompts]) for s in z_sites]
        for r, (si, i) in enumerate(chunk):
            layer, h = senders[si]
            site = Site(layer, SiteKind.Z, h)
            edits.append(Patch(site, value=corrupt_cache[Site(layer, SiteKind.Z)][i : i + 1, :, h], rows=[r]))
        _, rec = model.run_with_cache(rows, receivers, edits)
        # Step 2: only the receivers change.
        logits = model.run(rows, [Patch(r, value=rec[r]) for r in receivers])
        raw[prompts, torch.tensor([si for si, _ in chunk])] = score(logits[:, -1], prompts).float()
    effects = normalise(config.metric, raw, clean_m[:, None], corrupt_m[:, None], base="clean")
    shape = (n, len(layers), len(heads))
    effects, raw = effects.reshape(shape), raw.reshape(shape)
    summary = None
    if n >= 2:
        summary = summarize(effects, n_resamples=config.n_resamples, seed=config.seed, null=1.0)
    return PathPatchingResult(config, {"layer": layers, "head": heads}, effects, raw, clean_m, corrupt_m, summary)
