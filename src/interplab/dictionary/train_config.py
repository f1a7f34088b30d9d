"""The trainer's configuration: one frozen dataclass, every field with its help (the CLI is
generated from it), cross-field checks in ``__post_init__``.

Fields split in two: those that change the arithmetic of training (learning rate, schedule,
initialisation, seed, ...) and those that only say where and how often to write
(``BOOKKEEPING``). Resuming a run compares the first kind with the checkpoint's and refuses a
difference, naming the keys.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from interplab.core.config import param, to_dict
from interplab.core.errors import ConfigError, choices

DECAYS = ("linear", "cosine", "none")
B_DEC_INITS = ("geometric_median", "mean", "zeros")
DECODER_CONSTRAINTS = ("unit_norm", "none")
PARALLEL_MODES = ("ddp", "sharded")

# Fields that do not change the numbers a run computes (so they may differ on resume).
BOOKKEEPING = frozenset({"out_dir", "resume", "checkpoint_every", "keep_checkpoints", "log_every",
                         "device", "parallel"})


@dataclass(frozen=True)
class TrainConfig:
    """How to train a set of dictionaries from one pass over an activation source."""

    steps: int = param(0, help="Optimizer steps; 0 means derive them from --tokens.")
    tokens: int = param(0, help="Training tokens (used when steps is 0): steps = ceil(tokens / batch_size).")
    batch_size: int = param(4096, help="Tokens per optimizer step (the global batch, summed over ranks).")
    lr: float = param(0.0, help="Adam learning rate; 0 means auto: 2e-4 / sqrt(d_sae / 2**14) per dictionary (sparsify's TopK scaling).")
    beta1: float = param(0.9, help="Adam beta1.")
    beta2: float = param(0.999, help="Adam beta2.")
    eps: float = param(1e-8, help="Adam epsilon.")
    warmup_steps: int = param(0, help="Steps of linear learning-rate warm-up from lr/warmup_steps to lr.")
    decay: str = param("linear", help=f"Learning-rate decay after decay_start: {choices(DECAYS)}.")
    decay_start: float = param(0.8, help="Fraction of the steps after which the learning rate decays (to 0 at the end).")
    b_dec_init: str = param("geometric_median", help=f"Initial decoder bias, from init_tokens of the targets: {choices(B_DEC_INITS)}.")
    init_tokens: int = param(16384, help="Tokens read (from the start of the training stream) to initialise b_dec and the scales.")
    normalize: bool = param(True, help="Estimate in_scale/out_scale so the mean squared norm of inputs/targets equals their width (for dictionaries whose own config has normalize=True).")
    decoder: str = param("unit_norm", help=f"Decoder constraint: {choices(DECODER_CONSTRAINTS)} (unit_norm renormalises rows after each step and drops the gradient along them; none for norm-weighted L1 archs).")
    sparse_step: bool = param(True, help="Use the sparse TopK training step (dictionary/sparse_ops.py: no dense latent matrix; equal to the dense step within float rounding) for dictionaries that support it.")
    matmul_dtype: str = param("auto", help="Encoder matmul dtype of the sparse TopK step: auto (bfloat16 where bf16 matmuls are native — AVX512-BF16 / AMX CPUs, bf16 GPUs — else float32), float32, or bfloat16 (pre-activations rounded to bfloat16 before the top-k; emulated, so much slower, on CPUs without native bf16).")
    grad_clip: float = param(0.0, help="Clip each dictionary's gradient norm to this; 0 disables.")
    checkpoint_every: int = param(1000, help="Write a resumable checkpoint every this many steps; 0 disables.")
    keep_checkpoints: int = param(2, help="How many of the latest checkpoints to keep.")
    log_every: int = param(100, help="Append metrics to each dictionary's metrics.jsonl every this many steps.")
    seed: int = param(0, help="Seed of the data order and of torch's RNG.")
    out_dir: str = param("runs/sae", help="Run directory: one sub-directory per dictionary, plus checkpoints/.")
    resume: bool = param(True, help="Continue from the latest checkpoint in out_dir (starts fresh if there is none); false refuses an out_dir that already holds a run.")
    device: str = param("auto", help="Device: auto (cuda:LOCAL_RANK when available, else cpu), cpu, cuda, cuda:N.")
    parallel: str = param("ddp", help=f"Under torch.distributed: {choices(PARALLEL_MODES)} (ddp splits each batch across ranks; sharded gives each rank whole dictionaries).")

    def __post_init__(self) -> None:
        if (self.steps > 0) == (self.tokens > 0):
            raise ConfigError(f"Give exactly one of steps or tokens (> 0); got steps={self.steps}, tokens={self.tokens}.")
        if self.steps < 0 or self.tokens < 0:
            raise ConfigError("steps and tokens must be >= 0.")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}.")
        if self.lr < 0:
            raise ConfigError(f"lr must be >= 0 (0 means auto), got {self.lr}.")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1) or self.eps <= 0:
            raise ConfigError(f"Adam needs 0 <= beta1, beta2 < 1 and eps > 0; got {self.beta1}, {self.beta2}, {self.eps}.")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ConfigError(f"warmup_steps ({self.warmup_steps}) must be >= 0 and below the total steps ({self.total_steps}).")
        for name, value, valid in (("decay", self.decay, DECAYS), ("b_dec_init", self.b_dec_init, B_DEC_INITS),
                                   ("decoder", self.decoder, DECODER_CONSTRAINTS),
                                   ("parallel", self.parallel, PARALLEL_MODES)):
            if value not in valid:
                raise ConfigError(f"{name}={value!r} is not one of {choices(valid)}.")
        if self.matmul_dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"matmul_dtype={self.matmul_dtype!r} is not one of 'auto', 'float32', 'bfloat16'.")
        if not 0.0 <= self.decay_start <= 1.0:
            raise ConfigError(f"decay_start is a fraction of the steps in [0, 1], got {self.decay_start}.")
        if self.init_tokens <= 0:
            raise ConfigError(f"init_tokens must be positive, got {self.init_tokens}.")
        if self.grad_clip < 0:
            raise ConfigError(f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}.")
        if self.checkpoint_every < 0 or self.log_every <= 0 or self.keep_checkpoints < 1:
            raise ConfigError("Need checkpoint_every >= 0, log_every > 0 and keep_checkpoints >= 1.")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device={self.device!r}: use auto, cpu, cuda or cuda:N.")

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps > 0 else math.ceil(self.tokens / self.batch_size)

    def lr_for(self, d_sae: int) -> float:
        """The base learning rate of a dictionary with ``d_sae`` latents (auto when lr is 0)."""
        return self.lr if self.lr > 0 else 2e-4 / math.sqrt(d_sae / 2**14)

    def to_json(self) -> dict:
        return to_dict(self)

    def math_json(self) -> dict:
        """The fields that change what training computes (compared on resume)."""
        return {k: v for k, v in self.to_json().items() if k not in BOOKKEEPING}

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)
