"""The GRPO harness's settings: one frozen dataclass, each field documented and range-checked.

Composed into the ``rl`` run config (``rl.rl_run``) with the shared run fields, so each default
lives here only.
"""

from __future__ import annotations

from dataclasses import dataclass

from interplab.core.config import check_fields, param


@dataclass(frozen=True)
class GRPOSettings:
    """How GRPO trains (TRL's ``GRPOTrainer``; Shao et al. 2024, DeepSeekMath, arXiv:2402.03300)."""

    steps: int = param(20, help="Optimizer steps (TRL's max_steps).", ge=1, le=100_000)
    prompts_per_step: int = param(2, help="Distinct prompts per step; each gets num_generations completions.",
                                  ge=1, le=1024)
    num_generations: int = param(4, help="Completions sampled per prompt (the group whose rewards are "
                                 "normalised into advantages).", ge=2, le=256)
    max_completion_length: int = param(16, help="Longest completion, in tokens.", ge=1, le=4096)
    learning_rate: float = param(1e-5, help="AdamW learning rate (linear decay to 0, TRL's default schedule).",
                                 gt=0, le=1.0)
    beta: float = param(0.04, help="KL coefficient β on the per-token k3 estimate of KL(policy ‖ reference). "
                        "TRL's own default is 0 (no KL penalty and no reference model); 0 here turns it off.",
                        ge=0)
    epsilon: float = param(0.2, help="PPO clipping range ε of the probability ratio.", gt=0, lt=1)
    temperature: float = param(1.0, help="Sampling temperature of the completions.", gt=0)
    lora_r: int = param(0, help="LoRA rank (peft) on the attention and MLP projections; 0 trains every weight.",
                        ge=0, le=1024)
    logging_steps: int = param(1, help="Monitors are computed and logged every this many steps.", ge=1)
    save_steps: int = param(0, help="Checkpoint every this many steps into the run's checkpoints/ (0: only "
                            "the final policy).", ge=0)

    def __post_init__(self) -> None:
        check_fields(self)
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
