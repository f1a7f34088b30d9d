"""Rewards read from a model's internals: a probe's score, a dictionary latent, a direction.

Each computes a per-token score on the completion's tokens (from an ``InternalsReader``, by
default over a frozen copy of the reference model, under ``torch.no_grad``) and reduces it over
the completion: ``mean``, ``last`` or ``max``. ``sign=-1`` turns a reward into a penalty
(applied after the reduction: a max-reduced penalty is ``-max``).
Probe rewards follow the probe-as-reward line of work (e.g. probes on a frozen model rewarding
truthful or penalising deceptive completions); their known failure modes — the policy evading
the detector, activations drifting so the probe no longer reads them, and spurious features —
are what ``interplab.rl``'s monitors and ``token_attribution`` are there to catch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from interplab.analyses.probes import Probe
from interplab.analyses.steering import SteeringVector
from interplab.core.errors import ConfigError, InputError, choices
from interplab.core.sites import Site
from interplab.dictionary.base import Dictionary
from interplab.dictionary.formats import load_dictionary

from .base import RewardFn
from .reference import InternalsReader

REDUCES = ("mean", "last", "max")


def _check_reduce(reduce: str, what: str, allowed=REDUCES) -> str:
    if reduce not in allowed:
        raise ConfigError(f"{what}: unknown reduce {reduce!r}; valid: {choices(allowed)}.")
    return reduce


def _check_reader(reader, what: str) -> InternalsReader:
    if not isinstance(reader, InternalsReader):
        raise ConfigError(f"{what} needs an InternalsReader (InternalsReader(model)); got "
                          f"{type(reader).__name__}.")
    return reader


def _check_sign(sign) -> float:
    if sign not in (1, -1, 1.0, -1.0):
        raise ConfigError(f"sign must be +1 (reward) or -1 (penalty); got {sign!r}.")
    return float(sign)


class InternalsReward(RewardFn):
    """A reward reduced from per-token scores at one site (subclasses define ``token_score``)."""

    site: Site
    reduce: str
    sign: float
    reader: InternalsReader

    def token_score(self, acts: torch.Tensor) -> torch.Tensor:
        """[n_tokens, d] activations → [n_tokens] float64 scores (before the sign)."""
        raise NotImplementedError

    def raw_token_scores(self, prompts: list[str], completions: list[str]) -> list[torch.Tensor]:
        """Per example, the per-token scores over the completion's tokens, before the sign."""
        acts = self.reader.completion_acts(prompts, completions, [self.site])
        return [self.token_score(a[self.site]).double() for a in acts]

    def token_scores(self, prompts: list[str], completions: list[str]) -> list[torch.Tensor]:
        """Per example, the signed per-token scores (their mean is a mean-reduced reward)."""
        return [self.sign * s for s in self.raw_token_scores(prompts, completions)]

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        # The sign applies after the reduction: a max-reduced penalty is -max, not max(-score).
        out = []
        for s in self.raw_token_scores(prompts, completions):
            v = s.mean() if self.reduce == "mean" else s[-1] if self.reduce == "last" else s.max()
            out.append(self.sign * float(v))
        return out


class ProbeReward(InternalsReward):
    """A saved linear probe's decision function ``x·w + b`` on each completion token, reduced."""

    def __init__(self, probe, reader: InternalsReader, reduce: str = "mean", sign: float = 1,
                 name: str | None = None, empty_value: float | None = None) -> None:
        label = str(probe) if isinstance(probe, (str, Path)) else "probe"
        if isinstance(probe, (str, Path)):
            probe = Probe.load(probe)
        if not isinstance(probe, Probe):
            raise ConfigError(f"ProbeReward needs a Probe or the path of a saved probe; got "
                              f"{type(probe).__name__}.")
        self.name = name or f"probe:{Path(label).name}"
        if not probe.site:
            raise ConfigError(f"probe {self.name!r} has no site; set probe.site (e.g. "
                              "'L3.resid_post') before using it as a reward.")
        self.reader = _check_reader(reader, f"probe {self.name!r}")
        self.tokenizer = self.reader.tokenizer
        self.site = self.reader.check_site(probe.site, f"probe {self.name!r}", probe.d)
        self.probe = probe
        self.reduce = _check_reduce(reduce, f"probe {self.name!r}")
        self.sign = _check_sign(sign)
        self.empty_value = empty_value

    def token_score(self, acts: torch.Tensor) -> torch.Tensor:
        return self.probe.score(acts)


