"""``interplab demo`` (the README's first command): the indirect-object-identification analysis of
Wang et al. 2022 reproduced on the default model, as an HTML report in a run directory.

Steps: build IOI clean/corrupt ("ABC") pairs sharing one template; baseline logit differences
with CIs; the logit lens on a clean prompt; denoising activation patching over
(layer × position) of resid_pre and over (layer × head) of head outputs, every cell with a
bootstrap CI, a permutation p-value and a BH q-value; attribution patching and its IG variant
against exact head patching.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from interplab.analyses.attribution import AttributionConfig, attribution_patching, compare_with
from interplab.analyses.logit_lens import LogitLensConfig, logit_lens
from interplab.analyses.patching import PatchingConfig, activation_patching
from interplab.analyses.patching_report import patching_blocks, top_cells
from interplab.analyses.patching_run import PatchRunResult
from interplab.analyses.verified import VerifiedConfig, VerifiedResult, verified_patching
from interplab.analyses.verified_report import verified_blocks, verified_cells
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Heading, Lines, Scatter, Table, Text, ci_text
from interplab.core.config import RunFields, param
from interplab.core.model import Model
from interplab.core.result import Result
from interplab.stats import CI, bootstrap_ci
from interplab.tasks.aligned import aligned_task

METHODS = ("attribution", "ig")


@dataclass(frozen=True)
class IOIRunConfig(RunFields):
    """The IOI demo."""

    n: int = param(12, help="Number of clean/corrupt IOI pairs (one template, name order and length). 12 lets a cell pass BH over the sweep (the smallest permutation p is 2/2**n).", ge=2, le=10_000)
    n_resamples: int = param(2000, help="Bootstrap resamples per CI.", ge=2)
    mode: str = param("verified", choices=("verified", "exact"), help="verified: AtP* over each sweep, then "
                      "exact patching of its top cells and a random sample of the rest (fast); exact: every cell.")
    top_k: int = param(40, ge=0, help="verified: cells of largest AtP* score patched exactly, per sweep.")
    n_random: int = param(30, ge=0, help="verified: further cells drawn at random and patched exactly, per sweep.")
    attribution: bool = param(True, help="exact mode: also compare attribution patching (plain and IG) with exact "
                              "head patching.")


@dataclass
class Baselines:
    """Logit difference answer − wrong at the last position, per prompt, with bootstrap CIs."""

    clean_logit_diff: torch.Tensor  # [prompt]
    corrupt_logit_diff: torch.Tensor  # [prompt]
    clean_ci: CI
    corrupt_ci: CI
    accuracy: float  # top-1 accuracy on the clean prompts


@dataclass
class LensCurve:
    """p(answer) read through the logit lens at every layer's resid_post, on one clean prompt."""

    prompt: str
    word: str
    answer_prob: torch.Tensor  # [layer]
    final_prob: torch.Tensor  # [layer]: p(the model's own top-1 token)


@dataclass
class VsExact:
    """One attribution estimate of every head's patching effect against exact head patching."""

    method: str
    effects: torch.Tensor  # [prompt, layer, head]
    pearson: float
    pearson_ci: CI | None
    kendall: float
    kendall_ci: CI | None
    seconds: float


