"""The NumPy SHA-LSTM (issue #12) is checked, not trusted: the attention block and the whole
network against finite differences in float64 (memory partly filled, eviction on), one-token
stepping against the whole window, and parity with the PyTorch model on the same weights."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from lstmgen.reference import attention as attn
from lstmgen.reference import check_model, cross_entropy
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


def test_memory_keeps_the_newest_entries():
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
    """Garbage in empty memory slots and in future window positions changes no output."""
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
    np.testing.assert_array_equal(new, new2)  # 2 + 4 > M: the dirty slots are all evicted
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
    memory) gives the same logits, final state and gradients (backpropagated step by step
    through the carried state, memory included) as one forward and backward over the window."""
    model = sha_model(3, M=12, E=5, H=6, V=7, L=3)
    rng = np.random.default_rng(2)
    B, T = 2, 9
    ids = rng.integers(0, 7, (B, T))
    state0 = sha_state(model, B, [0, 3], rng)  # 3 + 9 - 1 <= 12: nothing visible is evicted
    dlogits = rng.normal(size=(B, T, 7))
    dfinal = tuple(rng.normal(size=s.shape) for s in state0[:3])
    logits, final, cache = model.forward(ids, state0)
    grads, dstate0 = model.backward(cache, dlogits, dfinal)

    state, outs, caches = state0, [], []
    for t in range(T):
        out, state, c = model.forward(ids[:, t : t + 1], state)
        outs.append(out)
        caches.append(c)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), logits, rtol=0, atol=1e-12)
    for a, b in zip(state, final, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert final[3].tolist() == [9, 12] and final[3].dtype == np.int64

    total = {k: np.zeros_like(v) for k, v in model.params.items()}
    dstate = dfinal
    for t in reversed(range(T)):
        g, dstate = model.backward(caches[t], dlogits[:, t : t + 1], dstate)
        for k in total:
            total[k] += g[k]
    for k in grads:
        np.testing.assert_allclose(total[k], grads[k], rtol=0, atol=1e-11, err_msg=k)
    for a, b in zip(dstate, dstate0, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)


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


def torch_sha_pair(F, layer, L, tie, E, H=6, M=5, V=7, dtype=None):
    """A PyTorch sha-lstm with random weights and the NumPy model on the same weights."""
    import torch

    from lstmgen import LanguageModel, ModelConfig
    from lstmgen.checkpoint import weights_of
    from lstmgen.reference import LanguageModel as NumpyModel

    cfg = ModelConfig(
        vocab_size=V,
        embedding_size=E,
        hidden_size=H,
        num_layers=L,
        tie_weights=tie,
        arch="sha-lstm",
        memory=M,
        attention_layer=layer,
        boom_size=F,
    )
    torch.manual_seed(0)
    tm = LanguageModel(cfg).to(dtype or torch.float64).eval()
    with torch.no_grad():  # larger than the default init, so that everything bends
        for p in tm.parameters():
            p.normal_(0.0, 0.4)
    nm = NumpyModel(cfg, {k: v.detach().numpy().copy() for k, v in weights_of(tm).items()})
    return tm, nm


@needs_sha
@pytest.mark.parametrize(
    "variant", SHA_VARIANTS[:3], ids=["upper", "upper-boom", "last-boom-projection"]
)
def test_parity_with_pytorch_float64_over_two_windows(variant):
    """Logits within 1e-10 over two windows with the memory carried (and evicting), gradients
    of every parameter and of the initial state (the memory included) within 1e-8."""
    import torch
    import torch.nn.functional as tF

    from lstmgen.models.attention import AttentionState

    F, layer, L, tie, E, _ = variant
    H, M, V, B, T = 6, 5, 7, 2, 4
    tm, nm = torch_sha_pair(F, layer, L, tie, E, H, M, V)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (B, 2 * T), generator=g)
    targets = torch.randint(0, V, (B, 2 * T), generator=g)
    rng = np.random.default_rng(3)
    np_state = sha_state(nm, B, [1, M], rng)  # one row nearly empty, one full
    t_state = [torch.from_numpy(s.copy()) for s in np_state]
    for s in t_state[:3]:
        s.requires_grad_()

    state, t_logits, n_logits, caches, n_state = AttentionState(t_state), [], [], [], np_state
    for w in range(2):
        window = ids[:, w * T : (w + 1) * T]
        logits, state = tm(window, state)
        out, n_state, cache = nm.forward(window.numpy(), n_state)
        assert np.abs(logits.detach().numpy() - out).max() < 1e-10, w
        for a, b in zip(state, n_state, strict=True):
            assert np.abs(a.detach().numpy() - b).max() < 1e-10, w
        t_logits.append(logits)
        n_logits.append(out)
        caches.append(cache)
    assert n_state[3].tolist() == [M, M]  # 1 + 8 > M: both rows evicted

    weights = [torch.randn(s.shape, dtype=torch.float64, generator=g) for s in state[:3]]
    loss = sum(
        tF.cross_entropy(lg.reshape(-1, V), targets[:, w * T : (w + 1) * T].reshape(-1))
        for w, lg in enumerate(t_logits)
    )
    loss = loss + sum((w * s).sum() for w, s in zip(weights, state[:3], strict=True))
    loss.backward()
    dstate = tuple(w.numpy() for w in weights)
    total = {k: np.zeros_like(v) for k, v in nm.params.items()}
    for w in (1, 0):  # backpropagation through both windows: the state's gradient flows back
        _, dlogits = cross_entropy(n_logits[w], targets[:, w * T : (w + 1) * T].numpy())
        grads, dstate = nm.backward(caches[w], dlogits, dstate)
        for k in total:
            total[k] += grads[k]
    torch_grads = {k: p.grad.numpy() for k, p in tm.named_parameters()}
    assert set(total) == set(torch_grads)
    for k, v in torch_grads.items():
        assert np.abs(v - total[k]).max() < 1e-8, k
    assert len(dstate) == 3
    for s, ds in zip(t_state[:3], dstate, strict=True):
        assert np.abs(s.grad.numpy() - ds).max() < 1e-8


