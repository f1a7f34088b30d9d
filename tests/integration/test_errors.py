"""Errors a user can trigger are raised before any forward pass, with the message pinned."""

from __future__ import annotations

import re

import pytest
import torch
import transformers as tf

from interplab.core.errors import (
    InputError,
    InterplabError,
    InterventionError,
    PositionError,
    SiteError,
    UnsupportedArchitectureError,
)
from interplab.core.sites import Site
from interplab.interventions import Ablate, Apply, Patch, Steer, applied
from interplab.models.registry import adapter_class_for, supported_model_types
from interplab.runtime import HookedModel

from .families import BY_NAME, ForwardCounter, assert_clean


def _metric(logits, batch):
    return logits.sum()


def _refused(model, forward_calls, call, error, match):
    """``call(model)`` raises ``error`` matching ``match`` through run, run_with_cache,
    gradients and generate alike, and the HF model never ran."""
    with pytest.raises(error, match=match):
        call(model)
    assert forward_calls.calls == 0
    assert_clean(model)


def _everywhere(model, forward_calls, inputs, interventions, error, match):
    calls = [
        lambda m: m.run(inputs, interventions),
        lambda m: m.run_with_cache(inputs, ["L0.resid_pre"], interventions),
        lambda m: m.gradients(inputs, _metric, ["L0.resid_pre"], interventions),
        lambda m: m.generate(inputs, max_new_tokens=2, interventions=interventions),
        lambda m: m.generate(inputs, max_new_tokens=2, interventions=interventions,
                             use_kv_cache=False),
    ]
    for call in calls:
        _refused(model, forward_calls, call, error, match)


# -- sites -------------------------------------------------------------------------------------
def test_unknown_site_kind(model, forward_calls, ids):
    with pytest.raises(SiteError, match=r"Cannot parse site 'L0\.attn\.zz'\. Write 'L<layer>"):
        model.run_with_cache(ids, ["L0.attn.zz"])
    with pytest.raises(SiteError, match=r"Cannot parse site 'L0\.resid'.*Valid kinds: 'embed'"):
        Steer("L0.resid", vector=torch.ones(64))
    with pytest.raises(SiteError, match="Unknown site kind 'resid'. Valid kinds: 'embed', "):
        Site(0, "resid")
    with pytest.raises(SiteError, match="Site kind 'attn.z' needs a layer, e.g. 'L0.attn.z'"):
        Site.parse("attn.z")
    with pytest.raises(SiteError, match="Site kind 'logits' has no layer; write it as 'logits'"):
        model.run_with_cache(ids, ["L0.logits"])
    with pytest.raises(SiteError, match="Site kind 'mlp_out' has no heads; per-head kinds are"):
        model.run_with_cache(ids, ["L0.mlp_out[h1]"])
    assert forward_calls.calls == 0
    assert isinstance(SiteError("x"), KeyError) and isinstance(SiteError("x"), InterplabError)


def test_layer_out_of_range(model, forward_calls, ids, family):
    n = family.n_layers
    match = re.escape(f"Site L{n}.mlp_out: layer {n} is out of range; this model has {n} layers "
                      f"(valid: 0..{n - 1}).")
    _everywhere(model, forward_calls, ids, [Ablate(f"L{n}.mlp_out")], SiteError, match)
    _refused(model, forward_calls, lambda m: m.run_with_cache(ids, [f"L{n}.mlp_out"]),
             SiteError, match)
    _refused(model, forward_calls, lambda m: m.gradients(ids, _metric, [f"L{n}.mlp_out"]),
             SiteError, match)


def test_head_out_of_range(model, forward_calls, ids, family):
    h = family.n_heads
    match = re.escape(f"Site L0.attn.z[h{h}]: head {h} is out of range; this model has {h} heads "
                      f"(valid: 0..{h - 1}).")
    _everywhere(model, forward_calls, ids, [Ablate(f"L0.attn.z[h{h}]")], SiteError, match)
    _refused(model, forward_calls, lambda m: m.run_with_cache(ids, [f"L1.attn.q[h{h}]"]),
             SiteError, "this model has 4 heads")


