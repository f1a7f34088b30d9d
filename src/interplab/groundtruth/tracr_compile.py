"""RASP programs compiled to transformer weights by tracr (Lindner et al. 2023, "Tracr:
Compiled Transformers as a Laboratory for Interpretability").

A compiled model's mechanism is known by construction: every head and MLP implements one RASP
operation and reads and writes named one-hot subspaces of the residual stream. This module
builds the four programs of the tracr paper's examples -- ``reverse``, ``sort``, ``hist`` and
``frac_prevs`` -- compiles them with tracr's own pipeline, and returns each with its vocabulary,
maximum length, the Python function that states what the program computes, and its whole test
domain. ``groundtruth.tracr_convert`` turns the result into an ``interplab-toy`` model and reads
the ground-truth circuit off the compiler's graph.

tracr, jax and dm-haiku are an optional extra (``pip install 'interplab[tracr]'``), imported
only when a program is compiled. Compiled models are bidirectional (not causal), prepend a BOS
token, and read their output from a subspace of the final residual stream: categorical outputs
by argmax over one direction per value, numerical outputs (``frac_prevs``) as one direction.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from interplab.core.errors import ConfigError, InterplabError, MissingDependencyError, choices

PROGRAMS = ("reverse", "sort", "hist", "frac_prevs")
INSTALL = "pip install 'interplab[tracr]'"
BOS = "BOS"


class UnsupportedProgramError(InterplabError):
    """A RASP program tracr cannot compile, or a program name this module does not define."""


def import_tracr() -> dict[str, Any]:
    """tracr's modules, or MissingDependencyError naming the install command."""
    try:
        from tracr.compiler import (
            assemble,
            basis_inference,
            craft_graph_to_model,
            craft_model_to_transformer,
            expr_to_craft_graph,
            lib,
            nodes,
            rasp_to_graph,
            validating,
        )
        from tracr.craft import bases, transformers
        from tracr.rasp import rasp
    except ImportError as err:
        raise MissingDependencyError(
            f"Compiling RASP programs needs tracr (the 'tracr-pypi' package) with jax and "
            f"dm-haiku, which could not be imported ({err}). Install them with: {INSTALL}"
        ) from err
    return {
        "assemble": assemble, "basis_inference": basis_inference,
        "craft_graph_to_model": craft_graph_to_model,
        "craft_model_to_transformer": craft_model_to_transformer,
        "expr_to_craft_graph": expr_to_craft_graph, "lib": lib, "nodes": nodes,
        "rasp_to_graph": rasp_to_graph, "validating": validating, "bases": bases,
        "transformers": transformers, "rasp": rasp,
    }


# -- what each program computes, in plain Python --------------------------------------------------
def reverse_reference(tokens: Sequence) -> list:
    return list(tokens)[::-1]


def sort_reference(tokens: Sequence) -> list:
    return sorted(tokens)


def hist_reference(tokens: Sequence) -> list:
    return [list(tokens).count(t) for t in tokens]


def frac_prevs_reference(tokens: Sequence, target: Hashable = "x") -> list[float]:
    """Fraction of positions 0..i holding ``target``, at every position i."""
    return [sum(t == target for t in tokens[: i + 1]) / (i + 1) for i in range(len(tokens))]


@dataclass(frozen=True)
class ProgramSpec:
    """A RASP program with the inputs it is compiled for and what it computes."""

    name: str
    program: Any  # tracr.rasp.rasp.SOp
    vocab: tuple  # input tokens, sorted as tracr's encoder sorts them
    max_seq_len: int  # longest input, BOS not counted
    reference: Callable[[Sequence], list] | None  # the program's output per position


def _sorted_vocab(vocab) -> tuple:
    return tuple(sorted(vocab, key=lambda t: (str(type(t)), t)))


def program_spec(name: str, vocab: Sequence | None = None,
                 max_seq_len: int | None = None) -> ProgramSpec:
    """One of ``PROGRAMS`` as a RASP program (default vocab and length are small enough that
    the whole domain is enumerable: 3-4 tokens, length <= 5)."""
    if name not in PROGRAMS:
        raise UnsupportedProgramError(
            f"Unknown tracr program {name!r}. Built-in programs: {choices(PROGRAMS)}; compile "
            "any other RASP program with compile_rasp(program, vocab, max_seq_len)."
        )
    t = import_tracr()
    rasp, lib = t["rasp"], t["lib"]
    n = 5 if max_seq_len is None else max_seq_len
    if name == "reverse":
        program, default, ref = lib.make_reverse(rasp.tokens), (1, 2, 3), reverse_reference
    elif name == "sort":
        # Keys made unique by adding i / max_seq_len (tracr's make_sort), so repeats are fine.
        program = lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=n, min_key=1)
        default, ref = (1, 2, 3, 4), sort_reference
    elif name == "hist":
        program, default, ref = lib.make_hist(), (1, 2, 3), hist_reference
    else:
        program = lib.make_frac_prevs(rasp.tokens == "x")
        default, ref = ("a", "b", "x"), frac_prevs_reference
    vocab = default if vocab is None else vocab
    if name == "sort" and not all(isinstance(v, int | float) and v >= 1 for v in vocab):
        raise ConfigError(f"The sort program needs numbers >= 1 as tokens (its keys add "
                          f"i / max_seq_len to break ties); got vocab {list(vocab)}.")
    return ProgramSpec(name, program, _sorted_vocab(vocab), n, ref)


