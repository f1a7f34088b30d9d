"""Answer metrics for clean / corrupt experiments, and their normalisation.

Every metric is computed per prompt from the logits at the prompt's last position:
``logit_diff`` = logit(answer) − logit(wrong) (Wang et al. 2022), ``prob`` = p(answer),
``loss`` = −log p(answer), ``kl`` = KL(clean ‖ run) over the full next-token distribution.
``normalise`` maps them onto one scale where 0 is the corrupt run and 1 the clean run: each
prompt's change from its own base run, over the batch-mean gap between the baselines
(per-prompt denominators blow up where clean ≈ corrupt).
"""

from __future__ import annotations

import torch

from interplab.core.errors import ConfigError, choices

METRICS = ("logit_diff", "prob", "loss", "kl")


def check_metric(name: str) -> None:
    if name not in METRICS:
        raise ConfigError(f"Unknown metric {name!r}. Valid metrics: {choices(METRICS)}.")


def answer_metric(name: str, last_logits: torch.Tensor, answers: torch.Tensor,
                  wrong: torch.Tensor, clean_last: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row metric from last-position logits [rows, d_vocab]; answers/wrong are [rows]."""
    check_metric(name)
    logits = last_logits.float()
    rows = torch.arange(logits.shape[0], device=logits.device)
    if name == "logit_diff":
        return logits[rows, answers] - logits[rows, wrong]
    logp = logits.log_softmax(-1)
    if name == "prob":
        return logp[rows, answers].exp()
    if name == "loss":
        return -logp[rows, answers]
    if clean_last is None:
        raise ConfigError("The kl metric needs the clean run's logits.")
    clean_logp = clean_last.float().log_softmax(-1)
    return (clean_logp.exp() * (clean_logp - logp)).sum(-1)


def normalise(name: str, values: torch.Tensor, clean: torch.Tensor, corrupt: torch.Tensor,
              base: str = "corrupt") -> torch.Tensor:
    """Map metric values onto 0 = corrupt, 1 = clean, paired per prompt.

    ``values`` are [prompt, *cells]; ``clean`` / ``corrupt`` the per-prompt baselines,
    broadcastable to it. Each prompt's change is measured from its own ``base`` run (the corrupt
    run when denoising, the clean run when noising) and scaled by the batch-mean gap
    ``mean(clean) − mean(corrupt)``: so a cell that changes nothing is exactly 0 (or 1) for every
    prompt, its CI collapses onto that value instead of inheriting the spread of the baselines,
    and the mean over prompts equals the normalised mean. For ``kl`` the clean run is 0 and the
    same formula gives 1 − KL / mean KL(clean ‖ corrupt).
    """
    denom = clean.mean() - corrupt.mean()
    if float(denom.abs()) < 1e-8:
        raise ConfigError(
            f"The clean and corrupt runs give the same mean {name} ({float(clean.mean()):.4g}); "
            "there is no effect to normalise. Check the task's corruption."
        )
    if base == "corrupt":
        return (values - corrupt) / denom
    if base == "clean":
        return 1.0 + (values - clean) / denom
    raise ConfigError(f"base must be 'corrupt' or 'clean', got {base!r}.")
