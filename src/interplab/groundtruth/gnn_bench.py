"""The ``gnn`` suite of ``interplab bench``: explanation methods on GNNs scored against planted
motifs (``gnn_data``: BA-Shapes with the shipped GCN, BA-2Motifs with the shipped GIN), and a
dictionary and a probe on a GNN's node embeddings.

Explanations (``gnn_methods``): for every explained test instance (a house node of BA-Shapes, a
BA-2Motifs graph) each method scores the nodes and edges of the instance's computation graph;
its **node AUROC** and **edge AUROC** against the instance's ground-truth motif
(``GNNDataset.truth``: the explained node's own house, the graph's motif) are averaged over
instances, with a 95% percentile-bootstrap CI over instances. Scores are ranked by magnitude
(an ablation that moves the logit either way is an explanation). The **null** is the same
method on a randomly initialised model of the same architecture (``random_init``), scored
against the same truth; "passes" counts the method's forward / backward passes per instance.

Representations of the shipped GCN (BA-Shapes nodes, the last layer's embeddings):

* a TopK SAE (``dictionary``; d_sae = 4 × width, k = 4, fixed before looking) trained on every
  node's embedding: for each motif indicator (in a house; under the roof / floor / apex) the
  best latent's |Pearson r| with it, CI over seeds; null: a random dictionary of the same shape
  (on these embeddings, which cluster tightly by role, a strong one);
* a logistic probe for house membership (``analyses.probes``): held-out AUROC, CI over seeds;
  null: the same probe on a randomly initialised GCN's embeddings.
"""

from __future__ import annotations

import logging
import time

import torch

from interplab.groundtruth.bench_suites import Row, ci_over_seeds
from interplab.stats.auroc import auroc

log = logging.getLogger(__name__)

DATASETS = {"ba_shapes": "BA-Shapes (GCN, node classification)", "ba_2motifs": "BA-2Motifs (GIN, graph classification)"}
METHOD_NAMES = {"patch": "exact activation patching (interplab)", "attribute": "attribution patching (interplab)",
                "ig": "integrated gradients (interplab)", "saliency": "gradient saliency (Captum via PyG)",
                "captum_ig": "integrated gradients (Captum via PyG)", "gnnexplainer": "GNNExplainer (PyG)",
                "pgexplainer": "PGExplainer (PyG)"}


def sizes(quick: bool) -> dict:
    """Instances explained and the trained explainers' budgets."""
    if quick:
        return {"ba_shapes": 16, "ba_2motifs": 40, "epochs": 100, "pg_epochs": 10, "pg_train": 24, "ig_steps": 16}
    return {"ba_shapes": 60, "ba_2motifs": 150, "epochs": 200, "pg_epochs": 30, "pg_train": 60, "ig_steps": 32}


def instance_auroc(scores: torch.Tensor | None, truth: torch.Tensor, candidates: list[int]) -> float | None:
    """AUROC of |scores| against the truth mask over the candidate rows (None where undefined)."""
    if scores is None:
        return None
    idx = torch.as_tensor(candidates, dtype=torch.long)
    y = truth[idx]
    if bool(y.all()) or not bool(y.any()):
        return None
    s = scores[idx].abs()
    if not bool(torch.isfinite(s).all()):
        return None
    return float(auroc(s, y))


def _targets(model, ds, index) -> list:
    from interplab.groundtruth.gnn_methods import Target, predicted

    out = []
    for i in index.tolist():
        t = ds.truth(i)
        data = ds.graphs[t.graph]
        out.append((Target(data, t.node, predicted(model, data, t.node)), t))
    return out


