"""The activations a run was asked to keep, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from interplab.core.errors import SiteError
from interplab.core.sites import Site


@dataclass
class ActivationCache:
    """Activations by site. With ``positions`` set, each is [batch, len(positions), ...] in
    the order asked; otherwise [batch, pos, ...] in the padded layout of ``attention_mask``."""

    acts: dict[Site, torch.Tensor] = field(default_factory=dict)
    positions: tuple[int, ...] | None = None
    attention_mask: torch.Tensor | None = None

    def __getitem__(self, site: str | Site) -> torch.Tensor:
        key = Site.parse(site)
        if key not in self.acts:
            raise SiteError(
                f"Site {key} was not cached. Cached sites: {', '.join(map(str, self.acts)) or 'none'}."
            )
        return self.acts[key]

    def __contains__(self, site) -> bool:
        return Site.parse(site) in self.acts

    def __iter__(self) -> Iterator[Site]:
        return iter(self.acts)

    def __len__(self) -> int:
        return len(self.acts)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.acts.values())

    def stack(self, sites) -> torch.Tensor:
        """Stack several same-shaped sites on a new leading ``layer``-like axis."""
        return torch.stack([self[s] for s in sites])
