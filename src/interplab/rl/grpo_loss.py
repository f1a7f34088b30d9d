"""The GRPO loss written out by hand: the plain reference the harness's TRL training is tested
against (``tests/integration/test_rl_harness.py`` compares it with ``GRPOTrainer.compute_loss``
on a fixed batch).

GRPO (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300) samples G completions per prompt,
normalises their rewards within the group into advantages
``A_i = (r_i − mean_g r) / (std_g r + 1e-4)`` (unbiased std, as TRL's ``nanstd``), and minimises
the PPO-clipped surrogate per completion token ``t``::

    ρ_t = exp(log π_θ(t) − log π_old(t))
    ℓ_t = −min(ρ_t A, clip(ρ_t, 1−ε_low, 1+ε_high) A) + β · KL_t
    KL_t = ρ_t · [exp(log π_ref(t) − log π_θ(t)) − (log π_ref(t) − log π_θ(t)) − 1]

the bracket being Schulman's k3 estimator of KL(π_θ ‖ π_ref) and the factor ρ_t TRL's
importance-sampling correction of it (``use_bias_correction_kl``, on by default in TRL 1.16;
on-policy ρ_t = 1 in value but not in gradient).

TRL 1.x's default ``loss_type="dapo"`` (Yu et al. 2025, DAPO, arXiv:2503.14476) sums ℓ_t over
every completion token of the batch and divides by the number of completion tokens in the whole
generation batch (``num_items_in_batch``), so long and short completions weigh per token, not per
sequence. With one optimizer step per generation batch (the harness's setting) that is the
token count of the batch itself.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

__all__ = ["grpo_loss", "group_advantages", "per_token_logps"]


def group_advantages(rewards: Float[torch.Tensor, " batch"], num_generations: int,
                     scale: bool = True) -> Float[torch.Tensor, " batch"]:
    """Rewards minus their group's mean, divided by the group's unbiased std + 1e-4 (groups are
    consecutive runs of ``num_generations``, as TRL orders them)."""
    g = rewards.view(-1, num_generations)
    adv = g - g.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (g.std(dim=1, keepdim=True) + 1e-4)
    return adv.flatten()


def per_token_logps(hf_model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                    temperature: float = 1.0) -> Float[torch.Tensor, "batch pos"]:
    """log π(completion token | prefix) for every completion position, from full logits."""
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask, completion_mask], dim=1)
    logits = hf_model(input_ids=ids, attention_mask=mask).logits
    t = completion_ids.shape[1]
    logits = logits[:, -t - 1:-1].float() / temperature  # position i predicts token i + 1
    return torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def grpo_loss(logps, old_logps, ref_logps, advantages, mask, *, beta: float, epsilon_low: float = 0.2,
              epsilon_high: float = 0.2, num_items: float | None = None,
              bias_correction_kl: bool = True) -> torch.Tensor:
    """The clipped GRPO surrogate plus β·k3-KL, summed over completion tokens and divided by
    ``num_items`` (default: the number of completion tokens in ``mask``) — TRL's "dapo" loss."""
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(ratio * adv, clipped * adv)
    if beta != 0.0:
        d = ref_logps - logps
        kl = torch.exp(d) - d - 1
        loss = loss + beta * (kl * ratio if bias_correction_kl else kl)
    mask = mask.to(loss.dtype)
    n = mask.sum().clamp(min=1.0) if num_items is None else torch.as_tensor(float(num_items)).clamp(min=1.0)
    return (loss * mask).sum() / n
