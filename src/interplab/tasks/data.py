"""TaskData: the named result of building a task — aligned clean/corrupt batches and answers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from interplab.core.errors import InputError
from interplab.runtime.inputs import Batch, batch_from_ids
from interplab.tasks.config import TaskConfig


@dataclass(frozen=True)
class TaskData:
    """``n`` clean/corrupt prompt pairs, tokenized as ``HookedModel.run`` would tokenize them.

    Row ``i`` of ``clean`` and of ``corrupt`` have the same token length, and both batches are
    left-padded to the same width, so a token position (and a padded column) means the same
    thing in both: what activation patching needs. Positions in ``meta`` are prompt positions
    (index within the prompt's own tokens, BOS included, as ``Batch.positions`` and intervention
    specs count them); the padded column of position ``p`` in row ``i`` is ``column(i, p)``.
    """

    name: str
    clean: Batch
    corrupt: Batch
    answers: torch.Tensor  # [batch] int64: the correct next token after each clean prompt
    wrong: torch.Tensor  # [batch] int64: the corrupt prompt's answer, or the distractor
    clean_text: list[str]
    corrupt_text: list[str]
    meta: dict = field(default_factory=dict)
    n_dropped: int = 0  # candidate pairs filtered out (multi-token words, unequal lengths)
    config: TaskConfig | None = None

    def __post_init__(self) -> None:
        n = len(self.clean_text)
        assert self.clean.shape == self.corrupt.shape and self.clean.shape[0] == n
        assert torch.equal(self.clean.lengths, self.corrupt.lengths)
        assert self.answers.shape == self.wrong.shape == (n,) and len(self.corrupt_text) == n

    def __len__(self) -> int:
        return len(self.clean_text)

    def column(self, row: int, position: int) -> int:
        """The padded column of prompt position ``position`` (negative counts from the end)."""
        length = int(self.clean.lengths[row])
        if position < 0:
            position += length
        return self.clean.shape[1] - length + position

    def select(self, rows) -> TaskData:
        """The pairs ``rows`` only, with padding columns no row needs removed."""
        rows = [int(r) for r in rows]
        if not rows:
            raise InputError("select() needs at least one row.")
        idx = torch.tensor(rows)
        keep = self.clean.attention_mask[idx].bool().any(0) | self.corrupt.attention_mask[idx].bool().any(0)

        def cut(batch: Batch) -> Batch:
            return batch_from_ids(batch.input_ids[idx][:, keep], batch.attention_mask[idx][:, keep])

        n = len(self)
        meta = {k: [v[r] for r in rows] if isinstance(v, list) and len(v) == n else v
                for k, v in self.meta.items()}
        return dataclasses.replace(
            self, clean=cut(self.clean), corrupt=cut(self.corrupt), answers=self.answers[idx],
            wrong=self.wrong[idx], clean_text=[self.clean_text[r] for r in rows],
            corrupt_text=[self.corrupt_text[r] for r in rows], meta=meta,
        )

    def largest_aligned_group(self, key: str = "templates") -> TaskData:
        """The biggest set of pairs sharing ``meta[key]`` (e.g. one template), one token length
        and the same position for every role (every ``meta["*_positions"]``: IO, S1, S2, …), so
        a position means the same token *and the same role* in every prompt — what sweeps over
        positions need. (For IOI this keeps ABBA and BABA prompts apart: the same template puts
        IO and S1 in swapped places.)"""
        n = len(self)
        roles = self.role_keys()
        groups: dict = {}
        for r in range(n):
            tag = (self.meta[key][r] if key in self.meta else None, int(self.clean.lengths[r]),
                   *(_hashable(self.meta[k][r]) for k in roles))
            groups.setdefault(tag, []).append(r)
        return self.select(max(groups.values(), key=len))

    def role_keys(self) -> list[str]:
        """The ``meta`` entries holding one position (or list of positions) per pair."""
        n = len(self)
        return sorted(k for k, v in self.meta.items()
                      if k.endswith("_positions") and isinstance(v, list) and len(v) == n)

    def role_labels(self) -> dict[int, str]:
        """Prompt position → role name ("io", "s1", …) where every pair agrees (after
        ``largest_aligned_group``); positions counted from the start, as ``meta`` counts them."""
        out: dict[int, str] = {}
        for k in self.role_keys():
            values = {_hashable(v) for v in self.meta[k]}
            if len(values) != 1:
                continue
            (value,) = values
            length = int(self.clean.lengths[0])
            for pos in value if isinstance(value, tuple) else (value,):
                if isinstance(pos, int):
                    pos = pos + length if pos < 0 else pos
                    out[pos] = k.removesuffix("_positions")
        return out


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, torch.Tensor):
        return tuple(value.flatten().tolist()) if value.numel() != 1 else value.item()
    return value