def score_method(method: str, model, ds, explained: list, train: list, budget: dict) -> dict:
    """Per-instance node / edge AUROCs of one method on one model, and its passes per instance."""
    from interplab.groundtruth import gnn_methods as gm
    from interplab.runtime.generic import HookedModule

    hm = HookedModule(model, gm.sites_of(model))
    setup = gm.PygSetup(model, ds.task)
    torch.manual_seed(0)  # GNNExplainer's and PGExplainer's mask initialisations
    train_passes = 0
    if method == "pgexplainer":
        train_passes = gm.train_pgexplainer(setup, [t for t, _ in train], budget["pg_epochs"])
    nodes, edges, passes = [], [], (0, 0)
    for target, truth in explained:
        s = gm.explain(method, hm, setup, target, epochs=budget["epochs"], ig_steps=budget["ig_steps"])
        cand_nodes, cand_edges = gm.computation_graph(target, len(model.convs))
        nodes.append(instance_auroc(s.nodes, truth.node_mask, cand_nodes))
        edges.append(instance_auroc(s.edges, truth.edge_mask, cand_edges))
        passes = (s.forward, s.backward)
    return {"nodes": nodes, "edges": edges, "passes": passes, "train_passes": train_passes}


def _mean_ci(values: list[float | None]) -> tuple[float, float | None, float | None, int]:
    vals = [v for v in values if v is not None]
    if not vals:
        return float("nan"), None, None, 0
    est, low, high = ci_over_seeds(vals)
    return est, low, high, len(vals)


def _passes_text(method: str, res: dict) -> str:
    f, b = res["passes"]
    text = f"{f}F + {b}B per instance" if b else f"{f}F per instance"
    if method == "patch":
        text = f"{f} batched F per instance (one ablation per graph copy)"
    if res["train_passes"]:
        text += f"; trained on {res['train_passes']} instance-epochs"
    return text


def explanation_rows(quick: bool, n_seeds: int) -> list[Row]:
    from interplab.groundtruth.gnn_methods import METHODS
    from interplab.groundtruth.gnn_models import load_gnn, random_init

    budget = sizes(quick)
    rows = []
    for name, label in DATASETS.items():
        model, ds = load_gnn(name)
        null_model = random_init(name, seed=0)
        explained_idx = ds.explained("test")[: budget[name]]
        train_idx = ds.explained("train")[: budget["pg_train"]]
        explained, null_explained = _targets(model, ds, explained_idx), _targets(null_model, ds, explained_idx)
        train, null_train = _targets(model, ds, train_idx), _targets(null_model, ds, train_idx)
        for method in METHODS:
            t0 = time.perf_counter()
            res = score_method(method, model, ds, explained, train, budget)
            seconds = time.perf_counter() - t0
            null = score_method(method, null_model, ds, null_explained, null_train, budget)
            for part, metric in (("nodes", "node AUROC"), ("edges", "edge AUROC")):
                est, low, high, n = _mean_ci(res[part])
                if n == 0:
                    continue  # the method gives no such scores (PGExplainer: edges only)
                null_est = _mean_ci(null[part])[0]
                rows.append(Row("gnn", label, METHOD_NAMES[method], metric, est, low, high, null=null_est,
                                passes=_passes_text(method, res), seconds=seconds,
                                note=f"{n} test instances; CI over instances; null: a random-init model",
                                extra={"per_instance": res[part], "null_per_instance": null[part]}))
            log.info("gnn %s %s: %.1f s", name, method, seconds)
    return rows


# -- dictionaries and probes on node embeddings -----------------------------------------------------------
def _embeddings(model, data) -> torch.Tensor:
    from interplab.groundtruth import gnn_methods as gm
    from interplab.runtime.generic import HookedModule

    last = f"h{len(model.convs) - 1}"
    hm = HookedModule(model, {last: gm.sites_of(model)[last]})
    with torch.no_grad():
        _, cache = hm.run_with_cache(data.x, data.edge_index, sites=[last])
    return cache[last].float()


def indicators(data) -> dict[str, torch.Tensor]:
    """The BA-Shapes motif indicators of every node: in a house, and each house role."""
    y = data.y
    return {"in a house": y > 0, "under the roof": y == 1, "floor": y == 2, "apex": y == 3}


def best_abs_r(latents: torch.Tensor, indicator: torch.Tensor) -> float:
    """The largest |Pearson r| between any latent's activation and the indicator (over nodes;
    a constant latent counts 0: ``scoring.correlation_matrix``)."""
    from interplab.groundtruth.scoring import correlation_matrix

    return float(correlation_matrix(latents.double(), indicator.double()[:, None]).abs().max())


