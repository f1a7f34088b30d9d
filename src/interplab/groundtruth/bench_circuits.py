"""The circuit suites of ``interplab bench``.

circuits: exact edge patching, EAP, EAP-IG and ACDC on the planted induction circuit
(``groundtruth.planted``, 3 distractor heads per layer) and the planted successor MLP, scored against
its truth under zero ablation (the ablation under which every truth edge is identifiable; see
tests/integration/test_circuits_planted.py). Each method's edge AUROC comes with a percentile
bootstrap CI over prompts; the null is the same method on randomly initialised copies of the
model (mean over seeds); pass counts and wall time are the method's own. Each edge-scoring row
keeps its per-edge scores with CIs and the planted truth flags (``CircuitEdges``, in the row's
``extra["circuit"]``), which the report draws as the circuit found.

trained: the induction model trained here and the shipped modular-addition model, each method's
node AUROC against the heads an ablation measured, and the Fourier structure of the embedding."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from interplab.analyses.circuits import (
    ACDCConfig,
    CircuitGraph,
    CircuitTask,
    EAPConfig,
    EdgeScores,
    ExactConfig,
    acdc,
    auroc_ci_over_prompts,
    eap,
    edge_auroc,
    exact_edge_patching,
    node_auroc,
)
from interplab.groundtruth.bench_suites import Row
from interplab.groundtruth.planted import induction_model, induction_task, successor_model
from interplab.models.toy import ToyForCausalLM
from interplab.runtime import HookedModel

CUT = 0.1  # the circuit drawn at first: edges with |score| >= CUT × the largest |score|


@dataclass
class CircuitEdges:
    """One method's edge scores on a planted model's graph, with the planted truth: what the
    report draws as a circuit (``blocks.Graph``). Stored in the row's ``extra["circuit"]``."""

    nodes: list[str]  # the graph's nodes: embed, L<l>.h<h>, mlp<l>, logits
    layers: list[float]  # per node: embed -1, a head its layer, an MLP its layer + 0.5, logits n_layers
    edges: list[list[str]]  # per edge: [sender, receiver] or [sender, head, q / k / v], as scored
    scores: list[float]  # per edge: mean change of the metric when that edge alone is ablated
    low: list[float]  # per edge: 95% percentile-bootstrap CI of the mean over prompts
    high: list[float]
    truth: list[bool]  # per edge: in the planted circuit
    threshold: float  # CUT × the largest |score|
    metric: str = ""


def node_layer(name: str, n_layers: int) -> float:
    if name == "embed":
        return -1.0
    if name == "logits":
        return float(n_layers)
    if name.startswith("mlp"):
        return int(name[3:]) + 0.5
    return float(int(name[1:].split(".")[0]))


def circuit_edges(graph: CircuitGraph, scores: EdgeScores, truth_edges, n_resamples: int = 500) -> CircuitEdges:
    """``scores`` on ``graph`` with per-edge CIs over prompts and the truth flags."""
    from interplab.analyses.circuits.faithfulness import edge_labels
    from interplab.stats import bootstrap_ci

    ci = bootstrap_ci(scores.per_prompt.double(), n_resamples=n_resamples, method="percentile", seed=0)
    values = scores.scores.tolist()
    return CircuitEdges(list(graph.nodes), [node_layer(n, graph.n_layers) for n in graph.nodes],
                        [list(e) for e in scores.edges], values, ci.low.tolist(), ci.high.tolist(),
                        edge_labels(scores, truth_edges).tolist(), CUT * max((abs(v) for v in values), default=0.0),
                        scores.metric)


def _task(vocab: int, n_ctx: int, n: int) -> CircuitTask:
    clean = induction_task(vocab, n_ctx, n, seed=1).tokens
    corrupt = clean.clone()
    half = n_ctx // 2 + 1
    corrupt[:, half:] = torch.randint(1, vocab, (n, n_ctx - half), generator=torch.Generator().manual_seed(7))
    return CircuitTask(clean, answers=clean[:, 1], wrong=clean[:, 2], corrupt=corrupt)


def _successor_task(planted, n: int) -> CircuitTask:
    tokens = planted.domain()
    g = torch.Generator().manual_seed(0)
    clean = tokens[torch.randperm(tokens.shape[0], generator=g)[:n]]
    answers = torch.tensor([planted.program(row)[-1] for row in clean.tolist()])
    wrong = (answers + 1) % planted.model.config.vocab_size  # any token other than the answer
    corrupt = tokens[torch.randperm(tokens.shape[0], generator=g)[:n]]
    return CircuitTask(clean, answers=answers, wrong=wrong, corrupt=corrupt)


def _null(planted, task, method, n_seeds: int) -> float:
    values = []
    for seed in range(n_seeds):
        torch.manual_seed(seed)
        null = HookedModel(ToyForCausalLM(planted.model.config).eval())
        values.append(edge_auroc(method(null, task), planted.truth.edges))
    return sum(values) / len(values)


