"""The IOI demo (the README's first command): the indirect-object-identification analysis of
Wang et al. 2022 reproduced on the default model, as an HTML report in a run directory.

Steps: build IOI clean/corrupt ("ABC") pairs sharing one template; baseline logit differences
with CIs; the logit lens on a clean prompt; denoising activation patching over
(layer × position) of resid_pre and over (layer × head) of head outputs, every cell with a
bootstrap CI, a permutation p-value and a BH q-value; attribution patching and its IG variant
against exact head patching.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from interplab.analyses.logit_lens import LogitLensConfig, logit_lens
from interplab.analyses.patching import PatchingConfig, activation_patching
from interplab.core.config import param
from interplab.core.errors import ConfigError
from interplab.runs.figures import lens_plot
from interplab.runs.record import RunRecord
from interplab.runs.report import Report
from interplab.runs.sections import aligned_task, baseline_rows, patching_section
from interplab.stats import bootstrap_ci

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IOIDemoConfig:
    """The IOI demo."""

    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    n: int = param(8, help="Number of clean/corrupt IOI pairs (one template, one length).")
    seed: int = param(0, help="Seed for the prompts, bootstrap and permutation tests.")
    out: str = param("runs", help="Directory under which the run directory is written.")
    n_resamples: int = param(2000, help="Bootstrap resamples per CI.")
    attribution: bool = param(True, help="Also compare attribution patching with exact head patching.")

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ConfigError(f"n must be >= 2 for confidence intervals, got {self.n}.")


def ioi_demo(config: IOIDemoConfig, model=None) -> Path:
    from interplab.runtime.loading import load

    t0 = time.time()
    model = model or load(config.model)
    task = aligned_task(model, "ioi", config.n, config.seed)
    report = Report(f"IOI on {model.source.get('name')}: activation patching with confidence intervals")
    with RunRecord(config.out, "ioi", config, model, config.seed) as run:
        report.text(f"{len(task)} clean/corrupt pairs of one IOI template, e.g. clean "
                    f"{task.clean_text[0]!r} (answer {task.meta['answer_words'][0]!r}, wrong "
                    f"{task.meta['wrong_words'][0]!r}), corrupt {task.corrupt_text[0]!r}. Metric: "
                    "logit difference answer − wrong at the last position; effects are normalised "
                    "so 0 = corrupt run and 1 = clean run. CIs: BCa bootstrap over prompts; "
                    "p: paired sign-flip permutation test against 0; q: Benjamini–Hochberg across "
                    "the cells of each sweep.")
        _baselines(run, report, model, task, config)
        _lens(run, report, model, task)
        common = {"n_resamples": config.n_resamples, "seed": config.seed}
        resid = activation_patching(model, task.clean, task.corrupt, task.answers, task.wrong,
                                    PatchingConfig(sweep="resid_pre", **common))
        patching_section(run, report, "patch_resid_pre", resid,
                         "Denoising patching of resid_pre (layer × position)")
        heads = activation_patching(model, task.clean, task.corrupt, task.answers, task.wrong,
                                    PatchingConfig(sweep="heads", **common))
        patching_section(run, report, "patch_heads", heads,
                         "Denoising patching of head outputs (layer × head, all positions)")
        if config.attribution:
            _attribution(run, report, model, task, heads, config)
        report.text(f"Total time {time.time() - t0:.0f} s on {model.device}.", note=True)
        run.write_text("report.html", report.render())
    return run.final


def _baselines(run, report, model, task, config) -> None:
    rows = torch.arange(len(task))
    with torch.no_grad():
        c = model.run(task.clean)[:, -1].float()
        k = model.run(task.corrupt)[:, -1].float()
    ld_c = c[rows, task.answers] - c[rows, task.wrong]
    ld_k = k[rows, task.answers] - k[rows, task.wrong]
    cis = [bootstrap_ci(x, n_resamples=config.n_resamples, seed=config.seed) for x in (ld_c, ld_k)]
    report.heading("Baselines")
    report.table(["run", "mean logit diff", "95% CI"], baseline_rows(ld_c, ld_k, cis))
    acc = float((c.argmax(-1) == task.answers).float().mean())
    report.text(f"Top-1 accuracy on clean prompts: {acc:.2f}.")
    run.add_tensors("baseline", {"clean_logit_diff": ld_c, "corrupt_logit_diff": ld_k})


def _lens(run, report, model, task) -> None:
    result = logit_lens(model, LogitLensConfig(prompt=task.clean_text[0], model=model.source.get("name", "")))
    word = task.meta["answer_words"][0]
    answer = int(task.answers[0])
    probs = result.lens_logits.softmax(-1)[:, answer]
    report.heading("Logit lens")
    report.figure(run.save_figure(lens_plot(probs, word, f"Logit lens: p({word!r}) by layer"),
                                  "logit_lens"),
                  f"Prompt {task.clean_text[0]!r}: each layer's resid_post through the final norm "
                  "and unembedding.")
    run.add_tensors("logit_lens", {"answer_prob": probs, "final_prob": result.final_prob})


def _attribution(run, report, model, task, exact, config) -> None:
    from interplab.analyses.attribution import AttributionConfig, attribution_patching, compare_with
    from interplab.runs.figures import scatter_compare

    report.heading("Attribution patching vs exact head patching")
    report.text("Attribution patching (Nanda 2023; Syed et al. 2023) estimates every head's patching "
                "effect from one forward and backward pass; the IG variant averages gradients over 5 "
                "interpolation steps. Each point is one head (cell means over prompts); r and τ carry "
                "BCa bootstrap CIs over heads.")
    rows = []
    ex = exact.effects.mean(0).flatten()
    for method in ("attribution", "ig"):
        cfg = AttributionConfig(nodes="heads", method=method, n_resamples=config.n_resamples,
                                seed=config.seed)
        res = compare_with(attribution_patching(model, task.clean, task.corrupt, task.answers,
                                                task.wrong, cfg), exact)
        est = res.effects.mean(0).flatten()
        rows.append([method, res.pearson, _ci(res.pearson_ci), res.kendall, _ci(res.kendall_ci),
                     f"{res.seconds:.1f} s"])
        run.add_tensors(f"attribution_{method}", {"effects": res.effects})
        fig = scatter_compare(ex, est, "exact patching effect", f"{method} estimate",
                              f"{method}: Pearson r = {res.pearson:.3f}, Kendall τ = {res.kendall:.3f}")
        report.figure(run.save_figure(fig, f"attribution_{method}"), "Each point is one head.")
    report.table(["method", "Pearson r", "95% CI", "Kendall τ", "95% CI", "time"], rows)
    run.add_results("attribution_vs_exact", rows)


def _ci(ci) -> str:
    return "" if ci is None else f"[{float(ci.low):.3f}, {float(ci.high):.3f}]"
