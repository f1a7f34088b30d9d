"""Steering-vector extraction maths on synthetic activations, and the errors it raises first."""

from __future__ import annotations

import pytest
import torch

from interplab.analyses import steering as st
from interplab.analyses.steering import (
    SteeringVector,
    actadd_from_acts,
    diff_means_from_acts,
    from_dictionary,
    from_probe,
    pca_diff_from_acts,
)
from interplab.analyses.steering_apply import steer_interventions
from interplab.analyses.steering_eval import SteeringEvalConfig, least_squares_slope
from interplab.core.errors import ConfigError, InputError, SiteError
from interplab.core.sites import Site


class StubModel:
    """Just enough of a HookedModel to check validation: 4 layers, d_model 64; counts forwards."""

    tokenizer = None

    def __init__(self):
        self.forwards = 0

    def site(self, s):
        s = Site.parse(s)
        if s.layer is not None and s.layer >= 4:
            raise SiteError(f"Layer {s.layer} out of range: the model has 4 layers (0..3).")
        return s

    def site_shape(self, s):
        return (64,)

    def run_with_cache(self, *a, **k):
        self.forwards += 1
        raise AssertionError("no forward should run")


def _acts(n, d, shift, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + shift


def test_diff_means_is_difference_of_means():
    shift = torch.zeros(8)
    shift[2] = 3.0
    pos, neg = _acts(40, 8, shift, 0), _acts(30, 8, 0.0, 1)
    vec = diff_means_from_acts({"L1.resid_post": pos}, {"L1.resid_post": neg})["L1.resid_post"]
    torch.testing.assert_close(vec, pos.mean(0) - neg.mean(0))
    assert vec.argmax() == 2


def test_pca_diff_direction_sign_and_length():
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    coef = 2.0 + torch.rand(50, generator=g)  # every pair differs by a positive multiple of u
    neg = torch.randn(50, 16, generator=g)
    pos = neg + coef[:, None] * u + 0.01 * torch.randn(50, 16, generator=g)
    vec = pca_diff_from_acts(pos, neg)["custom"]
    cos = torch.nn.functional.cosine_similarity(vec, u, dim=0)
    assert cos > 0.999  # sign: the mean difference projects positively
    mean_diff = (pos - neg).mean(0)
    torch.testing.assert_close(vec.norm(), (mean_diff @ (vec / vec.norm())), rtol=1e-5, atol=1e-6)
    # swapping the sets flips the vector
    flipped = pca_diff_from_acts(neg, pos)["custom"]
    torch.testing.assert_close(flipped, -vec, rtol=1e-4, atol=1e-5)


def test_pca_sign_follows_mean_even_when_pc_is_returned_negative():
    d = torch.zeros(6, 4)
    d[:, 0] = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    vec = pca_diff_from_acts(d, torch.zeros(6, 4))["custom"]
    assert vec[0] > 0
    torch.testing.assert_close(vec, torch.tensor([2.0, 0, 0, 0]))


def test_actadd_is_positionwise_difference():
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(actadd_from_acts(a, b), a - b)
    with pytest.raises(InputError, match="same positions"):
        actadd_from_acts(a, b[:4])


def test_empty_contrastive_set_is_refused_before_any_forward():
    m = StubModel()
    with pytest.raises(InputError, match="empty contrastive set: diff_means got 0 positive"):
        st.diff_means(m, [], ["a"], "L1.resid_post")
    with pytest.raises(InputError, match="empty contrastive set: pca_diff got 2 positive and 0"):
        st.pca_diff(m, ["a", "b"], [], "L1.resid_post")
    with pytest.raises(InputError, match="empty contrastive set"):
        diff_means_from_acts(torch.zeros(0, 4), torch.zeros(3, 4))
    assert m.forwards == 0


def test_unequal_pairs_refused():
    with pytest.raises(InputError, match="got 2 positive and 3 negative; give the same number"):
        st.pca_diff(StubModel(), ["a", "b"], ["c", "d", "e"], "L1.resid_post")


def test_layer_out_of_range_refused_before_any_forward():
    m = StubModel()
    with pytest.raises(SiteError, match="Layer 7 out of range"):
        st.diff_means(m, ["a"], ["b"], "L7.resid_post")
    with pytest.raises(SiteError, match="Layer 9 out of range"):
        st.actadd(m, torch.tensor([3, 4]), torch.tensor([5, 6]), "L9.resid_post")
    assert m.forwards == 0


def test_wrong_width_message():
    v = SteeringVector({"L3.resid_post": torch.randn(32)})
    with pytest.raises(InputError, match="vector has width 32 but L3.resid_post is 64 wide"):
        v.check(StubModel())


def test_vector_validation():
    with pytest.raises(InputError, match="needs at least one site"):
        SteeringVector({})
    with pytest.raises(InputError, match="non-finite"):
        SteeringVector({"L0.resid_post": torch.tensor([1.0, float("nan")])})
    with pytest.raises(ConfigError, match="Unknown steering method"):
        SteeringVector({"L0.resid_post": torch.ones(3)}, method="magic")


def test_save_load_round_trip(tmp_path):
    v = SteeringVector({"L1.resid_post": torch.randn(8), "L2.resid_pre": torch.randn(3, 8)},
                       "actadd", {"note": "x"})
    v.save(tmp_path / "v")
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == [
        "config.json", "provenance.json", "vectors.safetensors"]
    back = SteeringVector.load(tmp_path / "v")
    assert back.method == "actadd" and back.meta == {"note": "x"}
    assert back.sites == v.sites
    for s in v.sites:
        assert torch.equal(back.vectors[s], v.vectors[s])
    with pytest.raises(FileExistsError):
        v.save(tmp_path / "v")


def test_interventions_one_per_site_and_actadd_positions():
    v = SteeringVector({"L1.resid_post": torch.randn(8), "L2.resid_pre": torch.randn(3, 8)})
    ivs = v.interventions(2.0, rows=[1])
    assert [str(i.site) for i in ivs] == ["L1.resid_post", "L2.resid_pre"]
    assert ivs[0].positions is None and ivs[1].positions == (0, 1, 2)
    assert all(i.scale == 2.0 and i.rows == (1,) for i in ivs)
    with pytest.raises(InputError, match="has 3 positions"):
        v.interventions(1.0, positions=[0])


def test_steer_interventions_groups_rows_and_skips_zero():
    a = SteeringVector({"L1.resid_post": torch.ones(4)})
    b = SteeringVector({"L1.resid_post": -torch.ones(4)})
    assert steer_interventions(a, 0.0) == []
    ivs = steer_interventions([a, b, a, None, a], [1.0, 1.0, 1.0, 5.0, 0.0])
    assert sorted((i.scale, i.rows) for i in ivs) == [(1.0, (0, 2)), (1.0, (1,))]
    with pytest.raises(InputError, match="differ in length"):
        steer_interventions([a, b], [1.0, 2.0, 3.0])


class _Probe:
    site = "L2.resid_post"
    reduction = "last"
    direction = torch.tensor([3.0, 4.0])


def test_from_probe_norm_and_class_gap():
    v = from_probe(_Probe(), norm=10.0)
    torch.testing.assert_close(v.vector, torch.tensor([6.0, 8.0]))
    acts = torch.tensor([[0.6, 0.8], [1.2, 1.6], [0.0, 0.0], [0.0, 0.0]])
    v = from_probe(_Probe(), acts=acts, labels=torch.tensor([1, 1, 0, 0]))
    torch.testing.assert_close(v.vector, torch.tensor([0.9, 1.2]))  # gap 1.5 along u
    with pytest.raises(InputError, match="needs a length"):
        from_probe(_Probe())


def test_from_dictionary_is_decoder_row_in_model_units():
    from interplab.dictionary.base import DICTIONARIES, DictionaryConfig

    cfg = DictionaryConfig(arch="topk", d_in=8, d_sae=16, k=2, input_site="L1.resid_post")
    sae = DICTIONARIES.get("topk")(cfg)
    sae.out_scale.fill_(4.0)
    v = from_dictionary(sae, 5)
    assert v.site == Site.parse("L1.resid_post")
    torch.testing.assert_close(v.vector, sae.W_dec[5].detach() / 4.0)
    # a latent raised by a adds a * vector to the reconstruction
    z = torch.zeros(1, 16)
    z2 = z.clone()
    z2[0, 5] = 2.0
    torch.testing.assert_close(sae.decode(z2) - sae.decode(z), 2.0 * v.vector[None])
    with pytest.raises(InputError, match="latent 16 out of range"):
        from_dictionary(sae, 16)


def test_slope_and_eval_config_checks():
    x = torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64)
    y = torch.stack([3 * x + 1, -x])
    torch.testing.assert_close(least_squares_slope(x, y), torch.tensor([3.0, -1.0], dtype=torch.float64))
    with pytest.raises(ConfigError, match="at least two distinct"):
        SteeringEvalConfig(scales=[1.0])
    with pytest.raises(ConfigError, match="needs target_tokens"):
        SteeringEvalConfig(target="logit_diff")
