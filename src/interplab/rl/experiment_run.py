"""``interplab rl-experiment``: the shipped experiment of ``rl.experiment`` as a run record: every
arm × seed trained with GRPO from the same start, held-out outcomes with CIs, per-seed curves."""

from __future__ import annotations

from dataclasses import dataclass, field

from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Bars, Block, Heading, Lines, Table, Text
from interplab.core.config import RunFields, param
from interplab.core.errors import ConfigError
from interplab.core.result import Result
from interplab.rl.config import GRPOSettings
from interplab.rl.experiment import ARMS


@dataclass(frozen=True)
class ExperimentFields:
    """Arms, seeds, prompts and probes of the experiment."""

    arms: tuple[str, ...] = param(ARMS, help=f"Arms to run, from: {', '.join(ARMS)}.")
    seeds: int = param(2, help="Seeds per arm (each a full GRPO run).", ge=1, le=100)
    n_train: int = param(32, help="Training openers.", ge=2, le=48)
    n_heldout: int = param(16, help="Held-out openers (never trained on), scored at start and end.", ge=2, le=32)
    heldout_tokens: int = param(16, help="Tokens of each greedy held-out completion.", ge=1, le=256)
    probe_site: str = param("L10.resid_post", help="Site of the proxy's sentiment probe (and the control "
                            "direction and novelty bonus).")
    verifier_probe_site: str = param("L20.resid_post", help="Site of the second, disjointly fit, verifier probe.")
    probe_texts: int = param(200, help="Sentiment texts the two probes are fit on (half each).", ge=8, le=400)
    quick: bool = param(False, help="Minutes instead of tens of minutes: one seed, 4 steps of 2 prompts × 2 "
                        "completions of 8 tokens, 8 training and 8 held-out openers.")


@dataclass(frozen=True)
class ExperimentConfig(RunFields, ExperimentFields, GRPOSettings):
    """Does a sentiment probe on the frozen model work as a reward, or is it hacked?"""

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise ConfigError(f"arms: unknown {bad or 'none given'}; valid arms: {', '.join(ARMS)}.")
        if self.n_train + self.n_heldout > 64:
            raise ConfigError(f"n_train + n_heldout = {self.n_train + self.n_heldout}; there are 64 openers.")


@dataclass
class ExperimentResult(Result):
    model_name: str = ""
    probe_aurocs: dict[str, float] = field(default_factory=dict)
    stats: dict[str, dict] = field(default_factory=dict)  # arm -> outcome -> [estimate, low, high]
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # arm -> "seed s" -> reward
    samples: list[list[str]] = field(default_factory=list)  # [arm, prompt, start, end]
    settings: dict = field(default_factory=dict)

    def title(self) -> str:
        return f"Rewards from internals: a sentiment probe as a GRPO reward on {self.model_name}"

    def headline(self) -> dict:
        out = {}
        for arm, s in self.stats.items():
            out[f"{arm}_verifier_gain"] = s["verifier_gain"][0]
            out[f"{arm}_hack_rate"] = s["hack_rate"][0]
        return out

    def blocks(self) -> list[Block]:
        ci = lambda v: f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"  # noqa: E731
        rows = [[arm, ci(s["verifier_gain"]), ci(s["probe2_gain"]), ci(s["proxy_gain"]), ci(s["goodhart_gap"]),
                 ci(s["hack_rate"]), f"{s['hack_rate_start']:.2f}",
                 "" if "p_vs_control" not in s else f"{s['p_vs_control']:.3f}"] for arm, s in self.stats.items()]
        out: list[Block] = [
            Heading("Outcomes on held-out openers"),
            Text(f"Proxy: a sentiment probe read from the frozen reference (test AUROC "
                 f"{self.probe_aurocs.get('proxy', float('nan')):.3f}); verifiers: VADER and a probe fit on "
                 f"disjoint texts at another layer (AUROC {self.probe_aurocs.get('verifier', float('nan')):.3f}). "
                 "Gains are end minus start per held-out prompt, averaged over seeds, with 95% bootstrap CIs over "
                 "prompts; p: paired permutation test of the VADER gain against the random-direction control. "
                 f"Settings: {self.settings}."),
            Table(["arm", "VADER gain", "probe-2 gain", "proxy gain", "Goodhart gap", "hack rate", "hack rate at start",
                   "p vs control"], rows)]
        if self.stats:
            arms = list(self.stats)
            gain = [self.stats[a]["verifier_gain"] for a in arms]
            out.append(Bars("verifier_gain", "Held-out VADER gain per arm (95% CI over prompts)", arms,
                            [g[0] for g in gain], "VADER gain (end − start)", low=[g[1] for g in gain],
                            high=[g[2] for g in gain], null=[0.0] * len(arms)))
        for arm, series in self.curves.items():
            if series:
                n = max(len(v) for v in series.values())
                out.append(Lines(f"reward_{arm}", f"{arm}: training reward per step, per seed",
                                 [float(i + 1) for i in range(n)], series, "step", "mean reward"))
        if self.samples:
            out += [Heading("Samples"), Table(["arm", "prompt", "start", "end"], self.samples)]
        return out


