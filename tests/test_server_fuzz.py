"""Whatever a client sends, the answer is never a 5xx: a property-based fuzz of the request
parser (hypothesis) over JSON-ish bodies, random bytes, wrong types, huge numbers, deep nesting
and odd unicode (lone surrogates included), plus the three bodies that gave 500s in issue #10."""

from __future__ import annotations

import json

import pytest

pytest.importorskip(
    "fastapi", reason="server tests need the serve extra: pip install lstmgen[serve]"
)
pytest.importorskip("httpx", reason="server tests need httpx (pip install httpx)")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lstmgen import LanguageModel, ModelConfig  # noqa: E402
from lstmgen.server.app import create_app  # noqa: E402
from lstmgen.server.protocol import Limits  # noqa: E402
from lstmgen.tokenizers import CharTokenizer  # noqa: E402

JSON = {"Content-Type": "application/json"}
PATHS = ("/v1/completions", "/v1/score")
FIELDS = (
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream",
    "stream_options", "echo", "logprobs", "top_k", "repetition_penalty", "unknown", "user",
    "frequency_penalty", "presence_penalty", "best_of", "suffix", "logit_bias", "text",
    "include_usage",
)  # fmt: skip


@pytest.fixture(scope="module")
def client():
    torch.manual_seed(0)
    tok = CharTokenizer.fit(["ROMEO: the rose, 床前明月光\n"])
    cfg = ModelConfig(vocab_size=tok.vocab_size, embedding_size=8, hidden_size=8, num_layers=2)
    model = LanguageModel(cfg, tok).eval()
    # Small limits keep the requests that are valid cheap to answer.
    limits = Limits(max_prompt_tokens=32, max_tokens=4, max_choices=4, max_score_tokens=64)
    app = create_app(model, "tiny", limits=limits, max_batch=4, stream_interval=0)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


def test_the_bodies_that_gave_500s_are_400s(client):
    deep = b"[" * 3000 + b"]" * 3000  # RecursionError in json.loads
    huge = b'{"prompt": "a", "seed": ' + b"7" * 5000 + b"}"  # int max str digits ValueError
    surrogate = b'{"\\ud800": 1}'  # the error naming the field could not be encoded
    for body in (deep, huge, surrogate, b'{"prompt": "\\udfff"}', b'{"text": "\\ud83d"}'):
        for path in PATHS:
            r = client.post(path, content=body, headers=JSON)
            assert r.status_code == 400, (path, body[:40], r.text)
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = client.post(PATHS[0], content=huge, headers=JSON)
    assert r.json()["error"]["message"] == "a number in the request body has too many digits"


# Text with every kind of code point, lone surrogates included (hypothesis leaves them out of
# st.text() unless asked).
odd_text = st.text(st.characters(exclude_categories=()), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and the infinities too (json.dumps writes NaN / Infinity)
    | odd_text
    | st.sampled_from(["ROMEO:", "tiny", "error", "drop", "replace", ""])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)
requests = st.dictionaries(st.sampled_from(FIELDS) | odd_text, values, max_size=6)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["request", "value", "bytes", "deep", "number", "utf8"]))
    if kind == "request":
        return json.dumps(draw(requests)).encode()  # ASCII, lone surrogates as \\udXXX
    if kind == "value":
        return json.dumps(draw(values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "deep":
        depth = draw(st.integers(1, 5000))
        opener = draw(st.sampled_from(["[", '{"prompt": ', '{"a": [']))
        return (opener * depth).encode()  # unterminated or not: both must be a 400
    if kind == "number":
        digits = draw(st.integers(1, 6000))
        field = draw(st.sampled_from(["seed", "max_tokens", "temperature", "n", "prompt"]))
        number = draw(st.sampled_from(["9" * digits, "-1" + "0" * digits, f"1e{digits}"]))
        return f'{{"{field}": {number}}}'.encode()
    # Raw UTF-8 (not escaped), with lone surrogates passed through as invalid UTF-8.
    text = json.dumps(draw(requests), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def post_all(client, body: bytes, path: str) -> int:
    r = client.post(path, content=body, headers=JSON)
    assert r.status_code < 500, (path, body[:200], r.text)
    return r.status_code


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )


@fuzz_settings(200)
@given(body=bodies(), path=st.sampled_from(PATHS))
def test_no_body_gets_a_5xx(client, body, path):
    post_all(client, body, path)


@pytest.mark.slow
def test_no_body_gets_a_5xx_in_thousands_of_requests(client):
    statuses: dict[int, int] = {}

    @fuzz_settings(3500)
    @given(body=bodies(), path=st.sampled_from(PATHS))
    def fuzz(body, path):
        status = post_all(client, body, path)
        statuses[status] = statuses.get(status, 0) + 1

    fuzz()
    total = sum(statuses.values())
    print(f"\n{total} fuzzed requests, statuses {dict(sorted(statuses.items()))}")
    assert total >= 3000 and not any(s >= 500 for s in statuses)