@dataclass
class IOIResult(Result):
    """Everything the IOI report shows."""

    report_label: ClassVar[str] = "IOI"
    model_name: str
    device: str
    clean_example: str
    corrupt_example: str
    answer_word: str
    wrong_word: str
    baseline: Baselines
    logit_lens: LensCurve
    patch_resid_pre: PatchRunResult | None = None  # exact mode
    patch_heads: PatchRunResult | None = None  # exact mode
    attribution: dict[str, VsExact] = field(default_factory=dict)
    verified: dict[str, VerifiedResult] = field(default_factory=dict)  # verified mode, by sweep
    position_roles: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0

    def title(self) -> str:
        return f"IOI on {self.model_name}: activation patching with confidence intervals"

    def headline(self) -> dict:
        b = self.baseline
        out: dict = {}
        for run, ld, ci in (("clean", b.clean_logit_diff, b.clean_ci), ("corrupt", b.corrupt_logit_diff, b.corrupt_ci)):
            out |= {f"{run}_logit_diff": float(ld.mean()), f"{run}_logit_diff_low": float(ci.low),
                    f"{run}_logit_diff_high": float(ci.high)}
        out["clean_accuracy"] = b.accuracy
        if self.patch_heads is not None:
            for i, c in enumerate(top_cells(self.patch_heads, 3), 1):
                out |= {f"top{i}_head": c.label, f"top{i}_head_effect": c.mean}
                if c.low is not None:
                    out |= {f"top{i}_head_low": c.low, f"top{i}_head_high": c.high}
        for sweep, v in self.verified.items():
            rows = sorted(verified_cells(v, self.position_roles), key=lambda r: -abs(r["effect"]))
            out[f"{sweep}_verified_cells"] = len(rows)
            out[f"{sweep}_significant_cells"] = int(v.exact.summary.significant.sum())
            for i, r in enumerate(rows[:3], 1):
                out |= {f"{sweep}_top{i}": r["cell"], f"{sweep}_top{i}_effect": r["effect"],
                        f"{sweep}_top{i}_low": r["low"], f"{sweep}_top{i}_high": r["high"]}
            if v.rank_corr is not None:
                out[f"{sweep}_sample_spearman"] = v.rank_corr
            if v.missed_max is not None:
                out[f"{sweep}_largest_missed"] = v.missed_max
        for method, v in self.attribution.items():
            out |= {f"{method}_pearson": v.pearson, f"{method}_kendall": v.kendall}
        return out

    def blocks(self) -> list[Block]:
        n = self.baseline.clean_logit_diff.shape[0]
        out: list[Block] = [Text(
            f"{n} clean/corrupt pairs of one IOI template, e.g. clean {self.clean_example!r} (answer "
            f"{self.answer_word!r}, wrong {self.wrong_word!r}), corrupt {self.corrupt_example!r}. Metric: "
            "logit difference answer − wrong at the last position; effects are normalised so 0 = corrupt "
            "run and 1 = clean run. CIs: BCa bootstrap over prompts; p: paired sign-flip permutation test "
            "against 0; q: Benjamini–Hochberg across the cells of each sweep. All pairs share one template, "
            "one name order and one token length, so each position plays the same role (IO, S1, S2, END) "
            "in every prompt. Corruption: Wang et al.'s ABC distribution — the IO, S1 and S2 names are all "
            "replaced by three fresh names, so the corrupt prompt says nothing about whom to pick; patching "
            "S2 alone restores a repeated name the corrupt prompt never had, which is why S2 cells can "
            "be negative.")]
        out += self._baseline_blocks() + self._lens_blocks()
        if self.patch_resid_pre is not None:
            out += patching_blocks("patch_resid_pre", self.patch_resid_pre,
                                   "Denoising patching of resid_pre (layer × position)")
        if self.patch_heads is not None:
            out += patching_blocks("patch_heads", self.patch_heads,
                                   "Denoising patching of head outputs (layer × head, all positions)")
        for sweep, title in (("resid_pre", "Denoising patching of resid_pre (layer × position), verified"),
                             ("heads", "Denoising patching of head outputs (layer × head, all positions), verified")):
            if sweep in self.verified:
                out += verified_blocks(f"patch_{sweep}", self.verified[sweep], title, self.position_roles)
        if self.attribution:
            out += self._attribution_blocks()
        out.append(Text(f"Total time {self.seconds:.0f} s on {self.device}.", note=True))
        return out

    def _baseline_blocks(self) -> list[Block]:
        b = self.baseline
        rows = [[run, float(ld.mean()), ci_text(ci.low, ci.high)]
                for run, ld, ci in (("clean", b.clean_logit_diff, b.clean_ci),
                                    ("corrupt", b.corrupt_logit_diff, b.corrupt_ci))]
        return [Heading("Baselines"), Table(["run", "mean logit diff", "95% CI"], rows),
                Text(f"Top-1 accuracy on clean prompts: {b.accuracy:.2f}.")]

    def _lens_blocks(self) -> list[Block]:
        lens = self.logit_lens
        probs = lens.answer_prob.tolist()
        return [Heading("Logit lens"),
                Lines("logit_lens", f"Logit lens: p({lens.word!r}) by layer", list(range(len(probs))),
                      {lens.word: probs}, "layer (resid_post)", f"p({lens.word})", ylim=(0.0, 1.0),
                      caption=f"Prompt {lens.prompt!r}: each layer's resid_post through the final norm "
                              "and unembedding.")]

    def _attribution_blocks(self) -> list[Block]:
        out: list[Block] = [Heading("Attribution patching vs exact head patching"), Text(
            "Attribution patching (Nanda 2023; Syed et al. 2023) estimates every head's patching effect "
            "from one forward and backward pass; the IG variant averages gradients over 5 interpolation "
            "steps. Each point is one head (cell means over prompts); r and τ carry BCa bootstrap CIs "
            "over heads.")]
        exact = self.patch_heads.effects.mean(0).flatten()
        rows = []
        for method, v in self.attribution.items():
            rows.append([method, v.pearson, _ci(v.pearson_ci), v.kendall, _ci(v.kendall_ci), f"{v.seconds:.1f} s"])
            out.append(Scatter(f"attribution_{method}",
                               f"{method}: Pearson r = {v.pearson:.3f}, Kendall τ = {v.kendall:.3f}",
                               exact, v.effects.mean(0).flatten(), "exact patching effect",
                               f"{method} estimate", caption="Each point is one head."))
        out.append(Table(["method", "Pearson r", "95% CI", "Kendall τ", "95% CI", "time"], rows))
        return out


