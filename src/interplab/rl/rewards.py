"""Reward functions for RL from model internals, with baselines, combinations and a builder.

Every reward has TRL's reward-function signature ``fn(prompts, completions, **kw) -> list[float]``
(see ``base.RewardFn``), so it plugs into ``GRPOTrainer(reward_funcs=[...])`` as is:

* from internals (``internals``): ``ProbeReward``, ``FeatureReward``, ``DirectionReward`` —
  read through an ``InternalsReader`` (``reference``), a frozen copy of the reference model by
  default, under ``torch.no_grad``; ``token_attribution`` splits a mean-reduced one over tokens;
* baselines (``baselines``): ``VerifierReward``, ``VaderReward``, ``NoveltyReward`` (RND);
* ``Combined``: a weighted sum whose weight-0 parts are monitors, computed and logged only.

``build_reward(spec, policy_model)`` builds any of them from a config dict.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from interplab.core.errors import ConfigError, choices, closest

from .base import RewardFn, check_finite, message_text, prompt_texts
from .baselines import NoveltyReward, VaderReward, VerifierReward
from .internals import DirectionReward, FeatureReward, InternalsReward, ProbeReward, token_attribution
from .reference import InternalsReader

__all__ = ["KINDS", "Combined", "DirectionReward", "FeatureReward", "InternalsReader",
           "InternalsReward", "NoveltyReward", "ProbeReward", "RewardFn", "VaderReward",
           "VerifierReward", "build_reward", "message_text", "token_attribution"]


class Combined(RewardFn):
    """``sum(weight * part)`` over ``parts``; parts of weight 0 are monitors: computed and kept
    in ``self.last`` (name → that call's values, every part) but adding nothing."""

    def __init__(self, parts: list[tuple[RewardFn, float]], name: str = "combined") -> None:
        if not parts:
            raise ConfigError("Combined needs at least one (reward, weight) part.")
        seen: dict[str, int] = {}
        self.parts: list[tuple[str, RewardFn, float]] = []
        for i, part in enumerate(parts):
            if not (isinstance(part, tuple | list) and len(part) == 2 and callable(part[0])):
                raise ConfigError(f"Combined part {i} must be (reward_fn, weight); got {part!r}.")
            fn, w = part
            try:
                w = float(w)
            except (TypeError, ValueError):
                raise ConfigError(f"Combined part {i}: weight {w!r} is not a number.") from None
            base = getattr(fn, "name", None) or getattr(fn, "__name__", f"part{i}")
            seen[base] = seen.get(base, 0) + 1
            label = base if seen[base] == 1 else f"{base}#{seen[base]}"
            self.parts.append((label, fn, w))
        self.name = name
        self.last: dict[str, list[float]] = {}
        self.tokenizer = next((getattr(f, "tokenizer", None) for _, f, _ in self.parts
                               if getattr(f, "tokenizer", None) is not None), None)

    @property
    def weights(self) -> dict[str, float]:
        return {label: w for label, _, w in self.parts}

    @property
    def monitors(self) -> list[str]:
        return [label for label, _, w in self.parts if w == 0]

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        last = {}
        total = [0.0] * len(completions)
        for label, fn, w in self.parts:
            vals = [float(v) for v in fn(prompts, completions, **kwargs)]
            last[label] = vals
            if w != 0:
                total = [t + w * v for t, v in zip(total, vals, strict=True)]
        self.last = last
        check_finite(self.name, total, prompt_texts(prompts, self.tokenizer))
        return total

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        return self(prompts, completions)


# -- building from a config ------------------------------------------------------------------------
KINDS = ("probe", "feature", "direction", "vader", "verifier", "novelty", "combined")
_KEYS = {
    "probe": {"path", "reduce", "sign", "name", "frozen", "empty_value"},
    "feature": {"path", "latent", "reduce", "sign", "name", "frozen", "empty_value"},
    "direction": {"path", "vector", "site", "reduce", "sign", "name", "frozen", "empty_value"},
    "vader": {"name", "sign", "empty_value"},
    "verifier": {"check", "name", "empty_value"},
    "novelty": {"site", "hidden", "out", "lr", "updates", "seed", "scale", "name", "frozen",
                "empty_value"},
    "combined": {"parts", "name"},
}


def _resolve(path, artifacts_dir) -> Path:
    p = Path(str(path))
    if not p.is_absolute() and artifacts_dir is not None:
        p = Path(artifacts_dir) / p
    if not p.exists():
        raise ConfigError(f"Reward artifact {str(p)!r} does not exist"
                          f"{'' if artifacts_dir is None else f' (relative to {artifacts_dir})'}.")
    return p


def _check_fn(spec) -> object:
    check = spec.get("check")
    if callable(check):
        return check
    if isinstance(check, str) and ":" in check:
        module, _, attr = check.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"verifier check {check!r} cannot be imported: {e}.") from None
        if callable(fn):
            return fn
    raise ConfigError(f"A verifier needs 'check': a callable check(prompt, completion) or "
                      f"'module:function'; got {check!r}.")


