"""Identity interventions on every writable site change nothing, bit for bit."""

from __future__ import annotations

import torch

from interplab.interventions import Apply, Patch, Steer

from .families import assert_clean, every_writable_site, left_pad, tokens


def _same(model, inputs, interventions, expected, what):
    got = model.run(inputs, interventions)
    assert torch.equal(got, expected), f"{what} changed the logits by {(got - expected).abs().max()}"


def test_identity_apply_at_every_site_one_at_a_time(model, ids, family):
    expected = model.run(ids)
    for site in every_writable_site(family):
        _same(model, ids, [Apply(site, fn=lambda x: x.clone())], expected, f"Apply at {site}")
    assert_clean(model)


def test_identity_apply_at_every_site_at_once(model, ids, family):
    expected = model.run(ids)
    interventions = [Apply(s, fn=lambda x: x.clone()) for s in every_writable_site(family)]
    _same(model, ids, interventions, expected, "Apply at every site")
    # the same, restricted to some positions and rows
    interventions = [
        Apply(s, fn=lambda x: x * 1.0, positions=[0, -1], rows=[1])
        for s in every_writable_site(family)
    ]
    _same(model, ids, interventions, expected, "Apply at positions [0, -1] of row 1")
    assert_clean(model)


def test_patch_with_own_cached_value_at_every_site(model, ids, family):
    sites = every_writable_site(family)
    expected, cache = model.run_with_cache(ids, sites)
    for site in sites:
        _same(model, ids, [Patch(site, value=cache[site])], expected, f"Patch at {site}")
    _same(model, ids, [Patch(s, value=cache[s]) for s in sites], expected, "Patch everywhere")
    # one position, the value given per row: [n_rows, n_positions, *site]
    for site in sites:
        value = cache[site][:, 3:4]
        _same(model, ids, [Patch(site, value=value, positions=[3])], expected, f"Patch@3 {site}")
    assert_clean(model)


def test_zero_steer_at_every_site(model, ids, family):
    expected = model.run(ids)
    for site in every_writable_site(family):
        vector = torch.zeros(model.site_shape(site))
        _same(model, ids, [Steer(site, vector=vector)], expected, f"zero Steer at {site}")


def test_identity_on_a_left_padded_batch(model, family):
    batch = left_pad([tokens(6, seed=1), tokens(3, seed=2)])
    expected = model.run(batch)
    interventions = [Apply(s, fn=lambda x: x.clone()) for s in every_writable_site(family)]
    _same(model, batch, interventions, expected, "Apply everywhere (padded)")
    sites = every_writable_site(family)
    _, cache = model.run_with_cache(batch, sites, positions=[0, 1, -1])
    patches = [Patch(s, value=cache[s], positions=[0, 1, -1]) for s in sites]
    _same(model, batch, patches, expected, "Patch everywhere (padded)")
    assert_clean(model)
