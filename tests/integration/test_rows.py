"""Different interventions on different batch rows equal running each row on its own."""

from __future__ import annotations

import dataclasses

import torch

from interplab.interventions import Ablate, Apply, Patch, Steer

from .families import assert_clean, left_pad, tokens

ATOL = 1e-5


def _for_row(model, iv, r: int, batch_size: int):
    """The intervention as it applies to batch row ``r`` when that row runs alone (None if it
    does not touch row r): rows dropped, per-row values sliced to that row's own."""
    rows = iv.rows if iv.rows is not None else tuple(range(batch_size))
    if r not in rows:
        return None
    slot = rows.index(r)
    changes = {"rows": None}
    for name in iv.tensor_fields:
        value = getattr(iv, name)
        if value is not None and value.ndim - len(model.site_shape(iv.site)) == 2:
            changes[name] = value[slot: slot + 1]
    return dataclasses.replace(iv, **changes)


def _interventions(family, batch_size: int, width: int):
    g = torch.Generator().manual_seed(7)
    d, dh = 64, family.d_head
    return [
        Patch("L0.resid_post", value=torch.randn(d, generator=g), rows=[0], positions=[1]),
        # per-row, per-position steering, rows listed out of order
        Steer("L1.attn_out", vector=torch.randn(2, 1, d, generator=g), rows=[2, 1],
              positions=[-1], scale=3.0),
        Ablate("L0.attn.z[h1]", rows=[2]),
        Ablate("L1.mlp.hidden", mode="mean", value=torch.randn(128, generator=g), rows=[0, 1],
               positions=[0, -2]),
        Patch("L0.attn.k[h1]", value=torch.randn(2, 2, dh, generator=g), rows=[1, 0],
              positions=[0, 2]),
        # every token of row 1, one vector per token position
        Steer("L0.resid_pre", vector=torch.randn(width, d, generator=g), rows=[1]),
        # every token of every row, one vector per row and token position
        Steer("L1.attn.q[h0]", vector=torch.randn(batch_size, width, dh, generator=g), scale=0.5),
        Apply("L0.mlp_out", fn=lambda x: 2 * x, rows=[0, 2], positions=[-1]),
    ]


def _check_rows(model, inputs, rows: list[torch.Tensor], interventions):
    batched = model.run(inputs, interventions)
    clean = model.run(inputs)
    for r, p in enumerate(rows):
        own = [x for iv in interventions if (x := _for_row(model, iv, r, len(rows))) is not None]
        alone = model.run(p[None], own)
        n = len(p)
        torch.testing.assert_close(batched[r, -n:], alone[0], atol=ATOL, rtol=0,
                                   msg=lambda m, r=r: f"row {r}: {m}")
        assert not torch.allclose(batched[r, -n:], clean[r, -n:], atol=1e-4), f"row {r} untouched"
    assert_clean(model)


def test_per_row_interventions_equal_rows_run_alone(model, family):
    rows = [tokens(6, seed=20 + i) for i in range(3)]
    inputs = torch.stack(rows)
    _check_rows(model, inputs, rows, _interventions(family, 3, 6))


def test_per_row_interventions_with_left_padding(model, family, prompts, padded):
    _check_rows(model, padded, prompts, _interventions(family, 3, 7))


def test_per_row_patch_from_a_clean_run(model, family, prompts, padded):
    """A patching sweep in one forward: row r patches the clean resid_pre at position r."""
    clean_ids = left_pad([tokens(len(p), seed=40 + i) for i, p in enumerate(prompts)])
    _, cache = model.run_with_cache(clean_ids, ["L1.resid_pre"], positions=[0, 1, 2])
    value = cache["L1.resid_pre"]  # [3 rows, 3 positions, d_model]
    sweep = [Patch("L1.resid_pre", value=value[r, r], positions=[r], rows=[r]) for r in range(3)]
    batched = model.run(padded, sweep)
    for r, p in enumerate(prompts):
        alone = model.run(p[None], [Patch("L1.resid_pre", value=value[r, r], positions=[r])])
        torch.testing.assert_close(batched[r, -len(p):], alone[0], atol=ATOL, rtol=0)


def test_rows_left_alone_are_unchanged(model, family, padded):
    clean = model.run(padded)
    out = model.run(padded, [Ablate("L0.resid_pre", rows=[1]), Ablate("L1.attn_out", rows=[1])])
    mask = padded["attention_mask"].bool()
    for r in (0, 2):
        assert torch.equal(out[r][mask[r]], clean[r][mask[r]]), r
    assert not torch.allclose(out[1], clean[1], atol=1e-4)