def build_reward(spec: dict, policy_model, artifacts_dir=None, _readers=None) -> RewardFn:
    """A reward from ``{"kind": ..., ...}``. Paths are relative to ``artifacts_dir``. Internals
    rewards read a frozen copy of ``policy_model`` (one copy shared by every part) unless the
    spec says ``"frozen": false``."""
    if not isinstance(spec, dict):
        raise ConfigError(f"A reward spec is a dict with a 'kind'; got {type(spec).__name__}.")
    kind = spec.get("kind")
    if kind not in KINDS:
        near = closest(kind, KINDS)
        raise ConfigError(f"Unknown reward kind {kind!r}"
                          f"{f' (did you mean {near!r}?)' if near else ''}; valid kinds: "
                          f"{choices(KINDS)}.")
    unknown = sorted(set(spec) - _KEYS[kind] - {"kind"})
    if unknown:
        raise ConfigError(f"Reward of kind {kind!r}: unknown keys {unknown}; valid: "
                          f"{sorted(_KEYS[kind])}.")
    readers = {} if _readers is None else _readers

    def reader() -> InternalsReader:
        frozen = bool(spec.get("frozen", True))
        if frozen not in readers:
            readers[frozen] = InternalsReader(policy_model, frozen=frozen)
        return readers[frozen]

    common = {k: spec[k] for k in ("name", "empty_value") if k in spec}
    if kind == "probe":
        return ProbeReward(_resolve(spec.get("path"), artifacts_dir), reader(),
                           spec.get("reduce", "mean"), spec.get("sign", 1), **common)
    if kind == "feature":
        if "latent" not in spec:
            raise ConfigError("A feature reward needs 'latent' (an index into the dictionary).")
        return FeatureReward(_resolve(spec.get("path"), artifacts_dir), spec["latent"], reader(),
                             spec.get("reduce", "mean"), spec.get("sign", 1), **common)
    if kind == "direction":
        vec = spec.get("vector")
        vec = _resolve(spec.get("path"), artifacts_dir) if vec is None else vec
        return DirectionReward(vec, spec.get("site"), reader(), spec.get("reduce", "mean"),
                               spec.get("sign", 1), **common)
    if kind == "vader":
        return VaderReward(sign=spec.get("sign", 1), **common)
    if kind == "verifier":
        return VerifierReward(_check_fn(spec), **common)
    if kind == "novelty":
        if "site" not in spec:
            raise ConfigError("A novelty reward needs 'site', e.g. 'L3.resid_post'.")
        kw = {k: spec[k] for k in ("hidden", "out", "lr", "updates", "seed", "scale") if k in spec}
        return NoveltyReward(reader(), spec["site"], **kw, **common)
    parts = spec.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ConfigError("A combined reward needs 'parts': a list of reward specs, each with a "
                          "'weight' (0 = monitor, logged only).")
    built = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict) or "weight" not in part:
            raise ConfigError(f"combined part {i} needs a 'weight' (0 = monitor); got {part!r}.")
        sub = {k: v for k, v in part.items() if k != "weight"}
        built.append((build_reward(sub, policy_model, artifacts_dir, readers), part["weight"]))
    return Combined(built, spec.get("name", "combined"))

