"""Induction on repeated random tokens (Olsson et al. 2022, "In-context Learning and Induction
Heads", transformer-circuits.pub; Elhage et al. 2021).

A sequence r of L random tokens is followed by its first L−1 tokens again; an induction head
completes the repeat with r[L−1] (``answers``). The corrupt prompt keeps r but replaces the
second half by L−1 fresh random tokens s, so there is nothing to copy; ``wrong`` is s[L−1], the
token that would continue that fresh sequence — a random token absent from both prompts, the
control for a logit difference. r and s are distinct tokens throughout.

Tokens are drawn from the tokenizer's own whole-word tokens (" apple": a space and 3–12
lowercase letters that re-encode to that one token), so the prompts are ordinary text that
tokenizes back to exactly the drawn ids, with the tokenizer's own special tokens (BOS) in
front as ``encode`` adds them; a pair whose text does not round-trip is dropped. ``meta``:
``sequences`` (r as ids), ``fresh_sequences`` (s as ids), ``repeat_starts`` (the prompt
position where the second half starts) and ``seq_len``.
"""

from __future__ import annotations

import random
import re

from interplab.core.errors import ConfigError
from interplab.tasks.base import Kept, Pair, Problem, Task
from interplab.tasks.registry import register_task
from interplab.tasks.tokens import word_ids

WORD = re.compile(r" [a-z]{3,12}")
DRAWS_PER_TOKEN = 200  # random ids tried per needed token before concluding there are none


@register_task
class Induction(Task):
    """Repeated random tokens; the corrupt replaces the repeat by fresh tokens."""

    name = "induction"

    def __init__(self, tokenizer, config) -> None:
        super().__init__(tokenizer, config)
        self.vocab_size = len(tokenizer)
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.words: dict[int, str | None] = {}  # id → its word, or None if not a word token

    def _word(self, i: int) -> str | None:
        if i not in self.words:
            text = self.tokenizer.decode([i])
            ok = i not in self.special and WORD.fullmatch(text) and word_ids(self.tokenizer, text) == [i]
            self.words[i] = text if ok else None
        return self.words[i]

    def _draw(self, rng: random.Random, k: int, exclude: set[int]) -> list[int]:
        out: list[int] = []
        for _ in range(DRAWS_PER_TOKEN * k):
            i = rng.randrange(self.vocab_size)
            if i not in exclude and i not in out and self._word(i) is not None:
                out.append(i)
                if len(out) == k:
                    return out
        raise ConfigError(
            f"induction: found only {len(out)} of {k} word tokens (a space and 3-12 lowercase "
            f"letters, like ' apple') in {DRAWS_PER_TOKEN * k} random draws from this tokenizer's "
            f"{self.vocab_size} ids; it has too few such tokens. Lower induction_length."
        )

    def propose(self, rng: random.Random) -> Pair:
        length = self.config.induction_length
        r = self._draw(rng, length, set())
        s = self._draw(rng, length, set(r))
        clean = "".join(self.words[i] for i in r + r[:-1])
        corrupt = "".join(self.words[i] for i in r + s[:-1])
        return Pair(clean, corrupt, answer=self.words[r[-1]], wrong=self.words[s[-1]],
                    info={"sequences": r, "fresh_sequences": s})

    def check(self, pair, clean_ids, corrupt_ids, positions) -> Problem | None:
        r, s = pair.info["sequences"], pair.info["fresh_sequences"]
        for ids, want, which in ((clean_ids, r + r[:-1], "clean"), (corrupt_ids, r + s[:-1], "corrupt")):
            if ids[len(ids) - len(want) :] != want:
                return Problem("no round trip", f"the {which} prompt {getattr(pair, which)!r} does "
                               "not tokenize back to the drawn token ids")
        return None

    def extra_meta(self, kept: list[Kept]) -> dict:
        length = self.config.induction_length
        return {"seq_len": length, "repeat_starts": [k.length - (length - 1) for k in kept]}
