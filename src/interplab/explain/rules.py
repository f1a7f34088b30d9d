"""A deterministic explainer and judge with no model: token-set rules.

Label format (``format_label``), one sentence with JSON lists in it::

    fires on the tokens [" cat", " dog", " mouse"]
    fires on the tokens [" cat"] and on the token pairs [[" New", " York"]]
    fires on no token it can name

Tokens are JSON strings (so quotes, spaces and newlines are unambiguous); a pair ``[a, b]``
means the latent fires on ``b`` when it follows ``a``. ``label_tokens`` / ``label_pairs`` read
them back (``parse_label``: None for a label not in this format, e.g. an LLM's free text).

``RuleExplainer``: over the explanation examples (activating and non-activating windows), every
token position is a data point: does the latent fire there? Candidates are the token strings
(and, with ``ngrams``, the (previous, current) string pairs) seen at firing positions. Greedy set
cover by F1: starting from the empty rule set, add the candidate whose union with the rules so
far gives the largest F1 of "the position matches a rule" predicting "the latent fires", until
``max_tokens`` rules or no candidate improves F1 (ties: more firing positions covered, then the
candidate seen first). A pair is kept only when it beats every single token, so pairs appear only
where the context matters.

``RuleJudge``: ``detect`` is 1.0 when the example contains one of the label's tokens (or pairs),
by exact match of token strings, else 0.0. For a label it cannot parse it falls back to words:
1.0 when a word of the label (lowercased, ``\\w+``, 3+ letters, minus a few stopwords) is a word
of the example's text. ``fuzz`` is 1.0 when the marked positions are exactly the positions the
label's rules match, else 0.0 (``graded=True``: their Jaccard overlap instead; both empty: 1.0).
The word fallback matches positions whose token holds one of the label's words.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from interplab.explain.types import Example, LatentSample

__all__ = ["RuleExplainer", "RuleJudge", "format_label", "label_pairs", "label_tokens", "parse_label"]

_TOKENS = "fires on the tokens "
_PAIRS = " and on the token pairs "
_NONE = "fires on no token it can name"
_WORD = re.compile(r"\w+")
_STOP = frozenset("the and for are but not you all any can her was one our out his has had have him how its "
                  "who did get may she use that this with from they will what when which their there these "
                  "those then than them into more some such only also fires fire firing token tokens words "
                  "word text latent feature on in of to".split())


def format_label(tokens: Sequence[str], pairs: Sequence[tuple[str, str]] = ()) -> str:
    """The label text of a rule set (see the module docstring)."""
    if not tokens and not pairs:
        return _NONE
    text = _TOKENS + json.dumps(list(tokens), ensure_ascii=False)
    if pairs:
        text += _PAIRS + json.dumps([list(p) for p in pairs], ensure_ascii=False)
    return text


def parse_label(label: str) -> tuple[list[str], list[tuple[str, str]]] | None:
    """``(tokens, pairs)`` of a rule label, or None when ``label`` is not one. The rule part may
    sit anywhere in the text (the first occurrence of "fires on the tokens [" is read)."""
    if _NONE in label:
        return [], []
    at = label.find(_TOKENS)
    if at < 0:
        return None
    dec = json.JSONDecoder()
    try:
        tokens, end = dec.raw_decode(label, at + len(_TOKENS))
        pairs: list = []
        if label.startswith(_PAIRS, end):
            pairs, _ = dec.raw_decode(label, end + len(_PAIRS))
    except json.JSONDecodeError:
        return None
    if not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
        return None
    if not (isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)
                                            for p in pairs)):
        return None
    return tokens, [(a, b) for a, b in pairs]


def label_tokens(label: str) -> list[str]:
    """The token strings a rule label names ([] for a label not in the rule format)."""
    parsed = parse_label(label)
    return [] if parsed is None else parsed[0]


def label_pairs(label: str) -> list[tuple[str, str]]:
    """The (previous, current) token pairs a rule label names."""
    parsed = parse_label(label)
    return [] if parsed is None else parsed[1]


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


@dataclass
class RuleExplainer:
    """Greedy token-set rules (see the module docstring)."""

    max_tokens: int = 8
    ngrams: bool = True
    name: str = "rules"

    def rules(self, sample: LatentSample) -> tuple[list[str], list[tuple[str, str]]]:
        """The rule set: (tokens, pairs) in the order they were added."""
        fires: list[bool] = []
        keys: list[tuple[str, tuple[str, str] | None]] = []  # per position: (token, (previous, token) or None)
        for ex in [*sample.explain, *sample.explain_neg]:
            for i, (tok, act) in enumerate(zip(ex.tokens, ex.acts)):
                fires.append(act != 0)
                keys.append((tok, (ex.tokens[i - 1], tok) if i > 0 else None))
        n_pos = sum(fires)
        if not n_pos:
            return [], []
        # candidates, in first-seen order, with the positions each matches (as int bitmasks)
        cands: dict[object, int] = {}
        for i, (tok, pair) in enumerate(keys):
            if fires[i]:
                cands.setdefault(tok, 0)
                if self.ngrams and pair is not None:
                    cands.setdefault(pair, 0)
        fire_mask = 0
        for i, (tok, pair) in enumerate(keys):
            if fires[i]:
                fire_mask |= 1 << i
            if tok in cands:
                cands[tok] |= 1 << i
            if self.ngrams and pair in cands:
                cands[pair] |= 1 << i
        covered = 0
        chosen: list[object] = []
        best_f1 = 0.0
        while len(chosen) < self.max_tokens:
            best = None
            for rank, (cand, pos) in enumerate(cands.items()):
                if cand in chosen:
                    continue
                union = covered | pos
                tp = (union & fire_mask).bit_count()
                f1 = _f1(tp, union.bit_count() - tp, n_pos - tp)
                key = (f1, tp, isinstance(cand, str), -rank)
                if best is None or key > best[0]:
                    best = (key, cand, union)
            if best is None or best[0][0] <= best_f1 + 1e-12:
                break
            best_f1 = best[0][0]
            chosen.append(best[1])
            covered = best[2]
        return [c for c in chosen if isinstance(c, str)], [c for c in chosen if isinstance(c, tuple)]

    def explain(self, sample: LatentSample) -> str:
        return format_label(*self.rules(sample))


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOP}


@dataclass
class RuleJudge:
    """Exact token-string matching of a rule label (word overlap for other labels)."""

    graded: bool = False
    name: str = "rules"

    def positions(self, explanation: str, example: Example) -> set[int]:
        """The positions of ``example`` the label's rules match."""
        parsed = parse_label(explanation)
        if parsed is None:
            words = _words(explanation)
            return {i for i, tok in enumerate(example.tokens) if _words(tok) & words}
        tokens, pairs = set(parsed[0]), set(parsed[1])
        toks = example.tokens
        return {i for i, tok in enumerate(toks) if tok in tokens or (i > 0 and (toks[i - 1], tok) in pairs)}

    def detect(self, explanation: str, examples: list[Example]) -> list[float]:
        parsed = parse_label(explanation)
        if parsed is None:
            words = _words(explanation)
            return [1.0 if words & _words("".join(ex.tokens)) else 0.0 for ex in examples]
        return [1.0 if self.positions(explanation, ex) else 0.0 for ex in examples]

    def fuzz(self, explanation: str, examples: list[Example], marked: list[list[int]]) -> list[float]:
        out = []
        for ex, marks in zip(examples, marked, strict=True):
            want, got = self.positions(explanation, ex), set(marks)
            if self.graded:
                union = want | got
                out.append(len(want & got) / len(union) if union else 1.0)
            else:
                out.append(1.0 if want == got else 0.0)
        return out
