"""Activation patching: batched sweeps equal the naive loop; full patching restores clean."""

import pytest
import torch

from interplab.analyses.patching import PatchingConfig, activation_patching
from interplab.core.errors import ConfigError, InputError
from interplab.interventions import Patch
from interplab.runtime.flops import FlopModel
from interplab.runtime.inputs import batch_from_ids

N, LENGTH, CHANGED = 3, 9, 4  # 9 tokens: longer than Gemma's sliding window of 3


def _pair():
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(3, 32, (N, LENGTH), generator=g)
    corrupt = clean.clone()
    corrupt[:, CHANGED] = (clean[:, CHANGED] + 7) % 29 + 3
    return batch_from_ids(clean), batch_from_ids(corrupt), torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10])


def _sweeps(family):
    sweeps = ["resid_pre", "attn_out", "mlp_out", "heads", "heads_by_position"]
    return sweeps if family.parallel else [*sweeps, "resid_mid"]


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_batched_sweep_equals_the_naive_loop(model, family, direction):
    clean, corrupt, ans, wrong = _pair()
    for sweep in _sweeps(family):
        kw = dict(sweep=sweep, direction=direction, n_resamples=100, max_rows=17)
        if sweep == "heads_by_position":
            kw["positions"] = (0, CHANGED, -1)
        fast = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(**kw))
        slow = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(naive=True, **kw))
        torch.testing.assert_close(fast.raw, slow.raw, atol=1e-5, rtol=1e-5, msg=sweep)
        assert fast.effects.shape[0] == N


def test_without_prefix_reuse_too(model):
    clean, corrupt, ans, wrong = _pair()
    a = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(n_resamples=100))
    b = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(reuse_prefix=False, n_resamples=100))
    torch.testing.assert_close(a.raw, b.raw, atol=1e-5, rtol=1e-5)


def test_patching_the_only_differing_token_restores_clean_and_others_do_nothing(model):
    clean, corrupt, ans, wrong = _pair()
    res = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(n_resamples=100))
    # Layer 0's resid_pre at the changed token carries everything that differs: the metric
    # comes back to clean for every prompt, so the normalised mean is 1.
    torch.testing.assert_close(res.raw[:, 0, CHANGED], res.clean_metric, atol=1e-4, rtol=0)
    torch.testing.assert_close(res.effects[:, 0, CHANGED].mean(), torch.tensor(1.0), atol=1e-4, rtol=0)
    others = list(range(CHANGED))  # before the change, clean and corrupt states are identical
    torch.testing.assert_close(res.raw[:, :, others], res.corrupt_metric[:, None, None].expand(N, res.raw.shape[1], len(others)), atol=1e-5, rtol=0)
    assert res.summary is not None and res.summary.low.shape == res.summary.mean.shape


def test_patching_every_site_restores_the_clean_run_exactly(model):
    clean, corrupt, _, _ = _pair()
    _, cache = model.run_with_cache(clean, model.all_sites("resid_pre"))
    edits = [Patch(s, value=cache[s]) for s in model.all_sites("resid_pre")]
    assert torch.equal(model.run(corrupt, edits), model.run(clean))


def test_bad_input_is_refused_before_any_forward(model, forward_calls):
    clean, corrupt, ans, wrong = _pair()
    short = batch_from_ids(corrupt.input_ids[:, 1:])
    with pytest.raises(InputError, match="differ in shape"):
        activation_patching(model, clean, short, ans, wrong)
    with pytest.raises(InputError, match=r"answers and wrong must be \[n_prompts\]"):
        activation_patching(model, clean, corrupt, ans[:2], wrong)
    with pytest.raises(ConfigError, match="Unknown metric 'acc'. Valid metrics"):
        PatchingConfig(metric="acc")
    with pytest.raises(ConfigError, match="Unknown sweep 'resid'"):
        PatchingConfig(sweep="resid")
    assert forward_calls.calls == 0


PACKINGS = [dict(pack=False), dict(pack=False, layer_buckets=2), dict(max_rows=4), dict(layer_buckets=1),
            dict(max_rows=1), dict(pack=False, layer_buckets=0, max_rows=5)]


@pytest.mark.parametrize("variant", PACKINGS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()))
def test_every_packing_equals_the_naive_loop(model, family, variant):
    clean, corrupt, ans, wrong = _pair()
    for sweep, direction in (("resid_pre", "denoising"), ("mlp_out", "noising")):
        kw = dict(sweep=sweep, direction=direction, n_resamples=20)
        fast = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(**kw, **variant))
        slow = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(naive=True, **kw))
        torch.testing.assert_close(fast.raw, slow.raw, atol=1e-5, rtol=1e-5, msg=f"{sweep} {variant}")


def test_the_sweep_counts_the_flops_it_needs_and_computes(model, family):
    clean, corrupt, ans, wrong = _pair()
    res = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(n_resamples=20))
    cost = res.cost
    flops = FlopModel.of(model)
    # needed: each row recomputes positions p.. through blocks L.. and one position's logits
    need = N * sum(flops.suffix(LENGTH, p, family.n_layers - layer)
                   for layer in range(family.n_layers) for p in range(LENGTH))
    assert cost.needed_flops == pytest.approx(need)
    assert cost.executed_flops >= cost.needed_flops and cost.forwards >= 1 and cost.seconds > 0
    # a full forward of every row would compute far more than the sweep needs
    assert cost.needed_flops < N * family.n_layers * LENGTH * flops.plain(1, LENGTH)
    assert "GFLOP needed" in cost.text()
    slow = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(naive=True, n_resamples=20))
    assert slow.cost is None
