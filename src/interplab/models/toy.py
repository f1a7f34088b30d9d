"""The toy family: a small HF causal LM whose weights can be set by hand.

Built for models with known mechanisms (``interplab.groundtruth.planted``): separate per-head
q / k / v / o projections, learned or no positions, ReLU MLP or none (attention-only), and
``normalization="none"`` -- no LayerNorm anywhere, so a hand-set circuit computes exactly what
its weights say and the logits are linear in every head's output. ``"layernorm"`` (pre-LN,
GPT-2 style) exists so the family can also be tested where hooks must sit on the right side of
a norm. The module names follow Llama's (``model.layers[i].self_attn.q_proj`` ...), so the
integration suite's hand-written hooks for Llama apply unchanged.

Registered with ``AutoConfig`` / ``AutoModelForCausalLM`` under model type ``interplab-toy``
when ``interplab.models`` is imported, so ``save_pretrained`` + ``interplab.load(dir)`` work.
Eager attention only; supports left padding (positions follow ``attention_mask``), a
``DynamicCache`` for generation, ``output_hidden_states`` / ``output_attentions``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    DynamicCache,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from interplab.core.errors import ConfigError, InputError, choices

MODEL_TYPE = "interplab-toy"
POSITIONAL = ("learned", "none")
NORMALIZATION = ("none", "layernorm")


class ToyConfig(PretrainedConfig):
    """Sizes and switches of a toy model. ``d_mlp=0`` means attention-only."""

    model_type = MODEL_TYPE
    attribute_map = {"num_hidden_layers": "n_layers", "hidden_size": "d_model",
                     "num_attention_heads": "n_heads", "max_position_embeddings": "n_ctx"}

    def __init__(self, vocab_size: int = 32, n_ctx: int = 64, d_model: int = 64,
                 n_layers: int = 2, n_heads: int = 4, d_head: int = 16, d_mlp: int = 128,
                 positional: str = "learned", normalization: str = "none",
                 attn_scale: float | None = None, bias: bool = True,
                 layer_norm_eps: float = 1e-5, initializer_range: float = 0.02,
                 use_cache: bool = True, causal: bool = True, **kwargs):
        self.vocab_size = vocab_size
        self.n_ctx = n_ctx
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.d_head = d_head
        self.d_mlp = d_mlp
        self.positional = positional  # "learned" (a table of n_ctx rows) or "none"
        self.normalization = normalization  # "none" or "layernorm" (pre-LN)
        self.attn_scale = attn_scale  # multiplies q.k; None = 1/sqrt(d_head)
        self.bias = bias  # biases on every Linear
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.use_cache = use_cache  # return a DynamicCache from forward (HF's convention)
        # False: every position attends to every (unmasked) position -- tracr's compiled models
        # (Lindner et al. 2023) are bidirectional. Prefix reuse and generation assume True.
        self.causal = causal
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    @property
    def scale(self) -> float:
        return 1 / math.sqrt(self.d_head) if self.attn_scale is None else float(self.attn_scale)


def _norm(config: ToyConfig) -> nn.Module:
    if config.normalization == "layernorm":
        return nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
    return nn.Identity()


class ToyAttention(nn.Module):
    """Softmax attention (causal unless ``config.causal`` is False) with separate projections;
    returns (output, pattern)."""

    def __init__(self, config: ToyConfig, layer_idx: int) -> None:
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        inner, b = config.n_heads * config.d_head, config.bias
        self.q_proj = nn.Linear(config.d_model, inner, bias=b)
        self.k_proj = nn.Linear(config.d_model, inner, bias=b)
        self.v_proj = nn.Linear(config.d_model, inner, bias=b)
        self.o_proj = nn.Linear(inner, config.d_model, bias=b)

    def forward(self, x, allowed, cache=None):
        c = self.config

        def split(t):  # [batch, pos, heads * d_head] -> [batch, heads, pos, d_head]
            return t.unflatten(-1, (c.n_heads, c.d_head)).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        scores = (q @ k.transpose(-1, -2)) * c.scale
        scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
        pattern = torch.softmax(scores, dim=-1)
        z = (pattern @ v).transpose(1, 2).flatten(-2)  # [batch, pos, heads * d_head]
        return self.o_proj(z), pattern


class ToyMLP(nn.Module):
    """W_out ReLU(W_in x + b_in) + b_out."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.d_model, config.d_mlp, bias=config.bias)
        self.act = nn.ReLU()
        self.down_proj = nn.Linear(config.d_mlp, config.d_model, bias=config.bias)

    def forward(self, x):
        return self.down_proj(self.act(self.up_proj(x)))


