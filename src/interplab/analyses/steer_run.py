"""``interplab steer``: extract a steering vector from a labelled dataset's contrastive pairs (or a
probe), save it as an artifact (``vector/``, ``SteeringVector.load``; ``interplab generate
--steer``), and evaluate it (``analyses.steering_eval``): a scale sweep measuring the target
behaviour with a probe trained on held-out groups at a later layer, the side effects (KL and
perplexity on a neutral corpus, output length), the steerability slope and the fraction of
prompts moving the wrong way, with CIs (Tan et al. 2024), and sample generations.

The vector is built from the even groups' pairs and the evaluation probe is trained on the odd
groups, so the probe never saw the texts the vector came from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from interplab.analyses.collect import collect
from interplab.analyses.probes import ProbeConfig, fit_probe
from interplab.analyses.steering import actadd, diff_means, from_probe, pca_diff
from interplab.analyses.steering_eval import SteeringEvalConfig, evaluate_steering
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Heading, Lines, Table, Text, ci_text
from interplab.core.config import RunFields, param
from interplab.core.errors import ConfigError
from interplab.core.result import Result
from interplab.tasks.labelled import make_dataset

METHODS = ("diff_means", "pca", "actadd", "probe")
PROMPTS = ("I think the movie was", "The food at this place is", "My day has been",
           "Honestly, the book felt", "The service we got was", "Overall the trip was")


@dataclass(frozen=True)
class SteerRunConfig(RunFields):
    """Extract a steering vector and evaluate it (effect and side effects) as a run record."""

    dataset: str = param("sentiment", help="Built-in labelled dataset with contrastive pairs (sentiment, truth, language, harmful).")
    n: int = param(160, help="Texts drawn from the dataset (even); half of the groups build the vector, the other half train the evaluation probe.")
    method: str = param("diff_means", help="Vector: diff_means = CAA; pca = RepE; actadd = the first pair only; probe = a probe's direction.", choices=METHODS)
    site: str = param("L10.resid_post", help="Site the vector is extracted at and added to.")
    reduction: str = param("last", help="Position reduction of the contrastive activations: last or mean.")
    probe_site: str = param("L20.resid_post", help="Site of the evaluation probe (at or after `site`).")
    scales: tuple[float, ...] = param((-2.0, -1.0, 0.0, 1.0, 2.0), help="Scales of the sweep (0 is the unsteered model).")
    prompts: tuple[str, ...] = param(PROMPTS, help="Prompts steered in the sweep.")
    max_new_tokens: int = param(12, help="Tokens generated for each sample.", ge=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "prompts", tuple(self.prompts))
        super().__post_init__()
        if not all(math.isfinite(s) for s in self.scales):
            raise ConfigError(f"scales must be finite numbers, got {self.scales}.")
        if 0.0 not in self.scales or len(self.scales) < 3:
            raise ConfigError(f"scales must include 0 and at least two others, got {self.scales}.")
        if len(self.prompts) < 2:
            raise ConfigError("Give at least 2 prompts (the slope's CI is over prompts).")


@dataclass
class SteerRunResult(Result):
    """The sweep along ``scale`` and its summary; the vector itself is the run's ``vector/``."""

    slope: dict[str, float]  # estimate, low, high: probe score per unit scale, mean over prompts
    wrong_sign: float  # fraction of prompts whose slope has the wrong sign
    wrong_sign_ci: list[float]
    sweep: dict  # scales [scale], scores [prompt, scale], mean/low/high [scale], kl, perplexity, output_length
    samples: dict = field(default_factory=dict)  # scale -> greedy continuations of the first prompts
    prompts: list[str] = field(default_factory=list)
    vector_norm: dict[str, float] = field(default_factory=dict)
    probe_summary: str = ""
    dataset: str = ""
    label_names: list[str] = field(default_factory=list)
    method: str = ""
    site: str = ""
    probe_site: str = ""
    model_name: str = ""

    def title(self) -> str:
        return (f"Steering {self.dataset} ({self.label_names[1]} − {self.label_names[0]}) on {self.model_name}")

    def headline(self) -> dict:
        out = {"slope": self.slope["estimate"], "slope_low": self.slope["low"], "slope_high": self.slope["high"],
               "wrong_sign": self.wrong_sign, "vector_norm": max(self.vector_norm.values())}
        kl = self.sweep.get("kl")
        if kl is not None:
            out["max_kl_neutral"] = float(kl.max())
        return out

    def _table(self) -> Table:
        s, rows = self.sweep, []
        for j, scale in enumerate(s["scales"].tolist()):
            rows.append([f"{scale:+g}", f"{float(s['mean'][j]):.3f} {ci_text(s['low'][j], s['high'][j])}",
                         None if s["kl"] is None else float(s["kl"][j]),
                         None if s["perplexity"] is None else float(s["perplexity"][j]),
                         None if s["output_length"] is None else float(s["output_length"][:, j].float().mean())])
        return Table(["scale", "probe score [95% CI]", "KL on neutral text (nats/token)", "perplexity",
                      "output length"], rows)

    def terminal(self) -> list[Block]:
        return [*super().terminal(), self._table()]

    def _band(self, key: str, series: str) -> dict:
        """Lines' low/high for a side effect, when the record has its CI (older ones do not)."""
        low, high = self.sweep.get(f"{key}_low"), self.sweep.get(f"{key}_high")
        if low is None or high is None:
            return {}
        return {"low": {series: low.tolist()}, "high": {series: high.tolist()}}

    def _band_note(self) -> str:
        return "; band: 95% bootstrap CI over the neutral contexts" if self.sweep.get("kl_low") is not None else ""

    def samples_table(self) -> Table:
        """One row per (scale, sample): the prompt and its greedy continuation at that scale (the
        samples are the first prompts', in order)."""
        return Table(["scale", "prompt", "continuation"],
                     [[f"{scale:+g}", self.prompts[i] if i < len(self.prompts) else "", text]
                      for scale, texts in self.samples.items() for i, text in enumerate(texts)])

    def blocks(self) -> list[Block]:
        s = self.sweep
        scales = s["scales"].tolist()
        norms = ", ".join(f"{v:.2f}" for v in self.vector_norm.values())
        out: list[Block] = [
            Text(f"{self.method} vector at {self.site} (norm {norms}) from the even groups' pairs; target: a "
                 f"logistic probe at {self.probe_site} trained on the odd groups ({self.probe_summary})."),
            Text(f"Steerability slope (probe score per unit scale, mean over {len(self.prompts)} prompts): "
                 f"{self.slope['estimate']:.3f} [{self.slope['low']:.3f}, {self.slope['high']:.3f}]; prompts "
                 f"moving the wrong way: {self.wrong_sign:.2f} [{self.wrong_sign_ci[0]:.2f}, {self.wrong_sign_ci[1]:.2f}]."),
            self._table(),
            Lines("steer_score", "Probe score by steering scale", scales, {"probe score": s["mean"].tolist()},
                  "scale", f"probe score ({self.label_names[1]} > 0)", low={"probe score": s["low"].tolist()},
                  high={"probe score": s["high"].tolist()}, hline=0.0,
                  caption=f"Mean over {len(self.prompts)} prompts with 95% bootstrap CIs; 0 is the unsteered model."),
        ]
        if s["kl"] is not None:
            out.append(Lines("steer_kl", "Side effect: KL on neutral text", scales, {"KL": s["kl"].tolist()},
                             "scale", "KL(unsteered ‖ steered), nats/token", **self._band("kl", "KL"),
                             caption="Mean KL of next-token distributions on a neutral corpus (0 at scale 0)"
                                     f"{self._band_note()}."))
        if s["perplexity"] is not None:
            out.append(Lines("steer_perplexity", "Side effect: perplexity on neutral text", scales,
                             {"perplexity": s["perplexity"].tolist()}, "scale", "perplexity",
                             **self._band("perplexity", "perplexity"),
                             caption="Perplexity of the neutral corpus under steering (scale 0: the model's own)"
                                     f"{self._band_note()}."))
        if self.samples:
            out += [Heading("Samples (greedy)"), self.samples_table()]
        out.append(Text("The vector is saved as vector/ (SteeringVector.load; `interplab generate --steer`).", note=True))
        return out


