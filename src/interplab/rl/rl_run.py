"""``interplab rl``: GRPO against a reward (from internals or not) with the monitors on, as a run
record.

The policy is trained with TRL's ``GRPOTrainer`` (``rl.harness``) from the run's model; the
rewards are built from spec dicts (``rl.rewards.build_reward``: probe, feature, direction,
vader, verifier, novelty, combined). Every logging step writes ``metrics.jsonl`` in the run
directory: TRL's training metrics (``reward`` on the training prompts, ``kl`` to the reference,
``loss``) and the held-out monitors of ``rl.monitors`` (proxy and verifier on greedy completions
of held-out prompts, their Spearman correlation, the hack rate, and a probe's AUROC on a
labelled set read from the frozen reference and from the policy). The result keeps the curves,
sample completions at checkpoints and the end, and the start-to-end changes.

Everything is refused before the model loads or training starts: an empty prompt list, an
unknown reward kind, ``steps < 1``, a monitor probe that does not fit the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Heading, Lines, Table, Text
from interplab.core.config import RunFields, param
from interplab.core.errors import ConfigError
from interplab.core.result import Result
from interplab.rl.config import GRPOSettings

REVIEWS = (
    "The movie was", "I watched this film last night and", "The acting in this show", "This restaurant is",
    "The service at the hotel", "My new phone", "The book's ending", "The concert last weekend",
    "This album", "The coffee here", "The plot of the series", "Our stay at the resort",
    "The video game", "The customer support team", "The museum exhibit", "The sequel",
)
STORIES = (
    "Once upon a time", "The old man opened the door and", "In a small village,", "She looked at the sky and",
    "The robot woke up", "On the first day of school,", "The dragon", "Late at night, the phone rang and",
)
BUILTIN = {"reviews": REVIEWS, "stories": STORIES}


def _spec(value, name: str) -> dict:
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{name} must be a JSON object such as '{{\"kind\": \"vader\"}}'; got {value!r} "
                              f"({err.msg}).") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a reward spec dict with a 'kind'; got {type(value).__name__}.")
    return value


def _check_kind(spec: dict, name: str) -> None:
    from interplab.core.errors import choices, closest
    from interplab.rl.rewards import KINDS

    kind = spec.get("kind")
    if kind not in KINDS:
        near = closest(kind, KINDS) if isinstance(kind, str) else None
        raise ConfigError(f"{name}: unknown reward kind {kind!r}{f' (did you mean {near!r}?)' if near else ''}; "
                          f"valid kinds: {choices(KINDS)}.")
    for part in spec.get("parts", []) if kind == "combined" else []:
        if isinstance(part, dict):
            _check_kind(part, f"{name} part")


@dataclass(frozen=True)
class RLFields:
    """What the RL run trains on, against what, and what it watches."""

    prompts: str = param("reviews", help="Prompt source: a built-in list (reviews, stories), a registered "
                         "labelled dataset's texts (e.g. sentiment) or a text file with one prompt a line.")
    n_prompts: int = param(8, help="Training prompts (the first n of the source).", ge=1, le=100_000)
    n_heldout: int = param(4, help="Held-out prompts for the monitors (the next n, never trained on).",
                           ge=1, le=10_000)
    # param() gives a dict default its own default_factory (a fresh copy per config).
    reward: dict | str = param(  # noqa: RUF009
        {"kind": "vader"}, help="The proxy reward's spec (JSON object): kind probe, feature, direction, vader, "
        "verifier, novelty or combined, and its keys.")
    verifier: dict | str = param({}, help="The held-out verifier's spec (same form); {} = none.")  # noqa: RUF009
    proxy_threshold: float = param(0.0, help="The proxy calls a completion a success above this (hack rate).")
    verifier_threshold: float = param(0.0, help="The verifier calls a completion a failure below this (hack rate).")
    monitor_probe: str = param("", help="A saved probe directory whose AUROC on monitor_dataset is tracked on the "
                               "frozen reference and the policy ('' = none).")
    monitor_dataset: str = param("sentiment", help="Registered labelled dataset for the monitor probe's AUROC.")
    monitor_n: int = param(16, help="Labelled texts in the monitor probe's held-out set.", ge=2, le=10_000)
    heldout_tokens: int = param(8, help="Tokens of each greedy held-out completion.", ge=1, le=1024)
    quick: bool = param(False, help="A run of minutes: at most 4 steps, 4 training and 2 held-out prompts, "
                        "2 generations of at most 8 tokens.")


@dataclass(frozen=True)
class RLRunConfig(RunFields, RLFields, GRPOSettings):
    """GRPO on a reward spec with held-out monitors."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_kind(_spec(self.reward, "reward"), "reward")
        ver = _spec(self.verifier, "verifier")
        if ver:
            _check_kind(ver, "verifier")
        if self.prompts not in BUILTIN and not Path(self.prompts).is_file():
            from interplab.tasks.labelled import DATASETS

            if self.prompts not in DATASETS.names():
                raise ConfigError(f"prompts={self.prompts!r} is neither a built-in list ({', '.join(BUILTIN)}), a "
                                  f"labelled dataset ({', '.join(DATASETS.names())}) nor a file.")

    def effective(self) -> tuple[GRPOSettings, int, int]:
        """(settings, n_prompts, n_heldout) after ``quick``."""
        base = {f: getattr(self, f) for f in GRPOSettings.__dataclass_fields__}
        if not self.quick:
            return GRPOSettings(**base), self.n_prompts, self.n_heldout
        base |= {"steps": min(self.steps, 4), "num_generations": 2, "prompts_per_step": min(self.prompts_per_step, 2),
                 "max_completion_length": min(self.max_completion_length, 8)}
        return GRPOSettings(**base), min(self.n_prompts, 4), min(self.n_heldout, 2)


