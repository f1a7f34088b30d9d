"""TaskConfig and the task registry refuse bad input before any work, with teaching messages."""

from __future__ import annotations

import dataclasses

import pytest

from interplab.core.errors import ConfigError, InterplabError
from interplab.tasks import TASKS, Task, TaskConfig, make_task, register_task


def test_registered_tasks():
    assert TASKS.names() == ["facts", "greater_than", "induction", "ioi", "sva"]
    assert all(issubclass(cls, Task) and cls.name == name for name, cls in TASKS.items())


@pytest.mark.parametrize("n", [0, -3])
def test_n_must_be_positive(n):
    with pytest.raises(ConfigError, match=r"TaskConfig.n must be an integer >= 1 \(pairs to make\)"):
        TaskConfig(n=n)


def test_bad_choices_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"on_multi_token='skip' .* Valid choices: 'filter', 'raise'"):
        TaskConfig(n=1, on_multi_token="skip")
    with pytest.raises(ConfigError, match=r"ioi_order='AB' .* 'both', 'ABBA', 'BABA'"):
        TaskConfig(n=1, ioi_order="AB")
    with pytest.raises(ConfigError, match=r"year_unit='decade' .* 'auto', 'pair', 'digit'"):
        TaskConfig(n=1, year_unit="decade")
    with pytest.raises(ConfigError, match="induction_length must be >= 2"):
        TaskConfig(n=1, induction_length=1)


def test_config_is_frozen_and_defaults():
    cfg = TaskConfig(n=4)
    assert (cfg.seed, cfg.on_multi_token, cfg.ioi_order, cfg.year_unit) == (0, "filter", "both", "auto")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n = 5
    assert all(f.metadata.get("help") for f in dataclasses.fields(TaskConfig))


def test_unknown_task_lists_the_registered_ones():
    with pytest.raises(InterplabError, match=r"No task named 'nope'\. Registered: 'facts', "
                       r"'greater_than', 'induction', 'ioi', 'sva'"):
        make_task("nope", None, TaskConfig(n=1))


def test_build_needs_a_config_and_a_tokenizer():
    with pytest.raises(ConfigError, match="ioi needs a TaskConfig, got dict"):
        make_task("ioi", object(), {"n": 3})
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        make_task("ioi", None, TaskConfig(n=3))


def test_duplicate_registration_raises():
    class Again(Task):
        name = "ioi"

    with pytest.raises(InterplabError, match="already registered"):
        register_task(Again)
