"""``interplab generate``: greedy continuation of a prompt, with and without a saved steering
vector (``interplab steer`` writes one as ``vector/``), as a run record: both texts, and per
generated token the log-probability the model gave the token it chose, plain and steered — how
confident each continuation was, and where steering made the model leave its own path.

``generate_run(cfg)`` is the library form: ``{"plain": ..., "steered": ...}`` texts only."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from interplab.analyses.steering import SteeringVector
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Lines, Table, Text
from interplab.core.config import RunFields, param
from interplab.core.errors import ConfigError
from interplab.core.model import Model
from interplab.core.result import Result


@dataclass(frozen=True)
class GenerateConfig(RunFields):
    """Generate from a prompt, with and without a saved steering vector."""

    prompt: str = param("I think the movie was", help="Prompt to continue.")
    steer: str = param("", help="A saved steering vector directory (e.g. runs/steer-.../vector).")
    scale: float = param(4.0, help="Scale of the steering vector.")
    max_new_tokens: int = param(24, help="Tokens to generate (greedy).", ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.scale):
            raise ConfigError(f"scale must be a finite number, got {self.scale}.")


@dataclass
class Continuation:
    """One greedy continuation: its text, token ids and strings, and each chosen token's
    log-probability under the distribution it was picked from."""

    text: str
    ids: list[int]
    tokens: list[str]
    logprob: torch.Tensor  # [new]


@dataclass
class GenerateResult(Result):
    prompt: str
    plain: Continuation
    steered: Continuation | None = None
    scale: float = 0.0
    steer: str = ""
    model_name: str = ""

    def title(self) -> str:
        return f"Generation from {self.prompt!r} on {self.model_name}"

    def headline(self) -> dict:
        out = {"plain": self.prompt + self.plain.text, "plain_mean_logprob": float(self.plain.logprob.mean())}
        if self.steered is not None:
            out |= {"steered": self.prompt + self.steered.text, "scale": self.scale,
                    "steered_mean_logprob": float(self.steered.logprob.mean()),
                    "first_divergence": self.first_divergence()}
        return out

    def first_divergence(self) -> int | str:
        """The first generated token at which the steered continuation differs ("none")."""
        for i, (a, b) in enumerate(zip(self.plain.ids, self.steered.ids)):
            if a != b:
                return i
        return "none"

    def terminal(self) -> list[Block]:
        out: list[Block] = [Text(f"plain:   {self.prompt}{self.plain.text}")]
        if self.steered is not None:
            out.append(Text(f"steered (scale {self.scale:g}): {self.prompt}{self.steered.text}"))
        return out

    def blocks(self) -> list[Block]:
        runs = {"plain": self.plain} | ({f"steered (scale {self.scale:g})": self.steered} if self.steered else {})
        x = [float(i) for i in range(len(self.plain.ids))]
        rows = [[i] + [f"{c.tokens[i]!r} {float(c.logprob[i]):.2f}" for c in runs.values()] for i in range(len(x))]
        what = f" and with the vector {self.steer} at scale {self.scale:g}" if self.steered else ""
        return [*self.terminal(),
                Text(f"Greedy decoding of {len(x)} tokens without steering{what}."),
                Lines("token_logprob", "Log-probability of each chosen token", x,
                      {k: c.logprob.tolist() for k, c in runs.items()}, "generated token", "log p(chosen token)",
                      caption="Per generated token, the log-probability of the greedy choice under the "
                              "distribution it was picked from."),
                Table(["token", *[f"{k}: token, log p" for k in runs]], rows)]


def _continuation(model: Model, out) -> Continuation:
    ids = out.new_tokens[0].tolist()
    logp = torch.log_softmax(out.logits[0].double(), -1).gather(-1, out.new_tokens[0, :, None].to(out.logits.device))
    decode = model.tokenizer.decode if model.tokenizer is not None else str
    return Continuation(out.texts[0] if out.texts else "", ids, [decode([i]) for i in ids], logp[:, 0].float().cpu())


def _generate(cfg: GenerateConfig, model, vector: SteeringVector | None):
    edits = None
    if vector is not None:  # checked and built before generating
        vector.check(model)
        edits = vector.interventions(cfg.scale)
    plain = _continuation(model, model.generate([cfg.prompt], cfg.max_new_tokens))
    steered = None
    if edits is not None:
        steered = _continuation(model, model.generate([cfg.prompt], cfg.max_new_tokens, edits))
    return plain, steered


def generate_run(cfg: GenerateConfig, model=None) -> dict[str, str]:
    """Greedy continuations: {"plain": ..., "steered": ...} (steered only with a vector)."""
    from interplab.runtime.loading import load

    vector = SteeringVector.load(cfg.steer) if cfg.steer else None
    model = model or load(cfg.model, dtype=cfg.dtype, device=cfg.device)
    plain, steered = _generate(cfg, model, vector)
    return {"plain": plain.text} | ({"steered": steered.text} if steered is not None else {})


@register_analysis("generate", config=GenerateConfig, result=GenerateResult,
                   help="generate from a prompt, optionally with a saved steering vector",
                   example={"prompt": "the cat", "max_new_tokens": 4})
def generate(cfg: GenerateConfig, ctx: Context) -> GenerateResult:
    vector = SteeringVector.load(cfg.steer) if cfg.steer else None  # a bad path fails before the model loads
    model = ctx.model
    plain, steered = _generate(cfg, model, vector)
    return GenerateResult(cfg.prompt, plain, steered, cfg.scale if steered else 0.0, cfg.steer,
                          model.source.get("name", ""))
