"""The task registry: ``@register_task`` at each task's definition, ``make_task`` by name."""

from __future__ import annotations

from interplab.core.registry import Registry
from interplab.tasks.base import Task
from interplab.tasks.config import TaskConfig
from interplab.tasks.data import TaskData

TASKS: Registry[type[Task]] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a task under its ``name``."""
    assert cls.name, f"{cls.__name__} needs a name"
    return TASKS.register(cls.name)(cls)


def make_task(name: str, tokenizer, config: TaskConfig) -> TaskData:
    """Build the task registered as ``name`` (see ``TASKS.names()``)."""
    return TASKS.get(name).build(tokenizer, config)
