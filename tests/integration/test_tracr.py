"""tracr-compiled RASP programs as interplab-toy models (needs the ``tracr`` extra).

Each of reverse, sort, hist and frac_prevs is compiled once per module, converted, saved with
``save_pretrained`` and loaded back through ``interplab.load``. The claims:

* the loaded model gives the program's output at every position of every input of its domain
  (all sequences over the vocab of length 1..max_seq_len): exactly for the categorical
  programs, within 1e-5 for frac_prevs (a float);
* its residual stream equals tracr's own jax forward after every layer;
* its truth names only parts the model has, and its edges are exactly the pairs (sender,
  receiver[, q|k|v]) where the receiver's weights read a direction the sender's weights write;
* unsupported programs and unknown names raise a teaching error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import interplab
from interplab.core.errors import InputError
from interplab.groundtruth.tracr_compile import (
    PROGRAMS,
    UnsupportedProgramError,
    compile_program,
    compile_rasp,
    import_tracr,
)
from interplab.groundtruth.tracr_convert import convert
from interplab.groundtruth.truth import parse_node
from interplab.models.toy import ToyConfig, ToyForCausalLM
from interplab.runtime import HookedModel

DOMAIN_SIZE = {"reverse": 3 + 9 + 27 + 81 + 243, "sort": 4 + 16 + 64 + 256 + 1024,
               "hist": 363, "frac_prevs": 363}


@pytest.fixture(scope="module")
def converted():
    return {name: convert(compile_program(name)) for name in PROGRAMS}


@pytest.fixture(scope="module")
def loaded(converted, tmp_path_factory):
    out = {}
    for name, conv in converted.items():
        path = tmp_path_factory.mktemp("tracr") / name
        conv.model.save_pretrained(path)
        out[name] = interplab.load(str(path))
    return out


def by_length(domain):
    lengths = sorted({len(s) for s in domain})
    return [[s for s in domain if len(s) == n] for n in lengths]


@pytest.mark.parametrize("name", PROGRAMS)
def test_loaded_model_computes_the_program_on_its_whole_domain(name, converted, loaded):
    conv, model = converted[name], loaded[name]
    assert isinstance(model.hf, ToyForCausalLM) and model.adapter.name == "toy"
    assert model.hf.config.causal is False
    domain = conv.compiled.domain()
    assert len(domain) == DOMAIN_SIZE[name] == len(set(domain))
    worst, wrong = 0.0, []
    for seqs in by_length(domain):
        with torch.no_grad():
            outputs = conv.decode(model.run(conv.encode(seqs)))
        for seq, got in zip(seqs, outputs, strict=True):
            want = conv.compiled.reference(seq)
            if conv.categorical:
                if got != want:
                    wrong.append((seq, want, got))
            else:
                worst = max(worst, *(abs(a - b) for a, b in zip(got, want, strict=True)))
    assert wrong == []
    assert worst < 1e-5


@pytest.mark.parametrize("name", PROGRAMS)
def test_residual_stream_equals_tracr_jax_forward(name, converted):
    conv = converted[name]
    compiled, n = conv.compiled, conv.compiled.max_seq_len
    vocab = compiled.vocab
    inputs = [tuple(vocab[(3 * i + 1) % len(vocab)] for i in range(n)),
              tuple(vocab[(i * i) % len(vocab)] for i in range(n - 1)), (vocab[-1],)]
    for seq in inputs:
        ours = conv.model(conv.encode([seq]), output_hidden_states=True)
        theirs = compiled.assembled.apply([compiled.bos, *seq])
        hidden = [h[0].detach().numpy() for h in ours.hidden_states]
        np.testing.assert_allclose(hidden[0], np.asarray(theirs.input_embeddings)[0], atol=1e-6)
        for layer in range(conv.model.config.n_layers):  # tracr: [attn_0, mlp_0, attn_1, ...]
            after_mlp = np.asarray(theirs.residuals[2 * layer + 1])[0]
            np.testing.assert_allclose(hidden[layer + 1], after_mlp, atol=1e-4)
        np.testing.assert_allclose(hidden[-1], np.asarray(theirs.transformer_output)[0], atol=1e-4)
        got = conv.decode(ours.logits)[0]
        if conv.categorical:
            assert got == compiled.run(seq)
        else:
            np.testing.assert_allclose(got, compiled.run(seq), atol=1e-5)


def _write_dims(model, node: str) -> set[int]:
    kind, layer, head = parse_node(node)
    if kind == "embed":
        w = torch.cat([model.model.embed_tokens.weight, model.model.pos_embed.weight]).T
    elif kind == "head":
        d = model.config.d_head
        attn = model.model.layers[layer].self_attn
        w = attn.o_proj.weight[:, head * d:(head + 1) * d] @ attn.v_proj.weight[head * d:(head + 1) * d]
    else:
        w = model.model.layers[layer].mlp.down_proj.weight
    return set(torch.nonzero(w.abs().sum(1)).flatten().tolist())


def _read_weights(conv, node: str, inp: str | None) -> torch.Tensor:
    """[*, d_model]: what ``node`` multiplies the residual stream by through ``inp``."""
    model = conv.model
    kind, layer, head = parse_node(node)
    if kind == "logits":
        return model.lm_head.weight[:len(conv.output_vocab or (0,))]
    if kind == "mlp":
        return model.model.layers[layer].mlp.up_proj.weight
    d, attn = model.config.d_head, model.model.layers[layer].self_attn
    rows = slice(head * d, (head + 1) * d)
    qk = attn.q_proj.weight[rows].T @ attn.k_proj.weight[rows]  # [d_model, d_model] bilinear
    return {"q": qk.T, "k": qk, "v": attn.o_proj.weight[:, rows] @ attn.v_proj.weight[rows]}[inp]


@pytest.mark.parametrize("name", PROGRAMS)
def test_truth_matches_the_weights(name, converted, loaded):
    conv = converted[name]
    truth, model = conv.truth, conv.model
    truth.check_against(loaded[name])
    assert truth.task == f"tracr:{name}" and set(conv.operations) == set(truth.nodes) - {"embed", "logits"}
    # every head of the model with weights is in the truth, and only those
    d = model.config.d_head
    for layer, block in enumerate(model.model.layers):
        for head in range(model.config.n_heads):
            live = bool(block.self_attn.o_proj.weight[:, head * d:(head + 1) * d].abs().sum() > 0)
            assert live == (f"L{layer}.h{head}" in truth.nodes)
        if block.mlp is not None:
            assert bool(block.mlp.down_proj.weight.abs().sum() > 0) == (f"mlp{layer}" in truth.nodes)
    edges = set(truth.edges)
    order = {n: i for i, n in enumerate(truth.nodes)}  # nodes are listed in computation order
    for receiver in truth.nodes[1:]:
        inputs = ("q", "k", "v") if parse_node(receiver)[0] == "head" else (None,)
        for inp in inputs:
            w = _read_weights(conv, receiver, inp)
            for sender in truth.nodes[:order[receiver]]:
                if sender != "embed" and parse_node(sender)[1] == parse_node(receiver)[1] \
                        and parse_node(sender)[0] == parse_node(receiver)[0]:
                    continue  # same sub-layer: parallel, no path
                dims = sorted(_write_dims(model, sender))
                reads = bool(dims) and bool(w[:, dims].abs().sum() > 0)
                edge = (sender, receiver) if inp is None else (sender, receiver, inp)
                assert reads == (edge in edges), edge


def test_program_semantics_agree_with_rasp_evaluation(converted):
    rasp = import_tracr()["rasp"]
    for conv in converted.values():
        compiled = conv.compiled
        for seq in compiled.domain()[:150]:
            got = rasp.evaluate(compiled.spec.program, list(seq))
            want = compiled.reference(seq)
            assert np.allclose(got, want) if not conv.categorical else got == want


def test_pipeline_equals_compile_rasp_to_model(converted):
    from tracr.compiler import compiling

    compiled = converted["hist"].compiled
    theirs = compiling.compile_rasp_to_model(compiled.spec.program, set(compiled.vocab),
                                             compiled.max_seq_len, compiler_bos=compiled.bos)
    assert theirs.residual_labels == compiled.assembled.residual_labels
    for key, params in theirs.params.items():
        for p, value in params.items():
            np.testing.assert_array_equal(np.asarray(value), np.asarray(compiled.assembled.params[key][p]))


def test_unknown_program_name_is_refused():
    with pytest.raises(UnsupportedProgramError, match=r"Unknown tracr program 'fib'\. Built-in "
                       r"programs: 'reverse', 'sort', 'hist', 'frac_prevs'; compile any other"):
        compile_program("fib")


def test_program_tracr_cannot_compile_is_refused():
    rasp = import_tracr()["rasp"]
    prevs = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    mean_of_categorical = rasp.numerical(rasp.Aggregate(prevs, rasp.tokens, default=0))
    with pytest.raises(UnsupportedProgramError, match=r"tracr cannot compile the RASP program "
                       r"'bad_mean': NotImplementedError: aggregate: An aggregate's output "
                       r"encoding must match its input encoding.*Built-in programs that compile"):
        compile_rasp(mean_of_categorical, {1, 2, 3}, 4, name="bad_mean")
    with pytest.raises(UnsupportedProgramError, match="does not include rasp.tokens"):
        compile_rasp(rasp.Map(lambda x: x + 1, rasp.indices), {1, 2}, 3, name="no_tokens")


def test_inputs_outside_the_domain_are_refused(converted):
    conv = converted["reverse"]
    with pytest.raises(InputError, match=r"at most 5 tokens from \[1, 2, 3\]; unknown: \{7\}"):
        conv.encode([(1, 7)])
    with pytest.raises(InputError, match="one length at a time"):
        conv.encode([(1,), (1, 2)])


def test_causal_switch_of_the_toy_family(tmp_path):
    assert ToyConfig().causal is True  # the default is unchanged
    torch.manual_seed(0)
    causal = ToyForCausalLM(ToyConfig(vocab_size=8, n_ctx=6, d_model=16, n_layers=1, n_heads=2,
                                      d_head=8, d_mlp=0)).eval()
    full = ToyForCausalLM(ToyConfig(**{**causal.config.to_dict(), "causal": False})).eval()
    full.load_state_dict(causal.state_dict())
    ids = torch.tensor([[1, 2, 3, 4]])
    a = HookedModel(causal).run_with_cache(ids, sites=["L0.attn.pattern"])[1]["L0.attn.pattern"]
    full.save_pretrained(tmp_path)
    reloaded = interplab.load(str(tmp_path))
    b = reloaded.run_with_cache(ids, sites=["L0.attn.pattern"])[1]["L0.attn.pattern"]
    assert torch.all(a.triu(1) == 0) and torch.all(b > 0)
    with torch.no_grad():  # the last position sees everything either way
        torch.testing.assert_close(causal(ids).logits[:, -1], reloaded.run(ids)[:, -1])
