"""The sparse TopK training step equals the dense one: loss terms, gradients, firing mask."""

import copy

import pytest
import torch

from interplab.dictionary import DICTIONARIES, DictionaryConfig


def _pair(dead: int, **kw):
    torch.manual_seed(0)
    cfg = DictionaryConfig(arch="topk", d_in=16, d_sae=64, k=4, input_site="x", aux_k=8,
                           dead_after_tokens=5, **kw)
    dense = DICTIONARIES.get("topk")(cfg)
    with torch.no_grad():
        dense.b_dec.normal_()
        dense.b_enc.normal_(0, 0.1)
        dense.in_scale.fill_(0.7)
        dense.out_scale.fill_(0.7)
    dense.tokens_since_fired[:dead] = 10
    sparse = copy.deepcopy(dense)
    sparse.sparse_step = True
    return dense.train(), sparse.train()


@pytest.mark.parametrize("dead", [0, 20])
def test_sparse_step_equals_dense(dead):
    dense, sparse = _pair(dead)
    x = torch.randn(32, 16)
    a, b = dense.training_step(x), sparse.training_step(x)
    assert b.latents is None
    assert set(a.parts) == set(b.parts) == ({"mse", "fvu", "l0"} | ({"auxk"} if dead else set()))
    for key in a.parts:
        torch.testing.assert_close(a.parts[key], b.parts[key], rtol=1e-6, atol=1e-6)
    assert torch.equal(a.fired, b.fired)
    torch.testing.assert_close(a.recon, b.recon, rtol=1e-6, atol=1e-6)
    a.loss.backward()
    b.loss.backward()
    for name, p in dense.named_parameters():
        q = dict(sparse.named_parameters())[name]
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_sparse_step_bfloat16_matmul_is_close():
    dense, sparse = _pair(0)
    sparse.compute_dtype = torch.bfloat16
    x = torch.randn(256, 16)
    a, b = dense.training_step(x), sparse.training_step(x)
    # Top-k choices may differ at near-ties; the loss moves by well under a percent.
    ma, mb = a.parts["mse"].detach().item(), b.parts["mse"].detach().item()
    assert abs(ma - mb) / ma < 0.01
    assert float(b.parts["l0"]) == 4.0


def test_update_firing_from_mask_equals_from_latents():
    dense, sparse = _pair(0)
    x = torch.randn(8, 16)
    dense.update_firing(dense.training_step(x).latents)
    out = sparse.training_step(x)
    sparse.update_firing(fired=out.fired, n_tokens=x.shape[0])
    assert torch.equal(dense.tokens_since_fired, sparse.tokens_since_fired)
    with pytest.raises(TypeError, match="needs z, or both fired and n_tokens"):
        sparse.update_firing(fired=out.fired)
