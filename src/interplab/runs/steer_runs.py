"""``interplab steer`` and ``interplab generate``.

steer    — extract a steering vector from a labelled dataset's contrastive pairs (or a probe),
           save it as an artifact (``vector/``), and evaluate it: a scale sweep measuring the
           target behaviour with a probe trained on held-out groups at a later layer, the side
           effects (KL and perplexity on a neutral corpus, output length), the steerability
           slope and the fraction of prompts moving the wrong way, with CIs, and sample
           generations — as a run record.
generate — generate from a prompt, optionally with a saved steering vector at a scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from interplab.analyses.collect import collect
from interplab.analyses.probes import ProbeConfig, fit_probe
from interplab.analyses.steering import SteeringVector, actadd, diff_means, from_probe, pca_diff
from interplab.analyses.steering_eval import SteeringEvalConfig, evaluate_steering
from interplab.core.config import param
from interplab.core.errors import ConfigError, choices
from interplab.runs.record import RunRecord
from interplab.runs.report import Report
from interplab.tasks.labelled import make_dataset

METHODS = ("diff_means", "pca", "actadd", "probe")
PROMPTS = ("I think the movie was", "The food at this place is", "My day has been",
           "Honestly, the book felt", "The service we got was", "Overall the trip was")


@dataclass(frozen=True)
class SteerRunConfig:
    """Extract a steering vector and evaluate it (effect and side effects) as a run record."""

    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    dataset: str = param("sentiment", help="Built-in labelled dataset with contrastive pairs (sentiment, truth, language, harmful).")
    n: int = param(160, help="Texts drawn from the dataset (even); half of the groups build the vector, the other half train the evaluation probe.")
    method: str = param("diff_means", help=f"Vector: {choices(METHODS)} (diff_means = CAA; pca = RepE; actadd = the first pair only; probe = a probe's direction).")
    site: str = param("L10.resid_post", help="Site the vector is extracted at and added to.")
    reduction: str = param("last", help="Position reduction of the contrastive activations: last or mean.")
    probe_site: str = param("L20.resid_post", help="Site of the evaluation probe (at or after `site`).")
    scales: tuple[float, ...] = param((-2.0, -1.0, 0.0, 1.0, 2.0), help="Scales of the sweep (0 is the unsteered model).")
    prompts: tuple[str, ...] = param(PROMPTS, help="Prompts steered in the sweep.")
    max_new_tokens: int = param(12, help="Tokens generated for each sample.")
    seed: int = param(0, help="Seed of the dataset, probe split and bootstrap.")
    out: str = param("runs", help="Directory for run records.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "prompts", tuple(self.prompts))
        if self.method not in METHODS:
            raise ConfigError(f"method={self.method!r} is not one of {choices(METHODS)}.")
        if 0.0 not in self.scales or len(self.scales) < 3:
            raise ConfigError(f"scales must include 0 and at least two others, got {self.scales}.")
        if len(self.prompts) < 2:
            raise ConfigError("Give at least 2 prompts (the slope's CI is over prompts).")


def steer_run(cfg: SteerRunConfig, model=None) -> Path:
    from interplab.runtime.loading import load

    ds = make_dataset(cfg.dataset, n=cfg.n, seed=cfg.seed)
    model = model or load(cfg.model)
    groups, labels = torch.tensor(ds.groups), torch.tensor(ds.labels)
    for_vector = groups % 2 == 0  # vector from even groups, the evaluation probe from odd ones
    held = [t for t, v in zip(ds.texts, for_vector.tolist()) if not v]
    acts = collect(model, held, [cfg.probe_site], cfg.reduction)[str(cfg.probe_site)]
    fit = fit_probe(acts, labels[~for_vector], groups[~for_vector],
                    ProbeConfig(site=cfg.probe_site, reduction=cfg.reduction, seed=cfg.seed, n_resamples=500),
                    label_names=ds.label_names)
    pairs = [(ds.texts[p], ds.texts[q]) for p, q in ds.pairs if for_vector[p]]
    pos, neg = [p for p, _ in pairs], [q for _, q in pairs]
    if cfg.method == "diff_means":
        vector = diff_means(model, pos, neg, cfg.site, cfg.reduction)
    elif cfg.method == "pca":
        vector = pca_diff(model, pos, neg, cfg.site, cfg.reduction)
    elif cfg.method == "actadd":
        vector = actadd(model, pos[0], neg[0], cfg.site)
    else:
        idx = [i for i, v in enumerate(for_vector.tolist()) if v]
        vacts = collect(model, [ds.texts[i] for i in idx], [cfg.site], cfg.reduction)[str(cfg.site)]
        vfit = fit_probe(vacts, labels[idx], groups[idx], ProbeConfig(site=cfg.site, reduction=cfg.reduction, seed=cfg.seed))
        vector = from_probe(vfit.probe, acts=vacts, labels=labels[idx])
    ecfg = SteeringEvalConfig(scales=list(cfg.scales), max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    res = evaluate_steering(model, vector, list(cfg.prompts), ecfg, probe=fit.probe)
    return _record(cfg, model, ds, vector, fit, res)


def _record(cfg, model, ds, vector, fit, res) -> Path:
    report = Report(f"Steering {ds.name} ({ds.label_names[1]} − {ds.label_names[0]}) on {model.source.get('name')}")
    norms = ", ".join(f"{v:.2f}" for v in vector.norm().values())
    report.text(f"{cfg.method} vector at {cfg.site} (norm {norms}) from the even groups' pairs; "
                f"target: a logistic probe at {cfg.probe_site} trained on the odd groups ({fit.summary()}).")
    s = res.slope
    report.text(f"Steerability slope (probe score per unit scale, mean over {len(cfg.prompts)} prompts): "
                f"{float(s.estimate):.3f} [{float(s.low):.3f}, {float(s.high):.3f}]; prompts moving the wrong way: "
                f"{float(res.wrong_sign.estimate):.2f} [{float(res.wrong_sign.low):.2f}, {float(res.wrong_sign.high):.2f}].")
    rows = []
    for j, scale in enumerate(res.scales.tolist()):
        m = res.mean_score
        rows.append([scale, f"{float(m.estimate[j]):.3f} [{float(m.low[j]):.3f}, {float(m.high[j]):.3f}]",
                     None if res.kl is None else float(res.kl[j]),
                     None if res.perplexity is None else float(res.perplexity[j]),
                     None if res.output_length is None else float(res.output_length[:, j].float().mean())])
    report.table(["scale", "probe score [95% CI]", "KL on neutral text (nats/token)", "perplexity", "output length"], rows)
    if res.samples:
        report.heading("Samples (greedy)")
        for scale, texts in res.samples.items():
            for t in texts:
                report.text(f"scale {scale:+g}: {cfg.prompts[0]}{t}")
    with RunRecord(cfg.out, f"steer-{ds.name}-{cfg.method}", cfg, model, cfg.seed) as run:
        vector.save(run.path / "vector", model=model)
        report.text("The vector is saved as vector/ (SteeringVector.load; `interplab generate --steer`).", note=True)
        run.add_results("slope", {"estimate": float(s.estimate), "low": float(s.low), "high": float(s.high)})
        run.add_results("wrong_sign", float(res.wrong_sign.estimate))
        run.add_tensors("sweep", {"scales": res.scales, "scores": res.scores,
                                  "kl": res.kl, "perplexity": res.perplexity})
        run.write_text("report.html", report.render())
    return run.path


@dataclass(frozen=True)
class GenerateConfig:
    """Generate from a prompt, with and without a saved steering vector."""

    prompt: str = param("I think the movie was", help="Prompt to continue.")
    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    steer: str = param("", help="A saved steering vector directory (e.g. runs/steer-.../vector).")
    scale: float = param(4.0, help="Scale of the steering vector.")
    max_new_tokens: int = param(24, help="Tokens to generate (greedy).")


def generate_run(cfg: GenerateConfig, model=None) -> dict[str, str]:
    """Greedy continuations: {"plain": ..., "steered": ...} (steered only with a vector)."""
    from interplab.runtime.loading import load

    vector = SteeringVector.load(cfg.steer) if cfg.steer else None
    model = model or load(cfg.model)
    out = {"plain": model.generate([cfg.prompt], cfg.max_new_tokens).texts[0]}
    if vector is not None:
        vector.check(model)
        out["steered"] = model.generate([cfg.prompt], cfg.max_new_tokens, vector.interventions(cfg.scale)).texts[0]
    return out
