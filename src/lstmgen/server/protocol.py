"""Requests of the OpenAI completions API, checked field by field into typed objects.

Every problem becomes an ``APIError`` carrying OpenAI's error shape::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "top_p", "code": null}}

Unknown fields are errors (as everywhere in lstmgen). OpenAI fields lstmgen does not implement
are accepted only at their neutral value (``frequency_penalty: 0``, ``best_of: 1``...), so a
client never silently gets something other than what it asked for.

Which sampling settings are valid is ``GenerationConfig``'s to say (the CLI and the API check
the same way); this module checks their JSON types and the server's own upper limits, asks
``GenerationConfig`` about the rest, and reports a refusal under the request's field name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config import SAMPLING_RANGES, GenerationConfig
from ..documents import check_features
from ..errors import ConfigError, LstmgenError

MAX_STOP = 4  # as OpenAI
MAX_LOGPROBS = 5  # as OpenAI
UNKNOWN_POLICIES = ("error", "drop", "replace")
# The server's upper limits on settings GenerationConfig leaves open: OpenAI's for temperature, a
# penalty past which nothing changes, and top_k within a C int.
MAX_TEMPERATURE = 2.0
MAX_REPETITION_PENALTY = 10.0
MAX_TOP_K = 2**31 - 1


class APIError(Exception):
    """An error response: HTTP ``status`` and OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ):
        # The message and param may quote the request (a field name, a prompt); a lone surrogate
        # in them would make the error response itself fail to encode as UTF-8 (a 500, #10).
        message = _utf8(message)
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            None if param is None else _utf8(param),
            code,
            type,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _utf8(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates) replaced by '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True)
class Limits:
    """What the server accepts (``lstmgen serve --help`` sets them)."""

    max_prompt_tokens: int = 4096  # per prompt
    max_tokens: int = 2048  # the largest max_tokens a request may ask for
    max_choices: int = 16  # prompts x n per request
    max_score_tokens: int = 16384
    max_body_bytes: int = 4 * 1024 * 1024
    # the state a request's sequences carry together (MiB): a few KiB per LSTM sequence, but
    # memory x hidden x 4 bytes per sequence of an attention model (issue #12)
    max_state_mib: int = 1024


@dataclass
class CompletionRequest:
    prompts: list[str | list[int]]  # text, or token ids
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    n: int
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool
    echo: bool
    logprobs: int | None
    unknown: str | None
    label: str | None = None  # a label of the model (issue #13): its token primes every prompt
    features: tuple[float, ...] | None = None  # the model's feature vector: the initial state


@dataclass
class ScoreRequest:
    text: str
    unknown: str | None
    logprobs: int  # top alternatives per position (0 = only the scored token)


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param, code)


def _integer(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"{name} must be an integer, got {type(v).__name__}", name)
    if not low <= v <= high:
        raise _bad(f"{name} must be between {low} and {high}, got {v}", name)
    return v


def _setting(
    body: dict,
    param: str,
    defaults: GenerationConfig,
    *,
    cap: float = math.inf,
    integer: bool = False,
    field: str | None = None,
    default: Any = None,
) -> Any:
    """The sampling setting ``param`` of the request (``field`` of ``GenerationConfig``), or
    ``default`` (the model's default when None) if absent. Valid means: of the right JSON type,
    at most the server's ``cap``, and accepted by ``GenerationConfig``."""
    field = field or param
    v = body.get(param)
    if v is None:
        return getattr(defaults, field) if default is None else default
    if integer:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise _bad(f"{param} must be an integer, got {type(v).__name__}", param)
    elif isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(f"{param} must be a number, got {type(v).__name__}", param)
    if v <= cap:
        try:
            value = v if integer else float(v)  # OverflowError: an int past float's range
            defaults.replace(**{field: value})
            return value
        except (ConfigError, OverflowError):
            pass
    valid = SAMPLING_RANGES[field]
    within = (
        f"between {int(valid.low)} and {int(min(cap, valid.high))}" if integer else valid.text(cap)
    )
    raise _bad(f"{param} must be {within}, got {v}", param)


def _boolean(body: dict, name: str) -> bool:
    v = body.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _bad(f"{name} must be true or false, got {type(v).__name__}", name)
    return v


def _unknown_policy(body: dict) -> str | None:
    """The request's policy; None when absent (the model's default: ``<unk>`` for a word model
    that has it, else an error)."""
    v = body.get("unknown")
    if v is not None and v not in UNKNOWN_POLICIES:
        raise _bad(f"unknown must be one of {', '.join(UNKNOWN_POLICIES)}", "unknown")
    return v


def check_model(body: dict, served: str) -> None:
    """``model`` may be left out; when given it must name the served model (OpenAI: 404)."""
    name = body.get("model")
    if name is None:
        return
    if not isinstance(name, str):
        raise _bad("model must be a string", "model")
    if name != served:
        raise APIError(
            404,
            f"model {name!r} does not exist; this server has {served!r}",
            "model",
            "model_not_found",
        )


