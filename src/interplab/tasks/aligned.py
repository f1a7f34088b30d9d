"""Tasks prepared for sweeps over positions."""

from __future__ import annotations

from interplab.core.errors import ConfigError
from interplab.core.model import Model
from interplab.tasks.config import TaskConfig
from interplab.tasks.registry import make_task


def aligned_task(model: Model, name: str, n: int, seed: int):
    """``n`` pairs of task ``name`` sharing one template and token length (what sweeps over
    positions need), drawn from a larger seeded set."""
    task = make_task(name, model.tokenizer, TaskConfig(n=max(40 * n, 200), seed=seed))
    task = task.largest_aligned_group()
    if len(task) < n:
        raise ConfigError(f"Only {len(task)} {name} pairs share one template; ask for n <= {len(task)}.")
    return task.select(range(n))
