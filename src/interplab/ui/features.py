"""Feature dashboards' data: the dictionaries whose feature statistics the UI shows, and one
latent's dashboard as JSON — density, activation histogram, top and quantile-sampled contexts
with per-token activations, top / bottom logit effects and nearest latents by decoder cosine —
read from the statistics ``eval-sae`` writes (``dictionary.features.FeatureStats``), never
recomputed.

Dictionaries come from ``--dictionaries DIR`` (their ``DIR/features``) and from the eval-sae
runs under RUNS_DIR (their ``features_dir``). A request names one by its id here, never by a
path. Statistics load lazily on first use (memory-mapped safetensors) and stay loaded; the
search text of every latent (its top tokens and logit effects) is built once per dictionary."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interplab.core.errors import InputError
from interplab.ui.blocks_json import plain
from interplab.ui.paths import NotFound

log = logging.getLogger(__name__)
SORTS = ("density", "max", "index")


@dataclass
class Source:
    id: str
    path: Path  # the feature-stats directory
    label: str
    stats: object = None
    search: list[str] | None = None
    _meta: dict | None = None
    _labels: tuple | None = None  # (mtime, {latent: row}) of <dictionary>/labels/labels.json

    def labels(self) -> dict[int, dict]:
        """``interplab explain``'s labels of this dictionary (next to its features/), by latent."""
        path = self.path.parent / "labels" / "labels.json"
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return {}
        if self._labels is None or self._labels[0] != mtime:
            try:
                rows = json.loads(path.read_text(encoding="utf-8")).get("latents", [])
                self._labels = (mtime, {int(r["latent"]): r for r in rows if r.get("label")})
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                log.warning("%s does not read; no labels shown", path)
                self._labels = (mtime, {})
        return self._labels[1]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def meta(self) -> dict:
        """What the dictionary list shows (read once: the config also holds the vocabulary)."""
        if self._meta is None:
            try:
                meta = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
                self._meta = {"id": self.id, "label": self.label, "path": str(self.path), "status": "ok",
                              "input_site": meta.get("input_site"), "target_site": meta.get("target_site"),
                              "n_tokens": meta.get("n_tokens"), "n_contexts": meta.get("n_contexts")}
            except (OSError, ValueError) as err:
                return {"id": self.id, "label": self.label, "path": str(self.path), "status": "corrupt",
                        "problem": str(err)}
        return self._meta


