"""The long-range study's windowed pass (benchmarks/study_longrange.py): each sequence goes in
TBPTT windows with the state, the sha-lstm's attention memory included, carried across them."""

from __future__ import annotations

import pytest
import torch

from conftest import benchmark_module

study = benchmark_module("study_longrange")


@pytest.mark.parametrize("cell", ["lstm", "sha-lstm"])
def test_windows_carry_the_state_and_the_memory(cell):
    """Windows of 4 over 11 tokens give the one-window pass's logits at the query: nothing of
    the state (nor of the memory, which must span the sequence) is lost at a boundary."""
    torch.manual_seed(0)
    model = study.LanguageModel(study.config(cell, 8, memory=16)).double()
    x, _ = study.make_batch(3, 9, torch.Generator().manual_seed(1))  # (3, 11)
    with torch.no_grad():
        whole, _ = study.run_windows(model, x, 0)
        windowed, state = study.run_windows(model, x, 4)
    assert windowed.shape[1] == 3  # the last window: tokens 8..10
    torch.testing.assert_close(windowed[:, -1], whole[:, -1], rtol=0, atol=1e-10)
    if cell == "sha-lstm":
        assert state[3].tolist() == [11, 11, 11]  # the memory grew across the three windows


def test_the_memory_is_what_reaches_back_beyond_a_window():
    """With a memory shorter than the sequence the key falls out of it, and the query's logits
    change: the windowed sha-lstm reads its key from the memory, not from one big window."""
    torch.manual_seed(0)
    long = study.LanguageModel(study.config("sha-lstm", 8, memory=16)).double()
    short = study.LanguageModel(study.config("sha-lstm", 8, memory=4)).double()
    short.load_state_dict(long.state_dict())
    x, _ = study.make_batch(2, 9, torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, sa = study.run_windows(long, x, 4)
        b, sb = study.run_windows(short, x, 4)
    assert sb[3].tolist() == [4, 4] and sa[3].tolist() == [11, 11]
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_only_the_last_window_is_differentiated():
    torch.manual_seed(0)
    model = study.LanguageModel(study.config("sha-lstm", 8, memory=16))
    x, _ = study.make_batch(2, 9, torch.Generator().manual_seed(1))
    logits, state = study.run_windows(model, x, 4)
    assert logits.requires_grad and state[2].requires_grad  # the last window's part
    logits[:, -1].sum().backward()
    assert model.embedding.weight.grad is not None
    # the embedding rows of tokens seen only in the first two windows get no gradient
    first = set(x[:, :8].flatten().tolist()) - set(x[:, 8:].flatten().tolist())
    for t in first:
        assert model.embedding.weight.grad[t].abs().sum() == 0


def test_the_docs_table_comes_from_the_json():
    rows = [
        {"k": 500, "accuracy": 0.96, "steps": 300},
        {"k": 1000, "accuracy": 0.125, "steps": 600},
    ]
    table = study.markdown({"exact": {"lstm": rows}, "mixed": {"sha-lstm": rows}})
    assert table.splitlines()[0] == "| held-out accuracy | k = 500 | k = 1,000 |"
    assert "| exact, lstm | **96 %** (300) | 12 % (600) |" in table
    assert "| mixed, sha-lstm | **96 %** | 12 % |" in table


def test_the_ablation_cuts_one_path_at_a_time():
    """memory_only zeroes h and c at each boundary (the memory still holds all 11 entries); the
    ablation's memory-1 model shares the trained weights."""
    torch.manual_seed(0)
    model = study.LanguageModel(study.config("sha-lstm", 8, memory=16))
    x, y = study.make_batch(3, 9, torch.Generator().manual_seed(1))
    with torch.no_grad():
        carried, _ = study.run_windows(model, x, 4)
        reset, state = study.run_windows(model, x, 4, memory_only=True)
    assert state[3].tolist() == [11, 11, 11]
    assert not torch.allclose(carried[:, -1], reset[:, -1])
    out = study.ablation(model, {9: (x, y)}, 4)
    assert [r["k"] for r in out["memory_1"]] == [9]
    assert 0 <= out["state_zeroed_at_boundaries"][0]["accuracy"] <= 1
