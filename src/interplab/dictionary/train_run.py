"""``interplab train-sae``: one or several sparse dictionaries (sites × expansions) trained from
one pass over an activation store (or from the model on the fly), saved as dictionary
directories under ``out/dictionaries``, with a run record ``out/train-<arch>-<time>`` holding
the final metrics and the training-FVU curves.

The trainer (``dictionary.trainer``) follows Gao et al. 2024 (TopK, AuxK, unit-norm decoder)
and EleutherAI's sparsify (many dictionaries from one pass). Re-running the same command
continues from the latest checkpoint (``resume`` is on by default, in the library too).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Lines, Table, Text
from interplab.core.result import Result
from interplab.dictionary.train_sae_config import TrainSaeConfig
from interplab.dictionary.trainer import train


@dataclass
class TrainSaeResult(Result):
    """The dictionaries one run trained: where they are, their final metrics, their curves."""

    arch: str
    origin: str  # what the activations came from, in words
    sites: list[str]
    steps: int
    batch_size: int
    tokens: int
    resumed_from: int | None
    dead_after_tokens: int
    dictionaries: dict[str, dict]  # name -> {"metrics": final training metrics, "path": directory}
    store: dict | None  # {"path", "content_hash"}; None on the fly
    curve_steps: list[int]
    curves: dict[str, list[float]]  # name -> training FVU at curve_steps (NaN where not logged)

    def title(self) -> str:
        return "Dictionary training"

    def headline(self) -> dict:
        out: dict = {"dictionaries": len(self.dictionaries), "steps": self.steps, "tokens": self.tokens}
        for name, entry in self.dictionaries.items():
            m = entry.get("metrics") or {}
            out[f"{name} fvu"] = m.get("fvu")
            out[f"{name} l0"] = m.get("l0")
        return out

    def _summary(self) -> Text:
        n = len(self.dictionaries)
        again = f", resumed from step {self.resumed_from}" if self.resumed_from else ""
        return Text(f"{n} dictionar{'y' if n == 1 else 'ies'} ({self.arch}) trained for {self.steps} steps of "
                    f"{self.batch_size} tokens ({self.tokens:,} tokens{again}) from {self.origin}; "
                    f"sites {', '.join(self.sites)}.")

    def _table(self) -> Table:
        dead = f"dead in training (silent for {self.dead_after_tokens:,} tokens)"
        rows = [[name, (e.get("metrics") or {}).get("fvu"), (e.get("metrics") or {}).get("l0"),
                 (e.get("metrics") or {}).get("n_dead"), e.get("path", "")] for name, e in self.dictionaries.items()]
        return Table(["dictionary", "final FVU", "L0", dead, "saved at"], rows)

    def _fvu_warning(self) -> list[Text]:
        """Say it loudly when a dictionary reconstructs worse than the batch mean (FVU > 1)."""
        bad = {n: (e.get("metrics") or {}).get("fvu") for n, e in self.dictionaries.items()}
        bad = {n: f for n, f in bad.items() if isinstance(f, (int, float)) and not f <= 1.0}
        if not bad:
            return []
        listed = ", ".join(f"{n} (FVU {f:.3g})" for n, f in bad.items())
        return [Text(f"WARNING: {listed} reconstruct{'s' if len(bad) == 1 else ''} worse than predicting the "
                     "batch mean (FVU above 1): training failed. Check the activations (a corrupt or garbage "
                     "store gives this), the learning rate and the architecture before using them.")]

    def _dead_note(self) -> Text:
        short = (f" This run read {self.tokens:,} tokens, fewer than that, so no latent can count as dead yet."
                 if self.tokens < self.dead_after_tokens else "")
        return Text(f"Dead in training: latents that have not fired on the last dead_after_tokens = "
                    f"{self.dead_after_tokens:,} training tokens (the counter AuxK reads).{short} eval-sae "
                    "reports another quantity: latents that never fire on its held-out tokens.", note=True)

    def blocks(self) -> list[Block]:
        return [self._summary(), *self._fvu_warning(), self._table(), self._dead_note(),
                Lines("training_fvu", "Training FVU by step", [float(s) for s in self.curve_steps], self.curves,
                      xlabel="step", ylabel="FVU (against the batch mean)", logy=True,
                      caption="Training FVU (against the batch mean) by step, as logged every log_every steps.")]

    def terminal(self) -> list[Block]:
        return [self._summary(), *self._fvu_warning(), self._table(), self._dead_note()]


def _source(cfg: TrainSaeConfig, ctx: Context):
    """The activation store, or an on-the-fly source computing the same rows from the model."""
    from interplab.activations import ActivationStore, CorpusConfig, OnTheFlySource
    from interplab.activations.corpus import check_source

    if not cfg.on_the_fly:
        ctx.phase(f"opening the activation store {cfg.store}")
        return ActivationStore.open(cfg.store)
    check_source(CorpusConfig(source=cfg.corpus))  # before the model: a missing file, an hf: corpus offline
    model = ctx.load_model(dtype=cfg.dtype, device=cfg.device)
    sites = [*cfg.sites, *([cfg.output_site] if cfg.output_site else [])]
    return OnTheFlySource(model, CorpusConfig(source=cfg.corpus), sites, ctx_len=cfg.ctx_len,
                          buffer_tokens=cfg.buffer_tokens)


def _curves(paths: dict[str, Path]) -> tuple[list[int], dict[str, list[float]]]:
    """(steps, {name: fvu at each step}) from the metrics.jsonl the trainer keeps per dictionary."""
    logged: dict[str, dict[int, float]] = {}
    for name, path in paths.items():
        f = Path(path) / "metrics.jsonl"
        rows = [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []
        logged[name] = {r["step"]: float(r["fvu"]) for r in rows if "fvu" in r}
    steps = sorted({s for pts in logged.values() for s in pts})
    return steps, {name: [pts.get(s, math.nan) for s in steps] for name, pts in logged.items()}


@register_analysis("train-sae", config=TrainSaeConfig, result=TrainSaeResult, needs_model=False,
                   help="train sparse dictionaries (sites × expansions) from an activation store",
                   run_name=lambda cfg: f"train-{cfg.arch}",
                   # needs the "{store}" fixture (a harvested store with L1.resid_post)
                   example={"store": "{store}", "expansions": "2", "k": 4, "batch_size": 64, "steps": 4,
                            "device": "cpu"})
def train_sae(cfg: TrainSaeConfig, ctx: Context) -> TrainSaeResult:
    source = _source(cfg, ctx)
    n_tokens = None if cfg.on_the_fly else source.n_tokens
    dcfgs = cfg.dictionary_configs(source)
    tcfg = cfg.trainer_config(n_tokens)
    ctx.phase(f"training {len(dcfgs)} dictionaries for {tcfg.total_steps} steps of {tcfg.batch_size} tokens")
    result = train(source, dcfgs, tcfg, progress=ctx.progress)
    if cfg.on_the_fly:
        origin = f"the model {cfg.model} on the fly (shuffle buffer of {cfg.buffer_tokens:,} tokens)"
        store = None
    else:
        store = {"path": cfg.store, "content_hash": source.manifest.get("content_hash")}
        origin = (f"{cfg.store} ({source.n_tokens:,} tokens, model {source.manifest['model']['name']}, "
                  f"content hash {str(store['content_hash'])[:16]})")
    paths = {name: result.paths[name] for name in result.names if name in result.paths}
    steps, curves = _curves(paths)
    return TrainSaeResult(
        arch=cfg.arch, origin=origin, sites=list(dict.fromkeys(dc.input_site for dc in dcfgs)), steps=result.steps,
        batch_size=tcfg.batch_size, tokens=result.tokens, resumed_from=result.resumed_from,
        dead_after_tokens=cfg.dead_after_tokens,
        dictionaries={n: {"metrics": result.metrics.get(n), "path": str(result.paths.get(n))} for n in result.names},
        store=store, curve_steps=steps, curves=curves)