def _reject_unknown(body: dict, known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise _bad(f"unknown field(s): {', '.join(unknown)}", unknown[0])


# OpenAI fields accepted only at the value that means "off".
_NEUTRAL = {
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "best_of": (1,),
    "suffix": ("",),
    "logit_bias": ({},),
}


def _prompts(v: Any) -> list[str | list[int]]:
    if v is None:
        return [""]
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and v:
        if all(isinstance(p, str) for p in v):
            return list(v)
        if all(isinstance(t, int) and not isinstance(t, bool) for t in v):
            return [list(v)]
        if all(
            isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
            for p in v
        ):
            return [list(p) for p in v]
    raise _bad(
        "prompt must be a string, a list of strings, a list of token ids or a list of lists of"
        " token ids",
        "prompt",
    )


def _stop(v: Any, defaults: GenerationConfig) -> tuple[str, ...]:
    if v is None:
        return tuple(defaults.stop)
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _bad("stop must be a non-empty string or a list of non-empty strings", "stop")
    if len(stops) > MAX_STOP:
        raise _bad(f"stop may have at most {MAX_STOP} strings, got {len(stops)}", "stop")
    try:  # empty strings, the longest string (config.MAX_STOP_CHARS)
        defaults.replace(stop=stops)
    except ConfigError as exc:
        raise _bad(str(exc), "stop") from None
    return tuple(stops)


def parse_completion(
    body: Any, served: str, defaults: GenerationConfig, limits: Limits
) -> CompletionRequest:
    """Check a ``/v1/completions`` body; unset fields take the model's generation defaults."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    _reject_unknown(
        body,
        {
            "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed",
            "stream", "stream_options", "echo", "logprobs", "top_k", "repetition_penalty",
            "unknown", "user", "label", "features", *_NEUTRAL,
        },
    )  # fmt: skip
    check_model(body, served)
    label, features = _conditioning(body)
    for name, neutral in _NEUTRAL.items():
        if body.get(name) is not None and body[name] not in neutral:
            raise _bad(f"{name} is not supported by lstmgen (leave it out)", name)
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise _bad("user must be a string", "user")
    prompts = _prompts(body.get("prompt"))
    n = _integer(body, "n", 1, 1, limits.max_choices)
    assert n is not None
    if len(prompts) * n > limits.max_choices:
        raise _bad(
            f"{len(prompts)} prompt(s) x n={n} is more than {limits.max_choices} completions"
            " per request",
            "n",
        )
    stream = _boolean(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _bad("stream_options is only allowed with stream: true", "stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise _bad("stream_options may only hold include_usage", "stream_options")
        include_usage = _boolean(options, "include_usage")
    seed = _integer(body, "seed", defaults.seed, -(2**63), 2**63 - 1 - limits.max_choices)
    return CompletionRequest(
        prompts=prompts,
        max_tokens=_setting(
            body,
            "max_tokens",
            defaults,
            cap=limits.max_tokens,
            integer=True,
            field="max_new_tokens",
            default=min(defaults.max_new_tokens, limits.max_tokens),
        ),
        temperature=_setting(body, "temperature", defaults, cap=MAX_TEMPERATURE),
        top_p=_setting(body, "top_p", defaults),
        top_k=_setting(body, "top_k", defaults, cap=MAX_TOP_K, integer=True),
        repetition_penalty=_setting(
            body, "repetition_penalty", defaults, cap=MAX_REPETITION_PENALTY
        ),
        n=n,
        stop=_stop(body.get("stop"), defaults),
        seed=seed,
        stream=stream,
        include_usage=include_usage,
        echo=_boolean(body, "echo"),
        logprobs=_integer(body, "logprobs", None, 0, MAX_LOGPROBS),
        unknown=_unknown_policy(body),
        label=label,
        features=features,
    )


def _conditioning(body: dict) -> tuple[str | None, tuple[float, ...] | None]:
    """The lstmgen extras ``label`` (a string) and ``features`` (a list of finite numbers);
    whether the model knows the label or takes vectors of this length is the handler's check."""
    label = body.get("label")
    if label is not None and not isinstance(label, str):
        raise _bad("label must be a string", "label")
    features = body.get("features")
    if features is None:
        return label, None
    try:
        return label, tuple(check_features(features))
    except LstmgenError as exc:
        raise _bad(str(exc), "features") from None


def parse_score(body: Any, served: str) -> ScoreRequest:
    """Check a ``/v1/score`` body: ``{"text": "...", "model"?, "logprobs"?, "unknown"?}``."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    _reject_unknown(body, {"model", "text", "logprobs", "unknown"})
    check_model(body, served)
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise _bad("text must be a non-empty string", "text")
    logprobs = _integer(body, "logprobs", 0, 0, MAX_LOGPROBS)
    assert logprobs is not None
    return ScoreRequest(text=text, unknown=_unknown_policy(body), logprobs=logprobs)