def sae_and_probe_rows(quick: bool, n_seeds: int) -> list[Row]:
    import tempfile
    from pathlib import Path

    from interplab.activations.source import TensorSource
    from interplab.analyses.probes import ProbeConfig, fit_probe
    from interplab.dictionary import DictionaryConfig
    from interplab.dictionary.train_config import TrainConfig
    from interplab.dictionary.trainer import train
    from interplab.groundtruth.gnn_models import load_gnn, random_init
    from interplab.groundtruth.scoring import random_dictionary

    model, ds = load_gnn("ba_shapes")
    data = ds.graphs[0]
    acts = _embeddings(model, data)
    null_acts = _embeddings(random_init("ba_shapes", seed=0), data)
    marks = indicators(data)
    d = acts.shape[1]
    steps = 600 if quick else 2000

    def sae_one(seed: int) -> tuple[list[float], list[float]]:
        """Per indicator: the trained SAE's best latent |r| and the random dictionary's."""
        dc = DictionaryConfig(arch="topk", d_in=d, d_sae=4 * d, k=4, input_site="h", dead_after_tokens=10_000)
        reps = max(1, 20_000 // acts.shape[0])
        with tempfile.TemporaryDirectory() as tmp:
            res = train(TensorSource({"h": acts.repeat(reps, 1)}), [dc], TrainConfig(
                steps=steps, batch_size=128, lr=3e-3, init_tokens=1024, checkpoint_every=0, log_every=steps,
                seed=seed, out_dir=str(Path(tmp) / "run")), progress=False)
        sae = res.dictionaries[res.names[0]].eval()
        rand = random_dictionary(sae, seed, acts).eval()
        with torch.no_grad():
            z, zr = sae.encode(acts), rand.encode(acts)
        return [best_abs_r(z, m) for m in marks.values()], [best_abs_r(zr, m) for m in marks.values()]

    def probe_one(seed: int) -> tuple[float, float]:
        labels = marks["in a house"].long()
        groups = torch.arange(data.num_nodes)
        cfg = ProbeConfig(method="logistic", n_resamples=100, control="none", seed=seed)
        fit = fit_probe(acts, labels, groups, cfg)
        null = fit_probe(null_acts, labels, groups, cfg)
        return fit.auroc["test"], null.auroc["test"]

    rows = []
    t0 = time.perf_counter()
    per_seed = [sae_one(seed) for seed in range(n_seeds)]
    seconds = (time.perf_counter() - t0) / len(marks)
    for k, name in enumerate(marks):
        scores = [trained[k] for trained, _ in per_seed]
        nulls = [rand[k] for _, rand in per_seed]
        est, low, high = ci_over_seeds(scores)
        rows.append(Row("gnn", "BA-Shapes (GCN node embeddings)", f"TopK SAE (d_sae {4 * d}, k 4), last GCN layer",
                        f"best latent |r|: {name}", est, low, high, null=sum(nulls) / len(nulls),
                        passes=f"{steps} steps × {n_seeds} seeds", seconds=seconds,
                        note="|Pearson r| of the best latent with the indicator over all 700 nodes; null: a random "
                             "dictionary of the same shape", extra={"per_seed": scores, "null_per_seed": nulls}))
    t0 = time.perf_counter()
    pairs = [probe_one(seed) for seed in range(n_seeds)]
    est, low, high = ci_over_seeds([p for p, _ in pairs])
    rows.append(Row("gnn", "BA-Shapes (GCN node embeddings)", "logistic probe, last GCN layer",
                    "held-out AUROC: node in a house", est, low, high, null=sum(z for _, z in pairs) / len(pairs),
                    passes=f"{n_seeds} seeds", seconds=time.perf_counter() - t0,
                    note="null: the same probe on a random-init GCN's embeddings",
                    extra={"per_seed": [p for p, _ in pairs]}))
    return rows


def gnn_rows(quick: bool, n_seeds: int) -> list[Row]:
    from interplab.core.errors import MissingDependencyError

    try:
        from interplab.groundtruth.gnn_data import import_pyg

        import_pyg()
    except MissingDependencyError as err:
        return [Row("gnn", "BA-Shapes, BA-2Motifs", "explanation methods", "node / edge AUROC", float("nan"),
                    note=f"not run: {err}")]
    return explanation_rows(quick, n_seeds) + sae_and_probe_rows(quick, n_seeds)
