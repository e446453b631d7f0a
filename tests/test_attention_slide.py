"""The sha-lstm stepper's sliding memory buffer (models/attention_stepper.py ``_Slide``): a
decoding step writes one slot instead of copying the memory, and states stay values.

Tiny models (hidden 8), float64: every comparison is against ``forward`` on one token at a
time (``decode.model_step``; a longer window also sees its own earlier tokens beyond the memory).
"""

from __future__ import annotations

import torch

from lstmgen.decode import model_step
from lstmgen.state import State
from test_attention import make


def _step_all(step, model, ids, state=None):
    s = state if state is not None else model.init_state(ids.shape[0])
    outs = []
    for t in range(ids.shape[1]):
        logits, s = step(ids[:, t], s)
        outs.append(logits)
    return torch.stack(outs, 1), s


def test_stepping_past_the_spare_slots_equals_forward():
    """Memory 4 (spare 64 slots): 150 steps move the memory to a fresh buffer twice."""
    model = make(memory=4)
    ids = torch.randint(0, model.config.vocab_size, (3, 150))
    with torch.no_grad():
        full, state = _step_all(model_step(model), model, ids)
        out, s = _step_all(model.stepper(3), model, ids)
    assert torch.allclose(out, full, atol=1e-12, rtol=0)
    assert torch.allclose(s[2], state[2], atol=1e-12, rtol=0) and s[3].tolist() == [4, 4, 4]


def test_a_continued_step_writes_in_place_of_copying():
    model = make(memory=32)
    step = model.stepper(2)
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    with torch.no_grad():
        _, s = model(ids)  # primed by forward: the first step copies it into a buffer
        _, s1 = step(ids[:, 0], s)
        _, s2 = step(ids[:, 1], s1)
    storage = s1[2].untyped_storage().data_ptr()
    assert s2[2].untyped_storage().data_ptr() == storage  # the same buffer, one slot on
    assert s1[2].data_ptr() != s2[2].data_ptr()


def test_states_stay_values_when_stepped_twice_or_after_later_steps():
    """Stepping one state twice, and an older state after newer ones, gives forward's result;
    no step changes a memory handed out before."""
    model = make(memory=6)
    step = model.stepper(2)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.no_grad():
        _, s = model(ids[:, :8])
        _, s1 = step(ids[:, 8], s)
        kept = s1[2].clone()
        a, s2 = step(ids[:, 9], s1)
        _, _ = step(ids[:, 10], s2)
        b, s2b = step(ids[:, 9], s1)  # s1 again: its next slot is taken, so it is copied first
        assert torch.equal(s1[2], kept)
        assert torch.equal(a, b) and torch.equal(s2[2], s2b[2])
        ref, ref_state = model(ids[:, 9:10], model(ids[:, 8:9], s)[1])
        assert torch.allclose(a, ref[:, 0], atol=1e-12, rtol=0)
        assert torch.allclose(s2[2], ref_state[2], atol=1e-12, rtol=0)


def test_rows_joined_and_split_between_steps_equal_each_row_alone():
    """The batcher's pattern: a stepped state is split and joined with a new row."""
    model = make(memory=8)
    a, b = torch.randint(0, 10, (1, 11)), torch.randint(0, 10, (1, 3))
    nxt = torch.randint(0, 10, (2, 6))
    with torch.no_grad():
        _, sa = model(a)
        _, sb = model(b)
        step = model.stepper(2)
        out_a, sa2 = _step_all(model.stepper(1), model, nxt[:1, :3], sa)
        both = State.cat([sa2, sb])
        out, s = _step_all(step, model, torch.stack([nxt[0, 3:], nxt[1, :3]]), both)
        one = model_step(model)
        alone_a, _ = _step_all(one, model, nxt[:1, 3:], _step_all(one, model, nxt[:1, :3], sa)[1])
        alone_b, sb2 = _step_all(one, model, nxt[1:, :3], sb)
        assert torch.allclose(out, torch.cat([alone_a, alone_b]), atol=1e-12, rtol=0)
        left = s.select(torch.tensor([1]))
        more, _ = _step_all(model.stepper(1), model, nxt[1:, 3:], left)
        ref, _ = _step_all(one, model, nxt[1:, 3:], sb2)
        assert torch.allclose(more, ref, atol=1e-12, rtol=0)


def test_the_stepper_holds_no_memory_once_its_states_are_gone():
    model = make(memory=16)
    step = model.stepper(2)
    with torch.no_grad():
        _, s = step(torch.tensor([1, 2]), model.init_state(2))
        _, s = step(torch.tensor([3, 4]), s)
        assert step.slide.last() is s[2]
        del s
    assert step.slide.last() is None
