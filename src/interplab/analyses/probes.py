"""Linear probes with group-held-out splits, bootstrap CIs and control-task selectivity.

A linear probe (Alain & Bengio 2016, "Understanding intermediate layers using linear classifier
probes") asks whether a binary concept is linearly decodable from one site's activations. Two
things make the answer trustworthy:

* **Splits by group.** Texts made from the same template or item share a group, and a group is
  never on two sides of the train/val/test split, so test accuracy measures generalisation to
  unseen items rather than recognition of seen ones.
* **A control task** (Hewitt & Liang 2019, "Designing and Interpreting Probes with Control
  Tasks"), adapted from word types to groups: every group gets a random label, shared by all its
  items, and the same probe is fitted to those labels. A probe that memorises items scores high
  on the control too; *selectivity* = test accuracy − control test accuracy, with a paired
  bootstrap CI over test items. Because test groups are unseen, a real concept gives control
  accuracy ≈ 0.5 and high selectivity; no concept gives selectivity ≈ 0.

Assumptions: items are independent given their groups (CIs resample test items), the concept is
binary, and for ``diff_means`` / ``lda`` the classes are roughly equally likely (the threshold
is the midpoint of the projected class means). ``proba`` is a calibrated probability only for
``logistic``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors.torch import load_file

from interplab.analyses.collect import REDUCTIONS, collect
from interplab.analyses.probe_fit import FITTERS, SPLITS, auroc, auroc_ci, split_groups
from interplab.core.artifacts import write_artifact
from interplab.core.config import param, to_dict
from interplab.core.errors import ConfigError, InputError, choices
from interplab.core.model import Model
from interplab.core.sites import Site
from interplab.stats.bootstrap import CI, bootstrap_ci

log = logging.getLogger(__name__)

METHODS = tuple(FITTERS)
CONTROLS = ("random_labels", "none")


@dataclass(frozen=True)
class ProbeConfig:
    """How to fit and evaluate a linear probe."""

    method: str = param("logistic", "'logistic' (L2 logistic regression), 'diff_means' "
                        "(difference of class means) or 'lda' (shrinkage LDA).")
    l2: float = param(1e-2, "L2 penalty of the logistic probe on the mean log-loss of "
                      "standardised features (scikit-learn's C = 1 / (l2 * n_train)).")
    site: str = param("", "The site the activations come from, e.g. 'L15.resid_post' "
                      "(recorded on the probe; probe_layers sets it per site).")
    reduction: str = param("last", "How token positions become one vector: 'last' or 'mean'.")
    splits: tuple[float, float, float] = param((0.6, 0.2, 0.2), "Train/val/test fractions of "
                                               "the groups; they sum to 1, val may be 0.")
    seed: int = param(0, "Seeds the split, the control labels and the bootstrap.")
    n_resamples: int = param(1000, "Bootstrap resamples for the confidence intervals.")
    confidence: float = param(0.95, "Coverage of the confidence intervals.")
    control: str = param("random_labels", "Control task: 'random_labels' (a random label per "
                         "group, Hewitt & Liang 2019) or 'none'.")
    max_iter: int = param(500, "L-BFGS iterations for the logistic probe.")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"Unknown probe method {self.method!r}. Choose one of "
                              f"{choices(METHODS)}.")
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"Unknown reduction {self.reduction!r}. Choose one of "
                              f"{choices(REDUCTIONS)}.")
        if self.control not in CONTROLS:
            raise ConfigError(f"Unknown control {self.control!r}. Choose one of "
                              f"{choices(CONTROLS)}.")
        if not self.l2 >= 0:
            raise ConfigError(f"l2={self.l2!r} must be >= 0.")
        s = tuple(self.splits)
        if (len(s) != 3 or any(not f >= 0 for f in s) or abs(sum(s) - 1) > 1e-6
                or s[0] <= 0 or s[2] <= 0):
            raise ConfigError(
                f"splits={self.splits!r} must be three fractions (train, val, test) that sum to "
                "1, with train and test > 0 (val may be 0), e.g. (0.6, 0.2, 0.2)."
            )
        object.__setattr__(self, "splits", s)
        if self.n_resamples < 2:
            raise ConfigError(f"n_resamples={self.n_resamples} must be >= 2.")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence={self.confidence} must lie in (0, 1).")


@dataclass(eq=False)
class Probe:
    """A fitted linear probe: ``score(x) = x·weight + bias``, positive meaning label 1."""

    site: str
    reduction: str
    method: str
    direction: Float[torch.Tensor, " d"]  # weight / ‖weight‖
    weight: Float[torch.Tensor, " d"]
    bias: float
    mean: Float[torch.Tensor, " d"]  # training mean of the activations (the centring used)
    label_names: tuple[str, str] = ("0", "1")

    @property
    def d(self) -> int:
        return self.weight.shape[0]

    def score(self, acts: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, " n"]:
        """The decision function ``acts·weight + bias`` (float64), positive = label 1."""
        if acts.ndim != 2 or acts.shape[1] != self.d:
            raise InputError(f"The probe expects activations [n, {self.d}]; got "
                             f"{tuple(acts.shape)}. Were they collected at {self.site or 'its site'}?")
        return acts.double().cpu() @ self.weight.double() + self.bias

    def predict(self, acts: Float[torch.Tensor, "n d"]) -> torch.Tensor:
        return (self.score(acts) > 0).long()

    def proba(self, acts: Float[torch.Tensor, "n d"]) -> torch.Tensor:
        """sigmoid(score): a probability of label 1 for logistic probes, a squashed score else."""
        return torch.sigmoid(self.score(acts))

    def __call__(self, model, prompts, batch_size: int = 16) -> torch.Tensor:
        """Collect activations at the probe's site and score them."""
        if not self.site:
            raise ConfigError("This probe has no site; fit it with ProbeConfig(site=...) or set "
                              "probe.site before calling it on a model.")
        key = str(Site.parse(self.site))
        return self.score(collect(model, prompts, [key], self.reduction, batch_size)[key])

    def save(self, path: str | Path, overwrite: bool = False, model=None) -> Path:
        """Write ``config.json`` + ``probe.safetensors`` + ``provenance.json`` atomically."""
        meta = {"site": self.site, "reduction": self.reduction, "method": self.method,
                "bias": self.bias, "label_names": list(self.label_names), "d": self.d}
        tensors = {"direction": self.direction, "weight": self.weight, "mean": self.mean}
        return write_artifact(path, meta, tensors, "probe.safetensors", overwrite, model, kind="probe")

    @classmethod
    def load(cls, path: str | Path) -> Probe:
        path = Path(path)
        missing = [f for f in ("config.json", "probe.safetensors") if not (path / f).is_file()]
        if missing:
            raise InputError(f"{path} is not a saved probe: missing {', '.join(missing)}. "
                             "Save one with Probe.save(dir).")
        meta = json.loads((path / "config.json").read_text())
        t = load_file(str(path / "probe.safetensors"))
        return cls(meta["site"], meta["reduction"], meta["method"], t["direction"], t["weight"],
                   float(meta["bias"]), t["mean"], tuple(meta["label_names"]))


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """A fitted probe and how well it generalises to held-out groups."""

    probe: Probe
    config: ProbeConfig
    accuracy: dict[str, float]  # per split; nan for an empty val split
    auroc: dict[str, float]
    test_accuracy: CI  # bootstrap over test items
    test_auroc: CI  # percentile bootstrap, exact AUROC per resample
    control_accuracy: float | None  # control probe on control labels, test split
    control_train_accuracy: float | None
    selectivity: CI | None  # paired bootstrap of (correct − control correct) over test items
    n: dict[str, int]
    split_indices: dict[str, torch.Tensor] = field(repr=False)

    def summary(self) -> str:
        a = self.test_accuracy
        s = "" if self.selectivity is None else (
            f", selectivity {float(self.selectivity.estimate):.3f} "
            f"[{float(self.selectivity.low):.3f}, {float(self.selectivity.high):.3f}]")
        return (f"{self.probe.site or 'probe'} ({self.config.method}): test acc "
                f"{float(a.estimate):.3f} [{float(a.low):.3f}, {float(a.high):.3f}], AUROC "
                f"{self.auroc['test']:.3f}{s}, n = {_counts(self.n)}")


