"""``interplab probe``: a probe at every listed layer on a labelled dataset, as a run record —
test accuracy and AUROC with CIs, the control task's accuracy and selectivity per layer, a
figure, and the best layer's probe saved as an artifact (``probe/``) for later scoring or
steering."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interplab.analyses.probes import ProbeConfig, probe_layers
from interplab.core.config import param
from interplab.core.errors import ConfigError
from interplab.runs.record import RunRecord
from interplab.runs.report import Report
from interplab.tasks.labelled import load_dataset_file, make_dataset


@dataclass(frozen=True)
class ProbeRunConfig:
    """Probes across layers on a built-in or user dataset."""

    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    dataset: str = param("sentiment", help="Built-in dataset (sentiment, truth, language, harmful), or a .jsonl/.csv file with text and label fields.")
    n: int = param(200, help="Texts drawn from a built-in dataset (even).")
    kind: str = param("resid_post", help="Site kind probed at every layer in `layers`.")
    layers: tuple[int, ...] = param((), help="Layers to probe; empty means every 5th layer and the last.")
    reduction: str = param("last", help="Position reduction: last or mean.")
    method: str = param("logistic", help="logistic, diff_means or lda.")
    l2: float = param(1e-2, help="L2 penalty of the logistic probe (on standardised features).")
    text_field: str = param("text", help="Text field of a user dataset file.")
    label_field: str = param("label", help="Label field of a user dataset file.")
    group_field: str = param("", help="Group field of a user dataset file (items of one group never straddle splits).")
    seed: int = param(0, help="Seed of the dataset, split, control labels and bootstrap.")
    out: str = param("runs", help="Directory for run records.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(v) for v in self.layers))
        ProbeConfig(method=self.method, reduction=self.reduction, l2=self.l2, seed=self.seed)
        if self.n < 2:
            raise ConfigError(f"n must be >= 2, got {self.n}.")


def load_labelled(cfg: ProbeRunConfig):
    if cfg.dataset.endswith((".jsonl", ".json", ".csv", ".tsv")) or Path(cfg.dataset).exists():
        return load_dataset_file(cfg.dataset, text_field=cfg.text_field, label_field=cfg.label_field,
                                 group_field=cfg.group_field or None)
    return make_dataset(cfg.dataset, n=cfg.n, seed=cfg.seed)


def default_layers(n_layers: int) -> tuple[int, ...]:
    return tuple(sorted({*range(0, n_layers, 5), n_layers - 1}))


def probe_run(cfg: ProbeRunConfig, model=None) -> Path:
    from interplab.runtime.loading import load

    dataset = load_labelled(cfg)
    model = model or load(cfg.model)
    layers = cfg.layers or default_layers(model.dims.n_layers)
    sites = [f"L{layer}.{cfg.kind}" for layer in layers]
    pcfg = ProbeConfig(method=cfg.method, reduction=cfg.reduction, l2=cfg.l2, seed=cfg.seed)
    sweep = probe_layers(model, dataset, sites, pcfg)
    report = Report(f"Probes for {dataset.name} ({' / '.join(dataset.label_names)}) on {model.source.get('name')}")
    report.text(f"{len(dataset)} texts in {dataset.n_groups} groups (no group straddles train / val / test); "
                f"{cfg.method} probe on the {cfg.reduction} token of {cfg.kind} at layers {list(layers)}.")
    rows = []
    for site, res in zip(sweep.sites, sweep.results):
        a, sel = res.test_accuracy, res.selectivity
        rows.append([site, f"{float(a.estimate):.3f} [{float(a.low):.3f}, {float(a.high):.3f}]",
                     f"{res.auroc['test']:.3f}", "—" if res.control_accuracy is None else f"{res.control_accuracy:.3f}",
                     "—" if sel is None else f"{float(sel.estimate):.3f} [{float(sel.low):.3f}, {float(sel.high):.3f}]"])
    report.table(["site", "test accuracy [95% CI]", "test AUROC", "control accuracy", "selectivity [95% CI]"], rows)
    report.text("Control task (Hewitt & Liang 2019): each group gets a random label; selectivity = test "
                "accuracy − control test accuracy. A probe that memorises items scores well on the control "
                "too and has low selectivity.", note=True)
    best = sweep.best
    with RunRecord(cfg.out, f"probe-{dataset.name}", cfg, model, cfg.seed) as run:
        report.figure(run.save_figure(_sweep_figure(sweep), "probe_accuracy"),
                      "Test accuracy by layer (95% bootstrap CI) and the control task's accuracy.")
        best.probe.save(run.path / "probe", model=model)
        report.text(f"Best layer: {best.summary()}; saved as probe/ (Probe.load).")
        run.add_results("sweep", sweep.to_dict())
        run.add_results("best_site", best.probe.site)
        run.write_text("report.html", report.render())
    return run.path


def _sweep_figure(sweep):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = sweep.layers.tolist()
    acc = sweep.test_accuracy
    ax.errorbar(x, acc.tolist(), yerr=[(acc - sweep.test_accuracy_low).tolist(),
                                      (sweep.test_accuracy_high - acc).tolist()],
                marker="o", capsize=3, label="test accuracy")
    ax.plot(x, sweep.control_accuracy.tolist(), marker="x", linestyle="--", label="control task")
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.05)
    ax.legend(fontsize=8)
    return fig
