"""``interplab explain``: label a dictionary's latents and score the labels, with controls.

A dictionary in, a labels artifact out (``<dictionary>/labels/`` by default):

1. **Sampling** (``explain.sampling``): held-out text (``--corpus``, the default classics) packed
   into contexts, read through the model at the dictionary's input site; per latent, top and
   quantile-sampled activating windows plus non-activating ones from one half of the contexts
   (shown to the explainer), and activating, random and hard-negative windows from the other
   half (used by the scorers) — the two halves share no context.
2. **Explaining**: ``rule`` (token and token-pair patterns; no model), ``local`` (a language
   model through interplab's runtime, the default instruct model unless ``--lm``) or
   ``endpoint`` (any OpenAI-compatible server at ``--endpoint-url``; the key comes from
   ``$INTERPLAB_ENDPOINT_KEY`` and is never stored). Every model call is cached by content hash
   (``labels/lm-cache.jsonl``), so a re-run is identical and fast.
3. **Scoring** with a judge of the same three kinds: detection and fuzzing (balanced accuracy and
   AUROC with bootstrap CIs over examples); every score also for a **shuffled** explanation
   (another latent's) and a **random** one, and reported as its gap over them, with a CI and a
   paired permutation test over latents. ``--intruder`` adds intruder detection (needs a model
   judge; no explanation involved).

Resumable: each latent's label and scores are appended to ``labels/explanations.jsonl`` and
``labels/scores.jsonl`` as they finish; a re-run with the same settings skips what is there and
retries what failed. A latent whose model call fails (an endpoint that is down or answers
malformed output) is recorded with its error and the run goes on. ``labels/labels.json`` holds
the final labels with scores, controls and the contexts used, and
``labels/neuronpedia-explanations.json`` the labels as Neuronpedia's explanation rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Bars, Block, Table, Text
from interplab.core.config import RunFields, param
from interplab.core.errors import ConfigError, InterplabError
from interplab.core.result import Result

log = logging.getLogger(__name__)

KINDS = ("rule", "local", "endpoint")
KEY_ENV = "INTERPLAB_ENDPOINT_KEY"


@dataclass(frozen=True)
class ExplainRunConfig(RunFields):
    """Label a dictionary's latents and score the labels against held-out text, with controls."""

    dictionary: str = param("", help="Dictionary directory (interplab, SAELens or sparsify layout).")
    n_latents: int = param(50, help="How many latents to label (drawn at random, seeded, among those that fire "
                                    "in the sampled text on at most 10% of tokens).", ge=1)
    latents: tuple[int, ...] = param((), help="Label exactly these latents instead.")
    corpus: str = param("classics", help="Text to sample from: 'classics', a file/directory or 'hf:<dataset>'.")
    store: str = param("", help="The store the dictionary was trained from: its text is skipped, so the "
                                "sampled text is held out.")
    skip_contexts: int = param(0, help="Contexts to skip after the store's text.", ge=0)
    n_contexts: int = param(512, help="Contexts of text to sample windows from.", ge=8)
    ctx_len: int = param(64, help="Tokens per context.", ge=8)
    explainer: str = param("rule", help="Who writes the labels: rule (token patterns, no model), local (a model "
                                        "through the runtime) or endpoint (an OpenAI-compatible server).", choices=KINDS)
    judge: str = param("rule", help="Who scores them: rule, local or endpoint (the default 135M model as judge "
                                    "does not beat a shuffled label: see the README).", choices=KINDS)
    lm: str = param("smollm2-135m", help="The local explainer / judge model.")
    endpoint_url: str = param("", help="Base URL of an OpenAI-compatible server (key: $INTERPLAB_ENDPOINT_KEY).")
    endpoint_model: str = param("", help="The endpoint's model (default: the first it lists).")
    intruder: bool = param(False, help="Also score intruder detection (needs a model judge).")
    labels_dir: str = param("", help="Where the labels go (default: <dictionary>/labels).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.dictionary:
            raise ConfigError("explain needs --dictionary DIR (a trained dictionary directory).")
        if "endpoint" in (self.explainer, self.judge) and not self.endpoint_url:
            raise ConfigError("--explainer/--judge endpoint needs --endpoint-url (an OpenAI-compatible server).")
        if self.intruder and self.judge == "rule":
            raise ConfigError("--intruder needs a model judge (--judge local or endpoint).")

    def settings_key(self) -> str:
        """What the saved labels depend on: a re-run with the same key resumes them."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("out", "threads", "labels_dir", "device")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class ExplainResult(Result):
    """Labels of a dictionary's latents, their scores and controls, and the summary over latents."""

    dictionary: str
    labels_dir: str
    explainer: str
    judge: str
    latents: list[dict]  # per latent: latent, label, density, scores {name: Score dict}, gaps, error
    summary: dict  # per scorer: summarize()'s numbers
    errors: int = 0
    cache: dict = field(default_factory=dict)  # hits / misses of the LM cache

    def title(self) -> str:
        return f"Feature labels: {Path(self.dictionary).name}"

    def headline(self) -> dict:
        out: dict = {"latents": len(self.latents), "errors": self.errors}
        for name, s in self.summary.items():
            out[f"{name}_ba"] = s.get("mean_score")
            out[f"{name}_shuffled_ba"] = s.get("mean_shuffled")
            out[f"{name}_gap_shuffled"] = (s.get("gap_shuffled") or {}).get("mean")
        return out

    def _table(self) -> Table:
        rows = []
        for r in self.latents:
            det = (r.get("scores") or {}).get("detection") or {}
            fz = (r.get("scores") or {}).get("fuzzing") or {}
            rows.append([r["latent"], r.get("label") or f"(error: {r.get('error')})", r.get("density"),
                         _ba(det.get("score")), _ba(det.get("shuffled")), _ba(fz.get("score")), _ba(fz.get("shuffled"))])
        return Table(["latent", "label", "density", "detection BA [95% CI]", "shuffled", "fuzzing BA [95% CI]",
                      "shuffled"], rows, title="labels and scores")

    def terminal(self) -> list[Block]:
        return [*super().terminal(), self._summary_table(), Text(f"labels: {self.labels_dir}/labels.json")]

    def _summary_table(self) -> Table:
        rows = []
        for name, s in self.summary.items():
            for control in ("shuffled", "random"):
                g = s.get(f"gap_{control}") or {}
                rows.append([name, s.get("mean_score"), control, s.get(f"mean_{control}"), g.get("mean"),
                             _ci(g.get("low"), g.get("high")), g.get("p")])
        return Table(["scorer", "mean BA", "control", "control BA", "gap", "gap 95% CI", "p (paired permutation)"],
                     rows, title="scores over latents, against their controls")

    def blocks(self) -> list[Block]:
        out: list[Block] = [
            Text(f"{len(self.latents)} latents of {self.dictionary} labelled by the {self.explainer} explainer and "
                 f"scored by the {self.judge} judge on held-out windows the explainer never saw. Balanced accuracy "
                 "(BA) with 95% bootstrap CIs over examples; each score beside the same judge given a shuffled "
                 "explanation (another latent's) and a random one; the gaps have CIs over latents and paired "
                 "permutation p-values."),
            self._summary_table(),
        ]
        names, values, lows, highs = [], [], [], []
        for name, s in self.summary.items():
            for what in ("score", "shuffled", "random"):
                names.append(f"{name}: {'explanation' if what == 'score' else what}")
                values.append(_num(s.get(f"mean_{what}")))
                lows.append(values[-1])
                highs.append(values[-1])
        if names:
            out.append(Bars("explain_scores", "Mean balanced accuracy: explanations vs controls", names, values,
                            "balanced accuracy (0.5 = chance)", caption="Means over latents; 0.5 is chance."))
        out.append(self._table())
        if self.errors:
            out.append(Text(f"{self.errors} latents failed (recorded with their error; a re-run retries them).",
                            note=True))
        return out


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def _ba(score: dict | None) -> str:
    if not score or score.get("balanced_accuracy") is None:
        return ""
    return f"{score['balanced_accuracy']:.3f} {_ci(score.get('ba_low'), score.get('ba_high'))}"


def _ci(low, high) -> str:
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return ""
    return f"[{low:.3f}, {high:.3f}]"


# -- the artifact ----------------------------------------------------------------------------------------
class Journal:
    """Append-only JSON lines, one per finished latent; a torn last line (a crash mid-write) is
    skipped on reading."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key

    def read(self) -> dict[int, dict]:
        out: dict[int, dict] = {}
        if not self.path.is_file():
            return out
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                log.warning("%s: skipping a line that does not parse (a write cut short?)", self.path)
                continue
            if row.get("key") == self.key and "error" not in row:
                out[int(row["latent"])] = row
        return out

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = False
        if self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:  # the last byte only: is the last line whole?
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        with open(self.path, "a", encoding="utf-8") as f:
            # after a torn last line (a write cut short), start a fresh one
            f.write(("\n" if torn else "") + json.dumps({**row, "key": self.key}, default=_plain) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _plain(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_plain), encoding="utf-8")
    os.replace(tmp, path)


# -- the parts -------------------------------------------------------------------------------------------
def _lm(cfg: ExplainRunConfig, cache, ctx: Context):
    from interplab.explain.llm import CachedLM, EndpointLM, LocalLM

    def build(kind: str):
        if kind == "local":
            from interplab.runtime.loading import load

            model = ctx.model if cfg.lm == cfg.model else load(cfg.lm)
            return CachedLM(LocalLM(model), cache)
        return CachedLM(EndpointLM(cfg.endpoint_url, api_key=os.environ.get(KEY_ENV) or None,
                                   model=cfg.endpoint_model or None), cache)

    made: dict[str, object] = {}

    def get(kind: str):
        if kind not in made:  # one model per kind, built on first use
            made[kind] = build(kind)
        return made[kind]

    return get


def _explainer(cfg: ExplainRunConfig, lm):
    from interplab.explain.rules import RuleExplainer

    if cfg.explainer == "rule":
        return RuleExplainer()
    from interplab.explain.llm import LLMExplainer

    return LLMExplainer(lm(cfg.explainer))


def _judge(cfg: ExplainRunConfig, lm):
    from interplab.explain.rules import RuleJudge

    if cfg.judge == "rule":
        return RuleJudge()
    from interplab.explain.llm import LLMJudge

    return LLMJudge(lm(cfg.judge))


def choose_latents(cfg: ExplainRunConfig, model, dictionary, contexts: torch.Tensor
                   ) -> tuple[list[int], torch.Tensor]:
    """(latents, their activations ``[N, T, n]`` on ``contexts``): ``cfg.latents``, or
    ``n_latents`` drawn (seeded) among latents firing on 0 < density ≤ 0.1 of the contexts' tokens.
    The model reads the contexts once: its site activations serve both the count over every
    latent and the chosen latents' activations."""
    from interplab.explain.sampling import DictionaryActivations

    d_sae, batch = dictionary.cfg.d_sae, 16
    if cfg.latents:
        bad = [i for i in cfg.latents if not 0 <= i < d_sae]
        if bad:
            raise ConfigError(f"--latents {bad[:5]} out of range: the dictionary has {d_sae} (0..{d_sae - 1}).")
    every = DictionaryActivations(model, dictionary, list(range(d_sae)))
    sites, fires = [], torch.zeros(d_sae)
    for lo in range(0, contexts.shape[0], batch):
        tokens = contexts[lo: lo + batch]
        sites.append(every.site_acts(tokens))
        if not cfg.latents:  # one batch of every latent at a time: [16, T, d_sae] at most
            fires += (every.encoded(sites[-1], tokens) > 0).float().sum((0, 1))
    if cfg.latents:
        latents = list(cfg.latents)
    else:
        density = fires / contexts.numel()
        alive = [i for i in range(d_sae) if 0 < float(density[i]) <= 0.1]
        if not alive:
            raise InterplabError("No latent fires on 0 < density <= 10% of the sampled text: nothing to label.")
        latents = sorted(random.Random(cfg.seed).sample(alive, min(cfg.n_latents, len(alive))))
    chosen = DictionaryActivations(model, dictionary, latents)
    acts = torch.cat([chosen.encoded(x, contexts[k * batch: (k + 1) * batch]) for k, x in enumerate(sites)])
    return latents, acts


@register_analysis("explain", config=ExplainRunConfig, result=ExplainResult,
                   help="label a dictionary's latents and score the labels, with controls",
                   example={"dictionary": "{dictionary}", "explainer": "rule", "judge": "rule", "n_latents": 6,
                            "n_contexts": 48, "ctx_len": 16, "corpus": "{corpus}"})
def explain(cfg: ExplainRunConfig, ctx: Context) -> ExplainResult:
    from interplab.dictionary.eval_run import held_out_contexts
    from interplab.dictionary.formats import load_dictionary
    from interplab.explain.llm import LMCache
    from interplab.explain.sampling import DictionaryActivations, SampleConfig, sample
    from interplab.explain.scoring import summarize

    dictionary = load_dictionary(cfg.dictionary).eval()
    model = ctx.model
    dictionary.to(model.device)
    labels_dir = Path(cfg.labels_dir or Path(cfg.dictionary) / "labels")
    labels_dir.mkdir(parents=True, exist_ok=True)
    key = cfg.settings_key()
    ctx.phase("packing held-out text")
    contexts, held_out = held_out_contexts(model, cfg)
    ctx.phase("choosing latents")
    latents, acts = choose_latents(cfg, model, dictionary, contexts)
    ctx.phase(f"sampling windows for {len(latents)} latents")
    samples = sample(DictionaryActivations(model, dictionary, latents), contexts, model.tokenizer,
                     SampleConfig(window=min(24, cfg.ctx_len), seed=cfg.seed), acts=acts)
    cache = LMCache(labels_dir / "lm-cache.jsonl")
    lm = _lm(cfg, cache, ctx)
    explainer, judge = _explainer(cfg, lm), _judge(cfg, lm)

    ctx.phase(f"explaining with the {cfg.explainer} explainer")
    done = Journal(labels_dir / "explanations.jsonl", key)
    explained = done.read()
    errors: dict[int, str] = {}
    for latent in latents:
        if latent in explained:
            continue
        try:
            label = explainer.explain(samples[latent])
        except InterplabError as err:  # an endpoint down, malformed output: this latent only
            errors[latent] = str(err)
            done.append({"latent": latent, "error": str(err)})
            continue
        row = {"latent": latent, "label": label}
        done.append(row)
        explained[latent] = row
    labels = {i: explained[i]["label"] for i in latents if i in explained}

    ctx.phase(f"scoring with the {cfg.judge} judge, with controls")
    scored_journal = Journal(labels_dir / "scores.jsonl", key)
    scored = scored_journal.read()
    vocab = sorted({t for smp in samples.values() for ex in (*smp.explain, *smp.explain_neg) for t in ex.tokens})
    for latent in labels:
        if latent in scored or len(labels) < 2:  # the shuffled control needs another latent's label
            continue
        try:
            row = {"latent": latent, **scored_with_controls(judge, labels, latent, samples[latent], vocab, cfg.seed)}
            if cfg.intruder:
                row["intruder"] = _intruder(lm(cfg.judge), samples[latent], cfg.seed)
        except InterplabError as err:
            errors[latent] = str(err)
            scored_journal.append({"latent": latent, "error": str(err)})
            continue
        scored_journal.append(row)
        scored[latent] = row

    summary = {}
    for name in ("detection", "fuzzing"):
        results = {i: {c: _ScoreView(scored[i][name][c]) for c in ("score", "shuffled", "random")}
                   for i in labels if i in scored}
        if results:
            summary[name] = summarize(results, seed=cfg.seed)
    rows = []
    for latent in latents:
        smp = samples[latent]
        rows.append({"latent": latent, "label": labels.get(latent), "density": smp.density,
                     "error": errors.get(latent), "notes": smp.notes,
                     "scores": {n: scored[latent][n] for n in ("detection", "fuzzing", "intruder")
                                if latent in scored and n in scored[latent]},
                     "contexts": {"explain": [e.context for e in smp.explain + smp.explain_neg],
                                  "score": [e.context for e in smp.score_pos + smp.score_neg]}})
    _write_json(labels_dir / "labels.json", {"dictionary": cfg.dictionary, "settings_key": key,
                                             "explainer": cfg.explainer, "judge": cfg.judge,
                                             "held_out": held_out, "summary": summary, "latents": rows})
    _write_json(labels_dir / "neuronpedia-explanations.json", neuronpedia_explanations(
        rows, model.source.get("name") or cfg.model, dictionary, cfg))
    return ExplainResult(cfg.dictionary, str(labels_dir), cfg.explainer, cfg.judge, rows, summary,
                         errors=len(errors), cache={"hits": cache.hits, "misses": cache.misses})


def scored_with_controls(judge, labels: dict[int, str], latent: int, smp, vocab: list[str], seed: int) -> dict:
    """Detection and fuzzing of ``latent``'s label and of its two controls (a shuffled label:
    another latent's; a random one: as many random tokens as the label names), as JSON."""
    from interplab.explain.rules import parse_label
    from interplab.explain.scoring import detection, fuzzing, random_explanation, shuffled_explanation

    parsed = parse_label(labels[latent])
    n_rand = (len(parsed[0]) + len(parsed[1]) if parsed else 5) or 1
    controls = {"score": labels[latent], "shuffled": shuffled_explanation(labels, latent, seed),
                "random": random_explanation(vocab, seed * 1_000_003 + latent, n_rand)}
    out = {}
    for name, fn in (("detection", detection), ("fuzzing", fuzzing)):
        scores = {c: fn(judge, text, smp, seed=seed) for c, text in controls.items()}
        out[name] = {**{c: s.to_dict() for c, s in scores.items()},
                     "gap_shuffled": scores["score"].balanced_accuracy - scores["shuffled"].balanced_accuracy,
                     "gap_random": scores["score"].balanced_accuracy - scores["random"].balanced_accuracy}
    return out


@dataclass
class _ScoreView:
    """A stored Score dict read back with the attributes ``summarize`` uses."""

    d: dict

    def __getattr__(self, name):
        value = self.__dict__["d"].get(name)
        return float("nan") if value is None else value


def _intruder(lm, smp, seed: int) -> dict:
    from interplab.explain.llm import intruder

    k = 4
    pos, neg = smp.score_pos, smp.score_neg
    trials = []
    for t in range(min(len(pos) // k, len(neg), 5)):
        trials.append(bool(intruder(lm, pos[t * k:(t + 1) * k], neg[t], seed=seed + t)))
    n = len(trials)
    return {"accuracy": sum(trials) / n if n else None, "n": n, "chance": 1 / (k + 1)}


def neuronpedia_explanations(rows: list[dict], model_id: str, dictionary, cfg: ExplainRunConfig) -> list[dict]:
    """The labels as rows of Neuronpedia's explanation export (``/api/explanation/export``):
    ``modelId``, ``layer`` (the SAE's id there, ``<layer>-<dictionary dir name>``), ``index``,
    ``description``, ``explanationModelName``, ``typeName``."""
    from interplab.core.sites import Site

    layer = Site.parse(dictionary.cfg.input_site).layer or 0
    who = {"rule": "interplab-rules", "local": cfg.lm, "endpoint": cfg.endpoint_model or cfg.endpoint_url}[cfg.explainer]
    return [{"modelId": model_id, "layer": f"{layer}-{Path(cfg.dictionary).name}", "index": str(r["latent"]),
             "description": r["label"], "explanationModelName": who, "typeName": f"interplab-{cfg.explainer}"}
            for r in rows if r.get("label")]
