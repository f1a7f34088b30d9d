"""Rewards from internals (interplab.rl.rewards) on the tiny Llama: each equals its hand
computation, the frozen reference never moves or receives a gradient, baselines behave, and every
error a user can trigger is raised with a message that names the problem."""

from __future__ import annotations

import math

import pytest
import torch

from interplab.analyses.probes import ProbeConfig, fit_probe
from interplab.analyses.steering import SteeringVector
from interplab.core.errors import ConfigError, InputError
from interplab.dictionary.base import DICTIONARIES, DictionaryConfig
from interplab.rl.rewards import (
    KINDS,
    Combined,
    DirectionReward,
    FeatureReward,
    InternalsReader,
    NoveltyReward,
    ProbeReward,
    VaderReward,
    VerifierReward,
    build_reward,
    token_attribution,
)
from interplab.runtime.loading import load

SITE = "L1.resid_post"
PROMPTS = ["the movie was", "i think that", "a b c", "so"]
COMPLETIONS = ["good and fun.", "bad", "quite a long completion here", "x y"]


def fit_tiny_probe(site: str = SITE, d: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(60, d, generator=g)
    labels = (acts @ torch.randn(d, generator=g) > 0).long()
    cfg = ProbeConfig(site=site, control="none", n_resamples=10, max_iter=50)
    return fit_probe(acts, labels, cfg=cfg).probe


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    return fit_tiny_probe().save(tmp_path_factory.mktemp("probe") / "sentiment")


@pytest.fixture(scope="module")
def reader(tiny):
    return InternalsReader(tiny)


def hand_acts(model, prompt: str, completion: str, site: str) -> torch.Tensor:
    """One unpadded forward of prompt ids + completion ids; the completion's positions."""
    tok = model.tokenizer
    p = tok(prompt)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    _, cache = model.run_with_cache(torch.tensor([p + c]), [site])
    return cache[site][0, len(p):].double()


# -- equality with hand computations ---------------------------------------------------------------
@pytest.mark.parametrize("reduce", ["mean", "last", "max"])
def test_probe_reward_equals_the_probes_own_score_by_hand(tiny, reader, probe_dir, reduce):
    from interplab.analyses.probes import Probe

    probe = Probe.load(probe_dir)
    reward = ProbeReward(probe_dir, reader, reduce=reduce)
    got = reward(PROMPTS, COMPLETIONS)
    for p, c, g in zip(PROMPTS, COMPLETIONS, got, strict=True):
        s = probe.score(hand_acts(tiny, p, c, SITE).float())
        want = {"mean": s.mean(), "last": s[-1], "max": s.max()}[reduce]
        assert g == pytest.approx(float(want), abs=1e-4)
    assert len(set(got)) == len(got)  # the completions really differ
    minus = ProbeReward(probe_dir, reader, reduce=reduce, sign=-1)(PROMPTS, COMPLETIONS)
    assert minus == pytest.approx([-v for v in got])


def test_feature_reward_equals_the_latent_by_hand(tiny, reader, tmp_path):
    sae = DICTIONARIES.get("relu")(DictionaryConfig(arch="relu", d_in=64, d_sae=48,
                                                    input_site="L0.resid_post"))
    with torch.no_grad():
        sae.b_enc.fill_(0.5)  # so latent 5 fires on some tokens and not others
    path = sae.save(tmp_path / "sae")
    for reduce in ("mean", "max"):
        got = FeatureReward(path, 5, reader, reduce=reduce)(PROMPTS, COMPLETIONS)
        for p, c, g in zip(PROMPTS, COMPLETIONS, got, strict=True):
            z = sae.encode(hand_acts(tiny, p, c, "L0.resid_post").float())[:, 5].detach()
            assert g == pytest.approx(float(z.mean() if reduce == "mean" else z.max()), abs=1e-4)
        assert max(got) > 0


def test_direction_reward_equals_the_projection_by_hand(tiny, reader, tmp_path):
    vec = torch.randn(64, generator=torch.Generator().manual_seed(3)) * 5
    path = SteeringVector({SITE: vec}).save(tmp_path / "vec")
    from_file = DirectionReward(path, None, reader)(PROMPTS, COMPLETIONS)
    from_tensor = DirectionReward(vec, SITE, reader)(PROMPTS, COMPLETIONS)
    unit = vec.double() / vec.double().norm()
    want = [float((hand_acts(tiny, p, c, SITE) @ unit).mean()) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    assert from_file == pytest.approx(want, abs=1e-4)
    assert from_tensor == pytest.approx(want, abs=1e-4)


def test_conversational_completions_equal_their_text(reader, probe_dir):
    reward = ProbeReward(probe_dir, reader)
    conv = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    assert reward(PROMPTS, conv) == pytest.approx(reward(PROMPTS, COMPLETIONS))
    assert reward.__name__ == reward.name == "probe:sentiment"  # TRL's column name


def test_token_attribution_splits_the_mean_reward(reader):
    vec = torch.randn(64, generator=torch.Generator().manual_seed(4))
    reward = DirectionReward(vec, SITE, reader)
    parts = token_attribution(reward, PROMPTS[0], COMPLETIONS[0])
    assert [t for t, _ in parts] == list(COMPLETIONS[0])  # the character tokenizer
    assert sum(s for _, s in parts) == pytest.approx(reward(PROMPTS[:1], COMPLETIONS[:1])[0])
    per_token = reward.token_scores([PROMPTS[0]], [COMPLETIONS[0]])[0] / len(parts)
    assert [s for _, s in parts] == pytest.approx(per_token.tolist())
    with pytest.raises(InputError, match="reduce='mean'"):
        token_attribution(DirectionReward(vec, SITE, reader, reduce="max"), "a", "b")
    with pytest.raises(InputError, match="probe, feature or direction"):
        token_attribution(VaderReward(), "a", "b")


# -- the frozen reference ----------------------------------------------------------------------
def test_frozen_reference_gets_no_grad_and_never_moves_while_the_policy_reader_does(tiny_dir, probe_dir):
    policy = load(tiny_dir)
    frozen = InternalsReader(policy)
    live = InternalsReader(policy, frozen=False)
    assert frozen.model.hf is not policy.hf and live.model is policy
    before = {n: p.detach().clone() for n, p in frozen.model.hf.named_parameters()}
    r_frozen, r_live = ProbeReward(probe_dir, frozen), ProbeReward(probe_dir, live)
    f0, l0 = r_frozen(PROMPTS, COMPLETIONS), r_live(PROMPTS, COMPLETIONS)
    assert f0 == pytest.approx(l0, abs=1e-5)  # same weights so far

    policy.hf.train().requires_grad_(True)
    opt = torch.optim.SGD(policy.hf.parameters(), lr=0.5)
    ids = torch.tensor([policy.tokenizer("the movie was good")["input_ids"]])
    adv = torch.tensor(f0).mean()  # the reward enters the policy-gradient loss as a constant
    logp = torch.log_softmax(policy.hf(input_ids=ids).logits, -1)[0, :-1].gather(-1, ids[0, 1:, None])
    loss = -(adv * logp).mean() - logp.mean()
    loss.backward()
    opt.step()
    policy.hf.eval()

    for n, p in frozen.model.hf.named_parameters():
        assert p.grad is None and not p.requires_grad, n
        assert torch.equal(p, before[n]), n
    assert any(not torch.equal(p, before[n]) for n, p in policy.hf.named_parameters())
    assert r_frozen(PROMPTS, COMPLETIONS) == f0  # the reference did not move
    assert r_live(PROMPTS, COMPLETIONS) != pytest.approx(l0, abs=1e-6)  # reading the policy does


# -- baselines ------------------------------------------------------------------------------
def test_vader_ranks_positive_above_negative():
    v = VaderReward()
    good, bad = v(["review:", "review:"], ["I love it, a wonderful, delightful film!",
                                           "Terrible, boring and awful. I hated it."])
    assert good > 0.5 and bad < -0.5


def test_verifier_reward():
    ver = VerifierReward(lambda p, c: c.strip() == "4", name="arith")
    assert ver(["2+2=", "2+2="], ["4", "5"]) == [1.0, 0.0]


def test_novelty_is_high_for_new_inputs_and_drops_when_repeated(reader):
    nov = NoveltyReward(reader, "L0.resid_post", lr=0.05, seed=1)
    seen = ["the movie was"] * 2, ["good and fun.", "bad"]
    first = nov(*seen)
    for _ in range(30):
        last = nov(*seen)
    assert max(last) < 0.2 * min(first)
    fresh = nov(["zzz"], ["qqq xx"])[0]
    assert fresh > 3 * max(last)
    again = NoveltyReward(reader, "L0.resid_post", lr=0.05, seed=1)(*seen)
    assert again == first  # seeded


def test_combined_sums_weights_and_logs_zero_weight_monitors(reader, probe_dir):
    vader, probe = VaderReward(), ProbeReward(probe_dir, reader)
    ver = VerifierReward(lambda p, c: "good" in c, name="has_good")
    comb = Combined([(vader, 2.0), (ver, 0.5), (probe, 0.0)])
    total = comb(PROMPTS, COMPLETIONS)
    v, c, pr = vader(PROMPTS, COMPLETIONS), ver(PROMPTS, COMPLETIONS), probe(PROMPTS, COMPLETIONS)
    assert total == pytest.approx([2 * a + 0.5 * b for a, b in zip(v, c, strict=True)])
    assert comb.last["probe:sentiment"] == pytest.approx(pr) and any(abs(x) > 1e-3 for x in pr)
    assert comb.monitors == ["probe:sentiment"]
    assert set(comb.last) == {"vader", "has_good", "probe:sentiment"}


def test_build_reward_from_config_shares_one_frozen_copy(tiny, probe_dir):
    spec = {"kind": "combined", "parts": [
        {"kind": "probe", "path": probe_dir.name, "weight": 1.0},
        {"kind": "vader", "weight": 0.0},
        {"kind": "novelty", "site": "L0.resid_post", "weight": 0.0},
    ]}
    comb = build_reward(spec, tiny, artifacts_dir=probe_dir.parent)
    (_, probe, _), _, (_, nov, _) = comb.parts
    assert probe.reader is nov.reader and probe.reader.model is not tiny
    assert comb(PROMPTS, COMPLETIONS) == pytest.approx(ProbeReward(probe_dir, InternalsReader(tiny))(PROMPTS, COMPLETIONS))
    assert set(comb.last) == {"probe:sentiment", "vader", "novelty"}


# -- errors ----------------------------------------------------------------------------------
def test_a_probe_at_a_missing_layer_or_of_the_wrong_width_is_refused(reader, tmp_path):
    deep = fit_tiny_probe("L40.resid_post").save(tmp_path / "deep")
    with pytest.raises(ConfigError, match=r"probe 'probe:deep' reads L40.resid_post but the model "
                                          r"has 2 layers \(valid 0..1\)"):
        ProbeReward(deep, reader)
    narrow = fit_tiny_probe(d=8).save(tmp_path / "narrow")
    with pytest.raises(ConfigError, match=r"width 8, the site has d_model=64"):
        ProbeReward(narrow, reader)
    with pytest.raises(ConfigError, match=r"width 32, the site has d_model=64"):
        DirectionReward(torch.ones(32), SITE, reader)
    sae = DICTIONARIES.get("relu")(DictionaryConfig(arch="relu", d_in=16, d_sae=8, input_site=SITE))
    with pytest.raises(ConfigError, match=r"width 16, the site has d_model=64"):
        FeatureReward(sae, 0, reader)
    with pytest.raises(ConfigError, match=r"latent 9 is out of range.*d_sae=8"):
        FeatureReward(sae, 9, reader)


def test_empty_completion_names_the_example_and_prompt(reader, probe_dir):
    reward = ProbeReward(probe_dir, reader)
    with pytest.raises(InputError, match=r"completion 1 is empty \(prompt 'i think that'\)"):
        reward(PROMPTS[:2], ["fine", ""])
    scored = ProbeReward(probe_dir, reader, empty_value=-1.0)(PROMPTS[:2], ["fine", ""])
    assert scored[1] == -1.0 and scored[0] == pytest.approx(reward(PROMPTS[:1], ["fine"])[0])


def test_non_finite_rewards_name_the_reward_and_prompt(reader, tmp_path):
    with pytest.raises(InputError, match=r"Reward 'checker' returned nan for example 1 "
                                         r"\(prompt 'second'\)"):
        VerifierReward(lambda p, c: math.nan if p == "second" else 1.0, name="checker")(
            ["first", "second"], ["a", "b"])
    probe = fit_tiny_probe()
    probe.weight = torch.full_like(probe.weight, float("inf"))
    probe.weight[0] = -float("inf")
    with pytest.raises(InputError, match=r"Reward 'poisoned' returned nan for example 0 "
                                         r"\(prompt 'the movie was'\)"):
        ProbeReward(probe, reader, name="poisoned")(PROMPTS, COMPLETIONS)


def test_unknown_kinds_and_keys_are_refused(tiny):
    with pytest.raises(ConfigError, match=r"Unknown reward kind 'prob' \(did you mean 'probe'\?\); "
                                          r"valid kinds: 'probe', 'feature'"):
        build_reward({"kind": "prob"}, tiny)
    assert "combined" in KINDS
    with pytest.raises(ConfigError, match=r"unknown keys \['layer'\]"):
        build_reward({"kind": "vader", "layer": 3}, tiny)
    with pytest.raises(ConfigError, match="needs a 'weight'"):
        build_reward({"kind": "combined", "parts": [{"kind": "vader"}]}, tiny)
    with pytest.raises(ConfigError, match="unknown reduce 'median'"):
        DirectionReward(torch.ones(64), SITE, InternalsReader(tiny, frozen=False), reduce="median")
