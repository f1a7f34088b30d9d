"""Run-record subcommands for causal tracing, path patching, DLA and head detection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interplab.core.config import param
from interplab.runs.figures import effect_heatmap
from interplab.runs.record import RunRecord
from interplab.runs.report import Report
from interplab.runs.sections import aligned_task, patching_section


@dataclass(frozen=True)
class TraceRunConfig:
    """Causal tracing (ROME) on the built-in facts task."""

    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    n: int = param(8, help="Number of facts (one template and length).")
    kind: str = param("resid_post", help="resid_post, mlp_out or attn_out.")
    n_noise: int = param(1, help="Noise draws per prompt.")
    seed: int = param(0, help="Seed of prompts, noise and statistics.")
    n_resamples: int = param(2000, help="Bootstrap resamples.")
    out: str = param("runs", help="Directory for run records.")


def trace_run(config: TraceRunConfig, model=None) -> Path:
    from interplab.analyses.causal_tracing import CausalTracingConfig, causal_tracing
    from interplab.runtime.loading import load

    ct = CausalTracingConfig(kind=config.kind, n_noise=config.n_noise, seed=config.seed,
                             n_resamples=config.n_resamples)
    model = model or load(config.model)
    task = aligned_task(model, "facts", config.n, config.seed)
    res = causal_tracing(model, task.clean, task.meta["subject_positions"], task.answers, config=ct)
    report = Report(f"Causal tracing of facts ({config.kind}) on {model.source.get('name')}")
    report.text(f"{len(task)} prompts, e.g. {task.clean_text[0]!r} → {task.meta['answer_words'][0]!r}; "
                f"noise std {res.noise_std:.4f} on the subject tokens; effects: 0 = corrupted, 1 = clean.")
    with RunRecord(config.out, f"trace-{config.kind}", config, model, config.seed) as run:
        patching_section(run, report, "trace", res, f"Restoring {config.kind} (layer × position)")
        run.write_text("report.html", report.render())
    return run.final


@dataclass(frozen=True)
class PathPatchRunConfig:
    """Path patching on IOI: every earlier head as sender, into the given receivers."""

    receivers: str = param(help="Comma-separated receiver sites, e.g. 'L23.attn.q[h0],L23.attn.q[h1]'.")
    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    task: str = param("ioi", help="Registered task.")
    n: int = param(8, help="Number of clean/corrupt pairs.")
    seed: int = param(0, help="Seed of prompts and statistics.")
    n_resamples: int = param(2000, help="Bootstrap resamples.")
    out: str = param("runs", help="Directory for run records.")


def path_patch_run(config: PathPatchRunConfig, model=None) -> Path:
    from interplab.analyses.path_patching import PathPatchingConfig, path_patching
    from interplab.runtime.loading import load

    pp = PathPatchingConfig(receivers=tuple(r.strip() for r in config.receivers.split(",") if r.strip()),
                            n_resamples=config.n_resamples, seed=config.seed)
    model = model or load(config.model)
    task = aligned_task(model, config.task, config.n, config.seed)
    res = path_patching(model, task.clean, task.corrupt, task.answers, task.wrong, pp)
    res.position_labels = []
    report = Report(f"Path patching into {', '.join(pp.receivers)} on {model.source.get('name')}")
    report.text("Effect of each sender head through the receivers only (1 = clean, 0 = corrupt).")
    with RunRecord(config.out, "path-patch", config, model, config.seed) as run:
        patching_section(run, report, "path", res, "Sender heads → receivers")
        run.write_text("report.html", report.render())
    return run.final


@dataclass(frozen=True)
class HeadsRunConfig:
    """Previous-token, duplicate-token and induction head scores with CIs."""

    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    n_sequences: int = param(32, help="Random repeated sequences scored.")
    seed: int = param(0, help="Seed of the sequences and bootstrap.")
    out: str = param("runs", help="Directory for run records.")


def heads_run(config: HeadsRunConfig, model=None) -> Path:
    from interplab.analyses.heads import HeadDetectionConfig, detect_heads
    from interplab.runtime.loading import load

    model = model or load(config.model)
    res = detect_heads(model, HeadDetectionConfig(n_sequences=config.n_sequences, seed=config.seed))
    report = Report(f"Attention head detectors on {model.source.get('name')}")
    with RunRecord(config.out, "heads", config, model, config.seed) as run:
        for name, ci in res.ci.items():
            run.add_tensors(name, {"mean": ci.estimate, "low": ci.low, "high": ci.high})
            if name not in ("previous_token", "duplicate_token", "induction"):
                continue
            layers = [f"L{i}" for i in range(ci.estimate.shape[0])]
            heads = [f"h{i}" for i in range(ci.estimate.shape[1])]
            fig = effect_heatmap(ci.estimate.float(), layers, heads, f"{name} score",
                                 halfwidth=((ci.high - ci.low) / 2).float(), xlabel="head",
                                 value_label=f"mean {name} score")
            report.heading(f"{name} heads")
            report.figure(run.save_figure(fig, name), "Mean score over sequences; right: CI half-width.")
            report.table(["head", "score", "95% CI"], [
                [f"L{layer}.h{h}", s, f"[{float(ci.low[layer, h]):.3f}, {float(ci.high[layer, h]):.3f}]"]
                for layer, h, s in res.top(name, 5)])
        run.write_text("report.html", report.render())
    return run.final



@dataclass(frozen=True)
class DLARunConfig:
    """Direct logit attribution per layer and head on a task's clean prompts."""

    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    task: str = param("ioi", help="Registered task (answer − wrong is attributed).")
    n: int = param(8, help="Number of prompts.")
    seed: int = param(0, help="Seed of prompts and bootstrap.")
    out: str = param("runs", help="Directory for run records.")