def _counts(n) -> str:
    """``{"train": 50, "val": 20}`` as "train 50 / val 20" (no Python reprs in reports)."""
    return " / ".join(f"{k} {v}" for k, v in n.items()) if isinstance(n, dict) else str(n)


def _as_labels(labels, n_expected: int | None = None) -> torch.Tensor:
    y = torch.as_tensor(list(labels) if not isinstance(labels, torch.Tensor) else labels)
    y = y.flatten()
    if y.numel() and (y.dtype == torch.bool or not y.is_floating_point()):
        y = y.long()
    bad = sorted({v for v in y.tolist() if v not in (0, 1)})
    if bad:
        raise InputError(f"Labels must be 0 or 1; found {bad[:5]}. Map your classes to 0/1 "
                         "(load_dataset_file does this for files).")
    return y.long()


def _check_two_classes(y: torch.Tensor, where: str = "", hint: str = "") -> None:
    values = y.unique()
    if len(values) < 2:
        v = int(values[0]) if len(values) else None
        raise InputError(f"Labels of one class only{where}: all {len(y)} rows are {v!r}; a probe "
                         f"needs two classes.{hint}")


def validate(acts: torch.Tensor | None, labels, groups, cfg: ProbeConfig,
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Check labels and groups (and acts when given) and make the split — all before work."""
    y = _as_labels(labels)
    if acts is not None:
        if acts.ndim != 2:
            raise InputError(f"acts must be [n, d]; got shape {tuple(acts.shape)}.")
        if acts.shape[0] != len(y):
            raise InputError(f"acts has {acts.shape[0]} rows but labels has {len(y)}; give one "
                             "label per activation row.")
        if not torch.isfinite(acts).all():
            raise InputError("acts contains NaN or infinite values.")
    g = torch.arange(len(y)) if groups is None else torch.as_tensor(list(groups)
                                                                    if not isinstance(groups, torch.Tensor) else groups)
    g = g.flatten().long()
    if len(g) != len(y):
        raise InputError(f"groups has {len(g)} entries but labels has {len(y)}; give one group "
                         "per row (or groups=None for one group per row).")
    _check_two_classes(y)
    parts = split_groups(g, cfg.splits, cfg.seed)
    hint = " Add data (more groups of both classes) or change the seed."
    for name in SPLITS:
        if len(parts[name]):
            _check_two_classes(y[parts[name]], f" in the {name} split", hint)
    return y, g, parts


def control_labels(groups: torch.Tensor, train: torch.Tensor, seed: int) -> torch.Tensor:
    """A random label per group (half the groups 1), consistent within a group; redrawn until
    the training split holds both classes."""
    uniq = groups.unique()
    gen = torch.Generator().manual_seed(seed + 7919)
    for _ in range(100):
        perm = torch.randperm(len(uniq), generator=gen)
        lab = torch.zeros(len(uniq), dtype=torch.long)
        lab[perm[: len(uniq) // 2]] = 1
        y = lab[torch.searchsorted(uniq, groups)]
        if len(y[train].unique()) == 2:
            return y
    raise InputError("The control task could not give the training split two classes: it has "
                     "too few groups. Add data or set control='none'.")


def _fit(x: torch.Tensor, y: torch.Tensor, cfg: ProbeConfig) -> tuple[torch.Tensor, float]:
    if cfg.method == "logistic":
        return FITTERS["logistic"](x, y, cfg.l2, cfg.max_iter)
    return FITTERS[cfg.method](x, y)


def fit_probe(acts: Float[torch.Tensor, "n d"], labels, groups=None,
              cfg: ProbeConfig | None = None, label_names: tuple[str, str] = ("0", "1"),
              ) -> ProbeResult:
    """Fit ``cfg.method`` on the train groups; report accuracy/AUROC per split with CIs on test,
    and the control task's accuracy and the selectivity."""
    cfg = cfg or ProbeConfig()
    y, g, parts = validate(acts, labels, groups, cfg)
    x = acts.detach().cpu().double()
    tr = parts["train"]
    weight, bias = _fit(x[tr], y[tr], cfg)
    w32 = weight.float()
    probe = Probe(cfg.site, cfg.reduction, cfg.method, (weight / weight.norm()).float(), w32,
                  bias, x[tr].mean(0).float(), tuple(label_names))
    scores = probe.score(acts)
    correct = ((scores > 0).long() == y).double()
    acc = {k: float(correct[v].mean()) if len(v) else float("nan") for k, v in parts.items()}
    auc = {k: auroc(scores[v], y[v]) if len(v) else float("nan") for k, v in parts.items()}
    te = parts["test"]
    acc_ci = bootstrap_ci(correct[te], "mean", cfg.n_resamples, cfg.confidence, seed=cfg.seed)
    auc_ci = auroc_ci(scores[te], y[te], cfg.n_resamples, cfg.confidence, cfg.seed)
    ctrl_acc = ctrl_train = sel = None
    if cfg.control == "random_labels":
        yc = control_labels(g, tr, cfg.seed)
        cw, cb = _fit(x[tr], yc[tr], cfg)
        c_correct = (((x @ cw + cb) > 0).long() == yc).double()
        ctrl_acc, ctrl_train = float(c_correct[te].mean()), float(c_correct[tr].mean())
        sel = bootstrap_ci(correct[te] - c_correct[te], "mean", cfg.n_resamples, cfg.confidence,
                           seed=cfg.seed)
    result = ProbeResult(probe, cfg, acc, auc, acc_ci, auc_ci, ctrl_acc, ctrl_train, sel,
                         {k: len(v) for k, v in parts.items()}, parts)
    log.info("%s", result.summary())
    return result


@dataclass(frozen=True, eq=False)
class LayerSweep:
    """One probe per site, with per-site arrays for a plot."""

    sites: tuple[str, ...]
    results: tuple[ProbeResult, ...]
    layers: torch.Tensor  # the layer of each site (-1 when a site has none)
    test_accuracy: torch.Tensor
    test_accuracy_low: torch.Tensor
    test_accuracy_high: torch.Tensor
    test_auroc: torch.Tensor
    selectivity: torch.Tensor  # nan without a control
    control_accuracy: torch.Tensor
    config: ProbeConfig

    def __getitem__(self, site: str) -> ProbeResult:
        key = str(Site.parse(site))
        if key not in self.sites:
            raise InputError(f"No probe at {key}; swept sites: {', '.join(self.sites)}.")
        return self.results[self.sites.index(key)]

    @property
    def best(self) -> ProbeResult:
        """The site with the highest test accuracy."""
        return self.results[int(self.test_accuracy.argmax())]

    def to_dict(self) -> dict:
        return {"sites": list(self.sites), "layers": self.layers.tolist(),
                "test_accuracy": self.test_accuracy.tolist(),
                "test_accuracy_low": self.test_accuracy_low.tolist(),
                "test_accuracy_high": self.test_accuracy_high.tolist(),
                "test_auroc": self.test_auroc.tolist(), "selectivity": self.selectivity.tolist(),
                "control_accuracy": self.control_accuracy.tolist(), "config": to_dict(self.config)}


def probe_layers(model: Model, dataset, sites: Sequence[str] | str, cfg: ProbeConfig | None = None,
                 batch_size: int = 16) -> LayerSweep:
    """Fit a probe at every site from one collection pass over ``dataset`` (a LabelledDataset).

    Sites, labels and the split are all checked before the first forward pass.
    """
    cfg = cfg or ProbeConfig()
    site_list = [str(model.site(s)) for s in ([sites] if isinstance(sites, str) else sites)]
    if not site_list:
        raise InputError("No sites given: pass at least one site, e.g. 'L3.resid_post'.")
    if len(dataset.texts) == 0:
        raise InputError(f"Dataset {dataset.name!r} has no texts.")
    validate(None, dataset.labels, dataset.groups, cfg)
    acts = collect(model, list(dataset.texts), site_list, cfg.reduction, batch_size)
    results = tuple(
        fit_probe(acts[s], dataset.labels, dataset.groups, replace(cfg, site=s),
                  dataset.label_names)
        for s in site_list
    )
    nan = float("nan")

    def arr(fn):
        return torch.tensor([fn(r) for r in results], dtype=torch.float64)

    return LayerSweep(
        sites=tuple(site_list),
        results=results,
        layers=torch.tensor([-1 if Site.parse(s).layer is None else Site.parse(s).layer
                             for s in site_list]),
        test_accuracy=arr(lambda r: float(r.test_accuracy.estimate)),
        test_accuracy_low=arr(lambda r: float(r.test_accuracy.low)),
        test_accuracy_high=arr(lambda r: float(r.test_accuracy.high)),
        test_auroc=arr(lambda r: r.auroc["test"]),
        selectivity=arr(lambda r: nan if r.selectivity is None else float(r.selectivity.estimate)),
        control_accuracy=arr(lambda r: nan if r.control_accuracy is None else r.control_accuracy),
        config=cfg,
    )
