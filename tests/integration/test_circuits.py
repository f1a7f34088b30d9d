"""Edge interventions, exact edge patching and EAP on every family's tiny model.

Properties: the graph's sender outputs add up to the residual stream; ablating no edge is the
base run bit for bit; ablating every edge into the logits is the corrupt run (corrupt
ablation) or the run with every node's output zeroed (zero ablation); a single edge's exact
effect equals a hand hook on the receiver's q input; EAP equals exact patching where the
model is linear in the edge; EAP and EAP-IG use the passes they claim; families where
edge-level interventions cannot be exact are refused with the reason. Grouped-query attention
families (llama_gqa, qwen2, qwen3) run all of these too, plus: ablating every edge into one KV
head's k / v is patching that KV head's site; EAP's receiver gradient of a KV head is the
derivative along its input; a KV receiver matters while any query head of its group does.
"""

from __future__ import annotations

import pytest
import torch

from interplab.analyses.circuits import (
    CircuitGraph,
    CircuitTask,
    EAPConfig,
    EdgePatcher,
    ExactConfig,
    FaithfulnessConfig,
    eap,
    exact_edge_patching,
    faithfulness,
)
from interplab.analyses.circuits.edges import head_out_weights, sender_outputs, sender_sites
from interplab.core.errors import ConfigError, InputError, UnsupportedArchitectureError
from interplab.core.sites import Site, SiteKind
from interplab.interventions import Ablate, Patch
from interplab.models.toy import ToyConfig, ToyForCausalLM
from interplab.runtime import HookedModel

from .families import ForwardCounter, tokens

REFUSED = {"gemma3"}  # sandwich norms: a head's residual share is not its own term


def _task(n=3, length=6, seed=0):
    clean, corrupt = tokens(n, length, seed=seed), tokens(n, length, seed=seed + 1)
    return CircuitTask(clean, answers=tokens(n, seed=seed + 2), wrong=tokens(n, seed=seed + 3),
                       corrupt=corrupt)


@pytest.fixture
def graph(model, family):
    if family.name in REFUSED:
        pytest.skip("edge-level interventions are refused for this family")
    return CircuitGraph.from_model(model)


def test_refused_families_say_why(model, family):
    if family.name not in REFUSED:
        g = CircuitGraph.from_model(model)
        assert g.parallel == family.parallel
        assert (g.n_heads, g.n_kv_heads) == (family.n_heads, family.n_kv_heads)
        # q per query head, k / v per KV head (named after its group's first query head)
        per_layer = family.n_heads + 2 * family.n_kv_heads
        assert sum(r.kind == "head" for r in g.receivers) == family.n_layers * per_layer
        return
    with pytest.raises(UnsupportedArchitectureError, match="per-receiver input access") as err:
        CircuitGraph.from_model(model)
    assert "Supported" in str(err.value) and "toy, llama" in str(err.value)


def test_sender_outputs_add_up_to_the_residual(model, graph):
    task = _task()
    final = Site(model.dims.n_layers - 1, SiteKind.RESID_POST)
    rest = []
    for ids in (task.clean, task.corrupt):
        _, cache = model.run_with_cache(ids, [*sender_sites(graph), final])
        out = sender_outputs(cache, graph, head_out_weights(model))
        total = out["embed"] + sum(h.sum(2) for h in out["heads"]) + sum(out["mlp"], 0)
        rest.append(cache[final] - total)
    # what is left is the constant bias terms: the same on every input
    torch.testing.assert_close(rest[0], rest[1], atol=1e-5, rtol=1e-5)


def test_no_edge_ablated_is_the_base_run_and_all_into_logits_the_ablated_run(model, graph):
    task = _task()
    n = task.n_prompts
    patcher = EdgePatcher(model, graph, task, "corrupt")
    none = torch.zeros(n, graph.n_edges, dtype=torch.bool)
    assert torch.equal(patcher.run(torch.arange(n), none), model.run(task.clean))
    torch.testing.assert_close(patcher.run(torch.arange(n), ~none), model.run(task.corrupt),
                               atol=1e-4, rtol=1e-4)  # every edge ablated: the corrupt run
    into_logits = none.clone()
    r = graph.receivers[-1]
    into_logits[:, r.start : r.start + r.n_senders] = True
    torch.testing.assert_close(patcher.run(torch.arange(n), into_logits), model.run(task.corrupt),
                               atol=1e-4, rtol=1e-4)
    zero = EdgePatcher(model, graph, task, "zero")
    d = model.dims
    hand = [Ablate("L0.resid_pre")] + [Ablate(f"L{i}.attn.z") for i in range(d.n_layers)]
    if graph.has_mlp:
        hand += [Ablate(f"L{i}.mlp_out") for i in range(d.n_layers)]
    torch.testing.assert_close(zero.run(torch.arange(n), into_logits), model.run(task.clean, hand),
                               atol=1e-4, rtol=1e-4)


