"""Direct logit attribution (Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits"; Wang et al. 2022): how much of the logit difference answer − wrong (or of the
answer's logit) each component writes *directly*, through the final norm and the unembedding.

The final residual stream is a sum, x = embed + Σ_L attn_out[L] + Σ_L mlp_out[L], where embed is
resid_pre of layer 0 (the token embeddings after any scale, e.g. Gemma's sqrt(d_model), plus
GPT-2's learned position embeddings). The logits are W_U · norm(x) + b_U. The final norm is not
linear; we linearise it the standard way by FREEZING its scale at its value on the actual final
residual x (resid_post of the last layer, at the attributed position): with
s = sqrt(mean(x²) + eps) for RMSNorm, or s = sqrt(var(x) + eps) (biased variance) for LayerNorm,
each component c maps to ``P(c) / s ⊙ γ``, where P centres c over d_model (c − mean(c)) for
LayerNorm and is the identity for RMSNorm, and γ is the norm's gain: its weight for LayerNorm and
Llama / Qwen RMSNorm, and (1 + weight) for Gemma's RMSNorm (transformers' ``Gemma3RMSNorm``:
``x * rsqrt(mean(x²) + eps) * (1.0 + weight)``). The frozen map is linear and uses the model's
own s, so the components sum to the actual logit difference (up to float rounding); the constant
β · d + b_U[answer] − b_U[wrong] (LayerNorm bias β, unembedding bias) is reported as ``const``.
With d = W_U[answer] − W_U[wrong] (or W_U[answer]), the logit contribution of c is c · u with
u = P(γ ⊙ d / s): one direction in the residual stream per prompt.

Heads: attention adds o_proj(z) = Σ_h W_O[:, h] z[h] + b_O, so head h contributes
z[h] · (W_O[:, h]ᵀ u), using the head's slice of the out-projection weight (nn.Linear in
Llama / Qwen / Gemma / NeoX: [d_model, n_heads·d_head]; GPT-2's Conv1D: [n_heads·d_head,
d_model]); b_O goes to ``head_bias``. Neurons: the MLP adds W_down · hidden + b_down, so neuron i
contributes hidden[i] · (W_down[:, i] · u); b_down goes to ``neuron_bias``. Gemma 3 norms each
branch's output once more (post_attention_layernorm, post_feedforward_layernorm) before adding
it; that norm's scale is frozen at the branch's actual output in the same way (and its bias, if
any, joins the bias term), so heads + head_bias sum to attn_out, neurons + neuron_bias to mlp_out.

Caveats: "direct" is only the path straight to the logits — what later layers read from a
component is not counted (patching measures that); the frozen scale makes the decomposition
exact but ignores that removing a component would change s. Answers are single tokens; logits
have no soft cap (the Gemma adapter refuses one). Every linearisation is checked against the
module's own output before it is used, so an unknown norm or layout raises instead of lying.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from interplab.core.config import check_fields, param
from interplab.core.errors import ConfigError, InputError, UnsupportedArchitectureError
from interplab.core.model import Model
from interplab.core.shapes import AnswerIds
from interplab.core.sites import Site, SiteKind
from interplab.models.norms import norm_convention
from interplab.stats import bootstrap_ci

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DLAConfig:
    """What to attribute, and how to summarise it."""

    position: int = param(-1, help="Token position to attribute (negative counts from each prompt's end).")
    heads: bool = param(True, help="Split attention into heads (z[h] times the head's out-projection slice).")
    neurons: bool = param(True, help="Split MLPs into neurons (mlp.hidden times down-projection columns).")
    confidence: float = param(0.95, help="Confidence level of the bootstrap intervals over prompts.", gt=0.0, lt=1.0)
    n_resamples: int = param(2000, help="Bootstrap resamples.", ge=2)
    seed: int = param(0, help="Seed of the bootstrap.")

    def __post_init__(self) -> None:
        check_fields(self)  # the declared ranges


@dataclass
class DLAResult:
    """Direct contributions to the logit difference, per prompt (float64)."""

    config: DLAConfig
    embed: torch.Tensor  # [prompt]
    attn: torch.Tensor  # [prompt, layer]
    mlp: torch.Tensor  # [prompt, layer]
    const: torch.Tensor  # [prompt]: final-norm bias and unembedding bias
    logit_diff: torch.Tensor  # [prompt]: the model's actual value
    heads: torch.Tensor | None = None  # [prompt, layer, head]
    head_bias: torch.Tensor | None = None  # [prompt, layer]: out-projection (and post-norm) bias
    neurons: torch.Tensor | None = None  # [prompt, layer, d_mlp]
    neuron_bias: torch.Tensor | None = None  # [prompt, layer]: down-projection (and post-norm) bias
    summary: dict = field(default_factory=dict)  # name -> stats.CI over prompts (>= 2 prompts)

    @property
    def total(self) -> torch.Tensor:
        """Sum of every component: equals ``logit_diff`` up to float rounding."""
        return self.embed + self.attn.sum(-1) + self.mlp.sum(-1) + self.const


@torch.no_grad()
def frozen_norm(norm: nn.Module, x: torch.Tensor) -> tuple[bool, torch.Tensor, torch.Tensor | None]:
    """``(centre, scale, bias)`` with ``norm(x) == P(x) * scale + bias`` at this ``x`` (float64):
    ``scale`` [..., d_model] is the gain over the norm's statistic of x, frozen."""
    x64 = x.double()
    conv = norm_convention(norm, x.shape[-1])
    if conv is None:
        raise UnsupportedArchitectureError(
            f"Direct logit attribution cannot linearise a {type(norm).__name__}: it knows "
            "nn.LayerNorm, Llama/Qwen-style RMSNorm (weight, variance_epsilon) and Gemma's "
            "(1 + weight) RMSNorm. Add the convention to interplab.models.norms.norm_convention."
        )
    centre, bias = conv.centre, conv.bias
    gain, stat = conv.gain.to(x64.device), conv.statistic(x64)
    bias = None if bias is None else bias.to(x64.device)
    scale = gain / stat.sqrt()
    ours = _centre(x64, centre) * scale + (0 if bias is None else bias)
    _check_close(ours, norm(x), type(norm).__name__)
    return centre, scale, bias