def test_kv_head_out_of_range(model, forward_calls, ids, family):
    kv = family.n_kv_heads
    what = "key/value heads" if kv != family.n_heads else "heads"
    for kind in ("k", "v"):
        match = re.escape(f"Site L1.attn.{kind}[h{kv}]: head {kv} is out of range; this model "
                          f"has {kv} {what} (valid: 0..{kv - 1}).")
        _everywhere(model, forward_calls, ids, [Ablate(f"L1.attn.{kind}[h{kv}]")], SiteError,
                    match)
    if kv < family.n_heads:  # a query head beyond n_kv_heads is fine
        model.run(ids, [Ablate(f"L1.attn.q[h{kv}]")])


def test_resid_mid_under_parallel_residual(model, forward_calls, ids, family):
    if not family.parallel:
        model.run(ids, [Ablate("L1.resid_mid")])  # exists, and works
        return
    match = (r"Site L1\.resid_mid: this model uses a parallel residual \(attention and MLP read "
             r"the same resid_pre\), so there is no resid_mid\. Use resid_pre, attn_out or mlp_out\.")
    _everywhere(model, forward_calls, ids, [Ablate("L1.resid_mid")], SiteError, match)
    _refused(model, forward_calls, lambda m: m.run_with_cache(ids, ["L1.resid_mid"]),
             SiteError, match)
    _refused(model, forward_calls, lambda m: m.gradients(ids, _metric, ["L0.resid_mid"]),
             SiteError, "so there is no resid_mid")


def test_attention_pattern_is_read_only(model, forward_calls, ids):
    match = (r"Site L0\.attn\.pattern is read-only: attention patterns are read-only in this "
             r"version; edit q, k, v or z instead\.")
    _everywhere(model, forward_calls, ids, [Patch("L0.attn.pattern", value=torch.zeros(4, 7))],
                InterventionError, match)
    _everywhere(model, forward_calls, ids, [Apply("L1.attn.pattern[h1]", fn=lambda x: x)],
                InterventionError, r"Site L1\.attn\.pattern\[h1\] is read-only")
    with pytest.raises(InterventionError, match="is read-only"), \
            applied(model, [Ablate("L0.attn.pattern")]):
        pass
    assert forward_calls.calls == 0
    assert_clean(model)


def test_pattern_needs_eager_attention(ids):
    fam = BY_NAME["llama"]
    torch.manual_seed(0)
    model = HookedModel(fam.model_cls(fam.config(attn_implementation="sdpa")).eval())
    counter = ForwardCounter(model.hf)
    with pytest.raises(SiteError, match=r"Site L0\.attn\.pattern needs attention probabilities, "
                                        r"which the 'sdpa' attention kernel does not return"):
        model.run_with_cache(ids, ["L0.attn.pattern"])
    assert counter.calls == 0
    assert_clean(model)


# -- values ------------------------------------------------------------------------------------
def test_steering_vector_of_wrong_width(model, forward_calls, ids, family):
    match = re.escape("steer at L0.resid_pre: vector has shape (63,), but the site's activations "
                      "are [..., 64] per token. Give [64], [n_positions, 64] or "
                      "[n_rows, n_positions, 64].")
    _everywhere(model, forward_calls, ids, [Steer("L0.resid_pre", vector=torch.ones(63))],
                InterventionError, match)
    dh = family.d_head
    _everywhere(model, forward_calls, ids, [Steer("L1.attn.z[h0]", vector=torch.ones(64))],
                InterventionError, re.escape(f"activations are [..., {dh}] per token"))
    _everywhere(model, forward_calls, ids, [Patch("L0.attn.q", value=torch.ones(64))],
                InterventionError,
                re.escape(f"activations are [..., {family.n_heads}, {dh}] per token"))


