"""The dictionary-learning jobs behind ``interplab harvest``, ``train-sae`` and ``eval-sae``.

harvest   — activations at some sites of a model over a corpus into an on-disk store;
train-sae — one or several dictionaries (sites × sizes) from one pass over a store, written
            as dictionary directories plus a run record with the loss curves;
eval-sae  — a trained (or SAELens / sparsify) dictionary spliced into the model on held-out
            text: reconstruction and downstream metrics with CIs, feature statistics saved
            next to the dictionary, and a run record with a few feature dashboards.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from interplab.activations import (
    ActivationStore,
    CorpusConfig,
    HarvestConfig,
    HarvestReport,
    harvest,
    iter_documents,
    pack,
)
from interplab.core.config import param
from interplab.core.errors import ConfigError, InputError
from interplab.dictionary import (
    DictionaryConfig,
    EvalConfig,
    FeatureConfig,
    evaluate,
    feature_stats,
    load_dictionary,
)
from interplab.dictionary.train_config import TrainConfig
from interplab.dictionary.trainer import train
from interplab.runs.record import RunRecord
from interplab.runs.report import Report


def harvest_run(config: HarvestConfig, model=None, progress: bool = True) -> HarvestReport:
    from interplab.runtime.loading import load

    return harvest(model or load(config.model), config, progress=progress)


@dataclass(frozen=True)
class TrainSaeConfig:
    """Dictionaries for every (site × expansion) from one pass over an activation store."""

    store: str = param("activation-store", help="Activation store written by `interplab harvest`; empty with --on-the-fly.")
    on_the_fly: bool = param(False, help="Train straight from the model through a shuffle buffer (no store on disk): needs --model, --sites and --steps.")
    model: str = param("smollm2-135m", help="Model for --on-the-fly.")
    corpus: str = param("classics", help="Corpus for --on-the-fly.")
    buffer_tokens: int = param(65536, help="Shuffle-buffer size (tokens) for --on-the-fly.")
    sites: tuple[str, ...] = param((), help="Input sites to train on; empty means every site in the store.")
    arch: str = param("topk", help="Architecture: topk, batchtopk, relu, jumprelu, matryoshka, transcoder, skip_transcoder.")
    expansions: tuple[int, ...] = param((16,), help="Latents per input width, one dictionary each (d_sae = expansion × d_in).")
    k: int = param(32, help="Active latents per token (TopK family).")
    output_site: str = param("", help="Target site for transcoders (e.g. L5.mlp_out with site L5.resid_mid).")
    l1_coeff: float = param(5.0, help="L1 coefficient (relu).")
    aux_coeff: float = param(1 / 32, help="AuxK loss weight (TopK family).")
    dead_after_tokens: int = param(10_000_000, help="Tokens without firing after which a latent counts as dead.")
    steps: int = param(0, help="Optimizer steps; 0 means one pass over the store's tokens.")
    batch_size: int = param(4096, help="Tokens per optimizer step.")
    lr: float = param(0.0, help="Learning rate; 0 means 2e-4 / sqrt(d_sae / 2**14).")
    warmup_steps: int = param(0, help="Linear warm-up steps; 0 means 5 % of the steps.")
    decay_start: float = param(0.8, help="Fraction of the steps after which the learning rate decays linearly to 0.")
    b_dec_init: str = param("geometric_median", help="geometric_median, mean or zeros.")
    matmul_dtype: str = param("float32", help="Encoder matmul dtype of the TopK training step: float32, or bfloat16 (faster; pre-activations rounded to bfloat16 before the top-k).")
    checkpoint_every: int = param(500, help="Checkpoint every this many steps (0: never).")
    log_every: int = param(10, help="Log metrics every this many steps.")
    seed: int = param(0, help="Seed of the data order.")
    out: str = param("runs/sae", help="Directory for the dictionaries, checkpoints and the run record.")
    resume: bool = param(True, help="Continue from the latest checkpoint in `out` when there is one.")
    device: str = param("auto", help="auto, cpu, cuda or cuda:N.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(self.sites))  # lists from a config file, frozen
        object.__setattr__(self, "expansions", tuple(int(e) for e in self.expansions))
        if not self.expansions or any(e < 1 for e in self.expansions):
            raise ConfigError(f"expansions must be positive integers, got {self.expansions}.")
        if self.on_the_fly and (not self.sites or not self.steps):
            raise ConfigError("--on-the-fly needs --sites and --steps (there is no store to count tokens from).")
        if self.matmul_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"matmul_dtype must be 'float32' or 'bfloat16', got {self.matmul_dtype!r}.")


def _source(cfg: TrainSaeConfig):
    """The activation store, or an on-the-fly source computing the same rows from the model."""
    if not cfg.on_the_fly:
        return ActivationStore.open(cfg.store)
    from interplab.activations import OnTheFlySource
    from interplab.runtime.loading import load

    sites = [*cfg.sites, *([cfg.output_site] if cfg.output_site else [])]
    return OnTheFlySource(load(cfg.model), CorpusConfig(source=cfg.corpus), sites, buffer_tokens=cfg.buffer_tokens)


def _dictionary_configs(cfg: TrainSaeConfig, store) -> list[DictionaryConfig]:
    sites = list(cfg.sites) or store.sites
    missing = [s for s in [*sites, *([cfg.output_site] if cfg.output_site else [])] if s not in store.sites]
    if missing:
        raise ConfigError(f"The store at {cfg.store} has no site {missing}; it holds {store.sites}.")
    out = []
    for site in sites:
        d_in = store.width(site)
        for e in cfg.expansions:
            out.append(DictionaryConfig(
                arch=cfg.arch, d_in=d_in, d_sae=e * d_in, k=cfg.k, input_site=site,
                output_site=cfg.output_site, d_out=store.width(cfg.output_site) if cfg.output_site else 0,
                l1_coeff=cfg.l1_coeff, aux_coeff=cfg.aux_coeff, dead_after_tokens=cfg.dead_after_tokens))
    return out


def train_sae_run(cfg: TrainSaeConfig, progress: bool = True) -> Path:
    """Train, save the dictionaries under ``cfg.out``, write a run record; return its path."""
    store = _source(cfg)
    dcfgs = _dictionary_configs(cfg, store)
    steps = cfg.steps or max(1, store.n_tokens // cfg.batch_size)
    n_tokens = getattr(store, "n_tokens", steps * cfg.batch_size)
    warmup = cfg.warmup_steps or max(1, steps // 20) if steps > 1 else 0
    tcfg = TrainConfig(steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=warmup,
                       decay_start=cfg.decay_start, b_dec_init=cfg.b_dec_init,
                       init_tokens=min(16384, n_tokens), decoder="none" if cfg.arch == "relu" else "unit_norm",
                       checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every, seed=cfg.seed,
                       out_dir=str(Path(cfg.out) / "dictionaries"), resume=cfg.resume, device=cfg.device,
                       matmul_dtype=cfg.matmul_dtype)
    result = train(store, dcfgs, tcfg, progress=progress)
    origin = (f"the model {cfg.model} on the fly (shuffle buffer of {cfg.buffer_tokens} tokens)" if cfg.on_the_fly
              else f"{cfg.store} ({store.n_tokens} tokens, model {store.manifest['model']['name']})")
    report = Report("Dictionary training")
    report.text(f"{len(dcfgs)} dictionar{'y' if len(dcfgs) == 1 else 'ies'} ({cfg.arch}) trained for "
                f"{result.steps} steps of {cfg.batch_size} tokens from {origin}; sites {', '.join(store.sites)}.")
    rows = []
    with RunRecord(cfg.out, f"train-{cfg.arch}", cfg, seed=cfg.seed) as run:
        curves = {}
        for name in result.names:
            m = result.metrics.get(name, {})
            rows.append([name, m.get("fvu"), m.get("l0"), m.get("n_dead"), str(result.paths.get(name, ""))])
            curves[name] = _read_curve(result.paths.get(name))
        report.table(["dictionary", "final FVU", "L0", "dead latents", "saved at"], rows)
        if any(curves.values()):
            report.figure(run.save_figure(_curve_figure(curves), "training_fvu"), "Training FVU (against the batch mean) by step.")
        run.add_results("dictionaries", {n: {"metrics": result.metrics.get(n), "path": str(result.paths.get(n))} for n in result.names})
        if not cfg.on_the_fly:
            run.add_results("store", {"path": cfg.store, "content_hash": store.manifest.get("content_hash")})
        run.write_text("report.html", report.render())
    return run.path


def _read_curve(path: Path | None) -> list[tuple[int, float]]:
    """(step, fvu) from the metrics.jsonl the trainer keeps in each dictionary's directory."""
    f = None if path is None else Path(path) / "metrics.jsonl"
    if f is None or not f.exists():
        return []
    rows = (json.loads(line) for line in f.read_text().splitlines())
    return [(r["step"], r["fvu"]) for r in rows if "fvu" in r]


