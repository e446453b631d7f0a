"""OpenAI's response and stream objects built without a server (server/openai.py), and the
sampling settings of a request checked by GenerationConfig (server/protocol.py)."""

from __future__ import annotations

import json
import math

import pytest

from lstmgen import GenerationConfig
from lstmgen.config import SAMPLING_RANGES
from lstmgen.server.batcher import Chunk, TokenInfo
from lstmgen.server.openai import (
    DONE,
    Completion,
    Head,
    error_event,
    logprobs_object,
    score_object,
    shifted,
    sse,
    usage_object,
)
from lstmgen.server.protocol import APIError, Limits, parse_completion


def events(data: bytes) -> list:
    assert data.startswith(b"data: ") and data.endswith(b"\n\n")
    return json.loads(data[6:])


def tokens(*pairs):
    return [TokenInfo(t, -1.0, offset, {t: -1.0}) for t, offset in pairs]


def completion(**kw) -> Completion:
    return Completion(id="cmpl-1", created=7, model="m", **kw)


def test_logprobs_object_and_offsets_after_an_echo():
    toks = tokens(("a", 0), ("b", 1))
    lp = logprobs_object(shifted(toks, 3), 1)
    assert lp == {
        "tokens": ["a", "b"],
        "token_logprobs": [-1.0, -1.0],
        "top_logprobs": [{"a": -1.0}, {"b": -1.0}],
        "text_offset": [3, 4],
    }
    assert logprobs_object(toks, 0)["top_logprobs"] is None
    assert shifted(toks, 0) is toks
    assert usage_object(3, 4) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_a_whole_completion_echoes_then_generates():
    out = completion(heads=[Head("hi", tokens(("h", 0), ("i", 1))), Head()], logprobs=0)
    body = out.response(["!", "?"], [tokens(("!", 0)), []], ["stop", "length"], usage_object(2, 1))
    assert list(body) == ["id", "object", "created", "model", "choices", "usage"]
    assert body["object"] == "text_completion" and body["created"] == 7
    first, second = body["choices"]
    assert first["text"] == "hi!" and first["finish_reason"] == "stop"
    assert first["logprobs"]["text_offset"] == [0, 1, 2]  # the generated "!" after the echo
    assert second == {
        "index": 1,
        "text": "?",
        "logprobs": {"tokens": [], "token_logprobs": [], "top_logprobs": None, "text_offset": []},
        "finish_reason": "length",
    }
    assert (
        completion(heads=[Head()]).response(["x"], [[]], [None], {})["choices"][0]["logprobs"]
        is None
    )


def test_stream_events_merge_chunks_per_choice():
    out = completion(heads=[Head("p"), Head("p")], logprobs=0, include_usage=True)
    echo = events(out.echo_event())
    assert [c["text"] for c in echo["choices"]] == ["p", "p"] and echo["usage"] is None
    chunks = [
        Chunk(1, "b", tokens=tokens(("b", 0))),
        Chunk(0, "a"),
        Chunk(1, "c", "length", tokens(("c", 1)), generated=2),
    ]
    ev = events(out.chunks_event(chunks))
    assert [(c["index"], c["text"], c["finish_reason"]) for c in ev["choices"]] == [
        (0, "a", None),
        (1, "bc", "length"),
    ]
    assert ev["choices"][1]["logprobs"]["text_offset"] == [1, 2]  # shifted by the echo "p"
    last = events(out.usage_event(usage_object(2, 5)))
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 7
    assert "usage" not in events(completion(heads=[Head()]).chunks_event([Chunk(0, "x")]))
    assert DONE == b"data: [DONE]\n\n"


def test_events_keep_text_readable_and_errors_ascii():
    assert sse({"text": "床前"}) == 'data: {"text": "床前"}\n\n'.encode()
    err = APIError(500, "boom ☃", type="server_error").body()
    assert error_event(err).isascii() and events(error_event(err)) == err


def test_score_object():
    s = score_object("m", 2, 4, tokens(("a", 0), ("b", 1)), 0)
    assert s["loss"] == 1.0 and s["perplexity"] == pytest.approx(math.e)
    assert s["bits_per_char"] == pytest.approx(2 / math.log(2) / 4)
    assert s["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


@pytest.mark.parametrize("name", ["temperature", "top_k", "top_p", "repetition_penalty"])
def test_a_setting_generation_config_refuses_is_a_400_on_its_field(name, monkeypatch):
    # The ranges are GenerationConfig's (SAMPLING_RANGES); the server only reports them.
    defaults = GenerationConfig()
    low = SAMPLING_RANGES[name].low
    just_below = low - 1 if name == "top_k" else low - 1e-3
    if name == "top_p":
        just_below = low  # (0, 1]: 0 itself is out
    with pytest.raises(APIError) as err:
        parse_completion({name: just_below}, "m", defaults, Limits())
    assert err.value.status == 400 and err.value.param == name
    # Narrower ranges in GenerationConfig narrow the server's too: nothing else checks.
    monkeypatch.setitem(SAMPLING_RANGES, name, type(SAMPLING_RANGES[name])(low + 2, low + 3))
    value = low + 1 if name == "top_k" else low + 1.0
    with pytest.raises(APIError) as err:
        parse_completion({name: value}, "m", defaults.replace(**{name: low + 2}), Limits())
    assert err.value.param == name and f"{low + 2:g}" in err.value.message


def test_a_number_past_floats_range_is_a_400():
    for name in ("temperature", "top_p", "repetition_penalty"):
        with pytest.raises(APIError) as err:
            parse_completion({name: 10**400}, "m", GenerationConfig(), Limits())
        assert err.value.status == 400 and err.value.param == name
