"""``interplab lens "PROMPT"``: the logit lens (``analyses.logit_lens``, nostalgebraist 2020) as a
run record — the model's top next-token predictions, and per layer the lens's top tokens and
the probability and rank of the model's final top-1 token, with a figure of that probability by
layer. Token strings are decoded when the run is made, so the record needs no tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from interplab.analyses.logit_lens import LogitLensConfig, LogitLensResult, lens_logits, logit_lens
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Heatmap, Lines, Table, Text
from interplab.core.config import RunFields
from interplab.core.model import Model
from interplab.core.result import Result
from interplab.core.sites import Site, SiteKind


@dataclass(frozen=True)
class LensRunConfig(RunFields, LogitLensConfig):
    """Read a prompt's next-token prediction through the final norm and unembedding at every layer."""

    positional: ClassVar[tuple[str, ...]] = ("prompt",)  # ``interplab lens "PROMPT"``

    def lens(self) -> LogitLensConfig:
        return LogitLensConfig(prompt=self.prompt, model=self.model, top_k=self.top_k, position=self.position)


@dataclass
class LensResult(LogitLensResult, Result):
    """The lens per layer, with the token strings decoded (``repr`` shown in tables)."""

    model_name: str = ""
    top_tokens: list[list[str]] = field(default_factory=list)  # [layer][k]: the lens's top tokens
    final_token: str = ""  # the model's own top-1 next token
    next_ids: list[int] = field(default_factory=list)  # the model's own top-k next tokens
    next_tokens: list[str] = field(default_factory=list)
    # The lens at every position (records from before these fields leave them None):
    grid_prob: torch.Tensor | None = None  # [layer, pos]: lens p(the model's own top-1 next token there)
    grid_tokens: list[str] | None = None  # [pos]: the prompt's tokens
    grid_next: list[str] | None = None  # [pos]: the model's own top-1 next token after each

    def title(self) -> str:
        return f"Logit lens on {self.model_name}: {self.config.prompt!r}"

    @property
    def next_probs(self) -> list[float]:
        probs = self.logits.float().softmax(-1)
        return [float(probs[i]) for i in self.next_ids]

    def first_top1_layer(self) -> int | None:
        """The first layer at which the final top-1 token is the lens's top-1."""
        hits = (self.final_rank == 0).nonzero().flatten().tolist()
        return self.layers[hits[0]] if hits else None

    def stays_top1_layer(self) -> int | None:
        """The first layer from which the final top-1 token stays the lens's top-1 to the end."""
        at = None
        for row in range(len(self.layers) - 1, -1, -1):
            if int(self.final_rank[row]) != 0:
                break
            at = self.layers[row]
        return at

    def headline(self) -> dict:
        first, stays = self.first_top1_layer(), self.stays_top1_layer()
        return {"top_token": repr(self.final_token), "top_prob": self.next_probs[0],
                "first_top1_layer": "never" if first is None else first,
                "top1_from_layer": "never" if stays is None else stays,
                "lens_prob_at_last_layer": float(self.final_prob[-1]),
                "lens_prob_at_middle_layer": float(self.final_prob[len(self.layers) // 2])}

    def _tables(self) -> list[Block]:
        c, final = self.config, repr(self.final_token)
        top = Table(["rank", "token", "prob"],
                    [[str(r), repr(t), f"{p:.3f}"]
                     for r, (t, p) in enumerate(zip(self.next_tokens, self.next_probs), 1)],
                    "Top next-token predictions")
        rows = []
        for row, layer in enumerate(self.layers):
            tops = ", ".join(f"{t!r} {p:.2f}" for t, p in zip(self.top_tokens[row], self.top_probs[row].tolist()))
            rows.append([str(layer), f"{float(self.final_prob[row]):.3f}", str(int(self.final_rank[row])), tops])
        lens = Table(["layer", f"p({final})", f"rank of {final}", f"top-{c.top_k} (prob)"], rows,
                     f"Logit lens: each layer's resid_post → final norm → unembedding (final top-1 {final})")
        return [top, lens]

    def terminal(self) -> list[Block]:
        c = self.config
        return [Text(f"{self.model_name}  prompt: {c.prompt!r}  position {c.position}"), *self._tables()]

    def blocks(self) -> list[Block]:
        final = repr(self.final_token)
        return [Text(f"Prompt {self.config.prompt!r}, position {self.config.position}: each layer's residual "
                     "stream (resid_post) read through the model's own final norm and unembedding. Early "
                     "layers are read off-distribution (no tuned-lens translators)."),
                Lines("lens_final_prob", f"p({final}) through the logit lens", [float(x) for x in self.layers],
                      {f"p({final})": self.final_prob.tolist()}, "layer", "probability", ylim=(0.0, 1.0),
                      caption=f"Probability of the model's final top-1 token {final} at each layer's lens."),
                *self._grid(), *self._tables()]

    def grid_labels(self) -> list[str]:
        """Column labels of the position grid: ``pos:'token' → 'predicted'``."""
        return [f"{p}:{t!r} → {n!r}" for p, (t, n) in enumerate(zip(self.grid_tokens or [], self.grid_next or []))]

    def _grid(self) -> list[Block]:
        if self.grid_prob is None:
            return []
        return [Heatmap("lens_grid", "Logit lens at every position", self.grid_prob.float(),
                        [f"L{layer}" for layer in self.layers], self.grid_labels(), xlabel="position: token → "
                        "the model's top-1 next token", value_label="lens p(model's top-1)",
                        caption="Each cell: layer L's resid_post at that position through the final norm and "
                                "unembedding, read as the probability of the token the model itself predicts "
                                "there (the last row is the model's own probability).")]


@register_analysis("lens", config=LensRunConfig, result=LensResult,
                   help="top next-token predictions and a logit-lens table", example={"prompt": "the cat sat", "top_k": 3})
def lens(cfg: LensRunConfig, ctx: Context) -> LensResult:
    model = ctx.model
    res = logit_lens(model, cfg.lens())
    decode = model.tokenizer.decode
    next_ids = res.logits.float().softmax(-1).topk(cfg.top_k).indices.tolist()
    return LensResult(**vars(res), model_name=model.source.get("name", ""),
                      top_tokens=[[decode([i]) for i in row] for row in res.top_ids.tolist()],
                      final_token=decode([res.final_id]), next_ids=next_ids,
                      next_tokens=[decode([i]) for i in next_ids], **lens_grid(model, cfg.prompt))


def lens_grid(model: Model, prompt: str) -> dict:
    """The lens at every position of ``prompt``: per layer and position the lens probability of
    the model's own top-1 next token there, with the tokens (one forward, cached resid_post)."""
    batch = model.to_batch(prompt)
    n = int(batch.lengths[0])
    sites = [Site(layer, SiteKind.RESID_POST) for layer in range(model.dims.n_layers)]
    logits, cache = model.run_with_cache(batch, sites)
    with torch.no_grad():
        ids = batch.input_ids[0, -n:].tolist()  # one prompt: no padding, but left padding would be first
        top = logits[0, -n:].float().argmax(-1)  # [pos]
        rows = [lens_logits(model, cache[s][0, -n:]).softmax(-1).gather(-1, top[:, None].to(cache[s].device))[:, 0]
                for s in sites]
    decode = model.tokenizer.decode
    return {"grid_prob": torch.stack(rows).cpu(), "grid_tokens": [decode([i]) for i in ids],
            "grid_next": [decode([i]) for i in top.tolist()]}
