import argparse

import pytest

from interplab.analyses.logit_lens import LogitLensConfig
from interplab.cli.args import add_config_args, config_from_args
from interplab.core.errors import ConfigError, InterplabError
from interplab.core.registry import Registry
from interplab.models.registry import ADAPTERS


def test_registry_refuses_duplicates_and_names_choices():
    reg = Registry("widget")
    reg.register("a")(int)
    with pytest.raises(InterplabError, match="already registered"):
        reg.register("a")(float)
    with pytest.raises(InterplabError, match="Registered: 'a'"):
        reg.get("b")


def test_every_family_has_an_adapter():
    assert set(ADAPTERS.names()) == {"gemma3", "gpt2", "gpt_neox", "llama", "qwen", "toy"}


def test_cli_is_generated_from_the_config():
    parser = argparse.ArgumentParser()
    add_config_args(parser, LogitLensConfig, positional=("prompt",))
    cfg = config_from_args(LogitLensConfig, parser.parse_args(["hello", "--top-k", "3"]))
    assert cfg == LogitLensConfig(prompt="hello", top_k=3)
    assert "final norm" not in parser.format_help()  # help comes from the field docs
    assert "How many top tokens" in parser.format_help()


def test_config_cross_checks():
    with pytest.raises(ConfigError, match="top_k must be >= 1"):
        LogitLensConfig(prompt="x", top_k=0)
    with pytest.raises(ConfigError, match="prompt is empty"):
        LogitLensConfig(prompt="")