# -- compiling -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompiledProgram:
    """A compiled program: tracr's assembled model plus the compiler graph it came from."""

    spec: ProgramSpec
    assembled: Any  # tracr AssembledTransformerModel
    graph: Any  # networkx graph of RASP expressions, each with its craft block
    sink: dict  # the graph node of the program's output
    craft_model: Any  # tracr SeriesWithResiduals: the blocks in order
    categorical: bool  # argmax over output values; False: one numerical direction
    bos: str = BOS

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def vocab(self) -> tuple:
        return self.spec.vocab

    @property
    def max_seq_len(self) -> int:
        return self.spec.max_seq_len

    @property
    def reference(self) -> Callable[[Sequence], list] | None:
        return self.spec.reference

    def domain(self) -> list[tuple]:
        """Every input the claim covers: all sequences over ``vocab`` of length 1 to
        ``max_seq_len`` (BOS not included), shortest first."""
        return [seq for n in range(1, self.max_seq_len + 1)
                for seq in itertools.product(self.vocab, repeat=n)]

    def run(self, tokens: Sequence) -> list:
        """tracr's own (jax) forward: the decoded output at each input position (no BOS)."""
        return list(self.assembled.apply([self.bos, *tokens]).decoded[1:])


def compile_rasp(program, vocab: Sequence, max_seq_len: int, *, name: str = "custom",
                 reference: Callable[[Sequence], list] | None = None, bos: str = BOS,
                 mlp_exactness: int = 100) -> CompiledProgram:
    """Compile any RASP ``program`` for inputs over ``vocab`` up to ``max_seq_len`` tokens.

    The steps of tracr's ``compiling.compile_rasp_to_model`` run one by one so that the
    compiler's graph and craft model are kept: the ground-truth circuit is read off them.
    """
    if max_seq_len < 1 or not vocab:
        raise ConfigError(f"Compile for a non-empty vocab and max_seq_len >= 1; got vocab "
                          f"{list(vocab)} and max_seq_len={max_seq_len}.")
    if bos in vocab:
        raise ConfigError(f"The BOS token {bos!r} is also in the vocab {list(vocab)}; pass "
                          "another bos=.")
    t = import_tracr()
    spec = ProgramSpec(name, program, _sorted_vocab(vocab), max_seq_len, reference)
    if not isinstance(program, t["rasp"].SOp):
        raise UnsupportedProgramError(f"Program {name!r} is a {type(program).__name__}, not a "
                                      "RASP SOp (built from tracr.rasp.rasp.tokens / indices).")
    try:
        return _compile(t, spec, bos, mlp_exactness)
    except (NotImplementedError, ValueError, KeyError, TypeError, AssertionError) as err:
        raise UnsupportedProgramError(
            f"tracr cannot compile the RASP program {name!r}: {type(err).__name__}: "
            f"{str(err).strip().rstrip('.')}. "
            "tracr supports Map, SequenceMap, Select, Aggregate (categorical aggregates must "
            "select at most one position; numerical ones need a numerical input and a mean), "
            "SelectorWidth and numerical MLPs on a single input; see "
            "tracr.compiler.validating.static_validate. Built-in programs that compile: "
            f"{choices(PROGRAMS)}."
        ) from err


def _compile(t, spec: ProgramSpec, bos: str, mlp_exactness: int) -> CompiledProgram:
    rasp, nodes = t["rasp"], t["nodes"]
    unsupported = t["validating"].static_validate(spec.program)
    if unsupported:
        raise NotImplementedError("; ".join(f"{u.expr.name}: {u.reason}" for u in unsupported))
    extracted = t["rasp_to_graph"].extract_rasp_graph(spec.program)
    graph, sources, sink = extracted.graph, extracted.sources, extracted.sink
    t["basis_inference"].infer_bases(graph, sink, set(spec.vocab), spec.max_seq_len)
    t["expr_to_craft_graph"].add_craft_components_to_rasp_graph(
        graph, bos_dir=t["bases"].BasisDirection(rasp.tokens.label, bos),
        mlp_exactness=mlp_exactness)
    craft_model = t["craft_graph_to_model"].craft_graph_to_model(graph, sources)
    assembled = t["craft_model_to_transformer"].craft_model_to_transformer(
        craft_model=craft_model, graph=graph, sink=sink, max_seq_len=spec.max_seq_len,
        causal=False, compiler_bos=bos, compiler_pad="compiler_pad")
    categorical = bool(rasp.is_categorical(sink[nodes.EXPR]))
    return CompiledProgram(spec, assembled, graph, sink, craft_model, categorical, bos)


def compile_program(name: str, vocab: Sequence | None = None,
                    max_seq_len: int | None = None) -> CompiledProgram:
    """Compile one of ``PROGRAMS`` (``reverse``, ``sort``, ``hist``, ``frac_prevs``)."""
    spec = program_spec(name, vocab, max_seq_len)
    return compile_rasp(spec.program, spec.vocab, spec.max_seq_len, name=spec.name,
                        reference=spec.reference)