def test_eap_and_eap_ig_pass_counts(model, graph, forward_calls):
    task = _task()
    res = eap(model, task, EAPConfig(metric="logit_diff"), graph)
    assert (res.n_forward, res.n_backward) == (2, 1) and forward_calls.calls == 2
    forward_calls.calls = 0
    res = eap(model, task, EAPConfig(metric="logit_diff", steps=3), graph)
    assert res.n_forward <= 2 + 3 and res.n_backward == 3 and forward_calls.calls == res.n_forward
    assert res.method == "eap-ig" and res.scores.shape == (graph.n_edges,)
    assert torch.isfinite(res.per_prompt).all()


def test_faithfulness_full_circuit_recovers_everything(model, graph):
    task = _task()
    scores = eap(model, task, EAPConfig(), graph)
    res = faithfulness(model, task, scores, FaithfulnessConfig(sizes=(0, 4, graph.n_edges)), graph)
    assert res.recovered[0] == pytest.approx(0.0, abs=1e-6)
    assert res.recovered[-1] == pytest.approx(1.0, abs=1e-6)
    assert res.ordering == "absolute" and res.ablation == "corrupt"


# -- the toy family without norms: exact hand computations ---------------------------------------
def _toy(d_mlp: int) -> HookedModel:
    torch.manual_seed(3)
    cfg = ToyConfig(vocab_size=32, n_ctx=16, d_model=32, n_layers=2, n_heads=3, d_head=8,
                    d_mlp=d_mlp, normalization="none", attn_implementation="eager")
    model = ToyForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return HookedModel(model)