@register_analysis("rl-experiment", config=ExperimentConfig, result=ExperimentResult,
                   help="the shipped RL experiment: a sentiment probe as a GRPO reward, arms × seeds, with CIs",
                   run_name=lambda c: "rl-experiment" + ("-quick" if c.quick else ""),
                   example={"arms": ("probe_kl", "random_direction"), "seeds": 1, "n_train": 2, "n_heldout": 2,
                            "heldout_tokens": 4, "probe_site": "L1.resid_post",
                            "verifier_probe_site": "L0.resid_post", "probe_texts": 16, "steps": 1,
                            "num_generations": 2, "prompts_per_step": 2, "max_completion_length": 4})
def rl_experiment(cfg: ExperimentConfig, ctx: Context) -> ExperimentResult:
    from interplab.rl.experiment import (
        arm_reward,
        arm_statistics,
        fit_probes,
        quick_settings,
        review_prompts,
        score_heldout,
    )
    from interplab.rl.harness import train_grpo
    from interplab.rl.reference import InternalsReader
    from interplab.rl.rewards import ProbeReward, VaderReward

    settings = GRPOSettings(**{f: getattr(cfg, f) for f in GRPOSettings.__dataclass_fields__})
    seeds, n_train, n_heldout = cfg.seeds, cfg.n_train, cfg.n_heldout
    if cfg.quick:
        settings, seeds, n_train, n_heldout = quick_settings(settings), 1, min(n_train, 8), min(n_heldout, 8)
    items = review_prompts(cfg.seed)
    train, heldout = items[:n_train], items[n_train : n_train + n_heldout]
    model = ctx.model
    ctx.phase("fitting the proxy and verifier probes on disjoint sentiment texts")
    proxy_fit, verifier_fit = fit_probes(model, cfg.probe_site, cfg.verifier_probe_site, cfg.probe_texts, cfg.seed)
    reader = InternalsReader(model)  # the frozen reference every internal reward reads
    proxy = ProbeReward(proxy_fit.probe, reader, name="sentiment_probe")
    probe2 = ProbeReward(verifier_fit.probe, reader, name="verifier_probe")
    vader = VaderReward()
    tok = model.tokenizer
    start = score_heldout(model.hf, tok, heldout, cfg.heldout_tokens, proxy, vader, probe2)
    ends: dict[str, list] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    for arm in cfg.arms:
        for seed in range(seeds):
            ctx.phase(f"GRPO: arm {arm}, seed {seed} ({settings.steps} steps)")
            reward = arm_reward(arm, reader, proxy_fit.probe, cfg.probe_site, seed)
            arm_settings = settings if arm != "probe_nokl" else GRPOSettings(
                **{**{f: getattr(settings, f) for f in GRPOSettings.__dataclass_fields__}, "beta": 0.0})
            run = train_grpo(model, reward, train, arm_settings, ctx.dir / f"{arm}-seed{seed}",
                             seed=cfg.seed + seed, progress=ctx.progress)
            ends.setdefault(arm, []).append(score_heldout(run.policy, tok, heldout, cfg.heldout_tokens,
                                                          proxy, vader, probe2))
            curves.setdefault(arm, {})[f"seed {seed}"] = [float(r.get("reward", float("nan"))) for r in run.metrics]
            del run
    control = ends.get("random_direction")
    stats = {arm: arm_statistics(start, e, control if arm != "random_direction" else None, cfg.seed)
             for arm, e in ends.items()}
    samples = [[arm, heldout[i], start.completions[i], e[0].completions[i]]
               for arm, e in ends.items() for i in range(min(2, len(heldout)))]
    return ExperimentResult(
        model_name=model.source.get("name", ""),
        probe_aurocs={"proxy": float(proxy_fit.auroc["test"]), "verifier": float(verifier_fit.auroc["test"])},
        stats=stats, curves=curves, samples=samples,
        settings={"steps": settings.steps, "beta": settings.beta, "num_generations": settings.num_generations,
                  "prompts_per_step": settings.prompts_per_step, "max_completion_length": settings.max_completion_length,
                  "learning_rate": settings.learning_rate, "seeds": seeds, "n_train": n_train, "n_heldout": n_heldout})
