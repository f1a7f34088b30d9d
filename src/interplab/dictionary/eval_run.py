"""``interplab eval-sae``: a trained (or SAELens / sparsify) dictionary spliced into its model on
held-out text: reconstruction and downstream metrics with bootstrap CIs over contexts
(``dictionary.evaluate``: Gao et al. 2024; Bricken et al. 2023; SAEBench), feature statistics
saved next to the dictionary (``features/``), and a report with the latent-density histogram
and a few feature dashboards.

Held out: with ``--store``, the evaluation text starts at the first document after every token
the store read (``activations.held_out``: an offset in corpus tokens, so it holds whatever
``--ctx-len`` the evaluation packs at; the corpus is checked to reproduce the store's token ids
first), and the record states the offset (``held_out``: documents and tokens skipped). Asking
for more contexts than the held-out text holds is an error naming how many there are.

Two different "dead" counts exist and are labelled as such: this evaluation's ``n_dead`` counts
latents that never fire on its held-out tokens; training counts a latent as dead once it has not
fired for ``dead_after_tokens`` training tokens (shown here from the dictionary's
``training.json`` where it has one).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch

from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Bars, Block, Heading, Lines, Table, Text
from interplab.core.config import RunFields, fields_of, param
from interplab.core.errors import ConfigError, InputError
from interplab.core.model import Model
from interplab.core.result import Result
from interplab.dictionary.evaluate import EvalConfig, evaluate
from interplab.dictionary.features import FeatureConfig, feature_stats
from interplab.dictionary.formats import load_dictionary

log = logging.getLogger(__name__)

# EvalConfig fields the run sets itself: it packs its own contexts and shows its own progress.
_EvalFields = fields_of(EvalConfig, exclude=("n_contexts", "ctx_len", "n_batches", "source_batch_size", "progress"),
                        name="EvalFields")


@dataclass(frozen=True)
class EvalSaeConfig(RunFields, _EvalFields):
    """Evaluate one dictionary spliced into its model on held-out text."""

    dictionary: str = param("", help="Dictionary directory (interplab, SAELens or sparsify layout).")
    input_site: str = param("", help="Input site, for SAELens/sparsify checkpoints that name hooks their own way.")
    corpus: str = param("classics", help="Text to evaluate on: 'classics', a file/directory or 'hf:<dataset>'.")
    store: str = param("", help="The store the dictionary was trained from: every corpus document it read is skipped, so the evaluation is held out.")
    skip_contexts: int = param(0, help="Contexts (of --ctx-len tokens) to skip after the store's text.", ge=0)
    n_contexts: int = param(64, help="Held-out contexts to evaluate.", ge=1)
    ctx_len: int = param(128, help="Tokens per context.", ge=2)
    n_features: int = param(8, help="Feature dashboards shown in the report.", ge=0)

    def __post_init__(self) -> None:
        super().__post_init__()  # RunFields: declared ranges, device
        if not self.dictionary:
            raise ConfigError("eval-sae needs --dictionary DIR (a trained dictionary directory).")
        self.eval_config(progress=False)  # the library's own checks

    def eval_config(self, progress: bool) -> EvalConfig:
        mine = {f.name for f in _EvalFields.__dataclass_fields__.values()}
        return EvalConfig(**{k: getattr(self, k) for k in mine}, progress=progress)


@dataclass
class LatentDensity:
    """Per-latent firing on the held-out tokens (stored as ``eval.*`` tensors)."""

    density: torch.Tensor  # [d_sae] float64, fraction of held-out tokens each latent fires on
    mean_activation: torch.Tensor  # [d_sae] float64, mean when firing (NaN if it never fires)
    histogram_counts: torch.Tensor  # [bins] latents per log10-density bin (never-firing ones apart)
    histogram_edges: torch.Tensor  # [bins + 1] float64 log10 density


@dataclass
class EvalSaeResult(Result):
    """Metrics (with CIs) of one dictionary on held-out text, and where its feature stats are."""

    dictionary: str
    description: str  # the dictionary and the data, in words
    metrics: dict  # EvalResult.summary()
    intervals: dict[str, list[float]]  # metric -> [low, high], 95% bootstrap over contexts
    features_dir: str
    eval: LatentDensity
    training: dict  # from the dictionary's training.json: n_dead, tokens, dead_after_tokens (empty if none)
    features: list[dict]  # dashboards: latent, density, mean_activation, examples
    held_out: dict  # where the evaluation text starts: see held_out_contexts

    def _held_out_note(self) -> Text:
        h = self.held_out
        start = f"The evaluation text starts at corpus token {h['tokens_skipped']:,}"
        skip = f"{h['contexts_skipped']} contexts of {h['ctx_len']} tokens (--skip-contexts)"
        extra = f" and {skip}" if h["contexts_skipped"] else ""
        if not h["store"]:
            after = f", after {skip}" if h["contexts_skipped"] else ""
            return Text(f"Not checked to be held out (no --store given). {start}{after}.", note=True)
        return Text(f"Held out. {start}: it skips the first {h['documents_skipped']:,} documents, every one the "
                    f"store {h['store']} read, fully or in part ({h['store_tokens']:,} tokens in "
                    f"{h['store_contexts']:,} contexts of {h['store_ctx_len']}){extra}.", note=True)

    def title(self) -> str:
        return f"Dictionary evaluation: {Path(self.dictionary).name}"

    def headline(self) -> dict:
        keys = ("fvu", "l0", "loss_recovered", "kl", "ce_clean", "ce_spliced", "n_dead")
        return {k: self.metrics[k] for k in keys if self.metrics.get(k) is not None}

    def _table(self) -> Table:
        rows = []
        for key, value in self.metrics.items():
            ci = self.intervals.get(key)
            rows.append([key, value, "" if ci is None else f"[{ci[0]:.4g}, {ci[1]:.4g}]"])
        spliced, clean = self.metrics.get("ce_spliced"), self.metrics.get("ce_clean")
        ci = self.intervals.get("ce_increase")
        rows.append(["ce_increase", None if spliced is None else spliced - clean,
                     "" if ci is None else f"[{ci[0]:.4g}, {ci[1]:.4g}]"])
        return Table(["metric", "value", "95% CI"], rows, title="dictionary evaluation (held-out text)")

    def _dead_note(self) -> Text:
        text = (f"n_dead: latents that never fired on the {self.metrics['n_tokens']:,} held-out tokens "
                f"({int((self.eval.density == 0).sum())} of {self.eval.density.numel()}).")
        if self.training:
            t = self.training
            text += (f" Not the trainer's count: dead in training = not fired for the last "
                     f"{t['dead_after_tokens']:,} training tokens, {t['n_dead']} latents after {t['tokens']:,} tokens.")
        return Text(text, note=True)

    def terminal(self) -> list[Block]:
        return [self._table(), self._dead_note(), self._held_out_note(), Text(f"feature statistics: {self.features_dir}")]

    def blocks(self) -> list[Block]:
        edges = self.eval.histogram_edges
        centres = ((edges[:-1] + edges[1:]) / 2).tolist()
        out: list[Block] = [Text(self.description), self._held_out_note(), self._table(), self._dead_note(),
                            Text("FVU is against the mean of the target (not zero); loss recovered = (CE_zero − "
                                 "CE_spliced) / (CE_zero − CE_clean), with zero ablation of the target site as "
                                 "the floor; intervals are bootstrap CIs over contexts.", note=True),
                            Lines("latent_density", "Latent density on held-out tokens", centres,
                                  {"latents": self.eval.histogram_counts.double().tolist()},
                                  xlabel="log10 density (fraction of tokens a latent fires on)", ylabel="latents",
                                  caption=f"{int((self.eval.density == 0).sum())} latents never fired and are not "
                                          "in the histogram; densities above 0.1 (log10 > -1) are dense.")]
        shown = [k for k in ("ce_increase", "kl", "loss_recovered") if k in self.intervals]
        if shown:
            values = [self.metrics["ce_spliced"] - self.metrics["ce_clean"] if k == "ce_increase" else self.metrics[k]
                      for k in shown]
            out.append(Bars("metric_cis", "Downstream metrics with 95% bootstrap CIs", shown, values, xlabel="value",
                            low=[self.intervals[k][0] for k in shown], high=[self.intervals[k][1] for k in shown]))
        out.append(Heading("Features"))
        for f in self.features:
            out.append(Text(f"latent {f['latent']}: density {f['density']:.4f}, mean activation {f['mean_activation']:.3f}"))
            out += [Text(ex, note=True) for ex in f["examples"]]
        return out


def held_out_contexts(model: Model, cfg: EvalSaeConfig, store=None) -> tuple[torch.Tensor, dict]:
    """``n_contexts`` packed contexts of held-out text, and the record of where it starts.

    With a store (``cfg.store``, or ``store`` already open), the text starts after every
    document the store read (``activations.held_out``); then ``skip_contexts`` contexts are
    skipped. Fewer contexts than asked is an error naming how many the held-out text holds.
    """
    from interplab.activations import ActivationStore, CorpusConfig, Packing, iter_contexts, iter_documents
    from interplab.activations.held_out import held_out_documents

    record = {"store": cfg.store or None, "store_content_hash": None, "store_contexts": 0, "store_ctx_len": None,
              "store_tokens": 0, "documents_skipped": 0, "tokens_skipped": 0,
              "contexts_skipped": cfg.skip_contexts, "ctx_len": cfg.ctx_len, "n_contexts": cfg.n_contexts}
    if cfg.store:
        store = store or ActivationStore.open(cfg.store)
        recorded = {k: v for k, v in (store.manifest.get("corpus") or {}).items() if k in CorpusConfig.__dataclass_fields__}
        corpus = CorpusConfig(**{**recorded, "source": cfg.corpus})  # the store's document split and fields
        offset, docs = held_out_documents(model.tokenizer, store, iter_documents(corpus), cfg.corpus)
        record.update(store_content_hash=store.manifest.get("content_hash"), store_contexts=offset.store_contexts,
                      store_ctx_len=offset.store_ctx_len, store_tokens=offset.store_tokens,
                      documents_skipped=offset.documents, tokens_skipped=offset.tokens)
        where = f"after the {offset.documents:,} documents ({offset.tokens:,} tokens) the store {cfg.store} read"
    else:
        log.warning("eval-sae without --store: the evaluation text starts at the corpus start and is not "
                    "checked against the dictionary's training data.")
        docs = iter_documents(CorpusConfig(source=cfg.corpus))
        where = "from the corpus start"
    contexts = iter_contexts(model.tokenizer, docs, cfg.ctx_len)
    skipped = sum(1 for _ in islice(contexts, cfg.skip_contexts))
    rows = list(islice(contexts, cfg.n_contexts))
    if len(rows) < cfg.n_contexts:
        have = len(rows) if skipped == cfg.skip_contexts else 0
        also = f", then --skip-contexts {cfg.skip_contexts}" if cfg.skip_contexts else ""
        fix = (f"Use --n-contexts {have} or fewer" if have else "Use a shorter --ctx-len")
        raise InputError(
            f"The held-out text of {cfg.corpus!r} ({where}{also}) packs into only {have} contexts of "
            f"{cfg.ctx_len} tokens; --n-contexts asks {cfg.n_contexts}. {fix}"
            f"{', a smaller --skip-contexts' if cfg.skip_contexts else ''}, or a larger corpus."
        )
    bos = Packing.of(model.tokenizer, cfg.ctx_len).bos
    record["tokens_skipped"] += cfg.skip_contexts * (cfg.ctx_len - 1 if bos else cfg.ctx_len)
    return torch.stack(rows), record


def _training(path: Path, dead_after_tokens: int) -> dict:
    f = path / "training.json"
    if not f.is_file():
        return {}
    t = json.loads(f.read_text())
    n_dead = (t.get("final_metrics") or {}).get("n_dead")
    return {} if n_dead is None else {"n_dead": n_dead, "tokens": t.get("tokens", 0), "dead_after_tokens": dead_after_tokens}


def _intervals(res) -> dict[str, list[float]]:
    out = {}
    if res.ce_increase_ci is not None:
        out["ce_increase"] = [float(res.ce_increase_ci.low), float(res.ce_increase_ci.high)]
        out["kl"] = [float(res.kl_ci.low), float(res.kl_ci.high)]
    if res.loss_recovered_ci is not None:
        out["loss_recovered"] = [float(v) for v in res.loss_recovered_ci]
    return out


@register_analysis("eval-sae", config=EvalSaeConfig, result=EvalSaeResult,
                   help="evaluate a dictionary spliced into its model on held-out text",
                   # needs the "{dictionary}" fixture (trained on "{store}", harvested from "{corpus}")
                   example={"dictionary": "{dictionary}", "corpus": "{corpus}", "store": "{store}",
                            "n_contexts": 4, "ctx_len": 16, "batch_size": 4, "n_resamples": 50, "n_features": 2})
def eval_sae(cfg: EvalSaeConfig, ctx: Context) -> EvalSaeResult:
    from interplab.activations import ActivationStore, CorpusConfig
    from interplab.activations.corpus import check_source
    from interplab.activations.packing import check_ctx_len

    dictionary = load_dictionary(cfg.dictionary, input_site=cfg.input_site or None).eval()
    check_source(CorpusConfig(source=cfg.corpus))  # before the model: an hf: corpus offline, a missing file
    store = ActivationStore.open(cfg.store) if cfg.store else None
    model = ctx.model
    check_ctx_len(model, cfg.ctx_len, "--ctx-len")
    dictionary.to(model.device)
    ctx.phase("packing held-out contexts")
    contexts, held_out = held_out_contexts(model, cfg, store)
    ctx.phase(f"evaluating on {contexts.shape[0]} contexts of {contexts.shape[1]} tokens")
    res = evaluate(model, dictionary, contexts, cfg.eval_config(ctx.progress))
    ctx.phase("feature statistics")
    stats = feature_stats(model, dictionary, contexts, FeatureConfig(batch_size=cfg.batch_size, progress=ctx.progress))
    feat_dir = Path(cfg.dictionary) / "features"
    stats.save(feat_dir, overwrite=True)
    order = torch.argsort(stats.density, descending=True)
    alive = [int(i) for i in order if 0 < float(stats.density[i]) <= 0.1][: cfg.n_features]
    features = []
    for i in alive:
        d = stats.describe(i, model.tokenizer, n=3)
        features.append({"latent": i, "density": d.density, "mean_activation": d.mean_activation, "examples": d.examples})
    dc = dictionary.cfg
    h = res.density_histogram
    return EvalSaeResult(
        dictionary=str(cfg.dictionary),
        description=(f"{dictionary.arch}, {dc.d_sae} latents at {dc.input_site}"
                     f"{' → ' + dc.target_site if dictionary.is_transcoder else ''}; {contexts.shape[0]} held-out "
                     f"contexts of {contexts.shape[1]} tokens from {cfg.corpus}, model {model.source.get('name')}."),
        metrics=res.summary(), intervals=_intervals(res), features_dir=str(feat_dir),
        eval=LatentDensity(res.density, res.mean_activation, h.counts, h.edges),
        training=_training(Path(cfg.dictionary), dc.dead_after_tokens), features=features, held_out=held_out)