def _centre(x: torch.Tensor, centre: bool) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True) if centre else x


def _check_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    """Refuse a linear reading that does not reproduce the module (loose enough for bf16)."""
    theirs = theirs.double()
    err = float((ours - theirs).abs().max())
    if err > 1e-2 * (float(theirs.abs().max()) + 1e-6):
        raise UnsupportedArchitectureError(
            f"Direct logit attribution's linear reading of {what} is off by {err:.3g} from the "
            "model's own output; this layout is not one it understands, so it refuses."
        )


def _in_out(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight as [d_in, d_model] and bias [d_model] of an out- / down-projection (float64)."""
    if isinstance(module, nn.Linear):
        w = module.weight.T
    elif isinstance(module, Conv1D):
        w = module.weight
    else:
        raise UnsupportedArchitectureError(
            f"Direct logit attribution knows nn.Linear and GPT-2's Conv1D projections, not "
            f"{type(module).__name__}; pass heads=False, neurons=False to attribute whole layers."
        )
    return w.double(), None if module.bias is None else module.bias.double()


def _branch_norm(model: Model, layer: int, which: str) -> nn.Module | None:
    """The norm a branch's output passes before the residual stream (Gemma 3), or None."""
    a = model.adapter
    outer = a.attn_out_point(layer).module if which == "attn" else a.mlp_branch(layer)
    inner = a.attn(layer) if which == "attn" else a.mlp(layer)
    return None if outer is inner else outer


def _split(model: Model, layer, which, act, branch_out, u) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-unit contributions [prompt, d_in] and bias term [prompt] of one branch along u.

    The branch adds ``post(act @ W + b)``; with a frozen post-norm ``P(·) * scale + nb`` (or none)
    a pre-norm vector c contributes ``c · v``, v = P(scale ⊙ u) (v = u without a post-norm)."""
    a = model.adapter
    proj = a.out_proj(layer) if which == "attn" else a.down_proj(layer)
    w, b = _in_out(proj)
    flat = act.reshape(act.shape[0], -1)
    pre = flat.double() @ w + (0 if b is None else b)  # the projection's output [prompt, d_model]
    post, v, bias = pre, u, torch.zeros(u.shape[0], dtype=torch.float64, device=u.device)
    norm = _branch_norm(model, layer, which)
    if norm is not None:
        centre, scale, nb = frozen_norm(norm, proj(flat))
        post = _centre(pre, centre) * scale + (0 if nb is None else nb)
        v = _centre(scale * u, centre)
        bias = bias if nb is None else bias + (nb * u).sum(-1)
    units = "heads" if which == "attn" else "neurons"
    _check_close(post, branch_out, f"L{layer}.{which}_out as a sum over its {units}")
    if b is not None:
        bias = bias + (b * v).sum(-1)
    return flat.double() * (v @ w.T), bias


def _check_answers(answers, wrong, n: int, vocab: int) -> None:
    for name, t in (("answers", answers), ("wrong", wrong)):
        if t is not None and (t.shape != (n,) or int(t.min()) < 0 or int(t.max()) >= vocab):
            raise InputError(
                f"{name} must be [n_prompts] = [{n}] single-token ids in 0..{vocab - 1}; got shape "
                f"{tuple(t.shape)}."
            )


def direct_logit_attribution(model: Model, prompts, answers: AnswerIds, wrong: AnswerIds | None = None,
                             config: DLAConfig = DLAConfig()) -> DLAResult:
    """Attribute the logit difference at ``config.position`` of every prompt (see the module
    doc). Prompts may differ in length: positions follow each prompt's attention mask."""
    batch = model.to_batch(prompts)
    n, d, dev = batch.shape[0], model.dims, model.device
    answers = torch.as_tensor(answers).long().reshape(-1).to(dev)
    wrong = None if wrong is None else torch.as_tensor(wrong).long().reshape(-1).to(dev)
    _check_answers(answers, wrong, n, d.d_vocab)
    shortest = int(batch.lengths.min())
    if not -shortest <= config.position < shortest:
        raise ConfigError(
            f"position {config.position} is outside the shortest prompt's {shortest} tokens "
            f"(valid {-shortest}..{shortest - 1})."
        )
    L = d.n_layers
    sites = [Site(0, SiteKind.RESID_PRE), Site(L - 1, SiteKind.RESID_POST)]
    sites += [Site(layer, k) for layer in range(L) for k in (SiteKind.ATTN_OUT, SiteKind.MLP_OUT)]
    sites += [Site(layer, SiteKind.Z) for layer in range(L)] if config.heads else []
    sites += [Site(layer, SiteKind.MLP_HIDDEN) for layer in range(L)] if config.neurons else []
    logits, cache = model.run_with_cache(batch, sites, positions=[config.position])
    acts = {s: t[:, 0] for s, t in cache.acts.items()}  # [prompt, *site] at the position
    target = (config.position % batch.lengths).to(batch.positions.device)  # the logits are padded
    seq = (batch.positions == target[:, None]).float().argmax(1)
    rows = torch.arange(n, device=logits.device)
    last = logits[rows, seq.to(logits.device)].double()
    actual = last[rows, answers] - (0 if wrong is None else last[rows, wrong])

    with torch.no_grad():
        unembed = model.adapter.unembed()
        w_u = unembed.weight.double()
        direction = w_u[answers] - (0 if wrong is None else w_u[wrong])  # [prompt, d_model]
        centre, scale, beta = frozen_norm(model.adapter.final_norm(), acts[Site(L - 1, SiteKind.RESID_POST)])
        u = _centre(scale * direction, centre)  # [prompt, d_model]
        const = torch.zeros(n, dtype=torch.float64, device=dev)
        if beta is not None:
            const = const + (beta * direction).sum(-1)
        b_u = getattr(unembed, "bias", None)
        if b_u is not None:
            const = const + b_u.double()[answers] - (0 if wrong is None else b_u.double()[wrong])

        def along(site: Site) -> torch.Tensor:
            return (acts[site].double() * u).sum(-1)

        attn = torch.stack([along(Site(layer, SiteKind.ATTN_OUT)) for layer in range(L)], -1)
        mlp = torch.stack([along(Site(layer, SiteKind.MLP_OUT)) for layer in range(L)], -1)
        result = DLAResult(config, along(Site(0, SiteKind.RESID_PRE)), attn, mlp, const, actual)
        if config.heads:
            parts = [_split(model, layer, "attn", acts[Site(layer, SiteKind.Z)],
                            acts[Site(layer, SiteKind.ATTN_OUT)], u) for layer in range(L)]
            result.heads = torch.stack([p.reshape(n, d.n_heads, d.d_head).sum(-1) for p, _ in parts], 1)
            result.head_bias = torch.stack([b for _, b in parts], 1)
        if config.neurons:
            parts = [_split(model, layer, "mlp", acts[Site(layer, SiteKind.MLP_HIDDEN)],
                            acts[Site(layer, SiteKind.MLP_OUT)], u) for layer in range(L)]
            result.neurons = torch.stack([p for p, _ in parts], 1)
            result.neuron_bias = torch.stack([b for _, b in parts], 1)
    gap = float((result.total - actual).abs().max())
    if gap > 1e-3 * (float(actual.abs().max()) + 1):
        log.warning("DLA components sum to within %.3g of the actual logit difference only; "
                    "something besides embed, attn_out and mlp_out writes to the residual.", gap)
    for f in dataclasses.fields(result):
        if isinstance(getattr(result, f.name), torch.Tensor):
            setattr(result, f.name, getattr(result, f.name).cpu())
    if n >= 2:
        kw = dict(n_resamples=config.n_resamples, confidence=config.confidence, seed=config.seed)
        named = {"embed": result.embed, "attn": result.attn, "mlp": result.mlp}
        if result.heads is not None:
            named["heads"] = result.heads
        result.summary = {k: bootstrap_ci(v, **kw) for k, v in named.items()}
    return result
