"""Greater-than (Hanna, Liu & Variengien 2023, "How does GPT-2 compute greater-than?",
arXiv:2305.00586).

"The war lasted from the year 1732 to the year 17" → a year after 32. Following the paper,
the prompt is "The [NOUN] lasted from the year [XX][YY] to the year [XX]" with an event noun,
a century XX in 11..17 and a start year YY; the corrupt prompt is the paper's "01-dataset":
the same sentence with YY = 01, which leaves the end year unconstrained.

Tokenizers differ in how they cut numbers, so there are two units (``TaskConfig.year_unit``):

- ``pair`` (GPT-2 style, the paper's setting): "1732" is the tokens "17" "32" and the next
  token is a two-digit year. YY is drawn from 02..98; ``answers`` is YY+1 (the smallest
  correct year), ``wrong`` is YY−1 (the largest incorrect one: the hardest distractor).
  ``meta["year_tokens"][y]`` is the id of the two-digit token y (−1 if not one token); the
  paper's probability difference is Σ_{y>YY} p(y) − Σ_{y≤YY} p(y).
- ``digit`` (SmolLM2, Gemma, Llama: one token per digit): the next token is the tens digit t
  of the end year. YY is drawn from 10..89; ``answers`` is t+1 (certainly later), ``wrong`` is
  t−1 (certainly earlier); ``meta["year_tokens"][d]`` is the id of digit d, and the analogue of
  the metric is Σ_{d>t} p(d) − Σ_{d<t} p(d) (digit t itself is ambiguous).

``auto`` picks ``pair`` when "50" and "01" are single tokens. ``meta`` also holds the per-pair
``years`` (YY), ``centuries`` (XX), ``nouns`` and ``year_positions`` (the YY tokens, which is
where clean and corrupt differ).
"""

from __future__ import annotations

import random

from interplab.tasks.base import Kept, Pair, Problem, Task
from interplab.tasks.registry import register_task
from interplab.tasks.tokens import fill, word_ids

TEMPLATE = "The [NOUN] lasted from the year [XX][YY] to the year [XX]"
CENTURIES = tuple(range(11, 18))
CORRUPT_YEAR = "01"

# Event nouns of the kind the paper uses: things that last and that a year can bound.
NOUNS = (
    "abduction", "accord", "affair", "agreement", "assessment", "attack", "campaign",
    "captivity", "case", "challenge", "chaos", "clash", "collaboration", "competition",
    "conflict", "conspiracy", "construction", "contract", "cooperation", "crisis", "deal",
    "decline", "development", "dispute", "dynasty", "effort", "epidemic", "expansion",
    "expedition", "famine", "friendship", "growth", "hardship", "invasion", "investigation",
    "journey", "marriage", "negotiations", "occupation", "operation", "partnership", "period",
    "pilgrimage", "plague", "project", "rebellion", "recession", "reform", "reign",
    "relationship", "research", "resistance", "revolution", "rule", "siege", "strike",
    "struggle", "study", "trial", "war",
)


@register_task
class GreaterThan(Task):
    """Year comparison with the 01 corruption (Hanna et al. 2023)."""

    name = "greater_than"
    hint = " For greater_than, try year_unit='digit' if this tokenizer splits numbers into digits."

    def __init__(self, tokenizer, config) -> None:
        super().__init__(tokenizer, config)
        unit = config.year_unit
        if unit == "auto":
            whole = all(len(word_ids(tokenizer, w)) == 1 for w in ("50", CORRUPT_YEAR))
            unit = "pair" if whole else "digit"
        self.unit = unit

    def propose(self, rng: random.Random) -> Pair:
        noun = rng.choice(NOUNS)
        century = str(rng.choice(CENTURIES))
        if self.unit == "pair":
            year = rng.randint(2, 98)
            answer, wrong = f"{year + 1:02d}", f"{year - 1:02d}"
        else:
            year = rng.randint(10, 89)
            answer, wrong = str(year // 10 + 1), str(year // 10 - 1)
        yy = f"{year:02d}"
        clean, cs = fill(TEMPLATE, {"NOUN": noun, "XX": century, "YY": yy})
        corrupt, ks = fill(TEMPLATE, {"NOUN": noun, "XX": century, "YY": CORRUPT_YEAR})
        return Pair(
            clean, corrupt, answer=answer, wrong=wrong,
            clean_spans={"year": cs["YY"][0]}, corrupt_spans={"year": ks["YY"][0]},
            swaps=((f" {century}{yy}", f" {century}{CORRUPT_YEAR}"),),
            info={"years": year, "centuries": int(century), "nouns": noun},
        )

    def check(self, pair, clean_ids, corrupt_ids, positions) -> Problem | None:
        # The paper keeps only years cut as [XX][YY], so the YY token is where the year lives.
        year = pair.clean[slice(*pair.clean_spans["year"])]
        found = [self.tokenizer.decode([clean_ids[p]]) for p in positions["year"]]
        if self.unit == "pair" and found != [year]:
            return Problem("year not one token", f"the year in {pair.clean!r} is cut as "
                           f"{found!r}, not as century + the one token {year!r} that "
                           "year_unit='pair' needs")
        return None

    def extra_meta(self, kept: list[Kept]) -> dict:
        width = 2 if self.unit == "pair" else 1
        tokens = []
        for value in range(10**width):
            ids = word_ids(self.tokenizer, f"{value:0{width}d}")
            tokens.append(ids[0] if len(ids) == 1 else -1)
        return {"year_unit": self.unit, "year_tokens": tokens}
