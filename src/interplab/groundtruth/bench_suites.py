"""The leaderboard ``Row`` and the model-free suites of ``interplab bench``: every method scored
against models and data whose mechanism is known (the circuit suites are in
``bench_circuits``).

* planted  — the hand-built induction and successor circuits reproduce their programs on the
             whole test domain (exact, or the number of wrong positions);
* tracr    — compiled RASP programs (the optional ``tracr`` extra), exact on their domains;
* features — TopK SAEs on superposed synthetic features: mean max cosine, CI over seeds, against
             a random dictionary of the same shape;
* probes   — probes (logistic, difference of means, LDA) recovering a planted linear concept:
             |cos| with the true direction, CI over seeds, against the same probe on shuffled
             labels, and paired comparisons between methods over seeds.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Row:
    """One leaderboard line: a method's score on a model / data set with its CI and null."""

    suite: str
    model: str
    method: str
    metric: str
    score: float
    low: float | None = None
    high: float | None = None
    null: float | None = None
    passes: str = ""  # forward / backward passes (or steps) the method used
    seconds: float = 0.0
    note: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:  # plain floats, so the record stores them in results.json
        self.score = float(self.score)
        for name in ("low", "high", "null"):
            if getattr(self, name) is not None:
                setattr(self, name, float(getattr(self, name)))
        self.seconds = float(self.seconds)

    def score_text(self) -> str:
        if self.low is None or self.high is None:
            return f"{self.score:.4f}"
        return f"{self.score:.4f} [{self.low:.4f}, {self.high:.4f}]"


def ci_over_seeds(values: list[float], seed: int = 0) -> tuple[float, float | None, float | None]:
    """(mean, low, high): a percentile bootstrap over seeds (no interval from one seed)."""
    from interplab.stats import bootstrap_ci

    t = torch.tensor(values, dtype=torch.float64)
    if len(values) < 2:
        return float(t.mean()), None, None
    ci = bootstrap_ci(t, n_resamples=2000, seed=seed, method="percentile")
    return float(ci.estimate), float(ci.low), float(ci.high)


def _seed_scores(fn: Callable[[int], tuple[float, float]], n: int) -> tuple[list[float], list[float]]:
    scores, nulls = [], []
    for seed in range(n):
        s, z = fn(seed)
        scores.append(s)
        nulls.append(z)
    return scores, nulls


def planted_rows(quick: bool, n_seeds: int) -> list[Row]:
    from interplab.groundtruth.planted import induction_model, reproduce_domain, successor_model

    rows = []
    for name, build in (("induction (2 distractors)", lambda: induction_model(vocab=8 if quick else 12, n_distractors=2)),
                        ("successor MLP", lambda: successor_model(vocab=8, length=3 if quick else 4))):
        t = time.perf_counter()
        rep = reproduce_domain(build())
        rows.append(Row("planted", name, "program reproduction", "accuracy on the whole domain", rep.accuracy,
                        seconds=time.perf_counter() - t,
                        note=f"{rep.n_prompts} prompts, {rep.n_checked} positions, {rep.n_wrong} wrong"))
    return rows


def tracr_rows(quick: bool, n_seeds: int) -> list[Row]:
    """Compiled RASP programs (tracr, optional extra): exact on their whole domains."""
    from itertools import groupby

    from interplab.core.errors import MissingDependencyError
    from interplab.groundtruth.tracr_compile import PROGRAMS, compile_program
    from interplab.groundtruth.tracr_convert import convert
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


def features_rows(quick: bool, n_seeds: int) -> list[Row]:
    from interplab.activations.source import TensorSource
    from interplab.dictionary import DictionaryConfig
    from interplab.dictionary.train_config import TrainConfig
    from interplab.dictionary.trainer import train
    from interplab.groundtruth.scoring import feature_recovery, null_control
    from interplab.groundtruth.synthetic import SyntheticFeatures, make_features

    steps = 800 if quick else 2000

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
    scores, nulls = _seed_scores(one, n_seeds)
    est, low, high = ci_over_seeds(scores)
    return [Row("features", "64 superposed features in 32 dims (p = 0.04)", "TopK SAE (d_sae 128, k 3)",
                "mean max cosine", est, low, high, null=sum(nulls) / len(nulls),
                passes=f"{steps} steps × {n_seeds} seeds", seconds=time.perf_counter() - t,
                note="null: a random dictionary of the same shape", extra={"per_seed": scores})]


def probes_rows(quick: bool, n_seeds: int) -> list[Row]:
    from interplab.analyses.probes import ProbeConfig, fit_probe
    from interplab.groundtruth.scoring import paired_comparison, probe_recovery
    from interplab.groundtruth.synthetic import planted_concept

    rows, per_method = [], {}
    n = 2000 if quick else 4000
    for method in ("logistic", "diff_means", "lda"):
        def one(seed: int, method=method) -> tuple[float, float]:
            pc = planted_concept(n, 32, signal=2.0, n_nuisance=4, seed=seed)
            fit = fit_probe(pc.acts, pc.labels, pc.groups, ProbeConfig(method=method, n_resamples=100, control="none"))
            shuffled = pc.labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
            null = fit_probe(pc.acts, shuffled, pc.groups, ProbeConfig(method=method, n_resamples=100, control="none"))
            return probe_recovery(fit.probe.direction, pc.direction), probe_recovery(null.probe.direction, pc.direction)

        t = time.perf_counter()
        scores, nulls = _seed_scores(one, n_seeds)
        per_method[method] = scores
        est, low, high = ci_over_seeds(scores)
        rows.append(Row("probes", f"planted concept (d 32, {n} items)", f"{method} probe", "|cos| with the truth",
                        est, low, high, null=sum(nulls) / len(nulls), seconds=time.perf_counter() - t,
                        note="null: the same probe on shuffled labels"))
    for a, b in (("logistic", "diff_means"), ("lda", "diff_means")):
        cmp = paired_comparison(per_method[a], per_method[b])
        rows.append(Row("probes", f"planted concept (d 32, {n} items)", f"{a} − {b} (paired over seeds)",
                        "Δ |cos|", cmp.mean_difference, float(cmp.ci.low), float(cmp.ci.high),
                        note=f"paired permutation p = {cmp.p_value:.3g} (n = {cmp.n} seeds)"))
    return rows
