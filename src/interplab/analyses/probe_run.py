"""``interplab probe``: a linear probe (``analyses.probes``) at every listed layer on a labelled
dataset, as a run record — test accuracy and AUROC with CIs, the control task's accuracy and
selectivity per layer (Hewitt & Liang 2019), a figure, and the best layer's probe saved as an
artifact (``probe/``, ``Probe.load``) for later scoring or steering.

The dataset is read and its labels and split checked before the model is loaded, so a bad file
costs nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from interplab.analyses.probes import ProbeConfig, probe_layers, validate
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Lines, Table, Text
from interplab.core.config import RunFields, param
from interplab.core.result import Result
from interplab.tasks.labelled import load_dataset_file, make_dataset

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


@dataclass(frozen=True)
class ProbeRunConfig(RunFields):
    """Probes across layers on a built-in or user dataset."""

    dataset: str = param("sentiment", help="Built-in dataset (sentiment, truth, language, harmful), or a .jsonl/.csv file with text and label fields.")
    n: int = param(200, help="Texts drawn from a built-in dataset (even).", ge=2, le=100_000)
    kind: str = param("resid_post", help="Site kind probed at every layer in `layers`.")
    layers: tuple[int, ...] = param((), help="Layers to probe; empty means every 5th layer and the last.")
    reduction: str = param("last", help="Position reduction: last or mean.")
    method: str = param("logistic", help="logistic, diff_means or lda.")
    l2: float = param(1e-2, help="L2 penalty of the logistic probe (on standardised features).")
    text_field: str = param("text", help="Text field of a user dataset file.")
    label_field: str = param("label", help="Label field of a user dataset file.")
    group_field: str = param("", help="Group field of a user dataset file (items of one group never straddle splits).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(v) for v in self.layers))
        super().__post_init__()
        self.probe()  # validates method / reduction / l2 before any work

    def probe(self) -> ProbeConfig:
        return ProbeConfig(method=self.method, reduction=self.reduction, l2=self.l2, seed=self.seed)

    @property
    def is_file(self) -> bool:
        return self.dataset.endswith(FILE_SUFFIXES) or Path(self.dataset).exists()

    @property
    def dataset_name(self) -> str:
        return Path(self.dataset).stem if self.is_file else self.dataset


def load_labelled(cfg: ProbeRunConfig):
    if cfg.is_file:
        return load_dataset_file(cfg.dataset, text_field=cfg.text_field, label_field=cfg.label_field,
                                 group_field=cfg.group_field or None)
    return make_dataset(cfg.dataset, n=cfg.n, seed=cfg.seed)


def default_layers(n_layers: int) -> tuple[int, ...]:
    return tuple(sorted({*range(0, n_layers, 5), n_layers - 1}))


def _ci(est: float, low: float, high: float) -> str:
    return f"{est:.3f} [{low:.3f}, {high:.3f}]"


@dataclass
class ProbeRunResult(Result):
    """The sweep (``LayerSweep.to_dict``: per-site accuracy, CI, AUROC, control, selectivity),
    the selectivity CIs, and which site's probe was saved."""

    sweep: dict
    best_site: str
    best_summary: str
    selectivity_low: list[float] = field(default_factory=list)
    selectivity_high: list[float] = field(default_factory=list)
    dataset: str = ""
    label_names: list[str] = field(default_factory=list)
    n_texts: int = 0
    n_groups: int = 0
    model_name: str = ""

    def title(self) -> str:
        return f"Probes for {self.dataset} ({' / '.join(self.label_names)}) on {self.model_name}"

    def _best(self) -> int:
        return self.sweep["sites"].index(self.best_site)

    def headline(self) -> dict:
        s, i = self.sweep, self._best()
        out = {"best_site": self.best_site, "best_test_accuracy": s["test_accuracy"][i],
               "best_test_accuracy_low": s["test_accuracy_low"][i],
               "best_test_accuracy_high": s["test_accuracy_high"][i], "best_test_auroc": s["test_auroc"][i]}
        if not math.isnan(s["selectivity"][i]):
            out["best_selectivity"] = s["selectivity"][i]
        return out

    def _table(self) -> Table:
        s, rows = self.sweep, []
        for i, site in enumerate(s["sites"]):
            control, sel = s["control_accuracy"][i], s["selectivity"][i]
            rows.append([site, _ci(s["test_accuracy"][i], s["test_accuracy_low"][i], s["test_accuracy_high"][i]),
                         f"{s['test_auroc'][i]:.3f}", "—" if math.isnan(control) else f"{control:.3f}",
                         "—" if math.isnan(sel) else _ci(sel, self.selectivity_low[i], self.selectivity_high[i])])
        return Table(["site", "test accuracy [95% CI]", "test AUROC", "control accuracy", "selectivity [95% CI]"], rows)

    def terminal(self) -> list[Block]:
        return [self._table(), Text(f"Best layer: {self.best_summary}")]

    def _selectivity(self, x: list[float]) -> list[Block]:
        """Selectivity by layer with its CI, where the control task ran (NaN layers left out)."""
        s = self.sweep
        keep = [i for i, v in enumerate(s["selectivity"]) if not math.isnan(v)]
        if not keep:
            return []
        return [Lines("probe_selectivity", "Selectivity by layer", [x[i] for i in keep],
                      {"selectivity": [s["selectivity"][i] for i in keep]}, "layer", "test − control accuracy",
                      low={"selectivity": [self.selectivity_low[i] for i in keep]},
                      high={"selectivity": [self.selectivity_high[i] for i in keep]}, hline=0.0,
                      caption="Selectivity (test accuracy − control task accuracy) by layer with its 95% CI.")]

    def blocks(self) -> list[Block]:
        s, c = self.sweep, self.sweep["config"]
        x = [float(v) for v in s["layers"]]
        return [
            Text(f"{self.n_texts} texts in {self.n_groups} groups (no group straddles train / val / test); "
                 f"{c['method']} probe on the {c['reduction']} token at sites {', '.join(s['sites'])}."),
            self._table(),
            Text("Control task (Hewitt & Liang 2019): each group gets a random label; selectivity = test "
                 "accuracy − control test accuracy. A probe that memorises items scores well on the control "
                 "too and has low selectivity.", note=True),
            Lines("probe_accuracy", "Probe accuracy by layer", x,
                  {"test accuracy": s["test_accuracy"], "control task": s["control_accuracy"]}, "layer", "accuracy",
                  low={"test accuracy": s["test_accuracy_low"]}, high={"test accuracy": s["test_accuracy_high"]},
                  hline=0.5, ylim=(0.0, 1.05),
                  caption="Test accuracy by layer (95% bootstrap CI) and the control task's accuracy."),
            *self._selectivity(x),
            Text(f"Best layer: {self.best_summary}; saved as probe/ (Probe.load)."),
        ]