def _vector(cfg: SteerRunConfig, model, ds, labels, groups, for_vector):
    pairs = [(ds.texts[p], ds.texts[q]) for p, q in ds.pairs if for_vector[p]]
    pos, neg = [p for p, _ in pairs], [q for _, q in pairs]
    if cfg.method == "diff_means":
        return diff_means(model, pos, neg, cfg.site, cfg.reduction)
    if cfg.method == "pca":
        return pca_diff(model, pos, neg, cfg.site, cfg.reduction)
    if cfg.method == "actadd":
        return actadd(model, pos[0], neg[0], cfg.site)
    idx = [i for i, v in enumerate(for_vector.tolist()) if v]
    vacts = collect(model, [ds.texts[i] for i in idx], [cfg.site], cfg.reduction)[str(cfg.site)]
    vfit = fit_probe(vacts, labels[idx], groups[idx], ProbeConfig(site=cfg.site, reduction=cfg.reduction, seed=cfg.seed))
    return from_probe(vfit.probe, acts=vacts, labels=labels[idx])


@register_analysis("steer", config=SteerRunConfig, result=SteerRunResult,
                   help="extract a steering vector and evaluate its effect and side effects",
                   run_name=lambda cfg: f"steer-{cfg.dataset}-{cfg.method}",
                   example={"n": 48, "site": "L0.resid_post", "probe_site": "L1.resid_post", "max_new_tokens": 3,
                            "prompts": ("the cat", "a dog", "my day")})
