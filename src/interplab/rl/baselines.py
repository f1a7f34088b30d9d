"""Baseline rewards that do not read a probe: a verifier, a sentiment lexicon, novelty (RND).

* ``VerifierReward`` — a task-outcome checker ``check(prompt, completion) -> float | bool``.
* ``VaderReward`` — an independent reward model: VADER's compound sentiment score in [-1, 1]
  (Hutto & Gilbert 2014), a rule-based lexicon, so it shares nothing with the policy's weights.
* ``NoveltyReward`` — random network distillation (Burda et al. 2018, "Exploration by Random
  Network Distillation"): a fixed random target MLP and a predictor MLP trained online on what it
  has seen; the reward is the predictor's error on the completion's mean activation, high for
  inputs unlike those seen before. Seeded, so two runs give the same rewards.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from interplab.core.errors import ConfigError, MissingDependencyError

from .base import RewardFn
from .reference import InternalsReader


class VerifierReward(RewardFn):
    """``check(prompt, completion)`` as a float (True → 1.0, False → 0.0)."""

    def __init__(self, check: Callable[[str, str], float | bool], name: str = "verifier",
                 empty_value: float | None = None) -> None:
        if not callable(check):
            raise ConfigError(f"VerifierReward needs a callable check(prompt, completion); got "
                              f"{type(check).__name__}.")
        self.check = check
        self.name = name
        self.empty_value = empty_value

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [float(self.check(p, c)) for p, c in zip(prompts, completions, strict=True)]


class VaderReward(RewardFn):
    """VADER's compound sentiment of the completion text, in [-1, 1] (positive = positive)."""

    def __init__(self, name: str = "vader", sign: float = 1, empty_value: float | None = None) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise MissingDependencyError("VaderReward needs vaderSentiment: pip install "
                                         "'interplab[rl]' (or vaderSentiment).") from None
        self.analyzer = SentimentIntensityAnalyzer()
        self.name = name
        self.sign = float(sign)
        self.empty_value = empty_value

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [self.sign * self.analyzer.polarity_scores(c)["compound"] for c in completions]


def _mlp(d_in: int, hidden: int, d_out: int, gen: torch.Generator) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / max(p.shape[-1], 1) ** 0.5)
    return net


class NoveltyReward(RewardFn):
    """Random network distillation over the completion's mean activation at ``site``.

    reward = mean squared error between a fixed random target network and a predictor, on the
    standardised (zero mean, unit variance over features) mean activation; after scoring a
    batch, the predictor takes ``updates`` Adam steps on it, so repeated inputs stop paying.
    """

    def __init__(self, reader: InternalsReader, site, hidden: int = 64, out: int = 16,
                 lr: float = 1e-2, updates: int = 1, seed: int = 0, scale: float = 1.0,
                 name: str = "novelty", empty_value: float | None = None) -> None:
        if not isinstance(reader, InternalsReader):
            raise ConfigError(f"NoveltyReward needs an InternalsReader; got {type(reader).__name__}.")
        for key, v in (("hidden", hidden), ("out", out)):
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"novelty {name!r}: {key}={v!r} must be a positive integer.")
        if not lr > 0 or not isinstance(updates, int) or updates < 0:
            raise ConfigError(f"novelty {name!r}: lr={lr!r} must be > 0 and updates={updates!r} "
                              ">= 0.")
        self.name = name
        self.reader = reader
        self.tokenizer = reader.tokenizer
        self.site = reader.check_site(site, f"novelty {name!r}")
        d = int(reader.model.site_shape(self.site)[0])
        gen = torch.Generator().manual_seed(seed)
        self.target = _mlp(d, hidden, out, gen).requires_grad_(False)
        self.predictor = _mlp(d, hidden, out, gen)
        self.opt = torch.optim.Adam(self.predictor.parameters(), lr=lr)
        self.updates = updates
        self.scale = float(scale)
        self.empty_value = empty_value

    def features(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        acts = self.reader.completion_acts(prompts, completions, [self.site])
        x = torch.stack([a[self.site].double().mean(0) for a in acts])
        return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6)

    def error(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.predictor(x) - self.target(x)) ** 2).mean(-1)

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        x = self.features(prompts, completions)
        with torch.no_grad():
            r = self.scale * self.error(x)
        with torch.enable_grad():
            for _ in range(self.updates):
                self.opt.zero_grad()
                self.error(x).mean().backward()
                self.opt.step()
        return r.tolist()