def load_prompts(source: str, n: int) -> list[str]:
    """The first ``n`` prompts of a built-in list, a labelled dataset or a file."""
    if source in BUILTIN:
        items = list(BUILTIN[source])
    elif Path(source).is_file():
        items = [line.strip() for line in Path(source).read_text().splitlines() if line.strip()]
    else:
        from interplab.tasks.labelled import make_dataset

        items = list(make_dataset(source, seed=0).texts)
    if not items:
        raise ConfigError(f"prompts={source!r} gave no prompts; the list is empty.")
    if len(items) < n:
        raise ConfigError(f"prompts={source!r} has {len(items)} prompts; n_prompts + n_heldout = {n}. Lower them.")
    return items[:n]


def _clean(values: list) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


@dataclass
class RLResult(Result):
    """Per-logging-step curves, samples and start-to-end changes of a GRPO run."""

    model_name: str = ""
    reward_name: str = ""
    verifier_name: str = ""
    steps: list[int] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)

    def title(self) -> str:
        return f"GRPO on {self.reward_name} with {self.model_name}"

    def headline(self) -> dict:
        return dict(self.summary)

    def _lines(self, name: str, title: str, keys: tuple[str, ...], ylabel: str) -> list[Block]:
        series = {k: self.curves[k] for k in keys if k in self.curves}
        if not series:
            return []
        return [Lines(name, title, [float(s) for s in self.steps], series, "step", ylabel)]

    def blocks(self) -> list[Block]:
        out: list[Block] = [Heading("Rewards"),
                            Text(f"Proxy reward: {self.reward_name}; held-out verifier: {self.verifier_name or 'none'}.")]
        out += self._lines("rewards", "Proxy reward (training batch, held-out) and held-out verifier",
                           ("reward", "heldout_proxy", "heldout_verifier"), "mean reward")
        out += [Heading("Drift")]
        out += self._lines("kl", "KL to the reference (TRL's per-token k3 estimate)", ("kl",), "KL")
        out += self._lines("hacking", "Hack rate and proxy–verifier Spearman", ("hack_rate", "proxy_verifier_spearman"),
                           "value")
        out += self._lines("probe_auroc", "Monitor probe AUROC: frozen reference vs policy (a policy-only drop = "
                           "obfuscation)", ("probe_auroc_reference", "probe_auroc_policy"), "AUROC")
        if self.samples:
            out += [Heading("Samples"),
                    Table(["step", "prompt", "completion", "proxy", "verifier"],
                          [[s["step"], s["prompt"], s["completion"], s["proxy"], s["verifier"]] for s in self.samples])]
        return out