def test_value_with_wrong_positions_or_rows(model, forward_calls, ids):
    _everywhere(model, forward_calls, ids,
                [Patch("L0.resid_pre", value=torch.ones(3, 64), positions=[0, 1])],
                InterventionError,
                re.escape("patch at L0.resid_pre: value gives 3 positions, but the intervention "
                          "lists 2: [0, 1]."))
    _everywhere(model, forward_calls, ids,
                [Patch("L0.resid_pre", value=torch.ones(3, 1, 64), positions=[0], rows=[0, 1])],
                InterventionError,
                re.escape("patch at L0.resid_pre: value gives 3 rows, the intervention acts on 2."))
    _refused(model, forward_calls,
             lambda m: m.run(ids, [Steer("L0.resid_pre", vector=torch.ones(5, 64))]),
             InterventionError, r"with positions=None it needs one per token \(7\)")


# -- positions and rows ------------------------------------------------------------------------
def test_positions_out_of_range(model, forward_calls, ids, padded):
    for bad in (7, -8):
        match = re.escape(f"steer at L0.resid_pre: positions [{bad}] out of range for row 0, "
                          "whose prompt has 7 tokens (valid: -7..6).")
        _refused(model, forward_calls,
                 lambda m, b=bad: m.run(ids, [Steer("L0.resid_pre", vector=torch.ones(64),
                                                    positions=[0, b])]),
                 PositionError, match)
    # row 1 of the padded batch has 4 tokens
    _refused(model, forward_calls,
             lambda m: m.run(padded, [Ablate("L0.attn_out", positions=[4])]), PositionError,
             re.escape("positions [4] out of range for row 1, whose prompt has 4 tokens "
                       "(valid: -4..3)."))
    # but a row the intervention does not touch is not checked
    model.run(padded, [Ablate("L0.attn_out", positions=[4], rows=[0, 2])])
    forward_calls.calls = 0
    _refused(model, forward_calls,
             lambda m: m.run_with_cache(padded, ["L0.resid_pre"], positions=[-1, 4]),
             PositionError,
             re.escape("cache positions [4] out of range: the shortest prompt has 4 tokens, so "
                       "valid positions are -4..3."))
    # generation: positions run up to the prompt plus the new tokens
    _refused(model, forward_calls,
             lambda m: m.generate(ids, max_new_tokens=3,
                                  interventions=[Ablate("L0.attn_out", positions=[10])]),
             PositionError, re.escape("positions [10] out of range for row 0, whose prompt has 7 "
                                      "tokens (valid: -7..9)."))
    assert isinstance(PositionError("x"), IndexError)


def test_rows_out_of_range(model, forward_calls, ids):
    for bad in (2, -1):
        match = re.escape(f"ablate at L0.attn_out: rows [{bad}] out of range for a batch of 2 "
                          "(valid: 0..1).")
        _everywhere(model, forward_calls, ids, [Ablate("L0.attn_out", rows=[0, bad])],
                    PositionError, match)


def test_errors_inside_applied_are_checked_at_the_forward(model, forward_calls, ids):
    """``applied`` has no batch to check against; its hooks are checked by each call."""
    with applied(model, [Ablate("L0.attn_out", rows=[5])]):
        with pytest.raises(PositionError, match=r"rows \[5\] out of range for a batch of 2"):
            model.run(ids)
        assert forward_calls.calls == 0
    assert_clean(model)


# -- models ------------------------------------------------------------------------------------
def _tiny(config_cls, model_cls, **kw):
    torch.manual_seed(0)
    return model_cls(config_cls(vocab_size=32, hidden_size=64, intermediate_size=128,
                                num_hidden_layers=2, num_attention_heads=4, **kw)).eval()


