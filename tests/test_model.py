import math

import pytest
import torch
import torch.nn.functional as F

from lstmgen import CheckpointError, GenerationConfig, LanguageModel, ModelConfig
from lstmgen.tokenizers import CharTokenizer

CELLS = ["lstm", "gru", "rnn"]


def make_model(cell="lstm", V=20, tie=False, dropout=0.0, **kw) -> LanguageModel:
    tok = CharTokenizer.fit(["abcdefghijklmnopqrs\n"][:1])
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        cell=cell,
        embedding_size=kw.get("E", 8),
        hidden_size=kw.get("H", 12),
        num_layers=2,
        dropout=dropout,
        tie_weights=tie,
    )
    return LanguageModel(cfg, tok, GenerationConfig(temperature=0.5))


@pytest.mark.parametrize("cell", CELLS)
def test_chunked_stateful_forward_equals_whole_sequence(cell):
    model = make_model(cell).double().eval()
    ids = torch.randint(0, 20, (3, 37))
    whole, state_whole = model(ids)
    state, parts = None, []
    for chunk in ids.split(5, dim=1):  # uneven last chunk on purpose
        out, state = model(chunk, state)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=0, atol=1e-12)
    pairs = zip(*(s if cell == "lstm" else [s] for s in (state, state_whole)), strict=True)
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_shapes_and_explicit_state(cell):
    model = make_model(cell)
    logits, state = model(torch.zeros(4, 7, dtype=torch.long))
    assert logits.shape == (4, 7, 20)
    hs = tuple(state)  # a State: (h, c) for LSTM, (h,) for GRU and RNN
    assert all(h.shape == (2, 4, 12) for h in hs)
    assert not any(
        isinstance(v, torch.Tensor) and v.shape[:1] == (2,) for v in vars(model).values()
    )


def test_loss_at_initialisation_is_about_ln_vocab():
    model = make_model(V=20).eval()
    ids = torch.randint(0, 20, (8, 64))
    logits, _ = model(ids)
    loss = F.cross_entropy(logits.reshape(-1, 20), ids.reshape(-1)).item()
    assert abs(loss - math.log(20)) < 0.05


def test_model_files_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        make_model().save_pretrained(tmp_path)
    finally:
        os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(modes, 0o644) and len(modes) == 4  # not mkstemp's 0600


def test_forget_gate_bias_is_one():
    model = make_model("lstm")
    H = 12
    for layer in range(2):
        b = getattr(model.rnn, f"bias_ih_l{layer}") + getattr(model.rnn, f"bias_hh_l{layer}")
        assert torch.all(b[H : 2 * H] == 1.0)


@pytest.mark.parametrize("tie,E", [(False, 8), (True, 8), (True, 12)])
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, tie, E):
    model = make_model(tie=tie, E=E).eval()
    model.save_pretrained(tmp_path)
    for name in ("config.json", "tokenizer.json", "generation_config.json", "model.safetensors"):
        assert (tmp_path / name).is_file()
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files
    loaded = LanguageModel.from_pretrained(tmp_path)
    ids = torch.randint(0, 20, (2, 30))
    torch.testing.assert_close(loaded(ids)[0], model(ids)[0], rtol=0, atol=0)
    assert loaded.generation_config.temperature == 0.5
    if tie:
        assert loaded.decoder.weight.data_ptr() == loaded.embedding.weight.data_ptr()


def test_missing_truncated_corrupt_and_foreign_checkpoints(tmp_path):
    model = make_model()
    run = tmp_path / "m"
    model.save_pretrained(run)
    with pytest.raises(CheckpointError, match="no such model directory"):
        LanguageModel.from_pretrained(tmp_path / "absent")
    weights = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        LanguageModel.from_pretrained(run)
    (run / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing file"):
        LanguageModel.from_pretrained(run)
    model.save_pretrained(run)
    (run / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(CheckpointError, match="not an lstmgen model"):
        LanguageModel.from_pretrained(run)
    (run / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        LanguageModel.from_pretrained(run)


def test_weights_that_do_not_match_the_config(tmp_path):
    make_model(H=12).save_pretrained(tmp_path / "a")
    make_model(H=16).save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(CheckpointError, match="shape"):
        LanguageModel.from_pretrained(tmp_path / "a")


def test_loading_never_unpickles(tmp_path, monkeypatch):
    make_model().save_pretrained(tmp_path)
    import pickle

    def refuse(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    LanguageModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tie,E", [(False, 8), (True, 12), (True, 8)])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_stepper_equals_forward_on_one_token(cell, tie, E, kind, dtype, tol):
    from lstmgen.models.recurrent_steppers import NumpyStepper, TorchStepper

    model = make_model(cell, tie=tie, E=E).to(dtype).eval()
    step = {"torch": TorchStepper, "numpy": NumpyStepper}[kind](model)
    state = model.init_state(3)
    for _ in range(6):  # several steps, the state carried through both paths alike
        ids = torch.randint(0, 20, (3,))
        want, want_state = model(ids[:, None], state)
        got, got_state = step(ids, state)
        assert got.dtype == dtype
        torch.testing.assert_close(got, want[:, 0], rtol=0, atol=tol)
        pairs = (got_state, want_state) if cell == "lstm" else ((got_state,), (want_state,))
        for a, b in zip(*pairs, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=tol)
        state = want_state


def test_stepper_choice_follows_device_batch_and_dtype():
    from lstmgen.models.recurrent_steppers import (
        NUMPY_BELOW,
        NumpyStepper,
        TorchStepper,
        make_stepper,
    )

    model = make_model("lstm").eval()
    assert isinstance(make_stepper(model, 1), NumpyStepper)
    assert make_stepper(model, NUMPY_BELOW) is None  # large CPU batches: nn.LSTM (oneDNN)
    assert isinstance(model.stepper(NUMPY_BELOW), TorchStepper)
    assert isinstance(make_stepper(model.to(torch.bfloat16), 1), TorchStepper)


def test_numpy_stepper_does_not_touch_its_inputs():
    from lstmgen.models.recurrent_steppers import NumpyStepper

    model = make_model("lstm").eval()
    state = model.init_state(2)
    state = (state[0] + 0.5, state[1] - 0.25)
    before = [s.clone() for s in state]
    NumpyStepper(model)(torch.tensor([1, 2]), state)
    for a, b in zip(state, before, strict=True):
        assert torch.equal(a, b)
