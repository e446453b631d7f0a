"""The NumPy SHA-LSTM (issue #12) is checked, not trusted: the attention block and the whole
network against finite differences in float64 (memory partly filled, eviction on), one-token
stepping against the whole window, and parity with the PyTorch model on the same weights."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from lstmgen.reference import check_model, cross_entropy
from lstmgen.reference import attention as attn
from lstmgen.reference.gradcheck import numeric_gradient, relative_error

HAS_SHA = importlib.util.find_spec("lstmgen.models.attention") is not None
needs_sha = pytest.mark.skipif(not HAS_SHA, reason="lstmgen.models.attention not merged yet")


def block_params(H, F, rng):
    """Random block parameters, large enough that layer norm, softmax and GELU all bend."""
    p = {
        "norm.weight": rng.normal(1, 0.3, H),
        "norm.bias": rng.normal(0, 0.3, H),
        "query.weight": rng.normal(0, 0.7, (H, H)),
        "query.bias": rng.normal(0, 0.3, H),
        "key_gate": rng.normal(0, 1, H),
        "value_gate": rng.normal(0, 1, H),
    }
    if F:
        p |= {
            "ff_norm.weight": rng.normal(1, 0.3, H),
            "ff_norm.bias": rng.normal(0, 0.3, H),
            "ff_in.weight": rng.normal(0, 0.7, (F, H)),
            "ff_in.bias": rng.normal(0, 0.3, F),
            "ff_out.weight": rng.normal(0, 0.7, (H, F)),
            "ff_out.bias": rng.normal(0, 0.3, H),
        }
    return p


def memory_state(B, M, H, lengths, rng):
    """Right-aligned memory: row b holds lengths[b] entries at the end, zeros before them."""
    length = np.array(lengths, dtype=np.int64)
    memory = rng.normal(0, 1, (B, M, H)) * (np.arange(M)[None, :] >= M - length[:, None])[..., None]
    return memory, length


# --- the block alone --------------------------------------------------------------------------


@pytest.mark.parametrize("F", [0, 5], ids=["no-boom", "boom"])
def test_block_gradients_match_finite_differences(F):
    rng = np.random.default_rng(0)
    B, T, H, M = 3, 3, 4, 4  # rows with 0, 2 and 4 memory entries; 2 + 3 > 4: eviction
    p = block_params(H, F, rng)
    h = rng.normal(0, 1, (B, T, H))
    memory, length = memory_state(B, M, H, [0, 2, 4], rng)
    wy, wm = rng.normal(0, 1, (B, T, H)), rng.normal(0, 1, (B, M, H))

    def loss():
        y, new_memory, _, _ = attn.attention_forward(h, memory, length, p)
        return float((wy * y).sum() + (wm * new_memory).sum())

    _, _, new_length, cache = attn.attention_forward(h, memory, length, p)
    assert new_length.tolist() == [3, 4, 4]
    dh, dmemory, grads = attn.attention_backward(wy, wm, cache)
    assert set(grads) == set(p)
    for name, value in p.items():
        assert relative_error(grads[name], numeric_gradient(loss, value)) < 1e-6, name
    assert relative_error(dh, numeric_gradient(loss, h)) < 1e-6
    assert relative_error(dmemory, numeric_gradient(loss, memory)) < 1e-6
    assert not dmemory[0].any() and not dmemory[1, :2].any()  # empty slots get no gradient


def test_memory_keeps_the_last_entries_and_zeroes_the_rest():
    rng = np.random.default_rng(1)
    H, M = 2, 4
    p = block_params(H, 0, rng)
    memory, length = memory_state(2, M, H, [1, 3], rng)
    h = rng.normal(0, 1, (2, 2, H))
    _, new, new_length, cache = attn.attention_forward(h, memory, length, p)
    n = cache[2]  # the normalised window, what the memory stores
    assert new_length.tolist() == [3, 4]
    np.testing.assert_array_equal(new[0], np.concatenate([np.zeros((1, H)), memory[0, 3:], n[0]]))
    np.testing.assert_array_equal(new[1], np.concatenate([memory[1, 2:], n[1]]))  # 1 evicted


def test_masked_keys_do_not_matter():
    """Garbage in empty memory slots and in future window positions changes nothing."""
    rng = np.random.default_rng(2)
    H, M, T = 3, 5, 4
    p = block_params(H, 3, rng)
    memory, length = memory_state(1, M, H, [2], rng)
    h = rng.normal(0, 1, (1, T, H))
    y, new, _, _ = attn.attention_forward(h, memory, length, p)
    dirty = memory.copy()
    dirty[0, :3] = 7.0
    y2, new2, _, _ = attn.attention_forward(h, dirty, length, p)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(new, new2)
    h2 = h.copy()
    h2[0, 2:] += 1.0  # the future of positions 0 and 1
    y3, _, _, _ = attn.attention_forward(h2, memory, length, p)
    np.testing.assert_array_equal(y3[0, :2], y[0, :2])


# --- the whole network ------------------------------------------------------------------------


def sha_model(F=0, layer=-2, L=2, tie=False, E=3, H=4, V=5, M=3, dropout=0.0, seed=0):
    from lstmgen import ModelConfig
    from lstmgen.reference import LanguageModel as NumpyModel

    cfg = ModelConfig(
        vocab_size=V,
        embedding_size=E,
        hidden_size=H,
        num_layers=L,
        dropout=dropout,
        tie_weights=tie,
        arch="sha-lstm",
        memory=M,
        attention_layer=layer,
        boom_size=F,
    )
    model = NumpyModel.init(cfg, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for p in model.params.values():
        p[...] = rng.normal(0.0, 0.5, p.shape)
    return model


def sha_state(model, B, lengths, rng):
    h, c, memory, _ = model.init_state(B)
    M, H = memory.shape[1:]
    memory, length = memory_state(B, M, H, lengths, rng)
    return (rng.normal(0, 0.5, h.shape), rng.normal(0, 0.5, c.shape), memory, length)


# (boom F, attention layer, layers, tied, E, dropout): the block after the first of two layers
# (an upper stack) or after the last (none); with the boom; tied with a projection H -> E
SHA_VARIANTS = [
    (0, -2, 2, False, 3, 0.0),
    (3, -2, 2, False, 3, 0.0),
    (3, -1, 2, True, 3, 0.0),
    (0, 0, 1, True, 4, 0.3),
]


@needs_sha
@pytest.mark.parametrize(
    "variant", SHA_VARIANTS, ids=["upper", "upper-boom", "last-boom-projection", "one-dropout"]
)
def test_sha_lstm_gradients_match_finite_differences(variant):
    F, layer, L, tie, E, dropout = variant
    model = sha_model(F, layer, L, tie, E, dropout=dropout)
    rng = np.random.default_rng(1)
    ids, targets = rng.integers(0, 5, (2, 3)), rng.integers(0, 5, (2, 3))
    # M = 3: a row with 1 entry and a full row, a window of 3: both rows evict
    report = check_model(model, ids, targets, sha_state(model, 2, [1, 3], rng))
    assert set(report) == set(model.params) | {"state.h", "state.c", "state.memory"}
    assert any(k.startswith("attention.ff_") for k in report) == bool(F)
    assert any(k.startswith("upper.") for k in report) == (layer % L < L - 1)
    assert max(report.values()) < 1e-6, report


@needs_sha
def test_gradient_check_catches_a_small_error_in_the_block(monkeypatch):
    from lstmgen.reference import model as model_module

    model = sha_model(3)
    rng = np.random.default_rng(1)
    ids, targets = rng.integers(0, 5, (2, 3)), rng.integers(0, 5, (2, 3))
    right = model_module.attention_backward

    def slightly_wrong(dy, dmemory, cache):
        dh, dmem, grads = right(dy, dmemory, cache)
        grads["key_gate"] = grads["key_gate"] * (1 + 1e-4)
        return dh, dmem * (1 + 1e-4), grads

    monkeypatch.setattr(model_module, "attention_backward", slightly_wrong)
    report = check_model(model, ids, targets, sha_state(model, 2, [1, 3], rng))
    assert report["attention.key_gate"] > 5e-5
    assert report["state.memory"] > 5e-5
    assert report["attention.query.weight"] < 1e-6


@needs_sha
def test_one_token_steps_equal_the_whole_window():
    """With room for the whole window in memory, stepping one token at a time (carrying the
    memory) gives the same logits and the same final state as one forward over the window."""
    model = sha_model(3, M=12, E=5, H=6, V=7, L=3)
    rng = np.random.default_rng(2)
    B, T = 2, 9
    ids = rng.integers(0, 7, (B, T))
    state0 = sha_state(model, B, [0, 3], rng)  # 3 + 9 - 1 <= 12: nothing visible is evicted
    logits, final = model(ids, state0)
    state, outs = state0, []
    for t in range(T):
        out, state = model(ids[:, t : t + 1], state)
        outs.append(out)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), logits, rtol=0, atol=1e-12)
    for a, b in zip(state, final, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert final[3].tolist() == [9, 12] and final[3].dtype == np.int64


@needs_sha
def test_greedy_rows_of_different_memory_lengths_match_each_alone():
    from lstmgen.reference import stream_text
    from lstmgen.tokenizers import CharTokenizer

    model = sha_model(3, M=6, E=4, H=8, V=5)
    model.tokenizer = CharTokenizer.fit(["abcd\n"])
    opts = {"temperature": 0, "max_new_tokens": 12, "stop": []}

    def texts(prompts):
        out = [""] * len(prompts)
        for e in stream_text(model, prompts, **opts):
            out[e.index] += e.text
        return out

    together = texts(["a", "abcdabcd", "ab"])  # memory lengths 1, 6 (full) and 2 after priming
    assert together == [texts([p])[0] for p in ["a", "abcdabcd", "ab"]]


# --- parity with the PyTorch model ------------------------------------------------------------