def _ci(ci) -> str:
    return "" if ci is None else ci_text(ci.low, ci.high)


@register_analysis("demo", config=IOIRunConfig, result=IOIResult,
                   help="the IOI analysis as an HTML report (the main job)", run_name=lambda c: "ioi",
                   example={"n": 2, "n_resamples": 50})
def demo(cfg: IOIRunConfig, ctx: Context) -> IOIResult:
    t0 = time.time()
    model = ctx.model
    task = aligned_task(model, "ioi", cfg.n, cfg.seed)
    ctx.phase("baselines")
    baseline = _baselines(model, task, cfg)
    ctx.phase("logit lens")
    lens = _lens(model, task)
    common = {"n_resamples": cfg.n_resamples, "seed": cfg.seed}
    resid = heads = None
    attribution, verified = {}, {}
    if cfg.mode == "exact":
        ctx.phase("patching resid_pre (layer × position)")
        resid = activation_patching(model, task.clean, task.corrupt, task.answers, task.wrong,
                                    PatchingConfig(sweep="resid_pre", **common))
        ctx.phase("patching head outputs (layer × head)")
        heads = activation_patching(model, task.clean, task.corrupt, task.answers, task.wrong,
                                    PatchingConfig(sweep="heads", **common))
        if cfg.attribution:
            ctx.phase("attribution patching vs exact")
            attribution = _attribution(model, task, heads, cfg)
    else:
        for sweep in ("resid_pre", "heads"):
            ctx.phase(f"AtP* over {sweep}, then exact patching of {cfg.top_k} + {cfg.n_random} cells")
            verified[sweep] = verified_patching(model, task.clean, task.corrupt, task.answers, task.wrong,
                                                VerifiedConfig(sweep=sweep, mode="verified", top_k=cfg.top_k,
                                                               n_random=cfg.n_random, **common))
    return IOIResult(
        model_name=model.source.get("name", ""), device=str(model.device), clean_example=task.clean_text[0],
        corrupt_example=task.corrupt_text[0], answer_word=task.meta["answer_words"][0],
        wrong_word=task.meta["wrong_words"][0], baseline=baseline, logit_lens=lens,
        patch_resid_pre=None if resid is None else PatchRunResult(**vars(resid), position_roles=task.role_labels()),
        patch_heads=None if heads is None else PatchRunResult(**vars(heads)),
        attribution=attribution, verified=verified, position_roles=task.role_labels(), seconds=time.time() - t0)


def _baselines(model: Model, task, cfg: IOIRunConfig) -> Baselines:
    rows = torch.arange(len(task))
    with torch.no_grad():
        c = model.run(task.clean)[:, -1].float()
        k = model.run(task.corrupt)[:, -1].float()
    ld_c = c[rows, task.answers] - c[rows, task.wrong]
    ld_k = k[rows, task.answers] - k[rows, task.wrong]
    ci_c, ci_k = (bootstrap_ci(x, n_resamples=cfg.n_resamples, seed=cfg.seed) for x in (ld_c, ld_k))
    acc = float((c.argmax(-1) == task.answers).float().mean())
    return Baselines(ld_c, ld_k, ci_c, ci_k, acc)


def _lens(model: Model, task) -> LensCurve:
    result = logit_lens(model, LogitLensConfig(prompt=task.clean_text[0]))
    probs = result.lens_logits.softmax(-1)[:, int(task.answers[0])]
    return LensCurve(task.clean_text[0], task.meta["answer_words"][0], probs, result.final_prob)


def _attribution(model: Model, task, exact, cfg: IOIRunConfig) -> dict[str, VsExact]:
    out = {}
    for method in METHODS:
        config = AttributionConfig(nodes="heads", method=method, n_resamples=cfg.n_resamples, seed=cfg.seed)
        res = compare_with(attribution_patching(model, task.clean, task.corrupt, task.answers, task.wrong,
                                                config), exact)
        out[method] = VsExact(method, res.effects, res.pearson, res.pearson_ci, res.kendall, res.kendall_ci,
                              res.seconds)
    return out
