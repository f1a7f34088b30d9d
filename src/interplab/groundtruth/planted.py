"""Toy models with hand-set weights whose mechanism is known exactly (no training).

Every model is a ``ToyForCausalLM`` with ``normalization="none"`` whose residual stream is cut
into one-hot blocks -- token, position, previous token, output, scratch -- so each head reads
and writes named subspaces and attention scores are either a large constant or zero. A planted
model comes with its ``Truth`` (``groundtruth.truth``), its *program* (the answer it must give at
each position, written in plain Python) and its *test domain* (every prompt the claim covers,
enumerated in full); ``reproduce`` checks argmax == program on every position of every prompt.

Distractor heads sit beside the mechanism's heads: they attend somewhere definite (BOS, self,
uniform) and write either to a scratch subspace nothing reads, or to the logits with a weight
too small to change any argmax -- so they move logits but not answers, and ablating one leaves
the task exact, while ablating a truth node breaks it. In the spirit of tracr (Lindner et al.
2023) and the induction circuits of Olsson et al. 2022, "In-context learning and induction
heads".
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from interplab.core.errors import ConfigError
from interplab.groundtruth.truth import Truth
from interplab.models.toy import ToyConfig, ToyForCausalLM

BOS = 0
ATTN = 20.0  # attention score of a match: the weight off the match is below n_ctx * e^-20
COPY = 10.0  # logit the mechanism writes for its answer
DISTRACT_LOGITS = (0.5, -0.3)  # what logit-writing distractors add, far below COPY
DISTRACTORS = ("bos", "uniform", "self")


@dataclass(frozen=True)
class Planted:
    """A planted model, the truth of its mechanism, its program and its whole test domain."""

    model: ToyForCausalLM
    truth: Truth
    program: Callable[[Sequence[int]], list[int | None]]  # answer per position (None: no claim)
    domain: Callable[[], torch.Tensor]  # every prompt of the test domain, [n, pos]


@dataclass(frozen=True)
class Prompts:
    """Prompts and the answer the program gives at their last position."""

    tokens: torch.Tensor  # [n, pos]
    answers: torch.Tensor  # [n]


@dataclass(frozen=True)
class Reproduction:
    """How a model's argmax compares with the program on a set of prompts."""

    n_prompts: int
    n_checked: int  # positions where the program makes a claim
    n_wrong: int
    failures: tuple[tuple[int, int, int, int], ...]  # (prompt, position, expected, got), first 10

    @property
    def accuracy(self) -> float:
        return 1.0 - self.n_wrong / max(self.n_checked, 1)

    @property
    def exact(self) -> bool:
        return self.n_wrong == 0 and self.n_checked > 0


# -- the residual stream's blocks ----------------------------------------------------------------
class _Blocks:
    """Offsets of the one-hot blocks: tok | pos | prev | out | scratch."""

    def __init__(self, vocab: int, n_ctx: int) -> None:
        self.vocab, self.n_ctx = vocab, n_ctx
        self.tok, self.pos = 0, vocab
        self.prev = vocab + n_ctx
        self.out = self.prev + vocab
        self.scratch = self.out + vocab
        self.d_model = self.scratch + vocab


def _head(model: ToyForCausalLM, layer: int, head: int, *, q=None, k=None, v=None, o=None,
          q_bias=None) -> None:
    """Set one head's [d_head, d_model] q/k/v maps, [d_model, d_head] output map, q bias."""
    attn, d = model.model.layers[layer].self_attn, model.config.d_head
    rows = slice(head * d, (head + 1) * d)
    with torch.no_grad():
        for proj, w in ((attn.q_proj, q), (attn.k_proj, k), (attn.v_proj, v)):
            if w is not None:
                proj.weight[rows] = w
        if o is not None:
            attn.o_proj.weight[:, rows] = o
        if q_bias is not None:
            attn.q_proj.bias[rows] = q_bias


def _zeroed(config: ToyConfig) -> ToyForCausalLM:
    model = ToyForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    model.requires_grad_(False)
    return model


def _eye(n_out: int, n_in: int, out0: int, in0: int, n: int, shift: int = 0, scale: float = 1.0):
    """A [n_out, n_in] map sending unit in0 + i to unit out0 + i + shift (for i + shift < n)."""
    w = torch.zeros(n_out, n_in)
    for i in range(n - max(shift, 0)):
        w[out0 + i + shift, in0 + i] = scale
    return w