def _curve_figure(curves: dict[str, list[tuple[int, float]]]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, pts in curves.items():
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("FVU")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    return fig


@dataclass(frozen=True)
class EvalSaeConfig:
    """Evaluate one dictionary spliced into its model on held-out text."""

    dictionary: str = param("", help="Dictionary directory (interplab, SAELens or sparsify layout).")
    model: str = param("smollm2-135m", help="Model the dictionary reads from.")
    input_site: str = param("", help="Input site, for SAELens/sparsify checkpoints that name hooks their own way.")
    corpus: str = param("classics", help="Text to evaluate on: 'classics', a file/directory or 'hf:<dataset>'.")
    store: str = param("", help="The store the dictionary was trained from: its contexts are skipped so the evaluation is held out.")
    skip_contexts: int = param(0, help="Contexts to skip from the corpus start (added to the store's).")
    n_contexts: int = param(64, help="Held-out contexts to evaluate.")
    ctx_len: int = param(128, help="Tokens per context.")
    batch_size: int = param(8, help="Contexts per forward pass.")
    n_features: int = param(8, help="Feature dashboards shown in the report.")
    seed: int = param(0, help="Seed of the bootstrap.")
    out: str = param("runs", help="Directory for the run record.")

    def __post_init__(self) -> None:
        if not self.dictionary:
            raise ConfigError("eval-sae needs --dictionary DIR (a trained dictionary directory).")
        if self.n_contexts < 1 or self.ctx_len < 2 or self.skip_contexts < 0:
            raise ConfigError("Need n_contexts >= 1, ctx_len >= 2 and skip_contexts >= 0.")


def held_out_contexts(model, cfg: EvalSaeConfig) -> torch.Tensor:
    skip = cfg.skip_contexts
    if cfg.store:
        m = ActivationStore.open(cfg.store).manifest
        skip += math.ceil(m["n_tokens"] / m["rows_per_context"])
    docs = iter_documents(CorpusConfig(source=cfg.corpus))
    ctx = pack(model.tokenizer, docs, cfg.ctx_len, max_contexts=skip + cfg.n_contexts)
    if ctx.shape[0] <= skip:
        raise InputError(f"The corpus has {ctx.shape[0]} contexts of {cfg.ctx_len} tokens; none is left after skipping {skip}.")
    return ctx[skip:]


def eval_sae_run(cfg: EvalSaeConfig, model=None, progress: bool = True) -> Path:
    from interplab.runtime.loading import load

    dictionary = load_dictionary(cfg.dictionary, input_site=cfg.input_site or None).eval()
    model = model or load(cfg.model)
    contexts = held_out_contexts(model, cfg)
    res = evaluate(model, dictionary, contexts, EvalConfig(batch_size=cfg.batch_size, seed=cfg.seed, progress=progress))
    stats = feature_stats(model, dictionary, contexts, FeatureConfig(batch_size=cfg.batch_size, progress=progress))
    feat_dir = Path(cfg.dictionary) / "features"
    stats.save(feat_dir, overwrite=True)
    summary = res.summary()
    intervals = {}
    if res.ce_increase_ci is not None:
        intervals["ce_increase"] = [float(res.ce_increase_ci.low), float(res.ce_increase_ci.high)]
        intervals["kl"] = [float(res.kl_ci.low), float(res.kl_ci.high)]
    if res.loss_recovered_ci is not None:
        intervals["loss_recovered"] = [float(v) for v in res.loss_recovered_ci]
    report = Report(f"Dictionary evaluation: {Path(cfg.dictionary).name} on {model.source.get('name')}")
    report.text(f"{dictionary.arch}, {dictionary.cfg.d_sae} latents at {dictionary.cfg.input_site}"
                f"{' → ' + dictionary.cfg.target_site if dictionary.is_transcoder else ''}; "
                f"{contexts.shape[0]} held-out contexts of {contexts.shape[1]} tokens from {cfg.corpus}.")
    report.table(["metric", "value", "95% CI (bootstrap over contexts)"],
                 [[k, v, "" if k not in intervals else f"[{intervals[k][0]:.4g}, {intervals[k][1]:.4g}]"]
                  for k, v in summary.items()]
                 + [["ce_increase", None if summary.get("ce_spliced") is None else summary["ce_spliced"] - summary["ce_clean"],
                     "" if "ce_increase" not in intervals else f"[{intervals['ce_increase'][0]:.4g}, {intervals['ce_increase'][1]:.4g}]"]])
    report.text("FVU is against the mean of the target (not zero); loss recovered = (CE_zero − CE_spliced) / "
                "(CE_zero − CE_clean), with zero ablation of the target site as the floor; intervals are "
                "bootstrap CIs over contexts.", note=True)
    report.heading("Features")
    order = torch.argsort(stats.density, descending=True)
    alive = [int(i) for i in order if 0 < float(stats.density[i]) <= 0.1][: cfg.n_features]
    for i in alive:
        desc = stats.describe(i, model.tokenizer, n=3)
        report.text(f"latent {i}: density {desc.density:.4f}, mean activation {desc.mean_activation:.3f}")
        for ex in desc.examples:
            report.text(ex, note=True)
    with RunRecord(cfg.out, "eval-sae", cfg, model, cfg.seed) as run:
        run.add_results("metrics", summary)
        run.add_results("intervals", intervals)
        run.add_results("features_dir", str(feat_dir))
        run.add_tensors("eval", {"density": res.density})
        run.write_text("report.html", report.render())
    return run.path
