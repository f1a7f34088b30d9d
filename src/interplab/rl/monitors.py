"""Monitors of an RL run: is the proxy reward being earned, or hacked?

Logged at every logging step of the GRPO harness (``rl.harness``) into the run's
``metrics.jsonl``:

- the **proxy reward** (what the policy is trained on) and a **held-out verifier** (any reward
  function the policy never sees) on completions of *held-out* prompts;
- **KL to the reference** (TRL's own per-token k3 estimate, logged as ``kl``);
- a probe's **AUROC on a held-out labelled set**, computed on the frozen reference *and* on the
  current policy. The reference's AUROC cannot move (its weights are frozen); a drop on the
  policy alone means the policy's activations drifted so the probe no longer reads them —
  "obfuscated activations" (Bailey et al. 2024, arXiv:2412.09565);
- **proxy–verifier correlation** (Spearman) over the held-out completions, and the **hack rate**:
  the share of completions the proxy calls a success (above its threshold) that the verifier
  calls a failure (below its threshold) (Goodhart's law; Gao et al. 2023, "Scaling laws for
  reward model overoptimization");
- **sample completions** at checkpoints.

The functions here are pure (floats and tensors in, floats out) so their claims are unit-tested
on constructed numbers; ``HeldOutMonitor`` is the small stateful part that generates held-out
completions and calls them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from interplab.core.errors import InputError
from interplab.stats.auroc import auroc
from interplab.stats.correlation import batched_spearman

__all__ = ["HeldOutMonitor", "hack_rate", "obfuscation", "probe_aurocs", "proxy_verifier_correlation"]


def _floats(name: str, values: Sequence[float]) -> torch.Tensor:
    t = torch.as_tensor(list(values), dtype=torch.float64).flatten()
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{name} holds NaN or infinite values; a monitor needs finite rewards.")
    return t


def _pair(proxy: Sequence[float], verifier: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    p, v = _floats("proxy", proxy), _floats("verifier", verifier)
    if p.shape != v.shape:
        raise InputError(f"proxy has {p.numel()} rewards, verifier {v.numel()}; score the same completions.")
    if p.numel() == 0:
        raise InputError("No completions to monitor (empty proxy and verifier lists).")
    return p, v


def hack_rate(proxy: Sequence[float], verifier: Sequence[float], proxy_threshold: float,
              verifier_threshold: float) -> float:
    """Share of completions with proxy > ``proxy_threshold`` (the proxy says success) and
    verifier < ``verifier_threshold`` (the verifier says no), over all completions."""
    p, v = _pair(proxy, verifier)
    return float(((p > proxy_threshold) & (v < verifier_threshold)).double().mean())


def proxy_verifier_correlation(proxy: Sequence[float], verifier: Sequence[float]) -> float:
    """Spearman's rho between proxy and verifier rewards of the same completions; NaN when
    either is constant or there are fewer than 3 completions."""
    p, v = _pair(proxy, verifier)
    if p.numel() < 3:
        return math.nan
    return float(batched_spearman(p, v))


def probe_aurocs(reference_scores, policy_scores, labels) -> dict[str, float]:
    """The probe's AUROC on the same labelled texts read from the reference and from the
    policy, and the drop (reference − policy; positive = the policy hides the concept)."""
    ref = auroc(reference_scores, labels, nan_if_one_class=True)
    pol = auroc(policy_scores, labels, nan_if_one_class=True)
    return {"probe_auroc_reference": ref, "probe_auroc_policy": pol, "probe_auroc_drop": ref - pol}


def obfuscation(reference_auroc: float, policy_auroc: float, tolerance: float = 0.1) -> bool:
    """True when the probe still separates the labels on the frozen reference but its AUROC on
    the policy fell more than ``tolerance`` below it (activations drifted; the text did not
    change, the frozen model's reading did not change, so the drop is the policy's alone)."""
    if math.isnan(reference_auroc) or math.isnan(policy_auroc):
        return False
    return reference_auroc - policy_auroc > tolerance


Reward = Callable[..., list[float]]


@dataclass
class HeldOutMonitor:
    """Held-out evaluation at a logging step: greedy completions of ``prompts`` from the
    policy, scored by ``proxy`` and ``verifier``; optionally a probe's AUROC on labelled texts.

    ``probe`` is an ``interplab.analyses.probes.Probe`` (anything with ``probe(model, texts)``
    returning scores), read at its site on ``reference`` and on the policy (both
    ``HookedModel``-like); ``texts`` / ``labels`` are the held-out labelled set.
    """

    prompts: list[str]
    proxy: Reward
    verifier: Reward | None = None
    proxy_threshold: float = 0.0
    verifier_threshold: float = 0.0
    max_new_tokens: int = 8
    probe: object | None = None
    texts: list[str] | None = None
    labels: list[int] | None = None
    reference: object | None = None
    n_samples: int = 3
    _reference_scores: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not self.prompts:
            raise InputError("The held-out monitor needs at least one prompt.")
        if self.probe is not None and (not self.texts or self.labels is None or self.reference is None):
            raise InputError("A monitor probe needs held-out texts, their labels and the frozen reference model.")

    def completions(self, policy, tokenizer) -> list[str]:
        return greedy_completions(policy, tokenizer, self.prompts, self.max_new_tokens)

    def __call__(self, policy_hooked, tokenizer) -> tuple[dict[str, float], list[dict]]:
        """(metrics, samples) for the policy now."""
        done = self.completions(policy_hooked.hf, tokenizer)
        proxy = [float(x) for x in self.proxy(prompts=self.prompts, completions=done)]
        out: dict[str, float] = {"heldout_proxy": sum(proxy) / len(proxy)}
        if self.verifier is not None:
            ver = [float(x) for x in self.verifier(prompts=self.prompts, completions=done)]
            out |= {"heldout_verifier": sum(ver) / len(ver),
                    "proxy_verifier_spearman": proxy_verifier_correlation(proxy, ver),
                    "hack_rate": hack_rate(proxy, ver, self.proxy_threshold, self.verifier_threshold)}
        else:
            ver = [math.nan] * len(proxy)
        if self.probe is not None:
            with torch.no_grad():
                if self._reference_scores is None:  # the reference is frozen: its scores never change
                    self._reference_scores = torch.as_tensor(self.probe(self.reference, self.texts))
                policy_scores = torch.as_tensor(self.probe(policy_hooked, self.texts))
            out |= probe_aurocs(self._reference_scores, policy_scores, self.labels)
        samples = [{"prompt": p, "completion": c, "proxy": r, "verifier": v}
                   for p, c, r, v in list(zip(self.prompts, done, proxy, ver, strict=True))[: self.n_samples]]
        return out, samples


@torch.no_grad()
def greedy_completions(hf_model, tokenizer, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy (deterministic) completions of ``prompts``, decoded without special tokens."""
    was_training = hf_model.training
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        hf_model.eval()
        batch = tokenizer(list(prompts), return_tensors="pt", padding=True).to(next(hf_model.parameters()).device)
        out = hf_model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        hf_model.train(was_training)