@register_analysis("probe", config=ProbeRunConfig, result=ProbeRunResult,
                   help="probes across layers with control tasks, as a run record",
                   run_name=lambda cfg: f"probe-{cfg.dataset_name}",
                   example={"dataset": "sentiment", "n": 48, "layers": (0, 1)})
def probe(cfg: ProbeRunConfig, ctx: Context) -> ProbeRunResult:
    dataset = load_labelled(cfg)
    pcfg = cfg.probe()
    validate(None, dataset.labels, dataset.groups, pcfg)  # before the model is loaded
    model = ctx.model
    layers = cfg.layers or default_layers(model.dims.n_layers)
    sites = [f"L{layer}.{cfg.kind}" for layer in layers]
    ctx.phase(f"collecting activations of {len(dataset)} texts and fitting {len(sites)} probes")
    sweep = probe_layers(model, dataset, sites, pcfg)
    best = sweep.best
    best.probe.save(ctx.dir / "probe", model=model)
    nan = float("nan")
    return ProbeRunResult(
        sweep=sweep.to_dict(), best_site=best.probe.site, best_summary=best.summary(),
        selectivity_low=[nan if r.selectivity is None else float(r.selectivity.low) for r in sweep.results],
        selectivity_high=[nan if r.selectivity is None else float(r.selectivity.high) for r in sweep.results],
        dataset=dataset.name, label_names=list(dataset.label_names), n_texts=len(dataset),
        n_groups=dataset.n_groups, model_name=model.source.get("name", ""))
