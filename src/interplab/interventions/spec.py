"""Interventions as data: patch, ablate (zero / mean / resample), steer, and a Python callable.

Each is a frozen dataclass naming a site, the token positions (None: every token; negative:
from the prompt's end) and the batch rows (None: every row) it acts on. All but ``Apply``
round-trip through JSON, so a config file, the CLI or a service request can carry them. A batch
may carry many interventions with different ``rows``: that is how one forward runs a whole
patching sweep, or serves several requests with their own edits.

Values broadcast by their leading axes, after which their shape must be the site's:
``[*site]`` (the same everywhere), ``[n_positions, *site]`` (one per listed position, or per
token position when ``positions`` is None) or ``[n_rows, n_positions, *site]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch

from interplab.core.errors import InterventionError, PositionError, choices
from interplab.core.registry import Registry
from interplab.core.sites import Site
from interplab.interventions.values import (
    as_index,
    as_indices,
    decode_tensor,
    finite_scale,
    finite_tensor,
    parse_json,
    spec_dict,
)
from interplab.runtime.context import CheckInfo, ForwardContext

INTERVENTIONS: Registry[type[Intervention]] = Registry("intervention")


def register_intervention(cls):
    return INTERVENTIONS.register(cls.op)(cls)


@dataclass(frozen=True, eq=False)
class Intervention:
    """Base: where (site, positions, rows). Subclasses say what."""

    site: Site | str
    positions: tuple[int, ...] | None = None
    rows: tuple[int, ...] | None = None

    op: ClassVar[str] = ""
    writes: ClassVar[bool] = True
    tensor_fields: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "site", Site.parse(self.site))
        for name in ("positions", "rows"):
            object.__setattr__(self, name, as_indices(getattr(self, name), f"{self.op} at {self.site}: {name}"))
        for name in self.tensor_fields:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, finite_tensor(value, f"{self.op} at {self.site}: {name}"))

    # -- applying ------------------------------------------------------------------------------
    def __call__(self, act: torch.Tensor, ctx: ForwardContext) -> torch.Tensor | None:
        row, seq, slot, key = ctx.locate(self.rows, self.positions, act.device)
        if row.numel() == 0:
            return None
        current = act[row, seq]
        new = self.compute(current, slot, key)
        return act.index_put((row, seq), new.to(dtype=act.dtype, device=act.device))

    def compute(self, current: torch.Tensor, slot: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _entries(self, value: torch.Tensor, current, slot, key) -> torch.Tensor:
        """The value for each selected entry, by the broadcasting rule in the module doc."""
        value = value.to(device=current.device, dtype=current.dtype)
        extra = value.ndim - (current.ndim - 1)
        if extra == 0:
            return value.expand_as(current)
        if extra == 1:
            return value[key]
        return value[slot, key]

    # -- checking before work ------------------------------------------------------------------
    def check(self, info: CheckInfo) -> None:
        if self.rows is not None:
            bad = [r for r in self.rows if not 0 <= r < info.batch_size]
            if bad:
                raise PositionError(
                    f"{self.op} at {self.site}: rows {bad} out of range for a batch of "
                    f"{info.batch_size} (valid: 0..{info.batch_size - 1})."
                )
        rows = range(info.batch_size) if self.rows is None else self.rows
        if self.positions is not None:
            for r in rows:
                n, top = info.lengths[r], info.max_lengths[r]
                bad = [p for p in self.positions if not -n <= p < top]
                if bad:
                    raise PositionError(
                        f"{self.op} at {self.site}: positions {bad} out of range for row {r}, "
                        f"whose prompt has {n} tokens (valid: {-n}..{top - 1})."
                    )
        for name in self.tensor_fields:
            value = getattr(self, name)
            if value is not None:
                self._check_value(name, value, info, len(rows))

    def _check_value(self, name, value: torch.Tensor, info: CheckInfo, n_rows: int) -> None:
        shape = tuple(info.site_shape)
        extra = value.ndim - len(shape)
        if extra < 0 or extra > 2 or tuple(value.shape[extra:]) != shape:
            raise InterventionError(
                f"{self.op} at {info.site}: {name} has shape {tuple(value.shape)}, but the site's "
                f"activations are [..., {', '.join(map(str, shape))}] per token. Give "
                f"{list(shape)}, [n_positions, {', '.join(map(str, shape))}] or "
                f"[n_rows, n_positions, {', '.join(map(str, shape))}]."
            )
        if extra >= 1:
            given = value.shape[extra - 1]
            if self.positions is not None and given != len(self.positions):
                raise InterventionError(
                    f"{self.op} at {info.site}: {name} gives {given} positions, but the "
                    f"intervention lists {len(self.positions)}: {list(self.positions)}."
                )
            if self.positions is None and given < max(info.max_lengths):
                raise InterventionError(
                    f"{self.op} at {info.site}: {name} gives {given} positions, but with "
                    f"positions=None it needs one per token ({max(info.max_lengths)})."
                )
        if extra == 2 and value.shape[0] != n_rows:
            raise InterventionError(
                f"{self.op} at {info.site}: {name} gives {value.shape[0]} rows, the intervention "
                f"acts on {n_rows}."
            )

    # -- data ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {"op": self.op}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."),
                         "data": value.detach().cpu().flatten().tolist()}
            elif isinstance(value, Site):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @staticmethod
    def from_dict(data: dict) -> Intervention:
        data = spec_dict(data)
        op = data.pop("op", None)
        if not isinstance(op, str) or op not in INTERVENTIONS:
            raise InterventionError(f"Unknown intervention op {op!r}. Valid ops: {choices(INTERVENTIONS.names())}.")
        cls = INTERVENTIONS.get(op)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InterventionError(f"{op}: unknown fields {unknown}; valid: {sorted(known)}.")
        if "site" not in data:
            raise InterventionError(f"{op} needs a 'site' (e.g. \"L0.resid_pre\").")
        for name in cls.tensor_fields:
            enc = data.get(name)
            if isinstance(enc, dict):
                data[name] = decode_tensor(enc, f"{op} {name}")
        return cls(**data)

    @staticmethod
    def from_json(text: str) -> Intervention:
        return Intervention.from_dict(parse_json(text))


@register_intervention
@dataclass(frozen=True, eq=False)
class Patch(Intervention):
    """Replace the activations with ``value`` (e.g. from a cached clean run)."""

    value: torch.Tensor | None = None
    op: ClassVar[str] = "patch"
    tensor_fields: ClassVar[tuple[str, ...]] = ("value",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.value is None:
            raise InterventionError(f"patch at {self.site} needs a value tensor.")

    def compute(self, current, slot, key):
        return self._entries(self.value, current, slot, key)


ABLATE_MODES = ("zero", "mean", "resample")


@register_intervention
@dataclass(frozen=True, eq=False)
class Ablate(Intervention):
    """Zero-, mean- or resample-ablate. ``value`` is the mean (mode="mean") or a pool of
    activations [n_samples, *site] to draw from (mode="resample", deterministic in ``seed``)."""

    mode: str = "zero"
    value: torch.Tensor | None = None
    seed: int = 0
    op: ClassVar[str] = "ablate"
    tensor_fields: ClassVar[tuple[str, ...]] = ("value",)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "seed", as_index(self.seed, f"ablate at {self.site}: seed"))
        if self.mode not in ABLATE_MODES:
            raise InterventionError(
                f"Unknown ablation mode {self.mode!r}. Valid modes: {choices(ABLATE_MODES)}."
            )
        if self.mode != "zero" and self.value is None:
            what = "the mean activation" if self.mode == "mean" else "a pool [n, *site] to draw from"
            raise InterventionError(f"ablate mode={self.mode!r} at {self.site} needs value: {what}.")

    def _check_value(self, name, value, info, n_rows):
        if self.mode != "resample":
            return super()._check_value(name, value, info, n_rows)
        if value.ndim != len(info.site_shape) + 1 or tuple(value.shape[1:]) != info.site_shape:
            raise InterventionError(
                f"ablate mode='resample' at {info.site}: the pool has shape {tuple(value.shape)}; "
                f"it must be [n_samples, {', '.join(map(str, info.site_shape))}]."
            )

    def compute(self, current, slot, key):
        if self.mode == "zero":
            return torch.zeros_like(current)
        if self.mode == "mean":
            return self._entries(self.value, current, slot, key)
        # Each (row slot, position key) gets its own draw, whatever else this forward holds:
        # a token is then resampled alike in a full forward, a prefill or a decode step (so
        # generate's KV-cache path equals its reference), and in any batch. One seeded
        # stream per slot, indexed by key (randint's stream is prefix-stable in its length).
        slot, key = slot.cpu(), key.cpu()
        pick = torch.empty(current.shape[0], dtype=torch.long)
        for s in slot.unique().tolist():
            sel = slot == s
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + s)
            stream = torch.randint(self.value.shape[0], (int(key[sel].max()) + 1,), generator=gen)
            pick[sel] = stream[key[sel]]
        return self.value[pick].to(device=current.device, dtype=current.dtype)


@register_intervention
@dataclass(frozen=True, eq=False)
class Steer(Intervention):
    """Add ``scale * vector`` to the activations (activation addition / steering)."""

    vector: torch.Tensor | None = None
    scale: float = 1.0
    op: ClassVar[str] = "steer"
    tensor_fields: ClassVar[tuple[str, ...]] = ("vector",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vector is None:
            raise InterventionError(f"steer at {self.site} needs a vector.")
        finite_scale(self.scale, f"steer at {self.site}: scale")

    def compute(self, current, slot, key):
        return current + self.scale * self._entries(self.vector, current, slot, key)


@register_intervention
@dataclass(frozen=True, eq=False)
class Apply(Intervention):
    """Any function of the selected activations [n_entries, *site] → same shape. Library only:
    a callable does not serialise."""

    fn: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None)
    op: ClassVar[str] = "apply"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(self.fn):
            raise InterventionError(f"apply at {self.site} needs a callable fn.")

    def compute(self, current, slot, key):
        new = self.fn(current)
        if not isinstance(new, torch.Tensor) or new.shape != current.shape:
            raise InterventionError(
                f"apply at {self.site}: fn returned {getattr(new, 'shape', type(new).__name__)}, "
                f"expected a tensor of shape {tuple(current.shape)}."
            )
        return new

    def to_dict(self) -> dict:
        raise InterventionError(
            "An Apply intervention wraps a Python callable and cannot be serialised; use patch, "
            "ablate or steer in configs, the CLI and the service."
        )
