"""Input checks shared by the stats functions, raising errors that say how to fix the call.

Every public function converts its inputs here first (DESIGN rule 3: refuse before doing work),
so the numerical code can assume float64 tensors of at least two finite samples.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from interplab.core.errors import ConfigError, InputError, choices

# Largest number of float64 elements one vectorised step materialises (128 MiB). Sweeps with
# many cells are processed in chunks of cells (and of resamples) under this budget.
BUDGET = 1 << 24


def as_samples(x, name: str = "samples") -> torch.Tensor:
    """``x`` as a float64 tensor ``[n, *cells]`` with ``n >= 2`` finite samples per cell."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(
                f"{name} must be a tensor of shape [n, *cells] (samples along dim 0); could not "
                f"convert {type(x).__name__}: {e}"
            ) from None
    if x.is_complex():
        raise InputError(f"{name} is complex ({x.dtype}); pass real values (e.g. .abs() or .real).")
    if x.dim() == 0:
        raise InputError(
            f"{name} is a scalar; pass the per-sample values as a tensor [n, *cells], samples "
            "along dim 0 (e.g. one effect per prompt)."
        )
    n = x.shape[0]
    if n < 2:
        raise InputError(
            f"{name} has {n} sample(s) along dim 0; at least 2 are needed for a spread, a CI or "
            f"a test. Shape was {tuple(x.shape)}; samples (e.g. prompts) go along dim 0."
        )
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(
            f"{name} contains {bad} NaN/inf value(s); drop or fix those samples first "
            "(statistics over non-finite values are undefined)."
        )
    return x


def paired_difference(a, b, names: tuple[str, str] = ("a", "b")) -> torch.Tensor:
    """``a - b`` for paired samples (same shape), or ``a`` itself when ``b`` is None."""
    a = as_samples(a, names[0])
    if b is None:
        return a
    b = as_samples(b, names[1])
    if a.shape != b.shape:
        raise InputError(
            f"{names[0]} and {names[1]} are paired samples and must have the same shape; got "
            f"{tuple(a.shape)} and {tuple(b.shape)}. Row i of both must be the same unit "
            "(e.g. the same prompt, clean vs patched)."
        )
    return a - b


def check_confidence(confidence: float, name: str = "confidence") -> float:
    """A confidence level strictly inside (0, 1)."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ConfigError(
            f"{name} must be a number strictly between 0 and 1 (e.g. 0.95 for a 95% interval); "
            f"got {confidence!r}."
        )
    return float(confidence)


def check_choice(value: str, name: str, valid: Iterable[str]) -> str:
    """One of a closed set of option strings."""
    valid = tuple(valid)
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}. Valid choices: {choices(valid)}.")
    return value


def check_count(value: int, name: str, minimum: int = 1) -> int:
    """A whole number at least ``minimum`` (resample counts and the like)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return value


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``; draws happen on CPU so results match on any device."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer (same seed, same resamples); got {seed!r}.")
    return torch.Generator(device="cpu").manual_seed(seed)


def chunk_size(per_item: int, budget: int = BUDGET) -> int:
    """How many items of ``per_item`` elements each fit in one step under the budget."""
    return max(1, budget // max(1, per_item))
