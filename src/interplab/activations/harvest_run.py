"""``interplab harvest``: a model's activations at some sites over a corpus, into an on-disk
activation store (``activations.harvest``: resumable, atomic per shard).

``--out`` is the store directory (``HarvestConfig.out``), and the run record is written inside
it, as ``harvest-<time>/`` next to the shards, so a store carries the records of the runs that
wrote it. The store's reader, its resume check and ``overwrite`` only touch the manifest and the
shards (``activations.shards``). ``dtype`` is the *stored* dtype; the model always computes in
float32 (rounding happens when a shard is written).

Before any forward pass (``activations.harvest_checks``): the corpus is readable (an ``hf:``
corpus on an offline machine is refused at once), ``ctx_len`` fits the model's positions, the
corpus holds ``n_tokens`` and the store fits the free disk space.

The report adds a cheap check of what was stored: the distribution of the activation norms per
site over a sample of rows (the first rows of up to 16 shards spread over the store).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from interplab.activations.corpus import check_source
from interplab.activations.harvest import harvest
from interplab.activations.harvest_config import HarvestConfig, HarvestReport
from interplab.activations.store import ActivationStore
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Lines, Table, Text
from interplab.core.config import RunFields
from interplab.core.result import Result

SAMPLE_SHARDS, ROWS_PER_SHARD, BINS = 16, 512, 40


@dataclass(frozen=True)
class HarvestRunConfig(HarvestConfig, RunFields):
    """Activations at some sites over a corpus into the store directory `out` (re-running the same
    command resumes it); the run record is written inside the store, as harvest-<time>/."""

    def __post_init__(self) -> None:
        HarvestConfig.__post_init__(self)
        RunFields.__post_init__(self)

    def harvest_config(self) -> HarvestConfig:
        """The library config alone (what the store's manifest records)."""
        return HarvestConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(HarvestConfig)})


@dataclass(frozen=True)
class HarvestResult(HarvestReport, Result):
    """What the harvest did, plus the activation-norm distribution of a sample of stored rows."""

    model_name: str
    sites: list[str]
    dtype: str
    n_sampled: int  # rows per site in the norm sample
    norm_edges: torch.Tensor  # [BINS + 1] log10 of the row norm
    norm_counts: dict[str, torch.Tensor]  # site -> [BINS] rows per bin
    norm_quantiles: dict[str, list[float]]  # site -> [median, 99th percentile, max] of the norm

    def title(self) -> str:
        return f"Activation store: {self.model_name} at {', '.join(self.sites)}"

    def headline(self) -> dict:
        return {"tokens": self.n_tokens, "shards": self.n_shards, "tokens_per_s": self.tokens_per_s,
                "bytes_per_token": self.bytes_per_token, "content_hash": self.content_hash}

    def terminal(self) -> list[Block]:
        state = "complete" if self.complete else "INCOMPLETE (re-run the same command to resume)"
        return [Text(f"activation store {self.path}: {self.n_tokens:,} tokens in {self.n_shards} shards, {state}"),
                Text(f"this run: {self.shards_written} shards written, {self.shards_skipped} already there; "
                     f"{self.tokens_per_s:,.0f} tokens/s over {self.seconds:.1f} s; "
                     f"{self.bytes_per_token:,.0f} bytes/token on disk ({self.bytes_on_disk / 2**20:,.1f} MiB, "
                     f"{self.dtype}); content hash {self.content_hash[:16]}")]

    def blocks(self) -> list[Block]:
        centres = ((self.norm_edges[:-1] + self.norm_edges[1:]) / 2).tolist()
        shares = {s: (c.double() / max(int(c.sum()), 1)).tolist() for s, c in self.norm_counts.items()}
        return [*self.terminal(),
                Table(["site", "median norm", "99th percentile", "max"],
                      [[s, *q] for s, q in self.norm_quantiles.items()],
                      title=f"Activation norms ({self.n_sampled:,} sampled rows per site)"),
                Lines("activation_norms", "Activation norm per stored row", centres, shares,
                      xlabel="log10 ‖activation‖", ylabel="share of sampled rows",
                      caption=f"Norms of {self.n_sampled:,} stored rows per site (the first rows of up to "
                              f"{SAMPLE_SHARDS} shards spread over the store); a far right tail means outlier "
                              "positions (e.g. BOS) are in the store.")]


def norm_sample(store: ActivationStore) -> dict[str, torch.Tensor]:
    """The row norms of the first ``ROWS_PER_SHARD`` rows of up to ``SAMPLE_SHARDS`` shards."""
    n = len(store.shards)
    picks = sorted({round(i * (n - 1) / max(SAMPLE_SHARDS - 1, 1)) for i in range(min(n, SAMPLE_SHARDS))})
    starts = [0]
    for meta in store.shards:
        starts.append(starts[-1] + meta["n_tokens"])
    parts: dict[str, list[torch.Tensor]] = {s: [] for s in store.sites}
    for k in picks:
        rows = store.read(starts[k], min(starts[k] + ROWS_PER_SHARD, starts[k + 1]))
        for site, x in rows.items():
            parts[site].append(x.norm(dim=-1))
    return {s: torch.cat(v) for s, v in parts.items()}


@register_analysis("harvest", config=HarvestRunConfig, result=HarvestResult, needs_model=False,
                   help="model activations at some sites over a corpus into an on-disk store (resumable)",
                   # needs the "{corpus}" fixture (a text file of 120 documents)
                   example={"corpus": "{corpus}", "sites": "L1.resid_post", "n_tokens": 300, "ctx_len": 16,
                            "shard_tokens": 150, "dtype": "float32"})
def harvest_store(cfg: HarvestRunConfig, ctx: Context) -> HarvestResult:
    check_source(cfg.corpus_config())  # before the model: a missing file, an hf: corpus offline
    model = ctx.load_model(dtype="float32", device=cfg.device)  # cfg.dtype is the store's dtype
    ctx.phase(f"harvesting {cfg.n_tokens:,} tokens at {', '.join(cfg.sites)} into {cfg.out}")
    report = harvest(model, cfg.harvest_config(), progress=ctx.progress)
    ctx.phase("sampling activation norms")
    store = ActivationStore.open(report.path, allow_partial=True)
    norms = norm_sample(store)
    logs = {s: v.clamp_min(1e-12).log10() for s, v in norms.items()}
    low = min(float(v.min()) for v in logs.values())
    high = max(float(v.max()) for v in logs.values())
    edges = torch.linspace(low, high if high > low else low + 1, BINS + 1, dtype=torch.float64)
    counts = {s: torch.histc(v.double(), BINS, float(edges[0]), float(edges[-1])).long() for s, v in logs.items()}
    quantiles = {s: [float(v.median()), float(torch.quantile(v.double(), 0.99)), float(v.max())]
                 for s, v in norms.items()}
    return HarvestResult(**{f.name: getattr(report, f.name) for f in dataclasses.fields(HarvestReport)},
                         model_name=store.manifest["model"]["name"], sites=store.sites, dtype=store.manifest["dtype"],
                         n_sampled=int(next(iter(norms.values())).numel()), norm_edges=edges, norm_counts=counts,
                         norm_quantiles=quantiles)
