"""The sha-lstm architecture (models/attention.py, issue #12): the network and its memory,
decoding, training and resume, evaluation, model directories and bad input.

Tiny models (hidden 8); float64 where a test compares two ways of computing the same thing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_TRAIN, StopAt
from lstmgen import LanguageModel, ModelConfig, TrainConfig, Trainer
from lstmgen.checkpoint import weights_of
from lstmgen.data import TokenFile
from lstmgen.decode import model_step
from lstmgen.errors import CheckpointError, ConfigError
from lstmgen.evaluate import evaluate_tokens
from lstmgen.generate import stream_text
from lstmgen.modeldir import read_model_config, weight_shapes
from lstmgen.models import registry
from lstmgen.models.attention import AttentionState, check_memory_fits
from lstmgen.models.attention_stepper import AttentionStepper
from lstmgen.state import State
from lstmgen.tokenizers import CharTokenizer

ATTN = {
    "arch": "sha-lstm",
    "embedding_size": 8,
    "hidden_size": 8,
    "num_layers": 2,
    "dropout": 0.0,
    "memory": 64,
}


def make(seed=0, double=True, **changes):
    """A random sha-lstm with weights large enough that attention and gates matter."""
    torch.manual_seed(seed)
    tok = CharTokenizer.fit(["abcdefgh \n"])
    cfg = ModelConfig(**{**ATTN, "vocab_size": tok.vocab_size, **changes})
    model = LanguageModel(cfg, tok)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    model = model.eval()
    return model.double() if double else model


@pytest.mark.parametrize(
    "changes",
    [{}, {"boom_size": 12, "num_layers": 3, "attention_layer": 1}, {"num_layers": 1}],
)
def test_one_token_at_a_time_equals_forward_over_the_sequence(changes):
    model = make(**changes)
    ids = torch.randint(0, model.config.vocab_size, (3, 20))
    assert isinstance(model.stepper(3), AttentionStepper)  # batch 3 decodes through it
    with torch.no_grad():
        full, state = model(ids)
        for step in (model.stepper(3), model_step(model)):  # written out; forward on one token
            s, outs = model.init_state(3), []
            for t in range(20):
                logits, s = step(ids[:, t], s)
                outs.append(logits)
            assert torch.allclose(torch.stack(outs, 1), full, atol=1e-12, rtol=0)
            for a, b in zip(s, state, strict=True):
                assert torch.allclose(a.double(), b.double(), atol=1e-12, rtol=0)
            assert isinstance(s, AttentionState) and s[3].dtype == torch.int64
        pieces = [model(ids[:, :7]), None]
        pieces[1] = model(ids[:, 7:], pieces[0][1])
    assert torch.allclose(torch.cat([pieces[0][0], pieces[1][0]], 1), full, atol=1e-12, rtol=0)
    assert isinstance(state, AttentionState) and state[3].tolist() == [20, 20, 20]


def test_the_memory_keeps_the_last_m_normalised_outputs():
    model = make(memory=5)
    ids = torch.randint(0, model.config.vocab_size, (2, 3))
    with torch.no_grad():
        _, s = model(ids)  # 3 of 5 entries: right-aligned, zeros before them
        assert s[3].tolist() == [3, 3] and torch.equal(s[2][:, :2], torch.zeros(2, 2, 8).double())
        h, _ = model.lower(model.embedding(ids))
        n = model.attention.norm(h)  # what the memory stores
        assert torch.allclose(s[2][:, 2:], n)
        more = torch.randint(0, model.config.vocab_size, (2, 4))
        _, s2 = model(more, s)
        h2, _ = model.lower(model.embedding(more), (s[0][:1], s[1][:1]))
        n2 = model.attention.norm(h2)
        assert s2[3].tolist() == [5, 5]
        assert torch.allclose(s2[2], torch.cat([n[:, -1:], n2], 1))  # the last 5 of 7


def test_a_row_sees_only_its_own_valid_memory():
    """Rows of different memory lengths joined with State.cat give each row its own result."""
    model = make()
    a, b = torch.randint(0, 10, (1, 9)), torch.randint(0, 10, (1, 3))
    with torch.no_grad():
        _, sa = model(a)
        _, sb = model(b)
        both = State.cat([sa, sb])
        assert isinstance(both, AttentionState) and both[3].tolist() == [9, 3]
        nxt = torch.randint(0, 10, (2, 2))
        out, s = model(nxt, both)
        out_a, _ = model(nxt[:1], sa)
        out_b, _ = model(nxt[1:], sb)
        assert torch.allclose(out, torch.cat([out_a, out_b]), atol=1e-12, rtol=0)
        picked = s.select(torch.tensor([1]))
        assert picked[3].tolist() == [5] and picked[2].shape == (1, 64, 8)
        stepped, s2 = model.stepper(2)(nxt[:, 0], both)  # the written-out step, masks per row
        assert torch.allclose(stepped, model(nxt[:, :1], both)[0][:, 0], atol=1e-12, rtol=0)
        assert s2[3].tolist() == [10, 4]


def test_state_casts_keep_the_length_an_integer_and_round_trip_by_name():
    model = make()
    _, s = model(torch.randint(0, 10, (2, 4)))
    f = s.to(dtype=torch.float32)
    assert isinstance(f, AttentionState) and f[2].dtype == torch.float32
    assert f[3].dtype == torch.int64 and f[3].tolist() == [4, 4]
    back = AttentionState.from_tensors(f.tensors())
    assert isinstance(back, AttentionState) and torch.equal(back[3], s[3])
    assert isinstance(f.detach().clone(), AttentionState)


def test_weight_names_and_shapes_are_the_spec():
    cfg = ModelConfig(**{**ATTN, "vocab_size": 11, "num_layers": 3, "boom_size": 6})
    shapes = weight_shapes(cfg)
    assert shapes["lower.weight_ih_l0"] == (32, 8) and "lower.weight_hh_l1" in shapes
    assert shapes["upper.weight_ih_l0"] == (32, 8) and "upper.weight_hh_l1" not in shapes
    assert shapes["attention.ff_in.weight"] == (6, 8)
    assert shapes["attention.ff_out.weight"] == (8, 6)
    model = LanguageModel(cfg)
    assert {k: tuple(v.shape) for k, v in weights_of(model).items()} == shapes
    one = weight_shapes(cfg.replace(num_layers=1, boom_size=0))  # -2 of one layer is layer 0
    assert not any(k.startswith(("upper.", "attention.ff")) for k in one)


def test_batched_generation_of_prompts_of_different_lengths_equals_each_alone():
    model = make(double=False)
    prompts = ["abc", "hgfedcba abc"]
    alone = [model.complete(p, max_new_tokens=25, temperature=0)[0] for p in prompts]
    batched = ["", ""]
    for ev in stream_text(model, prompts, max_new_tokens=25, temperature=0):
        batched[ev.index] += ev.text
    assert batched == alone and alone[0] != alone[1]


def test_model_directory_round_trip_and_config_json(tmp_path):
    model = make(double=False, boom_size=4)
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["arch"] == "sha-lstm" and saved["memory"] == 64 and saved["boom_size"] == 4
    back = LanguageModel.from_pretrained(tmp_path / "m")
    ids = torch.randint(0, 10, (1, 10))
    with torch.no_grad():
        assert torch.equal(back(ids)[0], model(ids)[0])
    # a recurrent config.json does not mention the attention settings (older code reads it)
    plain = ModelConfig(vocab_size=5).to_dict()
    assert not {"memory", "attention_layer", "boom_size"} & set(plain)


def test_a_registry_without_sha_lstm_refuses_its_directory_in_one_line(tmp_path, monkeypatch):
    make(double=False).save_pretrained(tmp_path / "m")
    monkeypatch.delitem(registry.ARCHITECTURES, "sha-lstm")
    with pytest.raises(CheckpointError, match=r"arch must be one of recurrent, got 'sha-lstm'$"):
        read_model_config(tmp_path / "m")


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"memory": 0}, r"memory must be >= 1 \(tokens the attention head sees\), got 0"),
        ({"memory": -3}, r"memory must be >= 1 \(tokens the attention head sees\), got -3"),
        ({"memory": 10**9}, r"memory 1,000,000,000 x hidden_size 8 x 4 bytes = 29.8 GiB per"),
        ({"cell": "gru"}, "arch sha-lstm needs cell lstm, got 'gru'"),
        ({"attention_layer": 2}, r"attention_layer must be in \[-2, 1\] for 2 layer\(s\), got 2"),
        ({"boom_size": -1}, "boom_size must be >= 0"),
        ({"arch": "recurrent"}, "memory applies to arch sha-lstm only"),
    ],
)
def test_bad_attention_settings_are_one_clear_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict({**ATTN, "vocab_size": 5, **changes})


def test_a_memory_the_machine_cannot_hold_names_the_sizes():
    cfg = ModelConfig(**{**ATTN, "vocab_size": 5, "memory": 2**20, "hidden_size": 1024})
    with pytest.raises(ConfigError, match=r"x 1,000,000 sequences = .* GiB of attention memory"):
        check_memory_fits(cfg, 10**6, torch.device("cpu"), 4)
    check_memory_fits(cfg, 1, torch.device("cpu"), 4)  # one row of 4 GiB: fits this machine


def test_cli_refuses_bad_memory_and_resuming_an_lstm_as_sha_lstm(run_cli, tmp_path, corpus_file):
    out = tmp_path / "r"
    bad = run_cli("train", corpus_file, "-o", out, "--arch", "sha-lstm", "--memory", "0")
    assert bad.code != 0 and bad.err.strip().splitlines()[-1].startswith("error: memory must be")
    assert not out.exists()
    ok = run_cli("train", corpus_file, "-o", out, "--preset", "tiny", "--max-steps", "2", "-q")
    assert ok.code == 0, ok.err
    again = run_cli("train", "--resume", out, "--arch", "sha-lstm", "--max-steps", "4")
    assert again.code == 2 and "--arch cannot change" in again.err
    assert "Traceback" not in again.err
    with pytest.raises(ConfigError, match="cannot change arch when resuming"):
        Trainer.resume(out, arch="sha-lstm")


def test_info_shows_the_architecture_and_memory(run_cli, tmp_path):
    make(double=False, memory=48).save_pretrained(tmp_path / "m")
    res = run_cli("info", tmp_path / "m")
    assert res.code == 0 and "arch:       sha-lstm, memory 48 tokens, attention after layer 0" in (
        res.out
    )


def test_train_and_resume_are_bit_exact_and_carry_the_memory(tmp_path, corpus_file):
    cfg = TrainConfig(**{**TINY_TRAIN, "log_every": 1, "eval_every": 7}, max_steps=16)
    model_cfg = ModelConfig(**{**ATTN, "memory": 40, "dropout": 0.3, "boom_size": 8})
    full = Trainer.create(tmp_path / "full", [corpus_file], cfg, model_cfg)
    full.fit()
    assert full.hidden[3].tolist() == [40] * 4  # the memory spans windows (seq_len 16)
    part = Trainer.create(tmp_path / "part", [corpus_file], cfg, model_cfg, callbacks=[StopAt(9)])
    assert part.fit()["step"] == 9
    resumed = Trainer.resume(tmp_path / "part")
    assert isinstance(resumed.hidden, AttentionState) and resumed.hidden[3].dtype == torch.int64
    resumed.fit()
    a, b = weights_of(full.model), weights_of(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.pos.best_val == resumed.pos.best_val


def test_evaluation_carries_the_memory_across_windows():
    model = make(memory=400)
    with torch.no_grad():
        model.decoder.weight.mul_(4)
    tokens = np.random.default_rng(0).integers(0, 10, 300).tolist()
    ids = torch.tensor([[model.tokenizer.bos_id, *tokens[:-1]]])
    with torch.no_grad():
        logits, _ = model(ids)  # one pass over everything: the definition
        single = F.cross_entropy(logits[0], torch.tensor(tokens)).item()
        # the same windows with the memory dropped at each boundary: not the same
        s, total = None, 0.0
        for t in range(0, 300, 32):
            if s is not None:
                s = AttentionState((s[0], s[1], torch.zeros_like(s[2]), torch.zeros_like(s[3])))
            out, s = model(ids[:, t : t + 32], s)
            total += F.cross_entropy(out[0], torch.tensor(tokens[t : t + 32]), reduction="sum")
    result = evaluate_tokens(model, TokenFile(np.array(tokens), 300, 300), batch_size=1, seq_len=32)
    assert result.loss == pytest.approx(single, rel=1e-9)
    assert abs(total.item() / 300 - single) > 1e-4


def test_state_clone_and_copy_keep_addresses_and_the_integer_length():
    """What the CUDA graph relies on (cudagraph.GraphDecoder): fixed-address buffers."""
    model = make()
    _, s = model(torch.randint(0, 10, (2, 3)))
    buf = s.clone()
    ptrs = [t.data_ptr() for t in buf]
    _, s2 = model(torch.randint(0, 10, (2, 1)), s)
    buf.copy_(s2)
    assert [t.data_ptr() for t in buf] == ptrs and buf[3].dtype == torch.int64
    assert all(torch.equal(a, b) for a, b in zip(buf, s2, strict=True))


@pytest.mark.gpu
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cuda_graph_replays_give_the_eager_text(temperature):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    import warnings

    model = make().to("cuda")  # float64: graph and eager run the same kernels
    prompts = ["abc", "hgfedcba abc", "a"]  # rows of different memory lengths
    kw = {"max_new_tokens": 70, "seed": 3, "temperature": temperature}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture warns and decodes eagerly
        graphed = ["", "", ""]
        for ev in stream_text(model, prompts, **kw):
            graphed[ev.index] += ev.text
    eager = ["", "", ""]
    for ev in stream_text(model, prompts, cuda_graphs=False, **kw):
        eager[ev.index] += ev.text
    assert graphed == eager
