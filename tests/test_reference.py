"""The NumPy reference is checked, not trusted: finite differences, step-by-step against whole,
parity with the PyTorch model on the same weights, and the same generated text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lstmgen import GenerationConfig, LanguageModel, ModelConfig, stream_text
from lstmgen.checkpoint import weights_of
from lstmgen.reference import LanguageModel as NumpyModel
from lstmgen.reference import cells, check_model, cross_entropy
from lstmgen.reference import stream_text as numpy_stream_text
from lstmgen.reference.generate import filter_top_k, filter_top_p, next_token
from lstmgen.reference.layers import Adam
from lstmgen.sampling import filter_top_k as torch_top_k
from lstmgen.sampling import filter_top_p as torch_top_p
from lstmgen.tokenizers import CharTokenizer

CELLS = ["lstm", "gru", "rnn"]
SRC = Path(__file__).resolve().parent.parent / "src"
# (tie_weights, E, H, dropout): untied; tied with a projection H -> E; tied E == H with dropout
VARIANTS = [(False, 3, 4, 0.0), (True, 3, 4, 0.0), (True, 4, 4, 0.3)]


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def like(cell: str, parts):
    return tuple(parts) if cell == "lstm" else parts[0]


def random_model(cell, tie=False, E=3, H=4, L=2, V=5, dropout=0.0, seed=0, scale=0.5):
    """float64 NumPy model with weights large enough that every nonlinearity bends."""
    cfg = ModelConfig(
        vocab_size=V,
        cell=cell,
        embedding_size=E,
        hidden_size=H,
        num_layers=L,
        dropout=dropout,
        tie_weights=tie,
    )
    model = NumpyModel.init(cfg, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for p in model.params.values():
        p[...] = rng.normal(0.0, scale, p.shape)
    return model


def random_state(model, B, rng):
    return like(
        model.config.cell, [rng.normal(0, 0.5, s.shape) for s in as_tuple(model.init_state(B))]
    )


# --- gradient check -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=["untied", "projection", "tied-dropout"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell, variant):
    tie, E, H, dropout = variant
    model = random_model(cell, tie, E, H, dropout=dropout)
    rng = np.random.default_rng(1)
    ids, targets = rng.integers(0, 5, (2, 4)), rng.integers(0, 5, (2, 4))
    report = check_model(model, ids, targets, random_state(model, 2, rng))
    expected = set(model.params) | {"state.h"} | ({"state.c"} if cell == "lstm" else set())
    assert set(report) == expected  # every parameter and the initial state were checked
    assert max(report.values()) < 1e-6, report


def test_gradient_check_catches_a_small_error(monkeypatch):
    model = random_model("lstm")
    rng = np.random.default_rng(1)
    ids, targets = rng.integers(0, 5, (2, 4)), rng.integers(0, 5, (2, 4))
    right = cells.BACKWARD["lstm"]

    def slightly_wrong(dy, dstate, cache):
        dx, dstate0, grads = right(dy, dstate, cache)
        grads["W_hh"] = grads["W_hh"] * (1 + 1e-4)
        return dx, dstate0, grads

    monkeypatch.setitem(cells.BACKWARD, "lstm", slightly_wrong)
    report = check_model(model, ids, targets)
    assert report["rnn.weight_hh_l0"] > 5e-5
    assert report["embedding.weight"] < 1e-6


# --- step by step equals whole --------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_step_by_step_equals_whole_forward_and_backward(cell):
    model = random_model(cell, E=5, H=6, L=3, V=7)
    rng = np.random.default_rng(2)
    B, T = 3, 11
    ids = rng.integers(0, 7, (B, T))
    state0 = random_state(model, B, rng)
    dlogits = rng.normal(size=(B, T, 7))
    dfinal = like(cell, [rng.normal(size=s.shape) for s in as_tuple(state0)])

    logits, final, cache = model.forward(ids, state0)
    grads, dstate0 = model.backward(cache, dlogits, dfinal)

    state, outs, caches, bounds = state0, [], [], [(0, 1), (1, 4), (4, 5), (5, 11)]
    for a, b in bounds:
        out, state, c = model.forward(ids[:, a:b], state)
        outs.append(out)
        caches.append(c)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), logits, rtol=0, atol=1e-13)
    for x, y in zip(as_tuple(state), as_tuple(final), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-13)

    total = {k: np.zeros_like(v) for k, v in model.params.items()}
    dstate = dfinal
    for (a, b), c in reversed(list(zip(bounds, caches, strict=True))):
        g, dstate = model.backward(c, dlogits[:, a:b], dstate)  # the state's gradient flows back
        for k in total:
            total[k] += g[k]
    for k in grads:
        np.testing.assert_allclose(total[k], grads[k], rtol=0, atol=1e-12, err_msg=k)
    for x, y in zip(as_tuple(dstate), as_tuple(dstate0), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-12)


# --- parity with the PyTorch model -------------------------------------------------------------


def torch_pair(cell, tie, E, H, dtype, L=3, V=11):
    cfg = ModelConfig(
        vocab_size=V, cell=cell, embedding_size=E, hidden_size=H, num_layers=L, tie_weights=tie
    )
    torch.manual_seed(0)
    tm = LanguageModel(cfg).to(dtype).eval()
    with torch.no_grad():  # larger than the default init, so that the gates saturate somewhat
        for p in tm.parameters():
            p.normal_(0.0, 0.4)
    nm = NumpyModel(cfg, {k: v.detach().numpy().copy() for k, v in weights_of(tm).items()})
    return tm, nm


@pytest.mark.parametrize("tie,E,H", [(False, 5, 7), (True, 5, 7), (True, 6, 6)])
@pytest.mark.parametrize("cell", CELLS)
def test_parity_with_pytorch_float64(cell, tie, E, H):
    tm, nm = torch_pair(cell, tie, E, H, torch.float64)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 11, (3, 9), generator=g)
    targets = torch.randint(0, 11, (3, 9), generator=g)
    state = like(cell, [torch.randn(3, 3, H, dtype=torch.float64, generator=g) for _ in "hc"])
    for s in as_tuple(state):
        s.requires_grad_()
    logits, final = tm(ids, state)
    n_logits, n_final, cache = nm.forward(
        ids.numpy(), like(cell, [s.detach().numpy() for s in as_tuple(state)])
    )
    assert np.abs(logits.detach().numpy() - n_logits).max() < 1e-10
    for a, b in zip(as_tuple(final), as_tuple(n_final), strict=True):
        assert np.abs(a.detach().numpy() - b).max() < 1e-10

    weights = [torch.randn(s.shape, dtype=torch.float64, generator=g) for s in as_tuple(final)]
    loss = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1))
    loss = loss + sum((w * s).sum() for w, s in zip(weights, as_tuple(final), strict=True))
    loss.backward()
    _, dlogits = cross_entropy(n_logits, targets.numpy())
    grads, dstate = nm.backward(cache, dlogits, like(cell, [w.numpy() for w in weights]))
    torch_grads = {k: p.grad.numpy() for k, p in tm.named_parameters()}
    assert set(grads) == set(torch_grads)
    for k, v in torch_grads.items():
        assert np.abs(v - grads[k]).max() < 1e-8, k
    for s, ds in zip(as_tuple(state), as_tuple(dstate), strict=True):
        assert np.abs(s.grad.numpy() - ds).max() < 1e-8


@pytest.mark.parametrize("cell", CELLS)
def test_parity_with_pytorch_float32(cell):
    tm, nm = torch_pair(cell, False, 8, 16, torch.float32, L=2, V=30)
    ids = torch.randint(0, 30, (4, 50))
    with torch.no_grad():
        logits, final = tm(ids)
    n_logits, n_final = nm(ids.numpy())
    assert n_logits.dtype == np.float32
    assert np.abs(logits.numpy() - n_logits).max() < 1e-5
    for a, b in zip(as_tuple(final), as_tuple(n_final), strict=True):
        assert np.abs(a.numpy() - b).max() < 1e-5


def test_model_directories_are_shared_both_ways(tmp_path):
    tok = CharTokenizer.fit(["abcdefgh \n"])
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, embedding_size=6, hidden_size=10, num_layers=2, tie_weights=True
    )
    tm = LanguageModel(cfg, tok, GenerationConfig(temperature=0.3, top_k=4))
    tm.save_pretrained(tmp_path / "torch")
    nm = NumpyModel.from_pretrained(tmp_path / "torch")
    assert nm.generation_config == tm.generation_config
    assert nm.tokenizer.to_dict() == tok.to_dict()
    ids = np.array([tok.encode("abba cafe\n")])
    with torch.no_grad():
        expected = tm(torch.from_numpy(ids))[0].numpy()
    assert np.abs(nm(ids)[0] - expected).max() < 1e-5

    nm.params["decoder.bias"] += 1.0  # a change that must survive the round trip
    nm.save_pretrained(tmp_path / "numpy")
    back = LanguageModel.from_pretrained(tmp_path / "numpy")
    assert torch.equal(back.decoder.bias, torch.from_numpy(nm.params["decoder.bias"]))
    assert back.decoder.weight is back.embedding.weight


def test_foreign_or_mismatched_directory_is_one_clear_error(tmp_path):
    from lstmgen import CheckpointError

    with pytest.raises(CheckpointError, match="no such model directory"):
        NumpyModel.from_pretrained(tmp_path / "missing")
    tok = CharTokenizer.fit(["ab\n"])
    cfg = ModelConfig(vocab_size=tok.vocab_size, embedding_size=4, hidden_size=4, num_layers=1)
    LanguageModel(cfg, tok).save_pretrained(tmp_path / "m")
    text = (
        (tmp_path / "m" / "config.json").read_text().replace('"num_layers": 1', '"num_layers": 2')
    )
    (tmp_path / "m" / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=r"holds 1 recurrent layer\(s\), config.json says 2"):
        NumpyModel.from_pretrained(tmp_path / "m")


# --- generation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """Random-weight PyTorch models of each cell saved as model directories."""
    tok = CharTokenizer.fit(["abcdefghij .,\n"])
    paths = {}
    for cell in CELLS:
        cfg = ModelConfig(
            vocab_size=tok.vocab_size, cell=cell, embedding_size=8, hidden_size=16, num_layers=2
        )
        torch.manual_seed(3)
        tm = LanguageModel(cfg, tok, GenerationConfig(max_new_tokens=40))
        with torch.no_grad():
            for p in tm.parameters():
                p.normal_(0.0, 0.5)
        paths[cell] = tmp_path_factory.mktemp(cell)
        tm.save_pretrained(paths[cell])
    return paths


def events(stream):
    return [(e.index, e.text, e.finish_reason) for e in stream]


@pytest.mark.parametrize("cell", CELLS)
def test_greedy_stream_equals_pytorch(saved_models, cell):
    tm = LanguageModel.from_pretrained(saved_models[cell])
    nm = NumpyModel.from_pretrained(saved_models[cell])
    prompts = ["abc", "", "jihg"]
    opts = {"temperature": 0, "max_new_tokens": 40, "stop": ["."], "repetition_penalty": 1.3}
    expected = events(stream_text(tm, prompts, **opts))
    assert len("".join(e[1] for e in expected)) > 30  # not a degenerate stream
    assert events(numpy_stream_text(nm, prompts, **opts)) == expected


def test_seeded_sampling_is_reproducible(saved_models):
    nm = NumpyModel.from_pretrained(saved_models["lstm"])
    opts = {"temperature": 1.0, "max_new_tokens": 30}
    a = nm_texts(nm, seed=5, **opts)
    assert a == nm_texts(nm, seed=5, **opts)
    assert a != nm_texts(nm, seed=6, **opts)
    greedy = nm_texts(nm, temperature=0, max_new_tokens=30)
    assert nm_texts(nm, seed=5, temperature=1.0, top_k=1, max_new_tokens=30) == greedy
    assert nm_texts(nm, seed=5, temperature=1.0, top_p=1e-6, max_new_tokens=30) == greedy


def test_tiny_sampling_values_are_greedy_as_in_pytorch(saved_models):
    # Issue #10: values too small to divide by take their limit on both backends.
    nm = NumpyModel.from_pretrained(saved_models["lstm"])
    greedy = nm_texts(nm, temperature=0, max_new_tokens=30)
    for tiny in ({"temperature": 1e-320}, {"temperature": 1.0, "top_p": 1e-320}):
        assert nm_texts(nm, seed=5, max_new_tokens=30, **tiny) == greedy, tiny


def nm_texts(model, **opts):
    texts = ["", ""]
    for e in numpy_stream_text(model, ["ab", "ab"], **opts):
        texts[e.index] += e.text
    return texts


def test_filters_equal_pytorch_and_draws_follow_the_distribution():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 20))
    logits[0, :5] = logits[0, 0]  # ties
    t = torch.from_numpy(logits)
    for k in (1, 3, 5, 19):
        np.testing.assert_array_equal(filter_top_k(logits, k), torch_top_k(t, k).numpy())
    for p in (0.01, 0.3, 0.9):
        np.testing.assert_array_equal(filter_top_p(logits, p), torch_top_p(t, p).numpy())
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    cfg = GenerationConfig(temperature=1.0)
    draws = next_token(np.tile(np.log(probs), (20000, 1)), cfg, np.random.default_rng(1))
    assert np.abs(np.bincount(draws, minlength=4) / 20000 - probs).max() < 0.015


# --- training ------------------------------------------------------------------------------


def test_numpy_training_learns_a_pattern():
    model = random_model("lstm", E=8, H=16, L=1, V=6, scale=0.1)
    model.params = {k: v for k, v in model.params.items()}
    opt = Adam(model.params, lr=0.02)
    seq = np.tile(np.arange(6), 6)[None, :]  # 0 1 2 3 4 5 0 1 ...
    x, y = seq[:, :-1], seq[:, 1:]
    first = model.loss_and_grads(x, y)[0]
    for _ in range(60):
        loss, grads, _ = model.loss_and_grads(x, y)
        opt.step(grads)
    assert first > 1.5 and loss < 0.1


# --- the command line ----------------------------------------------------------------------


def test_cli_numpy_backend(tmp_path, corpus_file, run_cli, saved_models):
    run = saved_models["gru"]
    args = ["generate", run, "-p", "abc", "-t", "0", "-n", "2", "--max-new-tokens", "30"]
    torch_out = run_cli(*args)
    numpy_out = run_cli(*args, "--backend", "numpy")
    assert torch_out.code == numpy_out.code == 0
    assert numpy_out.out == torch_out.out
    bad = run_cli(*args, "--backend", "numpy", "--device", "cuda")
    assert bad.code == 2 and "--backend torch" in bad.err

    from conftest import tiny_train_args

    out = tmp_path / "np"
    res = run_cli(
        "train", corpus_file, "-o", out, "-q", "--backend", "numpy", *tiny_train_args(max_steps=20)
    )
    assert res.code == 0, res.err
    for name in (
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "metrics.jsonl",
        "loss.png",
        "train_config.json",
    ):
        assert (out / name).exists(), name
    model = LanguageModel.from_pretrained(out)  # the PyTorch backend loads a NumPy run
    assert model.config.num_layers == 2
    ev = run_cli("eval", out, "--split", "valid", "--json")
    assert ev.code == 0
    resumed = run_cli("train", "--resume", out, "--backend", "numpy")
    assert resumed.code == 2 and "--backend torch" in resumed.err


# --- no torch ------------------------------------------------------------------------------

BLOCK_TORCH = """
import sys, importlib.abc
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
"""


def test_reference_runs_without_torch(saved_models):
    """The reference package and what it uses never import torch. (lstmgen/__init__.py itself
    imports the PyTorch backend, so the package's own __init__ is bypassed here.)"""
    code = (
        BLOCK_TORCH
        + f"""
import types
pkg = types.ModuleType("lstmgen")
pkg.__path__ = [{str(SRC / "lstmgen")!r}]
sys.modules["lstmgen"] = pkg
from lstmgen.reference import LanguageModel
import lstmgen.reference.train
m = LanguageModel.from_pretrained({str(saved_models["lstm"])!r})
print("".join(m.generate("ab", temperature=0, max_new_tokens=5)))
assert not any(n == "torch" or n.startswith("torch.") for n in sys.modules)
"""
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.strip("\n")) > 0


def test_importing_lstmgen_reference_does_not_import_torch():
    code = "import sys, lstmgen.reference; assert 'torch' not in sys.modules"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