def _distractor(model, layer: int, head: int, kind: str, b: _Blocks, writes_logits: bool) -> None:
    """A head with a definite pattern whose output nothing downstream of it depends on."""
    d, dm = model.config.d_head, b.d_model
    v = _eye(d, dm, 0, b.tok, b.vocab)
    if writes_logits and kind != "bos":
        scale = DISTRACT_LOGITS[0] if kind == "uniform" else DISTRACT_LOGITS[1]  # suppress
        o = _eye(dm, d, b.out, 0, b.vocab, scale=scale)
    else:
        o = _eye(dm, d, b.scratch, 0, b.vocab)
    if kind == "bos":  # a constant query matches the key of position 0
        bias = torch.zeros(d)
        bias[0] = ATTN
        _head(model, layer, head, k=_eye(d, dm, 0, b.pos, 1), q_bias=bias, v=v, o=o)
    elif kind in ("self", "same"):  # match the own position / earlier copies of the token
        block, n = (b.pos, b.n_ctx) if kind == "self" else (b.tok, b.vocab)
        match = _eye(d, dm, 0, block, n, scale=ATTN ** 0.5)
        _head(model, layer, head, q=match, k=match, v=v, o=o)
    else:  # uniform: zero scores
        _head(model, layer, head, v=v, o=o)


def _layer_heads(n_distractors: int) -> tuple[int, int]:
    """(number of heads, index of the mechanism's head): not head 0, so indices matter."""
    return n_distractors + 1, min(1, n_distractors)


# -- (a) induction -----------------------------------------------------------------------------
def induction_program(tokens: Sequence[int]) -> list[int | None]:
    """At each position: the token after the most recent earlier copy of this token, if any."""
    tokens = list(tokens)
    out: list[int | None] = []
    for t, x in enumerate(tokens):
        earlier = [p for p in range(t) if tokens[p] == x]
        out.append(tokens[earlier[-1] + 1] if earlier else None)
    return out


def induction_domain(vocab: int, m: int) -> torch.Tensor:
    """Every [BOS, s, s] with s a sequence of m distinct non-BOS tokens: (vocab-1)!/(vocab-1-m)!
    prompts of 2m + 1 tokens; the program claims positions m+1..2m of each."""
    rows = [[BOS, *s, *s] for s in itertools.permutations(range(1, vocab), m)]
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), 2 * m + 1)


def induction_model(vocab: int = 8, n_ctx: int = 9, n_distractors: int = 2,
                    m: int | None = None) -> Planted:
    """Two attention-only layers: L0 a previous-token head, L1 an induction head, each among
    ``n_distractors`` distractors. Test domain: ``induction_domain(vocab, m)``, m defaulting to
    the longest that fits (n_ctx - 1) // 2."""
    m = (n_ctx - 1) // 2 if m is None else m
    if vocab < 3 or not 1 <= m <= vocab - 1 or 2 * m + 1 > n_ctx or n_distractors < 0:
        raise ConfigError(f"induction_model needs vocab >= 3, 1 <= m <= vocab - 1, 2m + 1 <= "
                          f"n_ctx and n_distractors >= 0; got vocab={vocab}, n_ctx={n_ctx}, "
                          f"m={m}, n_distractors={n_distractors}.")
    b = _Blocks(vocab, n_ctx)
    n_heads, main = _layer_heads(n_distractors)
    d = max(vocab, n_ctx)
    model = _zeroed(ToyConfig(
        vocab_size=vocab, n_ctx=n_ctx, d_model=b.d_model, n_layers=2, n_heads=n_heads,
        d_head=d, d_mlp=0, positional="learned", normalization="none", attn_scale=1.0,
        bos_token_id=BOS, attn_implementation="eager",
    ))
    dm = b.d_model
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(_eye(dm, vocab, b.tok, 0, vocab).T)
        model.model.pos_embed.weight.copy_(_eye(dm, n_ctx, b.pos, 0, n_ctx).T)
        model.lm_head.weight.copy_(_eye(vocab, dm, 0, b.out, vocab))
    # L0 previous-token head: query position t matches key position t - 1; copies its token
    # into the prev block.
    root = ATTN ** 0.5
    _head(model, 0, main, q=_eye(d, dm, 0, b.pos, n_ctx, scale=root),
          k=_eye(d, dm, 0, b.pos, n_ctx, shift=1, scale=root),
          v=_eye(d, dm, 0, b.tok, vocab), o=_eye(dm, d, b.prev, 0, vocab))
    # L1 induction head: query = current token, key = previous token; copies the attended
    # token to the logits.
    _head(model, 1, main, q=_eye(d, dm, 0, b.tok, vocab, scale=root),
          k=_eye(d, dm, 0, b.prev, vocab, scale=root),
          v=_eye(d, dm, 0, b.tok, vocab), o=_eye(dm, d, b.out, 0, vocab, scale=COPY))
    others = [h for h in range(n_heads) if h != main]
    for i, h in enumerate(others):
        kind = DISTRACTORS[i % len(DISTRACTORS)]
        _distractor(model, 0, h, kind, b, writes_logits=False)
        _distractor(model, 1, h, kind, b, writes_logits=True)
    prev, ind = f"L0.h{main}", f"L1.h{main}"
    truth = Truth(
        nodes=("embed", prev, ind, "logits"),
        edges=(("embed", prev, "q"), ("embed", prev, "k"), ("embed", prev, "v"),
               (prev, ind, "k"), ("embed", ind, "q"), ("embed", ind, "v"), (ind, "logits")),
        description=f"{prev} attends t -> t-1 (positions) and writes the previous token; {ind} "
                    "matches the current token against it and copies the following token.",
        task="induction",
    )
    return Planted(model, truth, induction_program, lambda: induction_domain(vocab, m))


