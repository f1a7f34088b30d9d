"""Path patching: batched equals naive; through the final residual it is the frozen-heads effect."""

import pytest
import torch

from interplab.analyses.metrics import answer_metric
from interplab.analyses.path_patching import PathPatchingConfig, path_patching
from interplab.core.errors import ConfigError
from interplab.core.sites import Site, SiteKind
from interplab.interventions import Patch
from interplab.runtime.inputs import batch_from_ids


def _pair(n=2, length=7):
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(3, 32, (n, length), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2] = (clean[:, 2] + 5) % 29 + 3
    return batch_from_ids(clean), batch_from_ids(corrupt), torch.tensor([4, 5]), torch.tensor([6, 7])


def test_batched_equals_naive(model):
    last = model.dims.n_layers - 1
    clean, corrupt, a, w = _pair()
    cfg = dict(receivers=(f"L{last}.attn.q[h0]", f"L{last}.attn.v[h1]"), n_resamples=100)
    fast = path_patching(model, clean, corrupt, a, w, PathPatchingConfig(**cfg))
    slow = path_patching(model, clean, corrupt, a, w, PathPatchingConfig(naive=True, **cfg))
    torch.testing.assert_close(fast.raw, slow.raw, atol=1e-5, rtol=1e-5)
    assert fast.effects.shape == (2, last, model.dims.n_heads)


def test_through_the_final_residual_equals_freezing_all_other_heads(model):
    last = model.dims.n_layers - 1
    clean, corrupt, a, w = _pair()
    res = path_patching(model, clean, corrupt, a, w,
                        PathPatchingConfig(receivers=(f"L{last}.resid_post",), n_resamples=100))
    z = [Site(layer, SiteKind.Z) for layer in range(model.dims.n_layers)]
    _, cc = model.run_with_cache(clean, z)
    _, kc = model.run_with_cache(corrupt, z)
    edits = [Patch(s, value=cc[s]) for s in z] + [Patch("L0.attn.z[h1]", value=kc[z[0]][:, :, 1])]
    logits = model.run(clean, edits)[:, -1]
    expected = answer_metric("logit_diff", logits, a, w)
    torch.testing.assert_close(res.raw[:, 0, 1], expected, atol=1e-5, rtol=1e-5)


def test_senders_must_precede_receivers(model):
    clean, corrupt, a, w = _pair()
    with pytest.raises(ConfigError, match="must be non-empty and before the first receiver"):
        path_patching(model, clean, corrupt, a, w, PathPatchingConfig(receivers=("L0.attn.q[h0]",)))
    with pytest.raises(ConfigError, match="at least one receiver"):
        PathPatchingConfig(receivers=())
