"""Which (row, token) entries of an activation an intervention touches in this forward."""

from __future__ import annotations

import torch

from interplab.runtime.context import ForwardContext


def select(ctx: ForwardContext, rows, positions, device) -> tuple[torch.Tensor, ...]:
    """Return (batch_row, seq_index, row_slot, key) for every entry to act on.

    ``row_slot`` indexes the intervention's own ``rows`` list; ``key`` is the slot in its
    ``positions`` list, or the token position itself when ``positions`` is None (all tokens).
    Entries whose token is not in this forward (padding, or another decode step) are skipped.
    """
    b = ctx.batch_size
    row_t = torch.arange(b, device=device) if rows is None else torch.tensor(rows, device=device)
    pos = ctx.positions.to(device)[row_t]  # [r, s]
    if positions is None:
        slot, seq = (pos >= 0).nonzero(as_tuple=True)
        return row_t[slot], seq, slot, pos[slot, seq]
    targets = torch.tensor(positions, device=device)[None, :].expand(len(row_t), -1)
    lengths = ctx.lengths.to(device)[row_t][:, None]
    targets = torch.where(targets < 0, targets + lengths, targets)
    slot, seq, key = (pos[:, :, None] == targets[:, None, :]).nonzero(as_tuple=True)
    return row_t[slot], seq, slot, key