class FeatureReward(InternalsReward):
    """A dictionary latent's activation (``encode(x)[:, latent]``) on completion tokens, reduced."""

    def __init__(self, dictionary, latent: int, reader: InternalsReader, reduce: str = "mean",
                 sign: float = 1, name: str | None = None, empty_value: float | None = None) -> None:
        label = Path(str(dictionary)).name if isinstance(dictionary, (str, Path)) else "dictionary"
        if isinstance(dictionary, (str, Path)):
            dictionary = load_dictionary(dictionary)
        if not isinstance(dictionary, Dictionary):
            raise ConfigError(f"FeatureReward needs a Dictionary or the path of one; got "
                              f"{type(dictionary).__name__}.")
        self.name = name or f"feature:{label}[{latent}]"
        if not isinstance(latent, int) or not 0 <= latent < dictionary.cfg.d_sae:
            raise ConfigError(f"feature {self.name!r}: latent {latent!r} is out of range; the "
                              f"dictionary has d_sae={dictionary.cfg.d_sae} latents (valid 0.."
                              f"{dictionary.cfg.d_sae - 1}).")
        if not dictionary.cfg.input_site:
            raise ConfigError(f"feature {self.name!r}: the dictionary records no input_site; "
                              "load it with load_dictionary(path, input_site=...).")
        self.reader = _check_reader(reader, f"feature {self.name!r}")
        self.tokenizer = self.reader.tokenizer
        self.site = self.reader.check_site(dictionary.cfg.input_site, f"dictionary {self.name!r}",
                                           dictionary.cfg.d_in)
        self.dictionary = dictionary.eval().requires_grad_(False)
        self.latent = latent
        self.reduce = _check_reduce(reduce, f"feature {self.name!r}", ("mean", "max", "last"))
        self.sign = _check_sign(sign)
        self.empty_value = empty_value

    @torch.no_grad()
    def token_score(self, acts: torch.Tensor) -> torch.Tensor:
        d = self.dictionary
        return d.encode(acts.to(d.W_enc.device, d.W_enc.dtype))[:, self.latent].double().cpu()


class DirectionReward(InternalsReward):
    """The projection of each completion token's activation on a unit direction, reduced."""

    def __init__(self, vector, site: str | Site | None, reader: InternalsReader,
                 reduce: str = "mean", sign: float = 1, name: str | None = None,
                 empty_value: float | None = None) -> None:
        label = Path(str(vector)).name if isinstance(vector, (str, Path)) else "vector"
        if isinstance(vector, (str, Path)):
            vector = SteeringVector.load(vector)
        if isinstance(vector, SteeringVector):
            if site is None:
                site = vector.site
            key = Site.parse(site)
            if key not in vector.vectors:
                raise ConfigError(f"The steering vector {label!r} has no vector at {key}; it has "
                                  f"{choices(str(s) for s in vector.sites)}.")
            vector = vector.vectors[key]
        self.name = name or f"direction:{label}"
        if site is None:
            raise ConfigError(f"direction {self.name!r}: give the site a raw tensor is read at, "
                              "e.g. site='L3.resid_post'.")
        vec = torch.as_tensor(vector).detach().double().cpu()
        if vec.ndim != 1 or vec.numel() == 0:
            raise ConfigError(f"direction {self.name!r} must be one vector [d]; got shape "
                              f"{tuple(vec.shape)}.")
        norm = float(vec.norm())
        if not norm > 0 or not torch.isfinite(vec).all():
            raise ConfigError(f"direction {self.name!r} has norm {norm}; it needs a finite, "
                              "non-zero vector.")
        self.reader = _check_reader(reader, f"direction {self.name!r}")
        self.tokenizer = self.reader.tokenizer
        self.site = self.reader.check_site(site, f"direction {self.name!r}", vec.numel())
        self.unit = vec / norm
        self.reduce = _check_reduce(reduce, f"direction {self.name!r}")
        self.sign = _check_sign(sign)
        self.empty_value = empty_value

    def token_score(self, acts: torch.Tensor) -> torch.Tensor:
        return acts.double() @ self.unit


def token_attribution(reward: InternalsReward, prompt, completion) -> list[tuple[str, float]]:
    """Each completion token's share of a mean-reduced internals reward: ``(token, score_t / n)``;
    the shares sum to the reward. Names the tokens a reward is paying for (a spurious token that
    a probe latched onto shows up as the largest share)."""
    if not isinstance(reward, InternalsReward):
        raise InputError(f"token_attribution needs a probe, feature or direction reward; got "
                         f"{type(reward).__name__} {getattr(reward, 'name', '')!r}.")
    if reward.reduce != "mean":
        raise InputError(f"token_attribution splits a mean over tokens; reward {reward.name!r} "
                         f"uses reduce={reward.reduce!r}. Build it with reduce='mean'.")
    from .base import message_text, prompt_texts

    p = prompt_texts([prompt], reward.tokenizer)[0]
    c = message_text(completion, None if isinstance(completion, str) else "assistant")
    scores = reward.token_scores([p], [c])[0]
    toks = reward.reader.completion_tokens(c)
    n = len(scores)
    return [(t, float(s) / n) for t, s in zip(toks, scores.tolist(), strict=True)]
