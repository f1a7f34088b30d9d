"""``interplab bench``: every method scored against models and data whose mechanism is known,
written as a leaderboard (method × model: score with a CI, the null control, forward/backward
passes, wall time) in a run record with an HTML report.

Suites (``--quick`` runs CPU-sized versions of each in minutes):

* planted   — the hand-built induction and successor circuits reproduce their programs on the
              whole test domain (exact, or the number of wrong positions);
* circuits  — circuit discovery (exact edge patching, EAP, EAP-IG, ACDC) on the planted
              circuits: edge AUROC against the truth with a bootstrap CI over prompts, the same
              method on a randomly initialised copy as the null, pass counts and time;
* features  — TopK SAEs on superposed synthetic features and on a toy model of superposition:
              mean max cosine and Hungarian-matched correlation, CI over seeds, against a
              random dictionary of the same shape;
* probes    — probes (logistic, difference of means, LDA) recovering a planted linear concept:
              |cos| with the true direction, CI over seeds, against the same probe on shuffled
              labels.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interplab.core.config import param
from interplab.core.errors import ConfigError, choices
from interplab.runs.record import RunRecord
from interplab.runs.report import Report

log = logging.getLogger(__name__)
SUITES = ("planted", "tracr", "circuits", "trained", "features", "probes")


@dataclass(frozen=True)
class BenchConfig:
    """Which suites, how large, where to write the leaderboard."""

    quick: bool = param(False, help="CPU-sized versions of every suite (minutes).")
    suites: tuple[str, ...] = param(SUITES, help=f"Suites to run: {', '.join(SUITES)}.")
    seeds: int = param(0, help="Seeds per score (CI over seeds); 0 means 3 with --quick, 5 otherwise.")
    out: str = param("runs", help="Directory for the run record.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "suites", tuple(self.suites))
        bad = [s for s in self.suites if s not in SUITES]
        if bad or not self.suites:
            raise ConfigError(f"Unknown suites {bad}; choose from {choices(SUITES)}.")
        if self.seeds < 0:
            raise ConfigError(f"seeds must be >= 0, got {self.seeds}.")

    @property
    def n_seeds(self) -> int:
        return self.seeds or (3 if self.quick else 5)


@dataclass
class Row:
    """One leaderboard line."""

    suite: str
    model: str
    method: str
    metric: str
    score: float
    low: float | None = None
    high: float | None = None
    null: float | None = None
    passes: str = ""
    seconds: float = 0.0
    note: str = ""
    extra: dict = field(default_factory=dict)


def _ci(values: list[float], seed: int = 0) -> tuple[float, float | None, float | None]:
    from interplab.stats import bootstrap_ci

    t = torch.tensor(values, dtype=torch.float64)
    if len(values) < 2:
        return float(t.mean()), None, None
    ci = bootstrap_ci(t, n_resamples=2000, seed=seed, method="percentile")
    return float(ci.estimate), float(ci.low), float(ci.high)


def planted_suite(cfg: BenchConfig) -> list[Row]:
    from interplab.benchmarks.planted import induction_model, reproduce_domain, successor_model

    rows = []
    for name, build in (("induction (2 distractors)", lambda: induction_model(vocab=8 if cfg.quick else 12, n_distractors=2)),
                        ("successor MLP", lambda: successor_model(vocab=8, length=3 if cfg.quick else 4))):
        t = time.perf_counter()
        planted = build()
        rep = reproduce_domain(planted)
        rows.append(Row("planted", name, "program reproduction", "accuracy on the whole domain", rep.accuracy,
                        seconds=time.perf_counter() - t,
                        note=f"{rep.n_prompts} prompts, {rep.n_checked} positions, {rep.n_wrong} wrong"))
    return rows


def tracr_suite(cfg: BenchConfig) -> list[Row]:
    """Compiled RASP programs (tracr, optional extra): exact on their whole domains."""
    from itertools import groupby

    from interplab.benchmarks.tracr_compile import PROGRAMS, compile_program
    from interplab.benchmarks.tracr_convert import convert
    from interplab.core.errors import MissingDependencyError
    from interplab.runtime import HookedModel

    rows = []
    for name in PROGRAMS:
        t = time.perf_counter()
        try:
            conv = convert(compile_program(name))
        except MissingDependencyError as err:
            return [Row("tracr", "compiled RASP programs", "program reproduction", "accuracy", float("nan"),
                        note=f"not run: {err}")]
        model = HookedModel(conv.model)
        domain = sorted(conv.compiled.domain(), key=len)
        wrong, worst = 0, 0.0
        for _, group in groupby(domain, key=len):
            seqs = list(group)
            with torch.no_grad():
                outputs = conv.decode(model.run(conv.encode(seqs)))
            for seq, got in zip(seqs, outputs):
                want = conv.compiled.reference(seq)
                if conv.categorical:
                    wrong += got != want
                else:
                    worst = max(worst, *(abs(a - b) for a, b in zip(got, want)))
        score = 1.0 - wrong / len(domain) if conv.categorical else float(worst < 1e-5)
        rows.append(Row("tracr", f"tracr {name}", "program reproduction", "accuracy on the whole domain", score,
                        seconds=time.perf_counter() - t,
                        note=f"{len(domain)} inputs; " + (f"{wrong} wrong" if conv.categorical
                                                          else f"max |error| {worst:.1e} (numerical output)")))
    return rows


def _seed_scores(fn: Callable[[int], tuple[float, float]], n: int) -> tuple[list[float], list[float]]:
    scores, nulls = [], []
    for seed in range(n):
        s, z = fn(seed)
        scores.append(s)
        nulls.append(z)
    return scores, nulls


def features_suite(cfg: BenchConfig) -> list[Row]:
    from interplab.activations.source import TensorSource
    from interplab.benchmarks.scoring import feature_recovery, null_control
    from interplab.benchmarks.synthetic import SyntheticFeatures, make_features
    from interplab.dictionary import DictionaryConfig
    from interplab.dictionary.train_config import TrainConfig
    from interplab.dictionary.trainer import train

    steps = 800 if cfg.quick else 2000

    def one(seed: int) -> tuple[float, float]:
        fs = make_features(SyntheticFeatures(n_features=64, d=32, feature_probability=0.04, seed=seed))
        acts, _ = fs.sample(50_000)
        dc = DictionaryConfig(arch="topk", d_in=32, d_sae=128, k=3, input_site="x", dead_after_tokens=20_000)
        with tempfile.TemporaryDirectory() as tmp:
            res = train(TensorSource({"x": acts}), [dc], TrainConfig(
                steps=steps, batch_size=256, lr=3e-3, init_tokens=4096, checkpoint_every=0, log_every=steps,
                seed=seed, out_dir=str(Path(tmp) / "run")), progress=False)
        sae = res.dictionaries[res.names[0]]
        held, coeffs = fs.sample(20_000, torch.Generator().manual_seed(1000 + seed))
        return (feature_recovery(sae, fs.directions, held, coeffs).mmcs,
                null_control(sae, fs.directions, held, coeffs, seed=seed).mmcs)

    t = time.perf_counter()
    scores, nulls = _seed_scores(one, cfg.n_seeds)
    est, low, high = _ci(scores)
    return [Row("features", "64 superposed features in 32 dims (p = 0.04)", "TopK SAE (d_sae 128, k 3)",
                "mean max cosine", est, low, high, null=sum(nulls) / len(nulls),
                passes=f"{steps} steps × {cfg.n_seeds} seeds", seconds=time.perf_counter() - t,
                note="null: a random dictionary of the same shape", extra={"per_seed": scores})]


def probes_suite(cfg: BenchConfig) -> list[Row]:
    from interplab.analyses.probes import ProbeConfig, fit_probe
    from interplab.benchmarks.scoring import paired_comparison, probe_recovery
    from interplab.benchmarks.synthetic import planted_concept

    rows, per_method = [], {}
    n = 2000 if cfg.quick else 4000
    for method in ("logistic", "diff_means", "lda"):
        def one(seed: int, method=method) -> tuple[float, float]:
            pc = planted_concept(n, 32, signal=2.0, n_nuisance=4, seed=seed)
            fit = fit_probe(pc.acts, pc.labels, pc.groups, ProbeConfig(method=method, n_resamples=100, control="none"))
            shuffled = pc.labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
            null = fit_probe(pc.acts, shuffled, pc.groups, ProbeConfig(method=method, n_resamples=100, control="none"))
            return probe_recovery(fit.probe.direction, pc.direction), probe_recovery(null.probe.direction, pc.direction)

        t = time.perf_counter()
        scores, nulls = _seed_scores(one, cfg.n_seeds)
        per_method[method] = scores
        est, low, high = _ci(scores)
        rows.append(Row("probes", f"planted concept (d 32, {n} items)", f"{method} probe", "|cos| with the truth",
                        est, low, high, null=sum(nulls) / len(nulls), seconds=time.perf_counter() - t,
                        note="null: the same probe on shuffled labels"))
    for a, b in (("logistic", "diff_means"), ("lda", "diff_means")):
        cmp = paired_comparison(per_method[a], per_method[b])
        rows.append(Row("probes", f"planted concept (d 32, {n} items)", f"{a} − {b} (paired over seeds)",
                        "Δ |cos|", cmp.mean_difference, float(cmp.ci.low), float(cmp.ci.high),
                        note=f"paired permutation p = {cmp.p_value:.3g} (n = {cmp.n} seeds)"))
    return rows


def circuits_suite(cfg: BenchConfig) -> list[Row]:
    from interplab.runs.bench_circuits import circuit_rows

    return circuit_rows(quick=cfg.quick, n_seeds=cfg.n_seeds)


def trained_suite(cfg: BenchConfig) -> list[Row]:
    from interplab.runs.bench_circuits import trained_rows

    return trained_rows(quick=cfg.quick)


SUITE_FNS = {"planted": planted_suite, "tracr": tracr_suite, "circuits": circuits_suite, "trained": trained_suite, "features": features_suite, "probes": probes_suite}


def bench_run(cfg: BenchConfig) -> Path:
    rows: list[Row] = []
    for suite in cfg.suites:
        log.info("bench: %s", suite)
        rows += SUITE_FNS[suite](cfg)
    report = Report("interplab bench: methods scored against known mechanisms")
    report.text(f"{'Quick (CPU-sized)' if cfg.quick else 'Full'} run; {cfg.n_seeds} seeds where a CI is over seeds. "
                "Scores with 95% percentile-bootstrap CIs; the null is the same method on a model or data "
                "without the mechanism.")
    report.table(["suite", "model / data", "method", "metric", "score [95% CI]", "null", "passes", "s", "note"],
                 [[r.suite, r.model, r.method, r.metric, _fmt_score(r), None if r.null is None else round(r.null, 4),
                   r.passes, round(r.seconds, 2), r.note] for r in rows])
    with RunRecord(cfg.out, "bench-quick" if cfg.quick else "bench", cfg) as run:
        run.add_results("leaderboard", [r.__dict__ for r in rows])
        run.write_text("report.html", report.render())
    return run.path


def _fmt_score(r: Row) -> str:
    if r.low is None:
        return f"{r.score:.4f}"
    return f"{r.score:.4f} [{r.low:.4f}, {r.high:.4f}]"


def print_leaderboard(run_path: Path) -> None:
    import json

    from rich.console import Console
    from rich.table import Table

    rows = json.loads((run_path / "results.json").read_text())["leaderboard"]
    table = Table(title="interplab bench — leaderboard")
    for col in ("suite", "model / data", "method", "metric", "score [95% CI]", "null", "passes", "s"):
        table.add_column(col)
    for r in rows:
        row = Row(**r)
        table.add_row(row.suite, row.model, row.method, row.metric, _fmt_score(row),
                      "" if row.null is None else f"{row.null:.3f}", row.passes, f"{row.seconds:.1f}")
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped or captured: do not squeeze the table into 80 columns
    console.print(table)
    print(f"report: {run_path / 'report.html'}")