def induction_task(vocab: int, n_ctx: int, n: int, seed: int = 0, m: int | None = None) -> Prompts:
    """``n`` random prompts [BOS, s, s] (s: m distinct tokens) and each one's next token (s[0])."""
    m = (n_ctx - 1) // 2 if m is None else m
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randperm(vocab - 1, generator=g)[:m] + 1 for _ in range(n)]
    tokens = torch.stack([torch.cat([torch.tensor([BOS]), s, s]) for s in rows])
    return Prompts(tokens, tokens[:, 1].clone())


# -- (b) successor MLP -------------------------------------------------------------------------
def successor_program(tokens: Sequence[int], vocab: int) -> list[int | None]:
    """At every position: (token + 1) mod vocab."""
    return [(int(x) + 1) % vocab for x in tokens]


def successor_domain(vocab: int, length: int) -> torch.Tensor:
    """Every sequence of ``length`` tokens: vocab ** length prompts."""
    rows = list(itertools.product(range(vocab), repeat=length))
    return torch.tensor(rows, dtype=torch.long)


def successor_model(vocab: int = 8, n_ctx: int = 8, n_distractors: int = 2,
                    length: int = 3) -> Planted:
    """One layer, no positions: MLP0 maps token t to t + 1 (mod vocab) through one ReLU unit per
    token (unit t fires 0.5 on token t, is cut to 0 on any other); its attention heads are all
    distractors. Test domain: ``successor_domain(vocab, length)``."""
    if vocab < 2 or not 1 <= length <= n_ctx:
        raise ConfigError(f"successor_model needs vocab >= 2 and 1 <= length <= n_ctx; got "
                          f"vocab={vocab}, n_ctx={n_ctx}, length={length}.")
    b = _Blocks(vocab, 0)
    n_heads = max(n_distractors, 1)
    model = _zeroed(ToyConfig(
        vocab_size=vocab, n_ctx=n_ctx, d_model=b.d_model, n_layers=1, n_heads=n_heads,
        d_head=vocab, d_mlp=vocab, positional="none", normalization="none", attn_scale=1.0,
        attn_implementation="eager",
    ))
    dm = b.d_model
    mlp = model.model.layers[0].mlp
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(_eye(dm, vocab, b.tok, 0, vocab).T)
        model.lm_head.weight.copy_(_eye(vocab, dm, 0, b.out, vocab))
        mlp.up_proj.weight.copy_(_eye(vocab, dm, 0, b.tok, vocab))
        mlp.up_proj.bias.fill_(-0.5)
        down = torch.zeros(dm, vocab)
        for t in range(vocab):
            down[b.out + (t + 1) % vocab, t] = 2 * COPY
        mlp.down_proj.weight.copy_(down)
    for h in range(n_distractors):  # no positions here: "same" attends to copies of the token
        _distractor(model, 0, h, ("uniform", "same")[h % 2], b, writes_logits=True)
    truth = Truth(
        nodes=("embed", "mlp0", "logits"), edges=(("embed", "mlp0"), ("mlp0", "logits")),
        description="mlp0 is a lookup table: ReLU unit t fires on token t and writes t + 1.",
        task="successor",
    )
    return Planted(model, truth, lambda s: successor_program(s, vocab),
                   lambda: successor_domain(vocab, length))


# -- checking ------------------------------------------------------------------------------------
def _logits(model, tokens: torch.Tensor, interventions: Iterable) -> torch.Tensor:
    if hasattr(model, "run"):  # a HookedModel
        return model.run(tokens, list(interventions))
    if list(interventions):
        raise ConfigError("Interventions need a HookedModel; wrap the model first.")
    with torch.no_grad():
        return model(tokens).logits


def reproduce(model, tokens: torch.Tensor, program: Callable[[Sequence[int]], list[int | None]],
              interventions: Iterable = (), batch_size: int = 512) -> Reproduction:
    """Compare argmax of the logits with ``program`` at every position it claims, on every
    prompt (``model``: a ToyForCausalLM, or a HookedModel to run with ``interventions``)."""
    interventions = list(interventions)
    checked = wrong = 0
    failures: list[tuple[int, int, int, int]] = []
    for start in range(0, len(tokens), batch_size):
        chunk = tokens[start : start + batch_size]
        got = _logits(model, chunk, interventions).argmax(-1).tolist()
        for i, row in enumerate(chunk.tolist()):
            for pos, want in enumerate(program(row)):
                if want is None:
                    continue
                checked += 1
                if got[i][pos] != want:
                    wrong += 1
                    if len(failures) < 10:
                        failures.append((start + i, pos, want, got[i][pos]))
    return Reproduction(len(tokens), checked, wrong, tuple(failures))


def reproduce_domain(planted: Planted, model=None, interventions: Iterable = ()) -> Reproduction:
    """``reproduce`` over the planted model's whole test domain."""
    return reproduce(planted.model if model is None else model, planted.domain(),
                     planted.program, interventions)
