"""Learning-rate schedule: linear warm-up, a constant phase, then linear or cosine decay to 0.

The schedule is a pure function of the step, so a resumed run needs no scheduler state beyond
the step itself, and the total is always the run's final step count (a run interrupted at
step k continues on the same curve). Decay over the last 20% of training follows Anthropic's
"Circuits Updates, April 2024"; warm-up follows SAELens and sparsify.
"""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup: int = 0, decay: str = "linear", decay_start: float = 0.8) -> float:
    """Multiplier of the base learning rate for the 0-based ``step`` of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if decay == "none":
        return 1.0
    start = max(warmup, int(decay_start * total))
    if step < start:
        return 1.0
    frac = (step - start) / max(1, total - start)
    if decay == "linear":
        return 1.0 - frac
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ValueError(f"unknown decay {decay!r}")  # TrainConfig validated it; internal invariant


def lr_at(step: int, base_lr: float, cfg) -> float:
    """The learning rate of ``step`` under a ``TrainConfig``."""
    return base_lr * lr_factor(step, cfg.total_steps, cfg.warmup_steps, cfg.decay, cfg.decay_start)
