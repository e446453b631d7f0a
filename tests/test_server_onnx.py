"""`lstmgen serve DIR --backend onnx` (#14): the server's endpoints (completions with and
without streaming, request batching, echo, scoring, models) with onnxruntime computing each
step, on an exported ONNX folder and on an int8 directory."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason="server tests need the serve extra")
pytest.importorskip("httpx", reason="server tests need httpx")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fastapi.testclient import TestClient  # noqa: E402

from lstmgen.server.app import create_app  # noqa: E402
from test_quantize import make_model  # noqa: E402

LOCAL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    from lstmgen.export.onnx_export import export_onnx
    from lstmgen.export.quantize import quantize_model_dir

    tmp = tmp_path_factory.mktemp("onnx_serve")
    make_model(tmp / "f32", hidden=32, scale=3.0)  # decisive logits: greedy text is stable
    export_onnx(tmp / "f32", tmp / "onnx")
    quantize_model_dir(tmp / "f32", tmp / "int8")
    return tmp


def client(path):
    from lstmgen.export.onnx_served import OnnxServedModel

    app = create_app(OnnxServedModel(path), "m")
    return TestClient(app, base_url=LOCAL, raise_server_exceptions=False)


def sse(text: str) -> list:
    return [
        json.loads(b[len("data: ") :])
        for b in text.split("\n\n")
        if b.startswith("data: ") and b != "data: [DONE]"
    ]


def torch_text(path, prompt: str, n: int) -> str:
    from lstmgen import LanguageModel
    from lstmgen.generate import stream_text

    model = LanguageModel.from_pretrained(path)
    events = stream_text(model, [prompt], max_new_tokens=n, temperature=0)
    return "".join(ev.text for ev in events)


@pytest.mark.parametrize("kind,torch_dir", [("onnx", "f32"), ("int8", "int8")])
def test_completions_greedy_is_the_torch_backends_text(dirs, kind, torch_dir):
    body = {"model": "m", "prompt": "the", "max_tokens": 60, "temperature": 0}
    with client(dirs / kind) as c:
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        text = r.json()["choices"][0]["text"]
        streamed = c.post("/v1/completions", json={**body, "stream": True})
        assert streamed.status_code == 200
        chunks = sse(streamed.text)
        assert "".join(ch["choices"][0]["text"] for ch in chunks) == text
        models = c.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["m"]
    assert text == torch_text(dirs / torch_dir, "the", 60) and len(text) > 30


def test_batched_seeded_requests_echo_and_score(dirs):
    with client(dirs / "onnx") as c:
        # n > 1 with a seed: rows decoded together, each with its own generator
        many = {"model": "m", "prompt": "a", "max_tokens": 15, "n": 3, "seed": 5}
        one = c.post("/v1/completions", json=many).json()
        again = c.post("/v1/completions", json=many).json()
        assert [x["text"] for x in one["choices"]] == [x["text"] for x in again["choices"]]
        echo = {"model": "m", "prompt": "the fox", "max_tokens": 1, "echo": True, "logprobs": 1}
        r = c.post("/v1/completions", json=echo)
        assert r.status_code == 200, r.text
        assert len(r.json()["choices"][0]["logprobs"]["token_logprobs"]) >= 7
        r = c.post("/v1/score", json={"model": "m", "text": "the fox"})
        assert r.status_code == 200, r.text


def test_serve_backend_onnx_in_help_and_bad_device(run_cli, dirs):
    assert "--backend [torch|onnx]" in run_cli("serve", "--help").out
    r = run_cli("serve", dirs / "onnx", "--backend", "onnx", "--device", "cuda")
    assert r.code == 2 and "--device applies to --backend torch only" in r.err


def test_int8_prime_graph_gives_torchs_logits_at_every_position(dirs):
    import numpy as np
    import onnx
    import torch

    from lstmgen import LanguageModel
    from lstmgen.export.onnx_graph import prime_model
    from lstmgen.export.onnx_runtime import OnnxModel
    from lstmgen.reference.checkpoint import read_model_dir

    config, _, _, weights = read_model_dir(dirs / "int8")
    onnx.checker.check_model(prime_model(config, weights, all_logits=True), full_check=True)
    om = OnnxModel(dirs / "int8", every_position=True)
    ids = np.array([[1, 5, 3, 7], [2, 2, 4, 1]])
    got, state = om.logits_at_every_position(ids, om.init_state(2))
    want, want_state = LanguageModel.from_pretrained(dirs / "int8")(torch.tensor(ids))
    np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-4)
    for a, b in zip(state, want_state, strict=True):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-5)