class ToyBlock(nn.Module):
    """resid_mid = x + attn(ln1(x)); out = resid_mid + mlp(ln2(resid_mid)) (no MLP: mid)."""

    def __init__(self, config: ToyConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = _norm(config)
        self.self_attn = ToyAttention(config, layer_idx)
        self.post_attention_layernorm = _norm(config)
        self.mlp = ToyMLP(config) if config.d_mlp > 0 else None

    def forward(self, hidden_states, allowed, cache=None, patterns: list | None = None):
        attn, pattern = self.self_attn(self.input_layernorm(hidden_states), allowed, cache)
        if patterns is not None:  # a plain tensor out, as HF blocks return; patterns on the side
            patterns.append(pattern)
        mid = hidden_states + attn
        if self.mlp is None:
            return mid
        return mid + self.mlp(self.post_attention_layernorm(mid))


class ToyModel(nn.Module):
    """Embeddings, blocks and the final norm (an identity with ``normalization="none"``)."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_embed = nn.Embedding(config.n_ctx, config.d_model) if config.positional == "learned" else None
        self.layers = nn.ModuleList(ToyBlock(config, i) for i in range(config.n_layers))
        self.norm = _norm(config)


class ToyPreTrainedModel(PreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "model"
    _no_split_modules = ["ToyBlock"]
    _supports_sdpa = False
    _supports_flash_attn = False


class ToyForCausalLM(ToyPreTrainedModel, GenerationMixin):
    """The toy causal LM: ``model`` (embeddings, blocks, norm) and ``lm_head`` (unembedding)."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        if config.positional not in POSITIONAL or config.normalization not in NORMALIZATION:
            raise ConfigError(
                f"ToyConfig: positional={config.positional!r}, normalization="
                f"{config.normalization!r}; valid positional: {choices(POSITIONAL)}; valid "
                f"normalization: {choices(NORMALIZATION)}."
            )
        self.model = ToyModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def _positions(self, position_ids, attention_mask, past: int, n: int, device) -> torch.Tensor:
        if position_ids is not None:
            return position_ids
        if attention_mask is not None:  # left padding: a prompt's first real token is position 0
            return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -n:]
        return torch.arange(past, past + n, device=device)[None]

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, logits_to_keep: int = 0, **kwargs):
        c = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError("Pass exactly one of input_ids and inputs_embeds.")
        x = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        batch, n = x.shape[:2]
        use_cache = getattr(c, "use_cache", False) if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        cache = past_key_values if use_cache else None
        past = cache.get_seq_length() if cache is not None else 0
        positions = self._positions(position_ids, attention_mask, past, n, x.device)
        if self.model.pos_embed is not None:
            if int(positions.max()) >= c.n_ctx:
                raise InputError(f"Sequence too long: position {int(positions.max())} >= n_ctx={c.n_ctx}.")
            x = x + self.model.pos_embed(positions)
        # allowed[b, i, j]: query i (absolute index past + i) may attend key j
        query = torch.arange(past, past + n, device=x.device)[:, None]
        allowed = (torch.arange(past + n, device=x.device)[None] <= query)[None]
        if not c.causal:
            allowed = torch.ones_like(allowed)
        if attention_mask is not None and attention_mask.ndim == 4:
            # an explicit mask, HF's convention: [batch, 1, new, past + new], 0 (or True) = attend
            if tuple(attention_mask.shape[1:]) != (1, n, past + n):
                raise InputError(f"A 4D attention_mask must be [batch, 1, {n}, {past + n}]; "
                                 f"got {tuple(attention_mask.shape)}.")
            mask = attention_mask[:, 0]
            allowed = mask if mask.dtype == torch.bool else mask == 0
        elif attention_mask is not None:
            if attention_mask.ndim != 2 or attention_mask.shape[-1] != past + n:
                raise InputError(f"attention_mask must be [batch, {past + n}] (past + new tokens) "
                                 f"or [batch, 1, {n}, {past + n}]; got {tuple(attention_mask.shape)}.")
            allowed = allowed & attention_mask.bool()[:, None, :]
        allowed = allowed.expand(batch, n, past + n)
        hidden, attentions = [], []
        for block in self.model.layers:
            hidden.append(x)
            x = block(x, allowed, cache, attentions)
        x = self.model.norm(x)
        hidden.append(x)
        logits = self.lm_head(x[:, -logits_to_keep:] if logits_to_keep else x)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())
        want_h = c.output_hidden_states if output_hidden_states is None else output_hidden_states
        want_a = c.output_attentions if output_attentions is None else output_attentions
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=cache,
            hidden_states=tuple(hidden) if want_h else None,
            attentions=tuple(attentions) if want_a else None,
        )


AutoConfig.register(MODEL_TYPE, ToyConfig)
AutoModelForCausalLM.register(ToyConfig, ToyForCausalLM)
