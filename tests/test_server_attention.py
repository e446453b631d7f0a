"""The server with a sha-lstm model (issue #12): each row carries its own attention memory, rows
join and leave the batch with memories of different lengths, and a request whose rows' state
would exceed the server's budget is a 400 naming the limit."""

from __future__ import annotations

import time

import pytest
import torch

from lstmgen import LanguageModel, ModelConfig
from lstmgen.server.batcher import Batcher
from lstmgen.tokenizers import CharTokenizer
from test_server_batcher import Collector, reference, spec

pytest.importorskip("fastapi", reason="server tests need the serve extra")
pytest.importorskip("httpx", reason="server tests need httpx")

from fastapi.testclient import TestClient  # noqa: E402

from lstmgen.server.app import create_app  # noqa: E402
from lstmgen.server.protocol import Limits  # noqa: E402

LOCAL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    tok = CharTokenizer.fit(["ROMEO: JULIET, the rose of night.\n"])
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        arch="sha-lstm",
        embedding_size=8,
        hidden_size=8,
        num_layers=2,
        memory=24,  # shorter than prompt + text: the memory slides
        boom_size=8,
    )
    m = LanguageModel(cfg, tok)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.6)
    return m.eval()


CASES = [
    ("ROMEO:", dict(seed=1, temperature=1.0)),
    ("JULIET, the rose of night.\nROMEO: the", dict(seed=2, temperature=0.7, top_k=5)),
    ("R", dict(temperature=0.0)),
    ("the night", dict(seed=4, temperature=1.0, repetition_penalty=1.3)),
]


def test_rows_with_their_own_memory_join_and_leave(model):
    batcher = Batcher(model, max_batch=8)
    batcher.start()
    try:
        alone = []
        for prompt, kw in CASES:
            c = Collector(1)
            batcher.submit([spec(model, prompt, 40, **kw)], c)
            alone.append((c.wait().text[0], c.finish[0]))
        collectors = [Collector(1) for _ in CASES]
        for (prompt, kw), c in zip(CASES[:2], collectors[:2], strict=True):
            batcher.submit([spec(model, prompt, 40, **kw)], c)
        deadline = time.time() + 10
        while not collectors[0].chunks and time.time() < deadline:
            time.sleep(0.001)
        for (prompt, kw), c in zip(CASES[2:], collectors[2:], strict=True):
            batcher.submit([spec(model, prompt, 40, **kw)], c)  # join rows already decoding
        batched = [(c.wait().text[0], c.finish[0]) for c in collectors]
    finally:
        batcher.close()
    assert batched == alone
    assert len(set(batched)) == len(CASES)
    for (prompt, kw), got in zip(CASES, alone, strict=True):
        assert got == reference(model, prompt, 40, **kw)


def test_a_request_over_the_state_budget_is_a_400_naming_the_limit(model):
    big = LanguageModel(model.config.replace(memory=20_000), model.tokenizer).eval()
    # one row: 20,000 x 8 x 4 bytes of memory (0.61 MiB) + h, c, length
    app = create_app(big, "tiny", limits=Limits(max_state_mib=1))
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as client:
        body = {"model": "tiny", "prompt": "ROMEO:", "max_tokens": 3}
        ok = client.post("/v1/completions", json={**body, "n": 1})
        assert ok.status_code == 200, ok.text
        r = client.post("/v1/completions", json={**body, "n": 2})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "n"
    assert err["message"] == (
        "2 completion(s) x 0.61 MiB of model state each (memory 20,000 tokens) is more than "
        "the server's limit of 1 MiB per request"
    )