@needs_sha
def test_model_directories_and_greedy_text_are_shared(tmp_path):
    """Saved by PyTorch, loaded by NumPy and back; the same greedy text for 50 tokens, with
    the memory filling and evicting (M = 24) and prompts of different lengths in one batch."""
    import torch

    from lstmgen import GenerationConfig, LanguageModel, ModelConfig, stream_text
    from lstmgen.reference import LanguageModel as NumpyModel
    from lstmgen.reference import stream_text as numpy_stream_text
    from lstmgen.tokenizers import CharTokenizer

    tok = CharTokenizer.fit(["abcdefghij .,\n"])
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        embedding_size=8,
        hidden_size=16,
        num_layers=2,
        arch="sha-lstm",
        memory=24,
        boom_size=8,
    )
    torch.manual_seed(3)
    tm = LanguageModel(cfg, tok, GenerationConfig(max_new_tokens=50))
    with torch.no_grad():
        for p in tm.parameters():
            p.normal_(0.0, 0.5)
    tm.save_pretrained(tmp_path / "torch")
    nm = NumpyModel.from_pretrained(tmp_path / "torch")
    ids = np.array([tok.encode("abba cafe\n")])
    with torch.no_grad():
        expected = tm(torch.from_numpy(ids))[0].numpy()
    assert np.abs(nm(ids)[0] - expected).max() < 1e-5

    prompts = ["abc", "", "jihgfedcba abc"]
    opts = {"temperature": 0, "max_new_tokens": 50, "stop": []}
    want = [(e.index, e.text) for e in stream_text(tm, prompts, **opts)]
    assert len("".join(t for _, t in want)) > 100  # not a degenerate stream
    assert [(e.index, e.text) for e in numpy_stream_text(nm, prompts, **opts)] == want

    nm.params["attention.key_gate"] += 1.0  # a change that must survive the round trip
    nm.save_pretrained(tmp_path / "numpy")
    back = LanguageModel.from_pretrained(tmp_path / "numpy")
    assert torch.equal(back.attention.key_gate, torch.from_numpy(nm.params["attention.key_gate"]))
    assert back.config == cfg


# --- training and generation with the NumPy reference -----------------------------------------


