"""The shared data of feature labelling: examples, per-latent samples, and the explainer and judge
interfaces every implementation (rules, a local model, an OpenAI-compatible endpoint) follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Example:
    """One window of text and one latent's activation on each of its tokens."""

    ids: list[int]
    tokens: list[str]  # each token's decoded string
    acts: list[float]  # the latent's activation per token (0 where it does not fire)
    context: int  # index of the context (window) in the sampled text
    kind: str  # "top" | "quantile" | "random" | "hard" (hard negative: shares the latent's frequent tokens)

    @property
    def max(self) -> float:
        return max(self.acts, default=0.0)

    @property
    def fires(self) -> bool:
        return self.max > 0


@dataclass
class LatentSample:
    """Everything sampled for one latent; the explanation set and the scoring set come from
    disjoint contexts."""

    latent: int
    explain: list[Example]  # activating examples shown to the explainer (top first, then quantile-sampled)
    explain_neg: list[Example]  # non-activating examples the explainer may contrast with
    score_pos: list[Example]  # activating examples for the scorers
    score_neg: list[Example]  # non-activating ones (random and hard negatives) for the scorers
    density: float = 0.0  # fraction of sampled tokens it fires on
    notes: list[str] = field(default_factory=list)


class Explainer(Protocol):
    name: str

    def explain(self, sample: LatentSample) -> str:
        """A short explanation of what the latent responds to."""


class Judge(Protocol):
    name: str

    def detect(self, explanation: str, examples: list[Example]) -> list[float]:
        """P(the latent fires somewhere in the example), per example, given the explanation."""

    def fuzz(self, explanation: str, examples: list[Example], marked: list[list[int]]) -> list[float]:
        """P(the marked token positions are where the latent fires), per example."""