def test_single_edge_effect_equals_a_hand_hook_on_the_q_input():
    model, task = _toy(d_mlp=16), _task(n=4)
    graph = CircuitGraph.from_model(model)
    res = exact_edge_patching(model, task, ExactConfig(max_rows=7), graph)
    hf = model.hf
    d_head = model.dims.d_head
    sender_h, rec_h = 2, 1
    _, cc = model.run_with_cache(task.clean, ["L0.attn.z", "L1.resid_pre"])
    _, kc = model.run_with_cache(task.corrupt, ["L0.attn.z"])
    w_o = hf.model.layers[0].self_attn.o_proj.weight[:, sender_h * d_head : (sender_h + 1) * d_head]
    out_clean = cc["L0.attn.z"][:, :, sender_h] @ w_o.T
    out_corrupt = kc["L0.attn.z"][:, :, sender_h] @ w_o.T
    x = cc["L1.resid_pre"] - out_clean + out_corrupt
    q_proj = hf.model.layers[1].self_attn.q_proj
    rows = slice(rec_h * d_head, (rec_h + 1) * d_head)

    def hook(module, args, output):
        new = output.clone()
        new[..., rows] = (x @ q_proj.weight.T + q_proj.bias)[..., rows]
        return new

    handle = q_proj.register_forward_hook(hook)
    try:
        with torch.no_grad():
            patched = hf(task.clean).logits[:, -1]
    finally:
        handle.remove()
    base = model.run(task.clean)[:, -1]
    ar = torch.arange(4)

    def ld(last):
        return last[ar, task.answers] - last[ar, task.wrong]

    want = ld(patched) - ld(base)
    i = graph.edge_index(("L0.h2", "L1.h1", "q"))
    torch.testing.assert_close(res.per_prompt[:, i], want, atol=1e-5, rtol=1e-5)
    assert want.abs().max() > 1e-3  # the edge does something
    # batched (7 rows a forward) equals one row a forward
    one = exact_edge_patching(model, task, ExactConfig(max_rows=1), graph)
    torch.testing.assert_close(one.per_prompt, res.per_prompt, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("d_mlp", [16, 0])
def test_eap_equals_exact_where_the_model_is_linear_in_the_edge(d_mlp):
    model, task = _toy(d_mlp), _task(n=4)
    graph = CircuitGraph.from_model(model)
    exact = exact_edge_patching(model, task, ExactConfig(), graph)
    first = eap(model, task, EAPConfig(), graph)
    logits = graph.receivers[-1]
    lin = list(range(logits.start, logits.start + logits.n_senders))  # no final norm: linear
    if d_mlp == 0:  # attention-only: a last-layer head's output is linear in its v input
        lin += [i for i, e in enumerate(graph.edges) if e[1].startswith("L1.") and e[2] == "v"]
    torch.testing.assert_close(first.per_prompt[:, lin], exact.per_prompt[:, lin],
                               atol=1e-4, rtol=1e-4)
    assert exact.per_prompt[:, lin].abs().max() > 1e-2
    nonlinear = [i for i in range(graph.n_edges) if i not in lin]
    assert not torch.allclose(first.scores[nonlinear], exact.scores[nonlinear], atol=1e-4)


def test_receiver_with_every_input_edge_ablated_reads_the_corrupt_input(model, graph):
    """Through the family's own norm and projection: all edges into L1.h0's k ablated (corrupt)
    = the corrupt run's k at that head; one edge embed -> L0.h1.q = the corrupt q there."""
    task = _task()
    n = task.n_prompts
    _, cc = model.run_with_cache(task.corrupt, ["L1.attn.k[h0]", "L0.attn.q[h1]"])
    patcher = EdgePatcher(model, graph, task, "corrupt")
    removed = torch.zeros(n, graph.n_edges, dtype=torch.bool)
    r = next(r for r in graph.receivers if r.name == "L1.h0.k")
    removed[:, r.start : r.start + r.n_senders] = True
    removed[:, graph.edge_index(("embed", "L0.h1", "q"))] = True
    want = model.run(task.clean, [Patch("L1.attn.k[h0]", value=cc["L1.attn.k[h0]"]),
                                  Patch("L0.attn.q[h1]", value=cc["L0.attn.q[h1]"])])
    torch.testing.assert_close(patcher.run(torch.arange(n), removed), want, atol=1e-4, rtol=1e-4)


def test_mean_ablation_of_every_edge_into_logits_reads_the_mean_corrupt_residual(model, graph):
    task = _task()
    n = task.n_prompts
    last = f"L{model.dims.n_layers - 1}.resid_post"
    _, cc = model.run_with_cache(task.corrupt, [last])
    patcher = EdgePatcher(model, graph, task, "mean")
    removed = torch.zeros(n, graph.n_edges, dtype=torch.bool)
    r = graph.receivers[-1]
    removed[:, r.start : r.start + r.n_senders] = True
    want = model.run(task.clean, [Patch(last, value=cc[last].mean(0))])
    torch.testing.assert_close(patcher.run(torch.arange(n), removed), want, atol=1e-4, rtol=1e-4)


def test_bad_tasks_are_refused_before_any_forward():
    model = _toy(d_mlp=0)
    task = _task()
    counter = ForwardCounter(model.hf)
    with pytest.raises(ConfigError, match="logit_diff metric needs CircuitTask.wrong"):
        exact_edge_patching(model, CircuitTask(task.clean, task.answers, corrupt=task.corrupt))
    with pytest.raises(ConfigError, match="'corrupt' edge ablation needs CircuitTask.corrupt"):
        eap(model, CircuitTask(task.clean, task.answers, task.wrong))
    with pytest.raises(InputError, match="outside 0..31"):
        eap(model, CircuitTask(task.clean, task.answers + 40, task.wrong, task.corrupt))
    with pytest.raises(InputError, match="must pair one to one"):
        CircuitTask(task.clean, task.answers, task.wrong, task.corrupt[:, :3])
    assert counter.calls == 0
    counter.remove()


# -- grouped-query attention: k / v receivers are KV heads ----------------------------------------
def _last_kv(graph, layer=1):
    """(receiver node, KV head) of the last KV head of ``layer``."""
    g = graph.n_kv_heads - 1
    return f"L{layer}.h{g * graph.group}", g


@pytest.mark.parametrize("inp", ["k", "v"])
def test_every_edge_into_a_kv_head_ablated_is_patching_that_kv_site(model, graph, inp):
    """All edges into the last KV head's k (or v) of layer 1, corrupt ablation = the corrupt
    run's activation at ``L1.attn.<inp>[h<g>]`` (k / v sites index KV heads), other KV heads
    and every query untouched."""
    task = _task()
    n = task.n_prompts
    node, g = _last_kv(graph)
    site = f"L1.attn.{inp}[h{g}]"
    _, cc = model.run_with_cache(task.corrupt, [site])
    _, clean = model.run_with_cache(task.clean, [site])
    assert (cc[site] - clean[site]).abs().max() > 1e-3  # the patch replaces something
    patcher = EdgePatcher(model, graph, task, "corrupt")
    removed = torch.zeros(n, graph.n_edges, dtype=torch.bool)
    r = next(r for r in graph.receivers if r.name == f"{node}.{inp}")
    assert (r.kv_head, r.site_head) == (g, g)
    removed[:, r.start : r.start + r.n_senders] = True
    want = model.run(task.clean, [Patch(site, value=cc[site])])
    got = patcher.run(torch.arange(n), removed)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_eap_receiver_gradient_is_the_derivative_along_its_input(model, graph):
    """Summed over a receiver's edges, EAP's scores are (x_corrupt - x_clean) . dM/dx_r: the
    derivative of M(t) at t = 0 when that receiver alone reads x_clean + t (x_corrupt -
    x_clean). M(t) is built by hand: a forward hook on the HF projection module recomputing
    that one head (a KV head for k / v) from its perturbed input through the layer's norm."""
    from interplab.analyses.circuits.edges import attn_norm

    task = _task()
    res = eap(model, task, EAPConfig(metric="logit_diff"), graph)
    layer = 1
    pre = f"L{layer}.resid_pre"
    _, cc = model.run_with_cache(task.clean, [pre])
    _, kc = model.run_with_cache(task.corrupt, [pre])
    x, delta = cc[pre], kc[pre] - cc[pre]  # senders' (corrupt - clean) summed; biases cancel
    ar = torch.arange(task.n_prompts)
    node, g = _last_kv(graph, layer)
    last_q = f"L{layer}.h{graph.n_heads - 1}"
    for name, inp, h in ((last_q, "q", graph.n_heads - 1), (node, "k", g), (node, "v", g)):
        r = next(r for r in graph.receivers if r.name == f"{name}.{inp}")
        point = model.adapter.qkv_point(layer, inp)
        norm = attn_norm(model, layer)
        t = torch.zeros((), requires_grad=True)

        def hook(module, args, output, point=point, norm=norm, t=t, h=h):
            new = point.get(output).clone()
            full = point.get(point.module.forward(norm.forward(x + t * delta)))
            new[..., h, :] = full[..., h, :]
            return point.put(output, new)

        handle = point.module.register_forward_hook(hook)
        try:
            last = model.hf(task.clean).logits[:, -1]
        finally:
            handle.remove()
        total = (last[ar, task.answers] - last[ar, task.wrong]).sum()
        (want,) = torch.autograd.grad(total, t)
        got = res.per_prompt[:, r.start : r.start + r.n_senders].sum()
        assert want.abs() > 1e-8  # some derivatives are ~1e-6 here: compare relatively
        torch.testing.assert_close(got, want, atol=1e-9, rtol=2e-3)


def test_a_kv_receiver_matters_while_any_head_of_its_group_does(model, graph):
    """With every outgoing edge of all query heads of layer 0's last KV group ablated, the
    edges into that KV head's k / v change nothing; with one head of the group still sending,
    they do. (ACDC skips a receiver by ``reader_nodes``; this is why that skip is exact.)"""
    task = _task()
    n = task.n_prompts
    node, g = _last_kv(graph, layer=0)
    readers = graph.reader_nodes(next(r for r in graph.receivers if r.name == f"{node}.k"))
    assert readers == [f"L0.h{h}" for h in range(g * graph.group, (g + 1) * graph.group)]
    patcher = EdgePatcher(model, graph, task, "corrupt")
    out_of = torch.tensor([e[0] in readers for e in graph.edges])
    into = torch.tensor([e[1] == node and e[2:] in (("k",), ("v",)) for e in graph.edges])
    assert int(into.sum()) == 2  # embed -> k, embed -> v
    everyone = torch.arange(n)
    silent = out_of[None].expand(n, -1)
    torch.testing.assert_close(patcher.run(everyone, silent | into), patcher.run(everyone, silent),
                               atol=1e-5, rtol=1e-5)
    if graph.group > 1:  # one head of the group still sends: the KV head matters
        still = out_of & torch.tensor([e[0] != readers[-1] for e in graph.edges])
        still = still[None].expand(n, -1)
        diff = patcher.run(everyone, still | into) - patcher.run(everyone, still)
        assert diff.abs().max() > 1e-4
