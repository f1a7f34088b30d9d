"""Labelled text datasets for probing and contrastive steering, generated offline.

A ``LabelledDataset`` holds texts with a binary label (1 = the concept is present), a *group*
per text and contrastive *pairs*. Groups name the underlying item or template a text was made
from; probe splits keep every group on one side, so a probe cannot pass by recognising an item
it saw in training (the leakage Hewitt & Liang 2019, "Designing and Interpreting Probes with
Control Tasks", warn about). Pairs are (positive, negative) indices of texts that differ only in
the concept, the contrast that difference-of-means steering vectors are built from (Turner et
al. 2023; Rimsky et al. 2024; Marks & Tegmark 2023, "The Geometry of Truth").

``make_dataset("sentiment", n=200, seed=0)`` builds one; ``DATASETS.names()`` lists them and
``@register_dataset("name")`` adds one. ``load_dataset_file`` reads a user's JSONL or CSV.
Built-in datasets put each pair's positive text at an even index and its negative right after.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from interplab.core.errors import ConfigError, InputError, choices
from interplab.core.registry import Registry
from interplab.tasks.facts import CAPITALS, TEMPLATES
from interplab.tasks.labelled_data import (
    HARMFUL_PAIRS,
    LANGUAGE_PAIRS,
    SENTIMENT_ADJECTIVES,
    SENTIMENT_SUBJECTS,
    SENTIMENT_TEMPLATES,
)


@dataclass(frozen=True)
class LabelledDataset:
    """Texts with binary labels, a group per text and contrastive (positive, negative) pairs."""

    name: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]  # 0 / 1; 1 = label_names[1]
    groups: tuple[int, ...]  # item / template id: a split never puts one group on two sides
    pairs: tuple[tuple[int, int], ...] = ()  # (positive, negative) indices differing in the concept
    label_names: tuple[str, str] = ("0", "1")

    def __post_init__(self) -> None:
        n = len(self.texts)
        if len(self.labels) != n or len(self.groups) != n:
            raise InputError(
                f"Dataset {self.name!r}: {n} texts but {len(self.labels)} labels and "
                f"{len(self.groups)} groups; give one label and one group per text."
            )
        bad = sorted({v for v in self.labels if v not in (0, 1)})
        if bad:
            raise InputError(f"Dataset {self.name!r}: labels must be 0 or 1; found {bad}.")
        if len(self.label_names) != 2:
            raise InputError(f"Dataset {self.name!r}: label_names needs two names (label 0, 1).")
        for p, q in self.pairs:
            if not (0 <= p < n and 0 <= q < n) or self.labels[p] != 1 or self.labels[q] != 0:
                raise InputError(
                    f"Dataset {self.name!r}: pair ({p}, {q}) must index a label-1 text then a "
                    f"label-0 text among the {n} texts."
                )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_groups(self) -> int:
        return len(set(self.groups))


Builder = Callable[[int | None, int], LabelledDataset]
DATASETS: Registry[Builder] = Registry("labelled dataset")


def register_dataset(name: str) -> Callable[[Builder], Builder]:
    """Register ``builder(n, seed) -> LabelledDataset`` under ``name``."""
    return DATASETS.register(name)


def make_dataset(name: str, n: int | None = None, seed: int = 0) -> LabelledDataset:
    """Build the registered dataset ``name`` with ``n`` texts (all available when ``None``)."""
    if name not in DATASETS:
        raise ConfigError(
            f"No labelled dataset named {name!r}. Choose one of {choices(DATASETS.names())}, "
            "or load your own with load_dataset_file(path)."
        )
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2 or n % 2):
        raise ConfigError(
            f"n={n!r}: built-in datasets are (positive, negative) pairs, so n must be an even "
            "integer >= 2."
        )
    return DATASETS.get(name)(n, seed)


def _from_pairs(name: str, candidates: list[tuple[str, str, int]], n: int | None, seed: int,
                label_names: tuple[str, str], cap: int | None = None) -> LabelledDataset:
    """Sample ``n // 2`` of the (positive, negative, group) candidates, deterministically."""
    available = 2 * len(candidates)
    if n is None:
        n = min(available, cap) if cap else available
    if n > available:
        raise ConfigError(
            f"Dataset {name!r} has {available} texts ({len(candidates)} pairs); asked for n={n}. "
            f"Pass n <= {available}."
        )
    rng = random.Random(f"{name}:{seed}")
    chosen = rng.sample(candidates, n // 2)
    texts, labels, groups, pairs = [], [], [], []
    # Renumber groups densely in order of first appearance.
    ids: dict[object, int] = {}
    for k, (pos, neg, group) in enumerate(chosen):
        g = ids.setdefault(group, len(ids))
        texts += [pos, neg]
        labels += [1, 0]
        groups += [g, g]
        pairs.append((2 * k, 2 * k + 1))
    return LabelledDataset(name, tuple(texts), tuple(labels), tuple(groups), tuple(pairs),
                           label_names)


@register_dataset("sentiment")
def sentiment(n: int | None, seed: int) -> LabelledDataset:
    """Positive vs negative opinions ("The movie was wonderful." / "... terrible."). A pair
    shares template and subject; the group is the subject, so test subjects are unseen."""
    cands = [
        (t.format(subject=s, adj=pos), t.format(subject=s, adj=neg), si)
        for t in SENTIMENT_TEMPLATES
        for si, s in enumerate(SENTIMENT_SUBJECTS)
        for pos, neg in SENTIMENT_ADJECTIVES
    ]
    return _from_pairs("sentiment", cands, n, seed, ("negative", "positive"), cap=400)


@register_dataset("truth")
def truth(n: int | None, seed: int) -> LabelledDataset:
    """True vs false capital facts ("The capital of France is Paris." / "... Berlin."), from
    the facts task's country list. A pair shares country and template; the group is the
    country. Each (country, template) gets three candidate wrong capitals."""
    rng = random.Random(f"truth-wrong:{seed}")
    cands = []
    for ci, (country, capital, the) in enumerate(CAPITALS):
        others = [c for j, (_, c, _) in enumerate(CAPITALS) if j != ci]
        for template in TEMPLATES:
            stem = template.replace("[ART]", " the" if the else "").replace("[SUBJECT]", country)
            for wrong in rng.sample(others, 3):
                cands.append((f"{stem} {capital}.", f"{stem} {wrong}.", ci))
    return _from_pairs("truth", cands, n, seed, ("false", "true"), cap=400)


@register_dataset("language")
def language(n: int | None, seed: int) -> LabelledDataset:
    """French (label 1) vs English (label 0) translations of the same simple sentence; the
    group is the sentence."""
    cands = [(fr, en, i) for i, (en, fr) in enumerate(LANGUAGE_PAIRS)]
    return _from_pairs("language", cands, n, seed, ("english", "french"))


@register_dataset("harmful")
def harmful(n: int | None, seed: int) -> LabelledDataset:
    """Harmful-style (label 1) vs benign requests on the same topic, for instruction-tuned
    models; the group is the pair. The harmful ones are mild and non-actionable."""
    cands = [(h, b, i) for i, (h, b) in enumerate(HARMFUL_PAIRS)]
    return _from_pairs("harmful", cands, n, seed, ("benign", "harmful"))


# -- user files ------------------------------------------------------------------------------
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def load_dataset_file(path: str | Path, text_field: str = "text", label_field: str = "label",
                      group_field: str | None = None) -> LabelledDataset:
    """Read a JSONL (one object per line; ``.jsonl``/``.json``) or CSV (``.csv``; ``.tsv``
    tab-separated) file of labelled texts.

    Labels may be 0/1, true/false (also yes/no, any case, or JSON booleans: true → 1), or any
    two distinct strings, which map to 0 and 1 in sorted order (``label_names`` records which).
    Without ``group_field`` every row is its own group. The file has no pairs.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"Dataset file {path} does not exist. Pass a .jsonl file (one JSON object per line) "
            f"or a .csv file with a header, holding fields {text_field!r} and {label_field!r}."
        )
    rows = _read_rows(path)
    if not rows:
        raise InputError(
            f"Dataset file {path} has no rows; it needs one row per text with fields "
            f"{text_field!r} and {label_field!r}."
        )
    wanted = [text_field, label_field] + ([group_field] if group_field else [])
    for i, row in enumerate(rows, 1):
        for f in wanted:
            if f not in row or row[f] is None:
                raise InputError(
                    f"Row {i} of {path} has no field {f!r}; its fields are "
                    f"{choices(sorted(row))}. Set text_field= / label_field= / group_field= to "
                    "the names your file uses."
                )
    labels, names = _map_labels([r[label_field] for r in rows], path)
    groups: dict[str, int] = {}
    group_ids = tuple(
        groups.setdefault(str(r[group_field]), len(groups)) if group_field else i
        for i, r in enumerate(rows)
    )
    return LabelledDataset(path.stem, tuple(str(r[text_field]) for r in rows), labels, group_ids,
                           (), names)


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"Line {i} of {path} is not valid JSON ({e.msg}).") from None
            if not isinstance(row, dict):
                raise InputError(f"Line {i} of {path} is a JSON {type(row).__name__}, not an "
                                 "object with named fields.")
            rows.append(row)
        return rows
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
    raise InputError(
        f"Cannot read {path}: unknown extension {suffix!r}. Use .jsonl/.json (JSON lines) or "
        ".csv/.tsv."
    )


def _map_labels(raw: list, path: Path) -> tuple[tuple[int, ...], tuple[str, str]]:
    keys = [str(v).strip() for v in raw]
    keys = ["1" if k.lower() in _TRUE else "0" if k.lower() in _FALSE else k for k in keys]
    values = sorted(set(keys))
    if len(values) == 1:
        raise InputError(
            f"Labels of one class only: all {len(raw)} rows are {raw[0]!r}; a probe needs two "
            f"classes. Add rows of the other class to {path}."
        )
    if len(values) > 2:
        shown = sorted({str(v) for v in raw})
        raise InputError(
            f"Labels in {path} take {len(shown)} values ({choices(shown[:10])}); a probe needs "
            "exactly two. Use 0/1, true/false, or two distinct strings (mapped to 0 and 1 in "
            "sorted order)."
        )
    if values == ["0", "1"]:
        boolish = any(isinstance(v, bool) or str(v).strip().lower() in ("true", "false", "yes",
                                                                            "no") for v in raw)
        names = ("false", "true") if boolish else ("0", "1")
        return tuple(int(k) for k in keys), names
    # Two arbitrary strings: sorted order, with the original spelling as the names.
    original = {k: str(v).strip() for k, v in zip(keys, raw, strict=True)}
    return tuple(values.index(k) for k in keys), (original[values[0]], original[values[1]])
