"""The one config every task takes: how many clean/corrupt pairs, the seed, what to do with
words the tokenizer splits, and the few task-specific knobs."""

from __future__ import annotations

from dataclasses import dataclass

from interplab.core.config import param
from interplab.core.errors import ConfigError, choices

ON_MULTI_TOKEN = ("filter", "raise")
IOI_ORDERS = ("both", "ABBA", "BABA")
YEAR_UNITS = ("auto", "pair", "digit")


@dataclass(frozen=True)
class TaskConfig:
    """How to generate a task's prompt pairs (shared by every registered task)."""

    n: int = param(help="Number of clean/corrupt prompt pairs to generate.")
    seed: int = param(0, help="Random seed; the same seed and tokenizer give the same pairs.")
    on_multi_token: str = param(
        "filter",
        help="What to do with a pair whose answer words are not single tokens or whose clean and "
        "corrupt prompts differ in token length: 'filter' drops it and draws another, 'raise' "
        "stops with an error naming the word.",
    )
    ioi_order: str = param(
        "both", help="ioi only: name order of the templates, 'ABBA', 'BABA' or 'both' (half each "
        "on average)."
    )
    induction_length: int = param(
        10, help="induction only: length L of the random token sequence that is repeated."
    )
    year_unit: str = param(
        "auto",
        help="greater_than only: 'pair' (two-digit year tokens, as GPT-2 has), 'digit' (tokenizers "
        "that split numbers into single digits) or 'auto' (pair if '50' is one token).",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"TaskConfig.n must be an integer >= 1 (pairs to make), got {self.n!r}.")
        if self.on_multi_token not in ON_MULTI_TOKEN:
            raise ConfigError(
                f"TaskConfig.on_multi_token={self.on_multi_token!r} is not a known policy. "
                f"Valid choices: {choices(ON_MULTI_TOKEN)}."
            )
        if self.ioi_order not in IOI_ORDERS:
            raise ConfigError(
                f"TaskConfig.ioi_order={self.ioi_order!r} is not a known order. "
                f"Valid choices: {choices(IOI_ORDERS)}."
            )
        if self.year_unit not in YEAR_UNITS:
            raise ConfigError(
                f"TaskConfig.year_unit={self.year_unit!r} is not a known unit. "
                f"Valid choices: {choices(YEAR_UNITS)}."
            )
        if self.induction_length < 2:
            raise ConfigError(
                f"TaskConfig.induction_length must be >= 2 (a repeat needs a token to predict), "
                f"got {self.induction_length}."
            )
