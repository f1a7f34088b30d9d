"""The config of a harvest and the report it returns (see ``interplab.activations.harvest``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interplab.activations import shards as st
from interplab.activations.corpus import CorpusConfig
from interplab.core.config import param
from interplab.core.errors import ConfigError, choices
from interplab.core.sites import Site, SiteKind

# What must match for a run to resume into an existing store.
IDENTITY = ("model.weights_hash", "sites", "dtype", "packing", "drop_bos", "n_tokens",
            "tokens_per_shard", "corpus")


@dataclass(frozen=True)
class HarvestConfig:
    """What to harvest, from which text, into which directory."""

    out: str = param("activation-store", "directory of the store (created; resumed if it exists)")
    model: str = param("smollm2-135m", "model name or path (recorded; the CLI loads it)")
    sites: tuple[str, ...] = param(("L15.resid_post",), "sites to harvest, e.g. ('L15.resid_post',)")
    n_tokens: int = param(1_000_000, "activation rows to store (tokens, BOS positions excluded when dropped)")
    ctx_len: int = param(128, "tokens per context, BOS included")
    batch_size: int = param(32, "contexts per forward pass")
    dtype: str = param("bfloat16", "stored dtype: bfloat16, float16 or float32")
    shard_tokens: int = param(65536, "rows per shard (rounded down to whole contexts)")
    drop_bos: bool = param(True, "leave out the BOS position of each context (outlier activations)")
    corpus: str = param("classics", "corpus source: 'classics', a file/directory, or 'hf:<dataset>[:<config>]'")
    text_field: str = param("text", "text field of .jsonl / .parquet / hf rows")
    txt_split: str = param("blank_line", "how .txt files split into documents: 'blank_line' or 'file'")
    corpus_split: str = param("train", "dataset split for hf: corpora")
    resume: bool = param(True, "continue a store this same config started (refused if it differs)")
    overwrite: bool = param(False, "delete an existing store at `out` and start over")

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(self.sites))  # a list given by hand, frozen
        if not self.sites:
            raise ConfigError("HarvestConfig.sites is empty; name at least one site, e.g. 'L15.resid_post'.")
        for s in self.sites:
            site = Site.parse(s)
            if site.kind == SiteKind.PATTERN:
                raise ConfigError(f"Site {s} (attention patterns) cannot be stored as [token, width] rows.")
        if len({str(Site.parse(s)) for s in self.sites}) != len(self.sites):
            raise ConfigError(f"HarvestConfig.sites lists a site twice: {self.sites}.")
        if self.dtype not in st.DTYPES:
            raise ConfigError(f"Unknown dtype {self.dtype!r}; valid: {choices(st.DTYPES)}.")
        for name in ("n_tokens", "batch_size", "shard_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"HarvestConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.ctx_len < 2:
            raise ConfigError(f"HarvestConfig.ctx_len must be >= 2, got {self.ctx_len}.")
        self.corpus_config()  # validates the corpus fields

    def corpus_config(self) -> CorpusConfig:
        return CorpusConfig(source=self.corpus, text_field=self.text_field, txt_split=self.txt_split,
                            split=self.corpus_split)


@dataclass(frozen=True)
class HarvestReport:
    """What a harvest did: the store, how much this run computed and how fast."""

    path: Path
    n_tokens: int  # rows in the store
    n_shards: int
    shards_written: int  # by this run (this rank)
    shards_skipped: int  # already on disk, or another rank's
    seconds: float
    tokens_per_s: float  # rows this run harvested per second of its wall time
    bytes_on_disk: int
    bytes_per_token: float
    content_hash: str
    complete: bool