def circuit_rows(quick: bool, n_seeds: int) -> list[Row]:
    n, m = (16 if quick else 48), 5
    methods = {
        "exact edge patching": lambda mod, t: exact_edge_patching(mod, t, ExactConfig(ablation="zero")),
        "EAP": lambda mod, t: eap(mod, t, EAPConfig(ablation="zero", metric="loss")),
        f"EAP-IG (m = {m})": lambda mod, t: eap(mod, t, EAPConfig(ablation="zero", steps=m)),
    }
    induction = induction_model(vocab=8, n_ctx=9, n_distractors=3)
    successor = successor_model(vocab=8, length=3, n_distractors=2)
    cases = [("planted induction (2 layers × 4 heads)", induction, _task(8, 9, n)),
             ("planted successor MLP (+2 distractor heads)", successor, _successor_task(successor, n))]
    rows = []
    for name, planted, task in cases:
        model = HookedModel(planted.model)
        graph = CircuitGraph.from_model(model)
        for label, method in methods.items():
            t = time.perf_counter()
            scores = method(model, task)
            seconds = time.perf_counter() - t
            _est, low, high = auroc_ci_over_prompts(scores, planted.truth.edges, n_resamples=500)
            missed = sum(1 for e in planted.truth.edges
                         if abs(float(scores.scores[scores.edges.index(tuple(e))])) < 1e-6)
            note = f"metric {scores.metric}; {n} prompts"
            if missed:
                note += f"; {missed} truth edges scored ~0 (zero gradient through a saturated softmax)"
            rows.append(Row("circuits", name, label, "edge AUROC (zero ablation)",
                            edge_auroc(scores, planted.truth.edges), low, high,
                            null=_null(planted, task, method, n_seeds),
                            passes=f"{scores.n_forward}F + {scores.n_backward}B", seconds=seconds, note=note,
                            extra={"circuit": circuit_edges(graph, scores, planted.truth.edges)}))
        t = time.perf_counter()
        res = acdc(model, task, ACDCConfig(threshold=0.5, metric="kl", ablation="zero"))
        kept = {e for e, k in zip(res.edges, res.kept.tolist()) if k}
        truth = {tuple(e) for e in planted.truth.edges}
        precision = len(kept & truth) / max(len(kept), 1)
        rows.append(Row("circuits", name, "ACDC (KL, τ = 0.5)", "edge recall", len(kept & truth) / len(truth),
                        passes=f"{res.n_forward}F", seconds=time.perf_counter() - t,
                        note=f"precision {precision:.3f}; {len(kept)} edges kept, {res.n_tested} tested"))
    return rows


def trained_rows(quick: bool, n_seeds: int = 0) -> list[Row]:
    """The induction model trained here (groundtruth.trained): its accuracy, and each method's
    node AUROC against the heads its ablation measured (a partial truth: which heads, not how)."""
    from collections import Counter

    from interplab.groundtruth.trained import InductionTrainConfig, induction_batch, train_induction_model

    t = time.perf_counter()
    cfg = InductionTrainConfig()
    trained = train_induction_model(cfg)
    rows = [Row("trained", "induction on random tokens (2 layers × 4 heads, trained)", "training",
                "repeated-half accuracy", trained.accuracy, seconds=time.perf_counter() - t,
                note=f"truth heads by ablation: {', '.join(trained.truth.nodes[1:-1])}")]
    tokens, mask = induction_batch(cfg, 64 if quick else 256, torch.Generator().manual_seed(5))
    prompts = []
    for i in range(tokens.shape[0]):  # cut each sequence in its repeated half: the next token is predictable
        pos = mask[i].nonzero().flatten()
        p = int(pos[len(pos) // 2])
        prompts.append((tokens[i, : p + 1], int(tokens[i, p + 1])))
    length = Counter(len(x) for x, _ in prompts).most_common(1)[0][0]  # one length: unpadded prompts
    chosen = [(x, a) for x, a in prompts if len(x) == length]
    task = CircuitTask(torch.stack([x for x, _ in chosen]), answers=torch.tensor([a for _, a in chosen]))
    rows += _modadd_rows()
    model = HookedModel(trained.model.eval())
    for label, run in (("exact edge patching", lambda: exact_edge_patching(model, task, ExactConfig(ablation="zero", metric="loss"))),
                       ("EAP", lambda: eap(model, task, EAPConfig(ablation="zero", metric="loss"))),
                       ("EAP-IG (m = 5)", lambda: eap(model, task, EAPConfig(ablation="zero", steps=5, metric="loss")))):
        t = time.perf_counter()
        scores = run()
        rows.append(Row("trained", "induction on random tokens (trained)", label, "node AUROC vs measured heads",
                        node_auroc(scores, trained.truth.nodes), passes=f"{scores.n_forward}F + {scores.n_backward}B",
                        seconds=time.perf_counter() - t, note=f"{len(chosen)} prompts of {length} tokens; loss metric"))
    return rows


def _modadd_rows() -> list[Row]:
    """The shipped modular-addition model: held-out accuracy and its Fourier-sparse embedding,
    against a randomly initialised model of the same shape."""
    from interplab.groundtruth.trained import Trained
    from interplab.groundtruth.trained_modadd import (
        ModularAdditionConfig,
        _model,
        fourier_ablation_accuracy,
        fourier_key_frequencies,
        pretrained_modular_addition,
    )

    t = time.perf_counter()
    trained = pretrained_modular_addition()
    top = fourier_key_frequencies(trained, 5)
    torch.manual_seed(0)
    null = Trained(_model(ModularAdditionConfig()).eval(), None, 0.0, {"p": trained.info["p"]})
    removed = fourier_ablation_accuracy(trained, fourier_key_frequencies(trained, 3).frequencies, keep=False)
    name = f"modular addition mod {trained.info['p']} (1 layer, trained)"
    return [Row("trained", name, "training (shipped weights)", "held-out accuracy", trained.accuracy,
                note=f"{trained.info['steps']} full-batch steps"),
            Row("trained", name, "Fourier analysis of the embedding", "norm share of the top-5 frequencies",
                top.fraction, null=fourier_key_frequencies(null, 5).fraction, seconds=time.perf_counter() - t,
                note=f"frequencies {list(top.frequencies)}; removing the top 3 leaves accuracy {removed:.3f} "
                     f"(chance {1 / trained.info['p']:.3f}); null: random init")]