def _provenance_model(path: Path) -> str | None:
    try:
        return json.loads((path / "provenance.json").read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return None


def _stats_dir(path: Path) -> Path | None:
    """A feature-stats directory: ``path`` itself or its ``features/``."""
    for candidate in (path, path / "features"):
        if (candidate / "config.json").is_file() and (candidate / "stats.safetensors").is_file():
            return candidate
    return None


def _eval_runs(root: Path):
    """feature directories named by eval-sae runs under ``root``."""
    from interplab.ui.runs_index import RunIndex

    for entry in RunIndex(root).entries():
        if entry.analysis != "eval-sae" or entry.status != "ok":
            continue
        try:
            tree = json.loads((root / entry.id / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(tree.get("features_dir"), str):
            yield Path(tree["features_dir"]), entry.id


class Features:
    """The registered dictionaries' feature statistics, by id."""

    def __init__(self, sources: list[Source]):
        self.sources = {s.id: s for s in sources}

    @classmethod
    def discover(cls, root: str | Path, dictionaries=()) -> Features:
        found: list[tuple[Path, str]] = []
        for d in dictionaries:
            if not Path(d).is_dir():
                from interplab.core.errors import ConfigError

                raise ConfigError(f"--dictionaries {d}: no such directory.")
            stats = _stats_dir(Path(d))
            if stats is None:  # still usable by the live pages; no dashboard
                log.warning("%s has no feature statistics (no %s/config.json), so no dashboard: run "
                            "`interplab eval-sae --dictionary %s` to compute them.", d, Path(d) / "features", d)
                continue
            found.append((stats, Path(d).name))
        for path, run in _eval_runs(Path(root)):
            stats = _stats_dir(path)
            if stats is not None:
                found.append((stats, f"{stats.parent.name} (from {run})"))
        return cls.of(found)

    @classmethod
    def of(cls, found: list[tuple[Path, str]]) -> Features:
        sources, seen, ids = [], set(), set()
        for path, label in found:
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            base = "".join(c if c.isalnum() or c in "-_." else "-" for c in (real.parent.name or "dictionary"))
            sid, n = base, 1
            while sid in ids:
                n += 1
                sid = f"{base}-{n}"
            ids.add(sid)
            sources.append(Source(sid, real, label))
        return cls(sources)

    def listing(self) -> list[dict]:
        return [s.meta() for s in self.sources.values()]

    def source(self, sid: str) -> Source:
        src = self.sources.get(sid)
        if src is None:
            raise NotFound(f"No dictionary {sid!r} here; known: {', '.join(self.sources) or 'none'}.")
        return src

    def stats(self, sid: str):
        src = self.source(sid)
        with src.lock:
            if src.stats is None:
                from interplab.dictionary.features import FeatureStats

                try:
                    src.stats = FeatureStats.load(src.path)
                except Exception as err:  # a corrupt or truncated artifact: say so, keep serving the rest
                    raise InputError(f"The feature statistics at {src.path} do not load: {err}") from None
            return src.stats

    def neuronpedia_zip(self, sid: str, model_id: str = "", sae_id: str = "") -> tuple[bytes, str]:
        """(zip bytes, file name): ``dictionary.neuronpedia.export_neuronpedia``'s batch files."""
        import io
        import tempfile
        import zipfile

        from interplab.dictionary.neuronpedia import export_neuronpedia

        stats, src = self.stats(sid), self.source(sid)
        model_id = model_id or _provenance_model(src.path) or "model"
        with tempfile.TemporaryDirectory() as tmp:
            files = export_neuronpedia(stats, tmp, model_id, sae_id or sid)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for f in files:
                    z.write(f, f.name)
        return buf.getvalue(), f"{sid}-neuronpedia.zip"

    # -- the latent table ----------------------------------------------------------------------
    def _search(self, sid: str) -> list[str]:
        src, stats = self.source(sid), self.stats(sid)
        with src.lock:
            if src.search is None:
                src.search = search_texts(stats)
            return src.search

    def page(self, sid: str, q: str = "", sort: str = "density", descending: bool = True,
             offset: int = 0, limit: int = 50) -> dict:
        stats = self.stats(sid)
        n = stats.d_sae
        if q.strip().isdigit():
            order = [int(q)] if int(q) < n else []
        else:
            if sort == "index":
                order = list(range(n))
                if descending:
                    order.reverse()
            else:
                key = stats.density if sort == "density" else stats.top_values[:, 0].double()
                order = torch.argsort(torch.nan_to_num(key, nan=-1.0), descending=descending, stable=True).tolist()
            if q:
                texts, needle = self._search(sid), q.lower()
                order = [i for i in order if needle in texts[i]]
        labels = self.source(sid).labels()
        rows = [{**summary(stats, i), "label": (labels.get(i) or {}).get("label")} for i in order[offset: offset + limit]]
        return {"id": sid, "d_sae": n, "total": len(order), "offset": offset, "limit": limit, "latents": rows,
                **self.source(sid).meta()}

    def latent(self, sid: str, i: int) -> dict:
        stats = self.stats(sid)
        if not 0 <= i < stats.d_sae:
            raise NotFound(f"Latent {i} out of range: dictionary {sid!r} has {stats.d_sae} (0..{stats.d_sae - 1}).")
        row = self.source(sid).labels().get(i)
        label = None if row is None else {"label": row["label"], "scores": _headline_scores(row.get("scores") or {})}
        return {"id": sid, **self.source(sid).meta(), **dashboard(stats, i), "label": label}


def _headline_scores(scores: dict) -> dict:
    """Per scorer: the label's balanced accuracy with its CI, and its shuffled control's."""
    out = {}
    for name, s in scores.items():
        if isinstance(s, dict) and isinstance(s.get("score"), dict):
            sc, sh = s["score"], s.get("shuffled") or {}
            out[name] = {"balanced_accuracy": sc.get("balanced_accuracy"), "low": sc.get("ba_low"),
                         "high": sc.get("ba_high"), "shuffled": sh.get("balanced_accuracy")}
    return out


# -- one latent as JSON ----------------------------------------------------------------------------
def tok(stats, t: int) -> str:
    vocab = getattr(stats, "vocab", None)
    if vocab:
        text = vocab.get(int(t))
        if text is not None:
            return text
    return f"<{int(t)}>"


def summary(stats, i: int) -> dict:
    top = [tok(stats, t) for t in stats.logit_top_ids[i][:3]] if stats.logit_top_ids is not None else []
    return {"index": i, "density": plain(float(stats.density[i])), "mean_activation": plain(float(stats.mean_activation[i])),
            "max_activation": plain(float(stats.top_values[i, 0])), "top_logits": top}


def _contexts(stats, i: int, values, ctxs, positions, starts, acts, tokens) -> list[dict]:
    out = []
    for j in range(ctxs.shape[0]):
        c = int(ctxs[j])
        if c < 0:
            continue
        out.append({"context": c, "max": plain(float(values[j])), "max_position": int(positions[j]),
                    "max_index": int(positions[j] - starts[j]), "start": int(starts[j]),
                    "tokens": [tok(stats, t) for t in tokens[j].tolist()],
                    "acts": plain(acts[j].float())})
    return out


def _logits(stats, ids, values, i) -> list[dict]:
    if ids is None:
        return []
    return [{"token": tok(stats, t), "value": plain(float(v))} for t, v in zip(ids[i].tolist(), values[i].tolist())]


def dashboard(stats, i: int) -> dict:
    top = _contexts(stats, i, stats.top_values[i], stats.top_contexts[i], stats.top_positions[i],
                    stats.window_start[i], stats.window_acts[i], stats.window_tokens[i])
    quantiles = []
    if getattr(stats, "quantile_contexts", None) is not None:
        n_q = stats.quantile_contexts.shape[1]
        edges = stats.quantile_edges()[i].tolist()
        counts = stats.quantile_counts[i].tolist() if stats.quantile_counts is not None else [None] * n_q
        for k in range(n_q):
            quantiles.append({"low": plain(edges[k]), "high": plain(edges[k + 1]), "count": counts[k],
                              "contexts": _contexts(stats, i, stats.quantile_values[i, k], stats.quantile_contexts[i, k],
                                                    stats.quantile_positions[i, k], stats.quantile_start[i, k],
                                                    stats.quantile_acts[i, k], stats.quantile_tokens[i, k])})
    neighbours = []
    if getattr(stats, "neighbour_ids", None) is not None:
        neighbours = [{"index": int(j), "cosine": plain(float(c)), "density": plain(float(stats.density[int(j)]))}
                      for j, c in zip(stats.neighbour_ids[i].tolist(), stats.neighbour_cos[i].tolist()) if j >= 0]
    return {"index": i, "d_sae": stats.d_sae, "density": plain(float(stats.density[i])),
            "mean_activation": plain(float(stats.mean_activation[i])), "n_tokens": stats.n_tokens,
            "histogram": {"counts": plain(stats.hist_counts[i]), "edges": plain(stats.hist_edges)},
            "top_contexts": top, "quantiles": quantiles,
            "top_logits": _logits(stats, stats.logit_top_ids, stats.logit_top_values, i),
            "bottom_logits": _logits(stats, stats.logit_bottom_ids, stats.logit_bottom_values, i),
            "neighbours": neighbours}


def search_texts(stats) -> list[str]:
    """Per latent, lower-case text to search: its top contexts' max tokens and its logit effects."""
    n = stats.d_sae
    idx = (stats.top_positions - stats.window_start).clamp_min(0).unsqueeze(-1)
    max_tokens = stats.window_tokens.gather(2, idx.clamp_max(stats.window_tokens.shape[2] - 1)).squeeze(-1)
    texts = []
    for i in range(n):
        parts = [tok(stats, t) for t, c in zip(max_tokens[i].tolist(), stats.top_contexts[i].tolist()) if c >= 0]
        if stats.logit_top_ids is not None:
            parts += [tok(stats, t) for t in stats.logit_top_ids[i].tolist()]
        texts.append(" ".join(parts).lower())
    return texts
