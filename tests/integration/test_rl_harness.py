"""The GRPO harness on a tiny random Llama (the default model's tokenizer): two TRL steps run end
to end and leave the reference untouched; the loss TRL computes equals the hand-written GRPO loss
(``rl.grpo_loss``) on a fixed batch; runs repeat under a seed; LoRA and checkpoints work; the
monitors log into metrics.jsonl."""

from __future__ import annotations

import json

import pytest
import torch

from interplab.core.errors import InputError
from interplab.rl.config import GRPOSettings
from interplab.rl.grpo_loss import group_advantages, grpo_loss, per_token_logps
from interplab.rl.harness import build_trainer, train_grpo
from interplab.rl.monitors import HeldOutMonitor

from .test_analyses_conformance import _tiny_with_real_tokenizer

PROMPTS = ["The movie was", "I think that", "Once upon a time", "The food here"]


def length_reward(prompts, completions, **kw):
    """A plain TRL-signature reward: the share of letters 'e' in the completion."""
    return [c.count("e") / max(len(c), 1) for c in completions]


def verifier(prompts, completions, **kw):
    return [float(len(c.split())) for c in completions]


@pytest.fixture(scope="module")
def tiny_real(tmp_path_factory):
    from interplab.runtime.loading import load

    return load(_tiny_with_real_tokenizer(tmp_path_factory.mktemp("rl-tiny")))


SMALL = dict(steps=2, prompts_per_step=2, num_generations=2, max_completion_length=6, learning_rate=1e-2)


def _params(hf):
    return {n: p.detach().clone() for n, p in hf.named_parameters()}


