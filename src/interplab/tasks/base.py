"""The task base class and the one generation loop every task shares.

A task proposes random candidate pairs (``propose``); the loop tokenizes each one, keeps it
only if both answers are single tokens, the clean and corrupt prompts have the same token
length and every named word sits at the same token positions in both (so activation patching
lines up), and stops at ``n`` pairs. ``on_multi_token`` decides whether a failing candidate is
dropped (and another drawn, up to a bounded number of attempts) or raises at once.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from interplab.core.errors import ConfigError
from interplab.runtime.inputs import encode
from interplab.tasks.config import TaskConfig
from interplab.tasks.data import TaskData
from interplab.tasks.tokens import check_appends_nothing, pieces, prompt_ids, token_positions, word_ids

log = logging.getLogger(__name__)

ATTEMPTS_PER_PAIR = 50  # candidates drawn per wanted pair before giving up


def _tokens(ids: list[int]) -> str:
    return f"{len(ids)} token" + ("" if len(ids) == 1 else "s")


@dataclass(frozen=True)
class Pair:
    """One candidate clean/corrupt pair, as text."""

    clean: str
    corrupt: str
    answer: str  # the clean prompt's next word, with its leading space (" Mary")
    wrong: str  # the corrupt prompt's answer, or the distractor
    clean_spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # named char spans
    corrupt_spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # same keys
    swaps: tuple[tuple[str, str], ...] = ()  # (clean word, corrupt word): named in errors
    info: dict = field(default_factory=dict)  # per-pair values that go into meta as lists


@dataclass(frozen=True)
class Kept:
    """A candidate that passed every check, with its token-level facts."""

    pair: Pair
    answer_id: int
    wrong_id: int
    length: int
    positions: dict[str, list[int]]


@dataclass(frozen=True)
class Problem:
    kind: str  # a short category, counted in the summary
    message: str  # what is wrong with this pair, naming the word and its tokens


class Task:
    """Base class: subclass, set ``name``, implement ``propose``; register with
    ``@register_task``. ``build(tokenizer, config)`` is the public entry point."""

    name: ClassVar[str] = ""
    hint: ClassVar[str] = ""  # extra advice when too few pairs survive
    single_token_spans: ClassVar[bool] = False  # named words must be exactly one token

    def __init__(self, tokenizer, config: TaskConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config

    def propose(self, rng: random.Random) -> Pair:
        raise NotImplementedError

    def check(self, pair: Pair, clean_ids: list[int], corrupt_ids: list[int],
              positions: dict[str, list[int]]) -> Problem | None:
        """Task-specific checks on a tokenized pair (none by default)."""
        return None

    def extra_meta(self, kept: list[Kept]) -> dict:
        """Task-wide meta entries (the per-pair ones come from ``Pair.info``)."""
        return {}

    @classmethod
    def build(cls, tokenizer, config: TaskConfig) -> TaskData:
        """Generate ``config.n`` aligned clean/corrupt pairs for this tokenizer."""
        if not isinstance(config, TaskConfig):
            raise ConfigError(f"{cls.name} needs a TaskConfig, got {type(config).__name__}.")
        if tokenizer is None:
            raise ConfigError(f"{cls.name} needs a tokenizer to check single-token answers.")
        check_appends_nothing(tokenizer)
        task = cls(tokenizer, config)
        return task._generate()

    def _generate(self) -> TaskData:
        cfg = self.config
        rng = random.Random(cfg.seed)
        kept: list[Kept] = []
        seen: set[tuple[str, str]] = set()
        dropped: Counter[str] = Counter()
        example: dict[str, str] = {}
        limit = ATTEMPTS_PER_PAIR * cfg.n + 100
        attempts = duplicates = 0
        while len(kept) < cfg.n and attempts < limit:
            attempts += 1
            pair = self.propose(rng)
            if (pair.clean, pair.corrupt) in seen:
                duplicates += 1
                continue
            seen.add((pair.clean, pair.corrupt))
            result = self._tokenize(pair)
            if isinstance(result, Problem):
                if cfg.on_multi_token == "raise":
                    raise ConfigError(
                        f"{self.name}: {result.message}. With on_multi_token='raise' such a pair "
                        "stops the build; set on_multi_token='filter' to drop it and draw another."
                    )
                dropped[result.kind] += 1
                example.setdefault(result.kind, result.message)
                continue
            kept.append(result)
        if len(kept) < cfg.n:
            reason = ""
            if dropped:
                kind, count = dropped.most_common(1)[0]
                reason = f" Most common reason ({count}x): {example[kind]}."
            raise ConfigError(
                f"{self.name}: only {len(kept)} of the {cfg.n} pairs asked for survived after "
                f"{attempts} candidates ({sum(dropped.values())} dropped by the tokenizer checks, "
                f"{duplicates} duplicates).{reason} Ask for fewer pairs (n) or use a tokenizer "
                f"that keeps these words whole.{self.hint}"
            )
        if dropped:
            log.info("%s: dropped %d candidate pairs (%s)", self.name, sum(dropped.values()),
                     dict(dropped))
        return self._assemble(kept, sum(dropped.values()))

    def _tokenize(self, pair: Pair) -> Kept | Problem:
        tok = self.tokenizer
        ids = {}
        for role, word in (("answer", pair.answer), ("wrong answer", pair.wrong)):
            ids[role] = word_ids(tok, word)
            if len(ids[role]) != 1:
                return Problem("multi-token answer", f"the {role} {word!r} is {_tokens(ids[role])} "
                               f"{pieces(tok, ids[role])!r}, not one")
        if ids["answer"] == ids["wrong answer"]:
            return Problem("same answer", f"the answer {pair.answer!r} and the wrong answer "
                           f"{pair.wrong!r} are the same token")
        clean_ids = prompt_ids(tok, pair.clean)
        corrupt_ids = prompt_ids(tok, pair.corrupt)
        if len(clean_ids) != len(corrupt_ids):
            return Problem("unequal lengths", self._length_message(pair, clean_ids, corrupt_ids))
        positions = {}
        for key, span in pair.clean_spans.items():
            here = token_positions(tok, pair.clean, clean_ids, span)
            there = token_positions(tok, pair.corrupt, corrupt_ids, pair.corrupt_spans[key])
            if not here or here != there or (self.single_token_spans and len(here) != 1):
                a, b = pair.clean[slice(*span)], pair.corrupt[slice(*pair.corrupt_spans[key])]
                return Problem("misaligned words", f"the {key} words {a!r} / {b!r} sit at token "
                               f"positions {here} / {there} of the clean / corrupt prompt"
                               + (" (each must be one token)" if self.single_token_spans else ""))
            positions[key] = here
        problem = self.check(pair, clean_ids, corrupt_ids, positions)
        if problem is not None:
            return problem
        return Kept(pair, ids["answer"][0], ids["wrong answer"][0], len(clean_ids), positions)

    def _length_message(self, pair: Pair, clean_ids: list[int], corrupt_ids: list[int]) -> str:
        tok = self.tokenizer
        culprits = []
        for a, b in pair.swaps:
            ta, tb = word_ids(tok, a), word_ids(tok, b)
            if len(ta) != len(tb):
                culprits.append(f"{a!r} is {_tokens(ta)} {pieces(tok, ta)!r} but {b!r} is "
                                f"{_tokens(tb)} {pieces(tok, tb)!r}")
        detail = "; ".join(culprits) or (
            f"tokens {pieces(tok, clean_ids)!r} vs {pieces(tok, corrupt_ids)!r}"
        )
        return (f"the clean prompt {pair.clean!r} is {len(clean_ids)} tokens but the corrupt "
                f"prompt {pair.corrupt!r} is {len(corrupt_ids)}: {detail}")

    def _assemble(self, kept: list[Kept], n_dropped: int) -> TaskData:
        clean_text = [k.pair.clean for k in kept]
        corrupt_text = [k.pair.corrupt for k in kept]
        clean = encode(self.tokenizer, clean_text)
        corrupt = encode(self.tokenizer, corrupt_text)
        meta: dict = {
            "answer_words": [k.pair.answer for k in kept],
            "wrong_words": [k.pair.wrong for k in kept],
            "end_positions": [k.length - 1 for k in kept],
        }
        for key in kept[0].positions:
            per = [k.positions[key] for k in kept]
            meta[f"{key}_positions"] = [p[0] for p in per] if self.single_token_spans else per
        for key in kept[0].pair.info:
            meta[key] = [k.pair.info[key] for k in kept]
        meta.update(self.extra_meta(kept))
        return TaskData(
            name=self.name,
            clean=clean,
            corrupt=corrupt,
            answers=torch.tensor([k.answer_id for k in kept], dtype=torch.long),
            wrong=torch.tensor([k.wrong_id for k in kept], dtype=torch.long),
            clean_text=clean_text,
            corrupt_text=corrupt_text,
            meta=meta,
            n_dropped=n_dropped,
            config=self.config,
        )