@needs_sha
def test_numpy_trainer_trains_a_sha_lstm_that_pytorch_loads(tmp_path, corpus_file):
    """The reference trainer carries the 4-part state (memory included) between windows and
    through evaluation, and writes a run folder that the PyTorch backend loads."""
    import torch

    from lstmgen import LanguageModel, ModelConfig, TrainConfig
    from lstmgen.reference.train import Trainer

    model_cfg = ModelConfig(
        embedding_size=8, hidden_size=8, num_layers=2, arch="sha-lstm", memory=24, boom_size=8
    )
    train_cfg = TrainConfig(
        batch_size=4, seq_len=16, max_steps=12, warmup_steps=2, eval_every=6, eval_tokens=300,
        sample_tokens=10, log_every=6, lr=1e-2,
    )  # fmt: skip
    trainer = Trainer.create(tmp_path / "run", [corpus_file], train_cfg, model_cfg)
    summary = trainer.fit()
    assert summary["step"] == 12
    h, c, memory, length = trainer.hidden  # carried from window to window
    assert memory.shape == (4, 24, 8) and length.tolist() == [24] * 4
    assert np.abs(memory[:, -8:]).sum() > 0
    losses = [m["val_loss"] for m in trainer.run.read_metrics() if "val_loss" in m]
    assert len(losses) == 2 and losses[-1] < losses[0]

    tm = LanguageModel.from_pretrained(tmp_path / "run")
    assert tm.config.arch == "sha-lstm" and tm.config.memory == 24
    ids = np.array([tm.tokenizer.encode("ROMEO: the love")])
    with torch.no_grad():
        expected = tm(torch.from_numpy(ids))[0].numpy()
    assert np.abs(trainer.model(ids)[0] - expected).max() < 1e-5
    text = "".join(trainer.model.generate("ROMEO:", max_new_tokens=40, temperature=0, stop=[]))
    assert len(text) > 0


@needs_sha
def test_cli_generates_from_a_sha_lstm_with_the_numpy_backend(tmp_path, run_cli):
    import torch

    from lstmgen import LanguageModel, ModelConfig
    from lstmgen.tokenizers import CharTokenizer

    tok = CharTokenizer.fit(["abcdefgh \n"])
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, embedding_size=8, hidden_size=8, arch="sha-lstm", memory=16
    )
    torch.manual_seed(4)
    tm = LanguageModel(cfg, tok)
    with torch.no_grad():
        for p in tm.parameters():
            p.normal_(0.0, 0.5)
    tm.save_pretrained(tmp_path / "m")
    args = ["generate", tmp_path / "m", "-p", "abc", "-t", "0", "-n", "2", "--max-new-tokens", "30"]
    torch_out, numpy_out = run_cli(*args), run_cli(*args, "--backend", "numpy")
    assert torch_out.code == numpy_out.code == 0, numpy_out.err
    assert numpy_out.out == torch_out.out and len(set(numpy_out.out)) > 3


@needs_sha
def test_cli_trains_a_sha_lstm_with_the_numpy_backend(tmp_path, corpus_file, run_cli):
    from conftest import tiny_train_args
    from lstmgen import LanguageModel

    out = tmp_path / "np"
    args = ["train", corpus_file, "-o", out, "-q", "--backend", "numpy"]
    sha = ["--arch", "sha-lstm", "--memory", "16", "--boom-size", "8"]
    res = run_cli(*args, *sha, *tiny_train_args(max_steps=10))
    assert res.code == 0, res.err
    model = LanguageModel.from_pretrained(out)  # the PyTorch backend loads the NumPy run
    assert (model.config.arch, model.config.memory, model.config.boom_size) == ("sha-lstm", 16, 8)
    gen = run_cli("generate", out, "-p", "ROMEO", "-t", "0", "--max-new-tokens", "20")
    assert gen.code == 0 and gen.out.startswith("ROMEO")


@needs_sha
def test_numpy_trainer_refuses_a_memory_that_does_not_fit(tmp_path, corpus_file, monkeypatch):
    from lstmgen import ConfigError, ModelConfig, TrainConfig
    from lstmgen.models import attention as torch_attention
    from lstmgen.reference.train import Trainer

    monkeypatch.setattr(torch_attention, "_available_bytes", lambda device: 2**20)  # 1 MiB
    cfg = ModelConfig(embedding_size=8, hidden_size=64, arch="sha-lstm", memory=2048)
    with pytest.raises(ConfigError, match=r"memory 2,048 x hidden_size 64 x 4 bytes x 4 seq"):
        Trainer.create(tmp_path / "run", [corpus_file], TrainConfig(batch_size=4), cfg)
    assert not (tmp_path / "run" / "config.json").exists()