def test_two_grpo_steps_run_end_to_end_and_leave_the_reference_untouched(tiny_real, tmp_path):
    from interplab.analyses.probes import Probe
    from interplab.tasks.labelled import make_dataset

    before = _params(tiny_real.hf)
    flags = {n: p.requires_grad for n, p in tiny_real.hf.named_parameters()}
    d = tiny_real.dims.d_model
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d, generator=g)
    probe = Probe("L1.resid_post", "mean", "random", w / w.norm(), w, 0.0, torch.zeros(d))
    data = make_dataset("sentiment", n=8, seed=0)
    monitor = HeldOutMonitor(PROMPTS[:3], length_reward, verifier, proxy_threshold=0.1, verifier_threshold=2.0,
                             max_new_tokens=4, probe=probe, texts=list(data.texts), labels=list(data.labels),
                             reference=tiny_real)
    run = train_grpo(tiny_real, length_reward, PROMPTS, GRPOSettings(**SMALL, save_steps=2), tmp_path, seed=0,
                     monitor=monitor)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == run.metrics and [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("loss", "reward", "kl", "heldout_proxy", "heldout_verifier", "hack_rate",
                    "probe_auroc_reference", "probe_auroc_policy", "probe_auroc_drop"):
            assert key in r, key
        assert 0.0 <= r["hack_rate"] <= 1.0
    assert rows[0]["kl"] == 0.0  # the first batch is sampled from the reference's own weights
    assert rows[1]["kl"] > 0.0  # one step with lr 1e-2 moved the policy
    assert rows[0]["probe_auroc_reference"] == rows[1]["probe_auroc_reference"]  # frozen
    # the policy moved, the caller's model (the reference) did not
    after = _params(tiny_real.hf)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert {n: p.requires_grad for n, p in tiny_real.hf.named_parameters()} == flags
    policy = dict(run.policy.named_parameters())
    assert any(not torch.equal(before[n], policy[n].detach()) for n in before)
    assert run.checkpoints and (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    assert run.samples and run.samples[0]["step"] == 2 and "completion" in run.samples[0]
    # TRL's reference is the starting weights
    ref = dict(run.trainer.ref_model.named_parameters())
    assert all(torch.equal(before[n], ref[n]) for n in before)


def test_a_seed_repeats_a_run(tiny_real, tmp_path):
    runs = [train_grpo(tiny_real, length_reward, PROMPTS, GRPOSettings(**SMALL), tmp_path / str(i), seed=3)
            for i in range(2)]
    keys = ("loss", "reward", "kl", "grad_norm")
    assert [[r[k] for k in keys] for r in runs[0].metrics] == [[r[k] for k in keys] for r in runs[1].metrics]


def test_lora_trains_only_the_adapter(tiny_real, tmp_path):
    before = _params(tiny_real.hf)
    run = train_grpo(tiny_real, length_reward, PROMPTS, GRPOSettings(**{**SMALL, "steps": 1}, lora_r=2),
                     tmp_path, seed=0)
    trained = {n for n, p in run.policy.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    base = run.policy.get_base_model()
    frozen = {n: p for n, p in base.named_parameters() if "lora_" not in n}
    assert all(torch.equal(before[n.replace(".base_layer", "")], p.detach()) for n, p in frozen.items())
    assert run.metrics[0]["kl"] == 0.0


def test_trl_loss_equals_the_reference_implementation_on_a_fixed_batch(tiny_real, tmp_path):
    settings = GRPOSettings(**SMALL, beta=0.1)
    trainer = build_trainer(tiny_real, length_reward, PROMPTS, settings, tmp_path, seed=0)
    tok = tiny_real.tokenizer
    g = torch.Generator().manual_seed(1)
    tok.padding_side = "left"
    enc = tok(["The movie was", "The movie was", "Once upon a time", "Once upon a time"], return_tensors="pt",
              padding=True)
    n, t = 4, 5
    completion_ids = torch.randint(0, len(tok), (n, t), generator=g)
    completion_mask = torch.ones(n, t, dtype=torch.long)
    completion_mask[1, 3:] = 0  # ragged completions: padding after an EOS
    completion_mask[3, 2:] = 0
    rewards = torch.tensor([0.2, 0.9, 0.5, 0.1])
    advantages = group_advantages(rewards, 2)
    model = trainer.model
    model.train()
    with torch.no_grad():
        logps = per_token_logps(model, enc["input_ids"], enc["attention_mask"], completion_ids, completion_mask)
    old = logps + 0.4 * torch.randn(n, t, generator=g)  # ratios far from 1: clipping is active
    ref = logps + 0.3 * torch.randn(n, t, generator=g)
    ratio = torch.exp(logps - old)
    assert bool(((ratio > 1.2) | (ratio < 0.8))[completion_mask.bool()].any())
    inputs = {"prompt_ids": enc["input_ids"], "prompt_mask": enc["attention_mask"],
              "completion_ids": completion_ids, "completion_mask": completion_mask, "advantages": advantages,
              "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": completion_mask.sum()}
    trainer.current_gradient_accumulation_steps = 1
    trl_loss = trainer.compute_loss(model, inputs)
    mine = grpo_loss(per_token_logps(model, enc["input_ids"], enc["attention_mask"], completion_ids,
                                     completion_mask), old, ref, advantages, completion_mask, beta=0.1,
                     epsilon_low=settings.epsilon, epsilon_high=settings.epsilon)
    assert trainer.loss_type == "dapo"
    assert abs(float(trl_loss.detach()) - float(mine.detach())) <= 1e-5
    # and the gradients agree too
    grads = torch.autograd.grad(trl_loss, [p for p in model.parameters() if p.requires_grad])
    mine = grpo_loss(per_token_logps(model, enc["input_ids"], enc["attention_mask"], completion_ids,
                                     completion_mask), old, ref, advantages, completion_mask, beta=0.1)
    grads2 = torch.autograd.grad(mine, [p for p in model.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(grads, grads2, strict=True))
    # without the KL term the loss changes by β·mean k3 (the term is really there)
    no_kl = grpo_loss(logps, old, ref, advantages, completion_mask, beta=0.0)
    assert abs(float(no_kl) - float(trl_loss.detach())) > 1e-4


def test_bad_input_is_refused_before_training(tiny_real, tmp_path):
    with pytest.raises(InputError, match="prompt list is empty"):
        train_grpo(tiny_real, length_reward, [], GRPOSettings(**SMALL), tmp_path)
    with pytest.raises(InputError, match=r"Prompts \[1\] are empty"):
        train_grpo(tiny_real, length_reward, ["a", " "], GRPOSettings(**SMALL), tmp_path)
    with pytest.raises(InputError, match="prompts_per_step=2 but only 1 prompts"):
        train_grpo(tiny_real, length_reward, ["a"], GRPOSettings(**SMALL), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize(("fields", "message"), [
    ({"reward": {"kind": "vadr"}}, "unknown reward kind 'vadr' \\(did you mean 'vader'\\?\\); valid kinds"),
    ({"reward": '{"kind": "probe"'}, "reward must be a JSON object"),
    ({"verifier": {"kind": "oracle"}}, "verifier: unknown reward kind 'oracle'"),
    ({"steps": 0}, "steps must be >= 1, got 0"),
    ({"prompts": "no-such-source"}, "prompts='no-such-source' is neither a built-in list"),
    ({"prompts": "{empty}"}, "gave no prompts; the list is empty"),
])
def test_the_rl_run_refuses_bad_input_before_any_work(fields, message, tmp_path):
    from interplab.core.errors import ConfigError
    from interplab.runs.runner import run_analysis

    if fields.get("prompts") == "{empty}":
        (tmp_path / "empty.txt").write_text("\n\n")
        fields = {**fields, "prompts": str(tmp_path / "empty.txt")}
    with pytest.raises(ConfigError, match=message):
        run_analysis("rl", model="/nonexistent", out=str(tmp_path / "runs"), **fields)


def test_the_rl_run_writes_metrics_and_a_record(tiny_real, tmp_path):
    from interplab.runs.runner import run_analysis

    outcome = run_analysis("rl", model=str(tiny_real.source.get("path") or tiny_real.hf.name_or_path),
                           out=str(tmp_path / "runs"), quick=True, steps=50, learning_rate=0.01,
                           verifier='{"kind": "vader", "name": "vader_verifier"}', heldout_tokens=3,
                           progress=False)
    rows = [json.loads(line) for line in (outcome.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # quick caps the steps at 4
    result = outcome.result
    assert result.steps == [1, 2, 3, 4] and result.curves["kl"][0] == 0.0
    assert result.summary["heldout_verifier_final"] == result.curves["heldout_verifier"][-1]
    assert result.verifier_name == "vader_verifier" and result.samples
