"""What a hook sees about the forward pass it runs in.

Positions follow the attention mask: ``positions[b, s]`` is the index of token ``s`` within
prompt ``b`` (0 for its first real token, -1 on padding), so an intervention at position 3 hits
the fourth token of every prompt however the batch was padded. ``lengths`` are the prompt
lengths: negative positions count back from there (-1 is a prompt's last token), also while
generating, where new tokens continue at ``lengths``, ``lengths + 1`` ...
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interplab.core.sites import Site


@dataclass(frozen=True)
class ForwardContext:
    """Per-forward facts handed to every hook: token positions, prompt lengths, phase."""

    positions: torch.Tensor  # [batch, pos] long; -1 on padding
    lengths: torch.Tensor  # [batch] long; prompt lengths
    phase: str = "full"  # "full" (one forward), "prefill" or "decode" (generation)

    @property
    def batch_size(self) -> int:
        return self.positions.shape[0]


@dataclass(frozen=True)
class CheckInfo:
    """What a hook may validate against before any forward pass starts."""

    site: Site
    site_shape: tuple[int, ...]
    batch_size: int
    lengths: tuple[int, ...]  # prompt lengths
    max_lengths: tuple[int, ...]  # prompt lengths plus tokens still to be generated