def test_unsupported_architecture():
    hf = _tiny(tf.MistralConfig, tf.MistralForCausalLM, num_key_value_heads=2)
    counter = ForwardCounter(hf)
    supported = ", ".join(repr(t) for t in supported_model_types())
    assert supported == "'gemma3_text', 'gpt2', 'gpt_neox', 'interplab-toy', 'llama', 'qwen2', 'qwen3'"
    with pytest.raises(UnsupportedArchitectureError,
                       match=re.escape(f"interplab has no adapter for model_type 'mistral'. "
                                       f"Supported model types: {supported}.")):
        HookedModel(hf)
    assert counter.calls == 0
    with pytest.raises(UnsupportedArchitectureError, match="no adapter for model_type 'bert'"):
        adapter_class_for(tf.BertConfig())


def test_unknown_config_key_is_refused(family):
    hf = family.model_cls(family.config(attn_implementation="eager", shiny_new_option=3))
    counter = ForwardCounter(hf)
    with pytest.raises(UnsupportedArchitectureError,
                       match=r"adapter does not handle these config entries: shiny_new_option=3\. "
                             r"interplab refuses rather than risk hooks that silently miss"):
        HookedModel(hf)
    assert counter.calls == 0


@pytest.mark.parametrize(
    ("name", "overrides", "match"),
    [
        ("llama", {"pretraining_tp": 2}, r"pretraining_tp=2 \(only 1 is supported\)"),
        ("gemma3", {"final_logit_softcapping": 30.0},
         r"final_logit_softcapping=30\.0 \(the logits site would miss the soft cap\)"),
        ("gemma3", {"use_bidirectional_attention": True},
         r"use_bidirectional_attention=True \(not a causal LM\)"),
        ("gpt2", {"add_cross_attention": True},
         r"add_cross_attention=True \(encoder-decoder cross attention\)"),
    ],
)
def test_unsupported_config_value_is_refused(name, overrides, match):
    fam = BY_NAME[name]
    torch.manual_seed(0)
    hf = fam.model_cls(fam.config(attn_implementation="eager", **overrides))
    counter = ForwardCounter(hf)
    with pytest.raises(UnsupportedArchitectureError,
                       match=rf"The {hf.config.model_type.split('_')[0]}\w* adapter does not "
                             rf"handle these config entries: .*{match}"):
        HookedModel(hf)
    assert counter.calls == 0


# -- inputs ------------------------------------------------------------------------------------
def test_generate_refuses_right_padding(model, forward_calls, ids):
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    right = {"input_ids": ids, "attention_mask": mask}
    for kv in (True, False):
        _refused(model, forward_calls,
                 lambda m, kv=kv: m.generate(right, max_new_tokens=2, use_kv_cache=kv),
                 InputError,
                 re.escape("generate() needs left-padded prompts, but rows [1] end in padding."))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, ids: m.generate(ids, max_new_tokens=0), "max_new_tokens must be >= 1, got 0"),
        (lambda m, ids: m.generate(ids, do_sample=True, temperature=0.0),
         "temperature must be > 0 when sampling"),
        (lambda m, ids: m.run(ids[:, :0]), r"Empty batch: token ids of shape \(2, 0\)"),
        (lambda m, ids: m.run(ids.float()), "Token ids must be an integer tensor"),
        (lambda m, ids: m.run({"input_ids": ids, "attention_mask": torch.zeros_like(ids)}),
         r"Rows \[0, 1\] have no real tokens"),
        (lambda m, ids: m.run({"input_ids": ids, "attention_mask": torch.tensor(
            [[1, 1, 0, 1, 1, 1, 1], [1] * 7])}), "real tokens must be contiguous"),
        (lambda m, ids: m.run("a prompt"), "This model has no tokenizer"),
        (lambda m, ids: m.gradients(ids, _metric, []), "gradients\\(\\) needs at least one site"),
    ],
)
def test_bad_inputs(model, forward_calls, ids, call, match):
    _refused(model, forward_calls, lambda m: call(m, ids), InputError, match)
