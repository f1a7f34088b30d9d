"""Direct logit attribution on tiny random models (norm weights and biases perturbed, so the
LayerNorm centring and bias, Gemma's (1 + weight) and GPT-2's Conv1D all matter).

The claims: the components (embed, every attn_out, every mlp_out, const), each through the
frozen final norm and the unembedding, sum to the model's actual logit difference; heads plus
their bias term sum to each layer's attn_out component; neurons plus theirs to mlp_out.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from interplab import HookedModel
from interplab.analyses.dla import DLAConfig, DLAResult, direct_logit_attribution, frozen_norm
from interplab.core.errors import ConfigError, InputError, UnsupportedArchitectureError

from .families import build, left_pad, tokens

FAMILIES = ["llama_gqa", "gpt2", "gemma3", "qwen3", "neox_parallel", "neox_sequential"]
N = 4


@pytest.fixture(scope="module", params=FAMILIES)
def attributed(request) -> tuple[HookedModel, DLAResult, DLAResult]:
    model = HookedModel(build(request.param))
    ids = tokens(N, 7, seed=11)
    answers, wrong = tokens(N, seed=12), tokens(N, seed=13)
    cfg = DLAConfig(n_resamples=200)
    return (model, direct_logit_attribution(model, ids, answers, wrong, cfg),
            direct_logit_attribution(model, ids, answers, config=cfg))


def test_components_sum_to_the_logit_difference(attributed):
    model, diff, single = attributed
    logits = model.run(tokens(N, 7, seed=11))[:, -1].double()
    rows = torch.arange(N)
    actual = logits[rows, tokens(N, seed=12)] - logits[rows, tokens(N, seed=13)]
    torch.testing.assert_close(diff.logit_diff, actual, atol=1e-5, rtol=0)
    torch.testing.assert_close(diff.total, actual, atol=1e-4, rtol=0)
    torch.testing.assert_close(single.total, logits[rows, tokens(N, seed=12)], atol=1e-4, rtol=0)
    assert diff.attn.shape == diff.mlp.shape == (N, model.dims.n_layers)


def test_heads_sum_to_attn_out(attributed):
    model, diff, _ = attributed
    d = model.dims
    assert diff.heads.shape == (N, d.n_layers, d.n_heads) and diff.head_bias.shape == (N, d.n_layers)
    torch.testing.assert_close(diff.heads.sum(-1) + diff.head_bias, diff.attn, atol=1e-5, rtol=0)


def test_neurons_sum_to_mlp_out(attributed):
    model, diff, _ = attributed
    d = model.dims
    assert diff.neurons.shape == (N, d.n_layers, d.d_mlp)
    torch.testing.assert_close(diff.neurons.sum(-1) + diff.neuron_bias, diff.mlp, atol=1e-5, rtol=0)


def test_bias_terms_are_where_the_biases_are(attributed):
    model, diff, _ = attributed
    name = model.adapter.name
    if name in ("llama", "qwen", "gemma3"):  # no o_proj / down_proj / norm bias in these configs
        assert diff.head_bias.abs().max() == 0 and diff.neuron_bias.abs().max() == 0
        assert diff.const.abs().max() == 0
    else:  # GPT-2 / NeoX: biased projections and LayerNorm bias
        assert diff.head_bias.abs().max() > 0 and diff.neuron_bias.abs().max() > 0
        assert diff.const.abs().max() > 0


def test_summary_has_a_ci_per_cell(attributed):
    model, diff, _ = attributed
    ci = diff.summary["heads"]
    assert ci.estimate.shape == (model.dims.n_layers, model.dims.n_heads)
    assert bool((ci.low <= ci.estimate + 1e-12).all() and (ci.estimate <= ci.high + 1e-12).all())
    torch.testing.assert_close(diff.summary["attn"].estimate, diff.attn.mean(0))


def test_padded_prompts_match_one_by_one():
    model = HookedModel(build("llama_gqa"))
    rows = [tokens(n, seed=20 + n) for n in (7, 4, 5)]
    answers, wrong = torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])
    cfg = DLAConfig(n_resamples=100)
    batched = direct_logit_attribution(model, left_pad(rows), answers, wrong, cfg)
    for i, r in enumerate(rows):
        one = direct_logit_attribution(model, r[None], answers[i : i + 1], wrong[i : i + 1], cfg)
        torch.testing.assert_close(batched.heads[i], one.heads[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.logit_diff[i], one.logit_diff[0], atol=1e-5, rtol=1e-5)
        assert one.summary == {}  # one prompt: no interval
    earlier = direct_logit_attribution(model, left_pad(rows), answers, wrong, DLAConfig(position=2, n_resamples=100))
    torch.testing.assert_close(earlier.total, earlier.logit_diff, atol=1e-4, rtol=0)


def test_heads_and_neurons_are_optional():
    model = HookedModel(build("gpt2"))
    res = direct_logit_attribution(model, tokens(2, 5), [3, 4], [5, 6], DLAConfig(heads=False, neurons=False, n_resamples=100))
    assert res.heads is None and res.neurons is None and "heads" not in res.summary
    torch.testing.assert_close(res.total, res.logit_diff, atol=1e-4, rtol=0)


def test_frozen_norm_conventions():
    x = torch.randn(3, 8)
    ln = nn.LayerNorm(8)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    centre, scale, bias = frozen_norm(ln, x)
    assert centre
    torch.testing.assert_close(((x - x.mean(-1, keepdim=True)).double() * scale + bias).float(), ln(x))
    gemma_norm = build("gemma3").model.norm
    x = torch.randn(3, 64)
    centre, scale, bias = frozen_norm(gemma_norm, x)
    assert not centre and bias is None
    rms = x.double().pow(2).mean(-1, keepdim=True).add(gemma_norm.eps).sqrt()
    torch.testing.assert_close(scale, (1 + gemma_norm.weight.detach().double()) / rms)

    class Odd(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UnsupportedArchitectureError, match="cannot linearise a Odd"):
        frozen_norm(Odd(), x)

    class Liar(nn.Module):  # claims a Llama norm but computes something else
        variance_epsilon = 1e-6
        weight = nn.Parameter(torch.ones(64))

        def forward(self, x):
            return 2 * x

    with pytest.raises(UnsupportedArchitectureError, match="off by"):
        frozen_norm(Liar(), x)


def test_refuses_bad_inputs():
    model = HookedModel(build("llama_gqa"))
    ids = tokens(2, 5)
    with pytest.raises(InputError, match="answers"):
        direct_logit_attribution(model, ids, [3])
    with pytest.raises(InputError, match="wrong"):
        direct_logit_attribution(model, ids, [3, 4], [99, 1])
    with pytest.raises(ConfigError, match="position 5"):
        direct_logit_attribution(model, ids, [3, 4], config=DLAConfig(position=5))
    with pytest.raises(ConfigError):
        DLAConfig(confidence=1.0)