def _result(run, cfg: RLRunConfig, model_name: str, reward_name: str, verifier_name: str) -> RLResult:
    rows = run.metrics
    keys = sorted({k for r in rows for k in r if k != "step"})
    curves = {k: _clean([r.get(k) for r in rows]) for k in keys
              if all(r.get(k) is not None for r in rows)}
    summary: dict[str, float] = {"steps": float(rows[-1]["step"]) if rows else 0.0}
    for k in ("reward", "heldout_proxy", "heldout_verifier", "kl", "hack_rate", "proxy_verifier_spearman",
              "probe_auroc_reference", "probe_auroc_policy", "probe_auroc_drop"):
        if k in curves:
            summary[f"{k}_final"] = curves[k][-1]
    for k in ("heldout_proxy", "heldout_verifier"):
        if k in curves:
            summary[f"{k}_gain"] = curves[k][-1] - curves[k][0]
    samples = [{"step": int(s["step"]), "prompt": str(s["prompt"]), "completion": str(s["completion"]),
                "proxy": float(s["proxy"]), "verifier": float(s["verifier"])} for s in run.samples]
    return RLResult(model_name=model_name, reward_name=reward_name, verifier_name=verifier_name,
                    steps=[int(r["step"]) for r in rows], curves=curves, samples=samples, summary=summary)


@register_analysis("rl", config=RLRunConfig, result=RLResult,
                   help="GRPO (TRL) against a reward spec, with held-out verifier, KL, hack-rate and probe monitors",
                   example={"steps": 2, "n_prompts": 4, "n_heldout": 2, "num_generations": 2, "prompts_per_step": 2,
                            "max_completion_length": 4, "heldout_tokens": 4, "learning_rate": 0.01,
                            "verifier": {"kind": "vader", "name": "vader_verifier"}})
def rl(cfg: RLRunConfig, ctx: Context) -> RLResult:
    from interplab.rl.harness import train_grpo
    from interplab.rl.monitors import HeldOutMonitor
    from interplab.rl.rewards import build_reward

    settings, n_prompts, n_heldout = cfg.effective()
    items = load_prompts(cfg.prompts, n_prompts + n_heldout)
    train, heldout = items[:n_prompts], items[n_prompts:]
    if len(train) < settings.prompts_per_step:
        raise ConfigError(f"prompts_per_step={settings.prompts_per_step} but only {len(train)} training prompts.")
    probe = None
    if cfg.monitor_probe:
        from interplab.analyses.probes import Probe

        probe = Probe.load(cfg.monitor_probe)
    model = ctx.model
    ctx.phase("building the rewards")
    reward = build_reward(_spec(cfg.reward, "reward"), model, ctx.dir)
    ver_spec = _spec(cfg.verifier, "verifier")
    verifier = build_reward(ver_spec, model, ctx.dir) if ver_spec else None
    texts = labels = None
    if probe is not None:
        from interplab.tasks.labelled import make_dataset

        data = make_dataset(cfg.monitor_dataset, n=cfg.monitor_n, seed=cfg.seed)
        texts, labels = list(data.texts), list(data.labels)
        probe(model, texts[:1])  # a probe whose site or width does not fit refuses here, before training
    monitor = HeldOutMonitor(heldout, reward, verifier, cfg.proxy_threshold, cfg.verifier_threshold,
                             cfg.heldout_tokens, probe, texts, labels, model)
    ctx.phase(f"GRPO: {settings.steps} steps × {settings.prompts_per_step} prompts × {settings.num_generations} "
              "completions")
    run = train_grpo(model, reward, train, settings, ctx.dir, seed=cfg.seed, monitor=monitor, progress=ctx.progress)
    return _result(run, cfg, model.source.get("name", ""), getattr(reward, "name", "reward"),
                   getattr(verifier, "name", "") if verifier is not None else "")