def dla_run(config: DLARunConfig, model=None) -> Path:
    from interplab.analyses.dla import DLAConfig, direct_logit_attribution
    from interplab.runtime.loading import load

    model = model or load(config.model)
    task = aligned_task(model, config.task, config.n, config.seed)
    res = direct_logit_attribution(model, task.clean, task.answers, task.wrong,
                                   DLAConfig(neurons=False, seed=config.seed))
    report = Report(f"Direct logit attribution ({config.task}) on {model.source.get('name')}")
    report.text("Each component's direct contribution to logit(answer) − logit(wrong) at the last "
                "position, through the final norm frozen at its value on the actual residual; the "
                f"components sum to the model's logit difference (max gap "
                f"{float((res.total - res.logit_diff).abs().max()):.2e}).")
    with RunRecord(config.out, f"dla-{config.task}", config, model, config.seed) as run:
        run.add_tensors("dla", {"embed": res.embed, "attn": res.attn, "mlp": res.mlp,
                                "heads": res.heads, "logit_diff": res.logit_diff})
        if res.heads is not None:
            ci = res.summary.get("heads")
            mean = res.heads.mean(0).float()
            fig = effect_heatmap(mean, [f"L{i}" for i in range(mean.shape[0])],
                                 [f"h{i}" for i in range(mean.shape[1])], "Direct logit attribution per head",
                                 halfwidth=None if ci is None else ((ci.high - ci.low) / 2).float(),
                                 xlabel="head", value_label="mean direct logit contribution")
            report.heading("Heads")
            report.figure(run.save_figure(fig, "dla_heads"), "Mean over prompts (logit units); right: CI half-width.")
            order = mean.flatten().abs().argsort(descending=True)[:10].tolist()
            rows = []
            for flat in order:
                layer, h = divmod(flat, mean.shape[1])
                band = "" if ci is None else f"[{float(ci.low[layer, h]):.3f}, {float(ci.high[layer, h]):.3f}]"
                rows.append([f"L{layer}.h{h}", float(mean[layer, h]), band])
            report.table(["head", "mean contribution", "95% CI"], rows)
        run.write_text("report.html", report.render())
    return run.final


@dataclass(frozen=True)
class AttributeRunConfig:
    """Attribution patching (or its IG variant), optionally against exact patching."""

    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    task: str = param("ioi", help="Registered task.")
    n: int = param(8, help="Number of clean/corrupt pairs.")
    nodes: str = param("heads", help="heads, mlp or resid_pre.")
    method: str = param("attribution", help="attribution or ig.")
    ig_steps: int = param(5, help="Interpolation steps of the IG variant.")
    compare_exact: bool = param(True, help="Also run exact patching of the same cells and correlate.")
    seed: int = param(0, help="Seed of prompts and statistics.")
    n_resamples: int = param(2000, help="Bootstrap resamples.")
    out: str = param("runs", help="Directory for run records.")

    def attribution(self):
        from interplab.analyses.attribution import AttributionConfig

        return AttributionConfig(nodes=self.nodes, method=self.method, ig_steps=self.ig_steps,
                                 compare_exact=self.compare_exact, seed=self.seed,
                                 n_resamples=self.n_resamples)

    def __post_init__(self) -> None:
        self.attribution()  # validates nodes / method / steps before any work


def attribute_run(config: AttributeRunConfig, model=None) -> Path:
    from interplab.analyses.attribution import attribution_patching
    from interplab.runs.figures import scatter_compare
    from interplab.runtime.loading import load

    model = model or load(config.model)
    task = aligned_task(model, config.task, config.n, config.seed)
    res = attribution_patching(model, task.clean, task.corrupt, task.answers, task.wrong, config.attribution())
    res.position_labels = []
    report = Report(f"{config.method} patching of {config.nodes} ({config.task}) on {model.source.get('name')}")
    report.text(f"Estimated normalised patching effects (0 = corrupt, 1 = clean) from {res.passes}; "
                f"{res.seconds:.1f} s.")
    with RunRecord(config.out, f"attribute-{config.nodes}", config, model, config.seed) as run:
        patching_section(run, report, "attribution", res, f"{config.method} estimate of {config.nodes}")
        if res.exact is not None:
            ex, est = res.exact.effects.mean(0).flatten(), res.effects.mean(0).flatten()
            fig = scatter_compare(ex, est, "exact patching effect", f"{config.method} estimate",
                                  f"Pearson r = {res.pearson:.3f}, Kendall τ = {res.kendall:.3f}")
            report.heading("Against exact patching")
            report.figure(run.save_figure(fig, "vs_exact"), "Each point is one cell (mean over prompts).")
            run.add_results("vs_exact", {"pearson": res.pearson, "kendall": res.kendall})
        run.write_text("report.html", report.render())
    return run.final
