"""Packing rows into sequences and choosing layer groups: properties that hold for any input."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interplab.runtime.packing import pack, plan_layer_groups


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.integers(2, 12).flatmap(lambda n_pos: st.tuples(
    st.just(n_pos),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, n_pos - 1), st.integers(0, 4)), min_size=1, max_size=40))))
def test_every_row_gets_its_own_slots_in_one_sequence_of_its_prompt_and_layer(case):
    n_pos, rows = case
    prompts, starts, layers = (torch.tensor(v) for v in zip(*rows))
    p = pack(prompts, starts, n_pos, layers)
    used = set()
    for r in range(len(rows)):
        s, o, t = int(p.seq[r]), int(p.offset[r]), int(p.length[r])
        assert t == n_pos - int(starts[r]) and 0 <= o and o + t <= p.width
        assert int(p.prompt_of_seq[s]) == int(prompts[r]) and int(p.join_layer[s]) == int(layers[r])
        slots = {(s, o + i) for i in range(t)}
        assert not slots & used
        used |= slots
    assert torch.all(p.join_layer[1:] >= p.join_layer[:-1])  # ordered by the layer they join at
    # best fit never opens a sequence while one of its group still has room for the row: so no
    # two sequences of one (prompt, layer) group could have been one
    fill = torch.zeros(p.n_seqs, dtype=torch.long).index_add_(0, p.seq, p.length)
    for a in range(p.n_seqs):
        for b in range(a + 1, p.n_seqs):
            same = (p.prompt_of_seq[a] == p.prompt_of_seq[b]) and (p.join_layer[a] == p.join_layer[b])
            assert not same or int(fill[a] + fill[b]) > p.width, (a, b, fill.tolist())


def test_a_whole_position_sweep_of_one_prompt_packs_without_padding():
    n_pos = 14
    starts = torch.arange(n_pos).repeat(3)  # three layers' worth of one prompt's cells
    p = pack(torch.zeros_like(starts), starts, n_pos)
    need = int((n_pos - starts).sum())
    assert p.n_seqs == -(-need // n_pos)  # t pairs with n_pos - t: the fewest sequences possible


def test_layer_groups_trade_recomputed_layers_against_the_per_forward_overhead():
    tokens = {layer: 100 for layer in range(10)}
    assert plan_layer_groups(tokens, 10, 0, 10**6) == list(range(10))  # no overhead: no recomputation
    assert plan_layer_groups(tokens, 10, 10**9, 10**6) == [0]  # huge overhead: one forward
    middle = plan_layer_groups(tokens, 10, 300, 10**6)
    assert 1 < len(middle) < 10 and middle[0] == 0
