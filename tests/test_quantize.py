"""int8 quantization (#14): `lstmgen quantize`, loading int8 directories, the int8 CPU step."""

import json

import numpy as np
import pytest
import torch

from lstmgen.config import GenerationConfig, ModelConfig
from lstmgen.export.int8 import dequantize, quantize
from lstmgen.model import LanguageModel
from lstmgen.modeldir import WEIGHTS, read_weight_header
from lstmgen.tokenizers import fit_tokenizer

TEXT = "the quick brown fox jumps over the lazy dog. ROMEO: my love is a rose.\n" * 4


def make_model(path, cell="lstm", tie=False, hidden=16, scale=1.0):
    tok = fit_tokenizer("char", [TEXT])
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        cell=cell,
        embedding_size=8,
        hidden_size=hidden,
        num_layers=2,
        dropout=0.0,
        tie_weights=tie,
    )
    model = LanguageModel(cfg, tok, GenerationConfig(max_new_tokens=20))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    model.save_pretrained(path)
    return model


def test_quantize_rows_keep_their_own_scale():
    w = np.array([[0.0, 0.0, 0.0], [1.0, -0.5, 0.25], [100.0, 3.0, -100.0]], np.float32)
    q, s = quantize(w)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (3,)
    assert np.abs(q).max() <= 127
    np.testing.assert_allclose(dequantize(q, s)[1], w[1], atol=1 / 127)  # not crushed by row 2
    assert np.isfinite(dequantize(q, s)).all()  # an all-zero row: no division by zero


@pytest.mark.parametrize("cell,tie", [("lstm", False), ("gru", True), ("rnn", False)])
def test_quantized_directory_loads_and_steps_close_to_float(tmp_path, run_cli, cell, tie):
    model = make_model(tmp_path / "f32", cell, tie, scale=2.0)
    args = ["--embedding"] if tie else []
    r = run_cli("quantize", tmp_path / "f32", "-o", tmp_path / "int8", *args)
    assert r.code == 0, r.err
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert config["quantization"]["method"] == "int8"
    header = read_weight_header(tmp_path / "int8" / WEIGHTS)
    assert header["rnn.weight_hh_l0.qweight"][1] == "I8"
    assert header["rnn.weight_hh_l0.scale"] == ((model.rnn.weight_hh_l0.shape[0],), "F32")
    assert ("embedding.weight.qweight" in header) == tie
    q = LanguageModel.from_pretrained(tmp_path / "int8")
    assert type(q.stepper(1)).__name__ in ("OrtInt8Stepper", "Int8Stepper")
    from lstmgen.models import recurrent_int8

    steppers = [recurrent_int8.Int8Stepper(q)]
    try:
        steppers.append(recurrent_int8.OrtInt8Stepper(q))
    except ImportError:
        pass  # without the onnx extra: the PyTorch int8 step only
    ids = torch.tensor([3, 5])
    want, want_state = model(ids[:, None], model.init_state(2))
    for step in steppers:
        got, got_state = step(ids, q.init_state(2))
        # int8 weights and 8-bit activations: close to float32, not equal
        assert (got - want[:, 0]).abs().max() < 0.05 * want.abs().max() + 1e-3
        assert not torch.equal(got, want[:, 0].detach())
        for a, b in zip(got_state, want_state, strict=True):
            assert (a - b).abs().max() < 0.05


def test_int8_directory_is_a_quarter_of_the_size(tmp_path, run_cli):
    make_model(tmp_path / "f32", hidden=64)
    assert run_cli("quantize", tmp_path / "f32", "-o", tmp_path / "int8").code == 0
    ratio = (tmp_path / "int8" / WEIGHTS).stat().st_size / (
        tmp_path / "f32" / WEIGHTS
    ).stat().st_size
    assert ratio < 0.30


def test_generate_eval_info_on_an_int8_directory(tmp_path, run_cli):
    make_model(tmp_path / "f32", scale=3.0)
    assert run_cli("quantize", tmp_path / "f32", "-o", tmp_path / "int8").code == 0
    r = run_cli("generate", tmp_path / "int8", "-p", "the", "-t", "0", "--max-new-tokens", "30")
    assert r.code == 0, r.err
    assert r.out.startswith("the") and len(r.out) > 20
    r = run_cli("info", tmp_path / "int8", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["quantization"]["method"] == "int8"
    corpus = tmp_path / "valid.txt"
    corpus.write_text(TEXT)
    r = run_cli("eval", tmp_path / "int8", corpus)
    assert r.code == 0, r.err
    r_f = run_cli("eval", tmp_path / "f32", corpus)
    assert r.out != r_f.out  # the int8 weights' own loss


def test_quantizing_a_quantized_model_is_one_line(tmp_path, run_cli):
    make_model(tmp_path / "f32")
    assert run_cli("quantize", tmp_path / "f32", "-o", tmp_path / "int8").code == 0
    r = run_cli("quantize", tmp_path / "int8", "-o", tmp_path / "int8-again")
    assert r.code == 1
    assert (
        r.err.strip() == f"error: {tmp_path / 'int8'} is already quantized (int8): quantize"
        " the float32 model"
    )


def test_an_unknown_quantization_method_is_one_clear_line(tmp_path, run_cli):
    make_model(tmp_path / "f32")
    assert run_cli("quantize", tmp_path / "f32", "-o", tmp_path / "int8").code == 0
    path = tmp_path / "int8" / "config.json"
    config = json.loads(path.read_text())
    config["quantization"]["method"] = "int4"
    path.write_text(json.dumps(config))
    r = run_cli("generate", tmp_path / "int8", "--max-new-tokens", "3")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1
    assert "quantized as 'int4', which this version of lstmgen cannot load" in r.err


def test_a_version_without_int8_support_refuses_clearly(tmp_path):
    # What lstmgen before #14 does with config.json: ModelConfig's unknown-key rule.
    from lstmgen.errors import ConfigError

    make_model(tmp_path / "f32")
    from lstmgen.export.quantize import quantize_model_dir

    quantize_model_dir(tmp_path / "f32", tmp_path / "int8")
    data = json.loads((tmp_path / "int8" / "config.json").read_text())
    data = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    with pytest.raises(ConfigError, match="unknown key.s. quantization"):
        ModelConfig.from_dict(data)


def test_int8_weights_relabelled_are_refused(tmp_path, run_cli):
    """modeldir's dtype table: an int8 matrix relabelled, or a float one where int8 belongs."""
    make_model(tmp_path / "f32")
    assert run_cli("quantize", tmp_path / "f32", "-o", tmp_path / "int8").code == 0
    path = tmp_path / "int8" / WEIGHTS
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + n].replace(b'"I8"', b'"U8"', 1)
    path.write_bytes(raw[:8] + header + raw[8 + n :])
    r = run_cli("generate", tmp_path / "int8", "--max-new-tokens", "3")
    assert r.code == 1 and "has dtype U8, the model's int8 weights are I8" in r.err


def test_serve_an_int8_directory(tmp_path, run_cli):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from lstmgen.generate import stream_text
    from lstmgen.server.app import create_app

    make_model(tmp_path / "f32", scale=3.0)
    assert run_cli("quantize", tmp_path / "f32", "-o", tmp_path / "int8").code == 0
    model = LanguageModel.from_pretrained(tmp_path / "int8")
    app = create_app(model, "int8")
    body = {"model": "int8", "prompt": "the", "max_tokens": 20, "temperature": 0, "n": 2}
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    want = "".join(ev.text for ev in stream_text(model, ["the"], max_new_tokens=20, temperature=0))
    assert [c["text"] for c in r.json()["choices"]] == [want, want]
