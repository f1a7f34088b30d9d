"""Prompt datasets generated offline: aligned clean/corrupt pairs with single-token answers.

``make_task("ioi", tokenizer, TaskConfig(n=100))`` returns a ``TaskData``; ``TASKS.names()``
lists the registered tasks. A new task is one file here: subclass ``Task``, implement
``propose`` and decorate with ``@register_task``.
"""

from interplab.tasks import facts, greater_than, induction, ioi, sva  # noqa: F401 (registers)
from interplab.tasks.base import Pair, Task
from interplab.tasks.config import TaskConfig
from interplab.tasks.data import TaskData
from interplab.tasks.registry import TASKS, make_task, register_task

__all__ = ["TASKS", "Pair", "Task", "TaskConfig", "TaskData", "make_task", "register_task"]
