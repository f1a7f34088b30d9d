"""Before the first step of training: the source checked against the dictionaries (before any
work), each dictionary's optimizer, and the sample its scales and decoder bias start from."""

from __future__ import annotations

import torch

from interplab.activations.source import BatchSource
from interplab.core.errors import ConfigError, choices
from interplab.dictionary.base import DICTIONARIES, Dictionary, DictionaryConfig
from interplab.dictionary.train_config import TrainConfig
from interplab.dictionary.train_files import run_names


def check_setup(source: BatchSource, dict_configs: list[DictionaryConfig], cfg: TrainConfig) -> list[str]:
    """Refuse, before any work, dictionaries the source cannot feed; returns the run names."""
    if not dict_configs:
        raise ConfigError("train needs at least one DictionaryConfig.")
    sites = list(source.sites)
    for i, dc in enumerate(dict_configs):
        DICTIONARIES.get(dc.arch)  # unknown architecture: raises with the registered names
        for role, site, width in (("input_site", dc.input_site, dc.d_in),
                                  ("output_site", dc.target_site, dc.width_out)):
            if site not in sites:
                raise ConfigError(
                    f"Dictionary {i} ({dc.arch}) reads {role}={site!r}, which the source does not provide. "
                    f"Available sites: {choices(sites)}."
                )
            if source.width(site) != width:
                raise ConfigError(
                    f"Dictionary {i} ({dc.arch}) expects width {width} at {site!r} but the source's "
                    f"activations there are {source.width(site)} wide; set d_in/d_out to match."
                )
    return run_names(dict_configs)


def make_optimizer(d: Dictionary, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    on_cuda = next(d.parameters()).is_cuda
    fast = {"fused": True} if on_cuda else {"foreach": True}
    return torch.optim.Adam(d.parameters(), lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **fast)


def init_sample(source: BatchSource, cfg: TrainConfig, sites: set[str]) -> dict[str, torch.Tensor]:
    """The first ``init_tokens`` of the training stream (whole global batches, on every rank)."""
    n = -(-cfg.init_tokens // cfg.batch_size)
    it = source.batches(cfg.batch_size, seed=cfg.seed, start_batch=0)
    got = [next(it) for _ in range(n)]
    return {s: torch.cat([b[s] for b in got])[: cfg.init_tokens] for s in sites}
