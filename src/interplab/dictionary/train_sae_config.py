"""The config of ``interplab train-sae``: the dictionary and trainer configs composed, not copied.

A run trains one dictionary per (site × expansion) from one pass over an activation store, or
from the model on the fly. Its fields are

* ``RunFields`` (model, seed, out, device, dtype; the model and its dtype matter on the fly);
* the fields of ``DictionaryConfig``, less those each dictionary derives (``DICTIONARY_DERIVED``);
* the fields of ``TrainConfig``, less those the run derives (``TRAIN_DERIVED``);
* the run's own: the store or on-the-fly source, the sites and the expansions.

So each default lives in one place, the library config (``tests/unit/test_sae_defaults.py``
checks that the CLI, this config and the library agree). Where a field is shared, the
trainer's wins (``seed``, ``device`` = auto, ``normalize``). Four trainer fields keep the
library's default but the run reads them in its own way (``REINTERPRETED``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from interplab.core.config import RunFields, field_of, fields_of, param
from interplab.core.errors import ConfigError
from interplab.dictionary.base import DICTIONARIES, DictionaryConfig
from interplab.dictionary.train_config import TrainConfig

# Library fields the run does not expose, and what it sets them to.
DICTIONARY_DERIVED = {
    "d_in": "the width of each site in the store",
    "d_sae": "expansion × d_in, one dictionary per expansion",
    "d_out": "the width of output_site in the store (transcoders)",
    "input_site": "each of the sites",
    "matryoshka_prefixes": "the architecture's default for each d_sae ([d_sae//16, d_sae//4]): one list cannot fit several sizes",
}
TRAIN_DERIVED = {
    "out_dir": "out/dictionaries",
    "decoder": "the architecture's constraint: unit_norm, or none where its class says so (relu)",
}
# Exposed with the library's default, read by the run in its own way.
REINTERPRETED = {
    "steps": "0 with tokens 0 means one pass over the store's tokens",
    "warmup_steps": "0 means 5% of the steps (at least 1 when there are 2 or more)",
    "init_tokens": "capped at the tokens the run will read (the store's, or steps × batch_size on the fly)",
}

_DictionaryFields = fields_of(DictionaryConfig, exclude=tuple(DICTIONARY_DERIVED), name="DictionaryFields")
_TrainFields = fields_of(TrainConfig, exclude=tuple(TRAIN_DERIVED), name="TrainFields", help={
    "steps": "Optimizer steps; 0 (with tokens 0) means one pass over the store's tokens.",
    "warmup_steps": "Steps of linear learning-rate warm-up; 0 means 5% of the steps.",
    "init_tokens": "Tokens read first to initialise b_dec and the scales (capped at the tokens the run reads).",
    "normalize": "Scale inputs and targets so their mean squared norm is their width (scales stored with each dictionary).",
})


@dataclass(frozen=True)
class TrainSaeConfig(_TrainFields, _DictionaryFields, RunFields):
    """Dictionaries for every (site × expansion) from one pass over an activation store."""

    out: str = field_of(RunFields, "out", "Directory for the run record (train-<arch>-<time>/) and the dictionaries "
                                          "with their checkpoints (dictionaries/); re-running the same command there resumes.")
    store: str = param("activation-store", help="Activation store written by `interplab harvest`; unused with --on-the-fly.")
    on_the_fly: bool = param(False, help="Train straight from the model through a shuffle buffer (no store on disk): needs --model, --sites and --steps.")
    corpus: str = param("classics", help="Corpus for --on-the-fly.")
    buffer_tokens: int = param(65536, help="Shuffle-buffer size (tokens) for --on-the-fly.", ge=1)
    ctx_len: int = param(128, help="Tokens per context (BOS included) for --on-the-fly; at most the model's positions.", ge=2)
    sites: tuple[str, ...] = param((), help="Input sites to train on; empty means every site in the store.")
    expansions: tuple[int, ...] = param((16,), help="Latents per input width, one dictionary each (d_sae = expansion × d_in).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(self.sites))  # lists from a config file, frozen
        object.__setattr__(self, "expansions", tuple(int(e) for e in self.expansions))
        super().__post_init__()  # RunFields: declared ranges, device
        if not self.expansions or any(e < 1 for e in self.expansions):
            raise ConfigError(f"expansions must be positive integers, got {self.expansions}.")
        if self.on_the_fly and (not self.sites or not (self.steps or self.tokens)):
            raise ConfigError("--on-the-fly needs --sites and --steps (or --tokens): there is no store to count tokens from.")
        # The library configs check their own fields now; what the store decides (its size, the
        # widths) is stood in for here and checked for real when the run builds them.
        DICTIONARIES.get(self.arch)
        DictionaryConfig(**self.library_values(DictionaryConfig), d_in=1, d_sae=1, input_site="x")
        self.trainer_config(None if self.on_the_fly else self.batch_size * (self.warmup_steps + 2))

    def library_values(self, cls: type) -> dict:
        """The values of the fields this config shares with the library config ``cls``."""
        mine = {f.name for f in dataclasses.fields(self)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(cls) if f.name in mine}

    def trainer_config(self, n_tokens: int | None) -> TrainConfig:
        """The trainer's config for a source of ``n_tokens`` rows (None: on the fly, unbounded)."""
        steps, tokens = self.steps, self.tokens
        if not steps and not tokens:
            if n_tokens is None:
                raise ConfigError("Training on the fly needs --steps or --tokens.")
            steps = max(1, n_tokens // self.batch_size)
        total = steps or math.ceil(tokens / self.batch_size)
        reads = n_tokens if n_tokens is not None else total * self.batch_size
        derived = {
            "steps": steps, "tokens": tokens,
            "warmup_steps": self.warmup_steps or (max(1, total // 20) if total > 1 else 0),
            "init_tokens": max(1, min(self.init_tokens, reads)),
            "out_dir": str(Path(self.out) / "dictionaries"),
            "decoder": "unit_norm" if DICTIONARIES.get(self.arch).unit_norm_decoder else "none",
        }
        return TrainConfig(**{**self.library_values(TrainConfig), **derived})

    def dictionary_configs(self, source) -> list[DictionaryConfig]:
        """One config per (site × expansion), with the widths the source holds."""
        sites = list(self.sites) or list(source.sites)
        wanted = [*sites, *([self.output_site] if self.output_site else [])]
        missing = [s for s in wanted if s not in source.sites]
        if missing:
            where = "the model on the fly" if self.on_the_fly else f"The store at {self.store}"
            raise ConfigError(f"{where} has no site {missing}; it holds {list(source.sites)}.")
        shared = self.library_values(DictionaryConfig)
        d_out = source.width(self.output_site) if self.output_site else 0
        return [DictionaryConfig(**shared, d_in=source.width(site), d_sae=e * source.width(site),
                                 input_site=site, d_out=d_out)
                for site in sites for e in self.expansions]
