"""Logit lens (nostalgebraist 2020): read each layer's residual stream through the model's own
final norm and unembedding, as if the network stopped there.

Assumptions: the final norm is applied with its own statistics at every layer (no tuned-lens
translators), so early layers read off-distribution; for the last layer the lens is exactly
the model's logits, which the tests check. Reference: "interpreting GPT: the logit lens",
LessWrong, 2020.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interplab.core.config import check_fields, param
from interplab.core.errors import ConfigError
from interplab.core.model import Model
from interplab.core.sites import Site, SiteKind


@dataclass(frozen=True)
class LogitLensConfig:
    """What to read through the lens."""

    prompt: str = param(help="The prompt whose next-token prediction is read layer by layer.")
    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    top_k: int = param(5, help="How many top tokens to keep per layer.", ge=1)
    position: int = param(-1, help="Token position to read (negative counts from the end).")

    def __post_init__(self) -> None:
        if not self.prompt:
            raise ConfigError("LogitLensConfig.prompt is empty; give the text to read.")
        check_fields(self)  # the declared ranges


@dataclass
class LogitLensResult:
    """Per layer (axis ``layer``, the residual after that block): top-k tokens and their
    probabilities, and the probability and rank of the model's final top-1 token."""

    config: LogitLensConfig
    layers: list[int]
    top_ids: torch.Tensor  # [layer, top_k]
    top_probs: torch.Tensor  # [layer, top_k]
    final_id: int
    final_prob: torch.Tensor  # [layer]
    final_rank: torch.Tensor  # [layer]
    logits: torch.Tensor  # [d_vocab] the model's own logits at the position
    lens_logits: torch.Tensor  # [layer, d_vocab]


def lens_logits(model: Model, resid: torch.Tensor) -> torch.Tensor:
    """The lens's float32 logits [..., d_vocab] of residual-stream activations [..., d_model]:
    the model's final norm, then its unembedding (for the last layer's resid_post, exactly the
    model's own logits).

    The modules' ``forward`` is called, not the modules: a hook interplab has on the final norm
    or the unembedding (another thread's forward in flight, as in the server) must neither
    record nor edit this computation."""
    norm, unembed = model.adapter.final_norm(), model.adapter.unembed()
    with torch.no_grad():
        return unembed.forward(norm.forward(resid)).float()


def logit_lens(model: Model, config: LogitLensConfig) -> LogitLensResult:
    """Run the prompt once, caching every resid_post at one position, and decode each."""
    if config.top_k > model.dims.d_vocab:
        raise ConfigError(f"top_k={config.top_k} exceeds the vocabulary ({model.dims.d_vocab} tokens).")
    batch = model.to_batch(config.prompt)
    n = int(batch.lengths[0])
    if not -n <= config.position < n:
        raise ConfigError(
            f"position {config.position} is outside the prompt's {n} tokens (valid {-n}..{n - 1})."
        )
    sites = [Site(layer, SiteKind.RESID_POST) for layer in range(model.dims.n_layers)]
    logits, cache = model.run_with_cache(batch, sites, positions=[config.position])
    with torch.no_grad():
        resid = torch.stack([cache[s][0, 0] for s in sites])  # [layer, d_model]
    lens = lens_logits(model, resid)
    probs = lens.softmax(-1)
    final = logits[0, config.position].float()
    final_id = int(final.argmax())
    top = probs.topk(config.top_k, dim=-1)
    rank = (lens > lens[:, final_id : final_id + 1]).sum(-1)
    return LogitLensResult(
        config, list(range(len(sites))), top.indices, top.values, final_id,
        probs[:, final_id], rank, final, lens,
    )
