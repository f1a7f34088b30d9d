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

    def locate(self, rows, positions, device) -> tuple[torch.Tensor, ...]:
        """Where the given token positions of the given rows sit in this forward.

        Returns (batch_row, seq_index, row_slot, key) for every hit: ``row_slot`` indexes
        ``rows`` (None: every row), ``key`` the slot in ``positions``, or the token position
        itself when ``positions`` is None (every real token). Negative positions count from each
        prompt's end. Tokens not in this forward (padding, another decode step) are skipped.
        """
        row_t = torch.arange(self.batch_size, device=device) if rows is None else torch.tensor(rows, device=device)
        pos = self.positions.to(device)[row_t]  # [r, s]
        if positions is None:
            slot, seq = (pos >= 0).nonzero(as_tuple=True)
            return row_t[slot], seq, slot, pos[slot, seq]
        targets = torch.tensor(positions, device=device)[None, :].expand(len(row_t), -1)
        lengths = self.lengths.to(device)[row_t][:, None]
        targets = torch.where(targets < 0, targets + lengths, targets)
        slot, seq, key = (pos[:, :, None] == targets[:, None, :]).nonzero(as_tuple=True)
        return row_t[slot], seq, slot, key


@dataclass(frozen=True)
class CheckInfo:
    """What a hook may validate against before any forward pass starts."""

    site: Site
    site_shape: tuple[int, ...]
    batch_size: int
    lengths: tuple[int, ...]  # prompt lengths
    max_lengths: tuple[int, ...]  # prompt lengths plus tokens still to be generated
