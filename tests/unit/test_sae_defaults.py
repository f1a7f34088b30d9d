"""The SAE training defaults live in one place: ``interplab train-sae`` (its config, and the CLI
options generated from it) gives every trainer and dictionary field the library's default, and
the library fields it does not expose are exactly the ones it documents as derived."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from interplab.cli.args import add_config_args, config_from_args
from interplab.dictionary import DictionaryConfig
from interplab.dictionary.train_config import TrainConfig
from interplab.dictionary.train_sae_config import (
    DICTIONARY_DERIVED,
    REINTERPRETED,
    TRAIN_DERIVED,
    TrainSaeConfig,
)


def defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


@pytest.mark.parametrize("library", [TrainConfig, DictionaryConfig])
def test_every_shared_field_has_the_library_default(library):
    run = defaults(TrainSaeConfig)
    shared = [name for name in defaults(library) if name in run]
    assert len(shared) > 8
    for name in shared:
        assert run[name] == defaults(library)[name], (
            f"train-sae's {name} defaults to {run[name]!r}, {library.__name__}'s to {defaults(library)[name]!r}")


def test_the_fields_not_exposed_are_exactly_the_documented_derived_ones():
    run = {f.name for f in dataclasses.fields(TrainSaeConfig)}
    assert {f.name for f in dataclasses.fields(TrainConfig)} - run == set(TRAIN_DERIVED)
    assert {f.name for f in dataclasses.fields(DictionaryConfig)} - run == set(DICTIONARY_DERIVED)
    assert set(REINTERPRETED) <= run


class Store:
    """What ``dictionary_configs`` asks of a source."""

    sites = ["L1.resid_post"]

    def width(self, site: str) -> int:
        return 64


def test_the_cli_and_the_library_give_the_same_training_defaults():
    parser = argparse.ArgumentParser()
    add_config_args(parser, TrainSaeConfig)
    cfg = config_from_args(TrainSaeConfig, parser.parse_args([]))
    assert cfg == TrainSaeConfig()
    assert cfg.resume is True and TrainConfig(steps=1).resume is True  # re-running a command continues it

    trainer = cfg.trainer_config(n_tokens=1_000_000)
    library = TrainConfig(steps=trainer.steps)
    for f in dataclasses.fields(TrainConfig):
        if f.name not in TRAIN_DERIVED and f.name not in REINTERPRETED:
            assert getattr(trainer, f.name) == getattr(library, f.name), f.name
    assert trainer.steps == 1_000_000 // library.batch_size  # steps 0: one pass over the store

    (dictionary,) = cfg.dictionary_configs(Store())
    library = DictionaryConfig(d_in=64, d_sae=16 * 64, input_site="L1.resid_post")
    assert dictionary == library