def steer(cfg: SteerRunConfig, ctx: Context) -> SteerRunResult:
    ds = make_dataset(cfg.dataset, n=cfg.n, seed=cfg.seed)
    model = ctx.model
    model.site(cfg.site), model.site(cfg.probe_site)  # SiteError before any work
    groups, labels = torch.tensor(ds.groups), torch.tensor(ds.labels)
    for_vector = groups % 2 == 0  # vector from even groups, the evaluation probe from odd ones
    held = [t for t, v in zip(ds.texts, for_vector.tolist()) if not v]
    ctx.phase(f"collecting activations of {len(held)} held-out texts at {cfg.probe_site}")
    acts = collect(model, held, [cfg.probe_site], cfg.reduction)[str(cfg.probe_site)]
    ctx.phase("fitting the evaluation probe")
    fit = fit_probe(acts, labels[~for_vector], groups[~for_vector],
                    ProbeConfig(site=cfg.probe_site, reduction=cfg.reduction, seed=cfg.seed, n_resamples=500),
                    label_names=ds.label_names)
    ctx.phase(f"extracting the {cfg.method} vector at {cfg.site}")
    vector = _vector(cfg, model, ds, labels, groups, for_vector)
    ctx.phase(f"scale sweep over {len(cfg.scales)} scales")
    ecfg = SteeringEvalConfig(scales=list(cfg.scales), max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    res = evaluate_steering(model, vector, list(cfg.prompts), ecfg, probe=fit.probe, progress=ctx.progress)
    vector.save(ctx.dir / "vector", model=model)
    m, s, w = res.mean_score, res.slope, res.wrong_sign
    return SteerRunResult(
        slope={"estimate": float(s.estimate), "low": float(s.low), "high": float(s.high)},
        wrong_sign=float(w.estimate), wrong_sign_ci=[float(w.low), float(w.high)],
        sweep={"scales": res.scales, "scores": res.scores, "mean": m.estimate, "low": m.low, "high": m.high,
               "kl": res.kl, "perplexity": res.perplexity, "output_length": res.output_length,
               **({} if res.kl_ci is None else {"kl_low": res.kl_ci.low, "kl_high": res.kl_ci.high,
                                                "perplexity_low": res.perplexity_low,
                                                "perplexity_high": res.perplexity_high})},
        samples=dict(res.samples or {}), prompts=list(cfg.prompts), vector_norm=vector.norm(),
        probe_summary=fit.summary(), dataset=ds.name, label_names=list(ds.label_names), method=cfg.method,
        site=cfg.site, probe_site=cfg.probe_site, model_name=model.source.get("name", ""))
