"""Tiny random HF models of every adapter family, and the inputs and checks the tests share.

Each family is built offline on CPU from a config in code (vocab 32, hidden 64, MLP 128, 2-3
layers), seeded, with eager attention, in eval mode, once per session.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import transformers as tf

from interplab.models.toy import ToyConfig, ToyForCausalLM
from interplab.runtime import HookedModel

VOCAB, HIDDEN, MLP = 32, 64, 128


@dataclass(frozen=True)
class Family:
    """One tiny model: how to build it and the facts the hand-made reference needs."""

    name: str
    arch: str  # key into handmade.LAYOUTS
    config_cls: type
    model_cls: type
    kwargs: dict = field(default_factory=dict)
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 4
    d_head: int = 16
    parallel: bool = False  # parallel residual: no resid_mid

    def config(self, **overrides):
        return self.config_cls(**{**self.kwargs, **overrides})

    def __str__(self) -> str:
        return self.name


def _decoder(layers: int, heads: int, kv: int, **extra) -> dict:
    return dict(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, **extra,
    )


def _neox(parallel: bool) -> dict:
    return dict(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=2,
        num_attention_heads=4, use_parallel_residual=parallel, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


FAMILIES = [
    Family("llama", "llama", tf.LlamaConfig, tf.LlamaForCausalLM, _decoder(2, 4, 4)),
    Family("llama_gqa", "llama", tf.LlamaConfig, tf.LlamaForCausalLM,
           _decoder(3, 4, 2), n_layers=3, n_kv_heads=2),
    Family("qwen2", "qwen", tf.Qwen2Config, tf.Qwen2ForCausalLM, _decoder(2, 4, 2), n_kv_heads=2),
    # head_dim * n_heads (128) != hidden_size (64): head widths never stand in for d_model
    Family("qwen3", "qwen", tf.Qwen3Config, tf.Qwen3ForCausalLM,
           _decoder(2, 4, 2, head_dim=32), n_kv_heads=2, d_head=32),
    Family("gemma3", "gemma3", tf.Gemma3TextConfig, tf.Gemma3ForCausalLM,
           _decoder(3, 4, 2, head_dim=16, sliding_window=3,
                    layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
           n_layers=3, n_kv_heads=2),
    Family("gpt2", "gpt2", tf.GPT2Config, tf.GPT2LMHeadModel,
           dict(vocab_size=VOCAB, n_embd=HIDDEN, n_inner=MLP, n_layer=3, n_head=4, n_positions=64,
                bos_token_id=1, eos_token_id=2, pad_token_id=0),
           n_layers=3),
    Family("neox_parallel", "neox", tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, _neox(True),
           parallel=True),
    Family("neox_sequential", "neox", tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, _neox(False)),
    # pre-LN here so hooks on the wrong side of a norm show; the planted models use "none"
    Family("toy", "llama", ToyConfig, ToyForCausalLM,
           dict(vocab_size=VOCAB, d_model=HIDDEN, d_mlp=MLP, n_layers=2, n_heads=4, d_head=16,
                n_ctx=64, normalization="layernorm", bos_token_id=1, eos_token_id=2,
                pad_token_id=0)),
]
BY_NAME = {f.name: f for f in FAMILIES}


@functools.cache
def build(name: str):
    """The tiny random model of a family: seeded, eager attention, eval mode, built once."""
    fam = BY_NAME[name]
    torch.manual_seed(0)
    model = fam.model_cls(fam.config(attn_implementation="eager")).eval()
    # Random init leaves norm weights at 1 and biases at 0; perturb them so a hook on the wrong
    # side of a norm, or of a bias, cannot go unnoticed.
    with torch.no_grad():
        for name_, p in model.named_parameters():
            if "norm" in name_ or "ln_" in name_ or name_.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


# -- hygiene -----------------------------------------------------------------------------------
def _ours(fn) -> bool:
    # transformers installs its own output-capturing hooks the first time hidden states or
    # attentions are asked for, and keeps them; those are not ours to count or remove.
    return not getattr(fn, "__module__", "").startswith("transformers")


def torch_hooks(module: torch.nn.Module) -> int:
    """Forward / pre-forward / backward hooks on any submodule, other than transformers' own."""
    return sum(
        _ours(fn)
        for m in module.modules()
        for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks)
        for fn in hooks.values()
    )


def remove_torch_hooks(module: torch.nn.Module) -> None:
    """Remove every hook ``torch_hooks`` counts."""
    for m in module.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks):
            for key in [k for k, fn in hooks.items() if _ours(fn)]:
                del hooks[key]


def assert_clean(model: HookedModel) -> None:
    """No interplab hook, no torch hook on any HF module, no forward context left behind."""
    assert model.n_torch_hooks == 0
    assert torch_hooks(model.hf) == 0
    assert model._ctx is None
    assert not model._persistent


class ForwardCounter:
    """Counts calls of the HF model's forward, without putting a hook on it."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.module = module
        inner = module.forward

        def counting(*args, **kwargs):
            self.calls += 1
            return inner(*args, **kwargs)

        module.forward = counting

    def remove(self) -> None:
        del self.module.forward


# -- inputs ------------------------------------------------------------------------------------
def tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random token ids in [3, VOCAB), clear of the pad / bos / eos ids."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, shape, generator=g)


PROMPT_LENGTHS = (7, 4, 5)


def left_pad(rows: list[torch.Tensor], pad: int = 0) -> dict:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def every_writable_site(family: Family) -> list[str]:
    """Every site a write can target: every layered kind of every layer, every head, and the
    unlayered ones (attn.pattern is read-only and left out)."""
    sites = ["embed"]
    for layer in range(family.n_layers):
        kinds = ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp.hidden",
                 "attn.z", "attn.q", "attn.k", "attn.v"]
        if family.parallel:
            kinds.remove("resid_mid")
        sites += [f"L{layer}.{k}" for k in kinds]
        sites += [f"L{layer}.attn.{k}[h{h}]" for k in "zq" for h in range(family.n_heads)]
        sites += [f"L{layer}.attn.{k}[h{h}]" for k in "kv" for h in range(family.n_kv_heads)]
    return [*sites, "ln_final", "logits"]


def raiser(message: str = "boom from inside the hook") -> Callable:
    def fn(x):
        raise RuntimeError(message)

    return fn
