"""OpenAI's response objects, built from what the batcher and the scorer return: completions,
their server-sent events, usage and the (legacy) logprobs object; and lstmgen's score object.

Pure functions of plain data: no HTTP, no model, so each shape is testable on its own
(tests/test_server_openai.py). The handlers (handlers.py) decide what to send; this module says
how it looks on the wire.

A choice may start with an echo of its prompt (``echo: true``): its ``Head`` (the prompt's text
and, with ``logprobs``, the prompt's tokens). Generated tokens carry offsets into the generated
text, and are shifted by the echo's length into offsets of the returned text.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .batcher import Chunk, TokenInfo

DONE = b"data: [DONE]\n\n"  # the last event of every stream, as OpenAI


@dataclass(frozen=True)
class Head:
    """What a choice returns before its generated text: the echoed prompt (or nothing)."""

    text: str = ""
    tokens: list[TokenInfo] = field(default_factory=list)


def logprobs_object(tokens: Sequence[TokenInfo], k: int) -> dict[str, Any]:
    """OpenAI's (legacy) logprobs object; ``k`` alternatives per token (0: no ``top_logprobs``)."""
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [t.top or {} for t in tokens] if k > 0 else None,
        "text_offset": [t.offset for t in tokens],
    }


def shifted(tokens: list[TokenInfo], by: int) -> list[TokenInfo]:
    """Offsets into the generated text -> offsets into the returned text (after the echo)."""
    return [dataclasses.replace(t, offset=t.offset + by) for t in tokens] if by else tokens


def usage_object(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def choice_object(
    index: int, text: str, logprobs: dict[str, Any] | None, finish_reason: str | None
) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def sse(data: dict[str, Any], ensure_ascii: bool = False) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return b"data: " + json.dumps(data, ensure_ascii=ensure_ascii).encode() + b"\n\n"


@dataclass
class Completion:
    """One completion request's responses: the whole object, or its stream of chunk objects.
    ``heads[i]`` is choice i's echo; ``logprobs`` the request's (None: no logprobs)."""

    id: str
    created: int
    model: str
    heads: list[Head]
    logprobs: int | None = None
    include_usage: bool = False  # stream_options.include_usage

    def _logprobs(self, tokens: list[TokenInfo]) -> dict[str, Any] | None:
        return None if self.logprobs is None else logprobs_object(tokens, self.logprobs)

    def _object(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def response(
        self,
        texts: list[str],
        tokens: list[list[TokenInfo]],
        finish: list[str | None],
        usage: dict[str, int],
    ) -> dict[str, Any]:
        """The non-streaming response: choice i is ``heads[i]`` then ``texts[i]``."""
        choices = []
        for i, head in enumerate(self.heads):
            lp = self._logprobs(head.tokens + shifted(tokens[i], len(head.text)))
            choices.append(choice_object(i, head.text + texts[i], lp, finish[i]))
        return self._object(choices, usage=usage)

    def event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        """A chunk object as an event; every chunk has ``usage: null`` when the last one will
        carry the usage (OpenAI's ``include_usage``)."""
        if self.include_usage:
            extra = {"usage": None, **extra}
        return sse(self._object(choices, **extra))

    def echo_event(self) -> bytes:
        """The first event with ``echo``: every choice's prompt."""
        return self.event(
            [
                choice_object(i, h.text, self._logprobs(h.tokens), None)
                for i, h in enumerate(self.heads)
            ]
        )

    def chunks_event(self, chunks: list[Chunk]) -> bytes:
        """The chunks the batcher sent since the last event, merged per choice, as one event."""
        merged: dict[int, dict[str, Any]] = {}
        for c in chunks:
            m = merged.setdefault(c.index, {"text": "", "tokens": [], "fin": None})
            m["text"] += c.text
            m["tokens"] += c.tokens
            if c.finish_reason:
                m["fin"] = c.finish_reason
        choices = [
            choice_object(
                i,
                m["text"],
                self._logprobs(shifted(m["tokens"], len(self.heads[i].text))),
                m["fin"],
            )
            for i, m in sorted(merged.items())
        ]
        return self.event(choices)

    def usage_event(self, usage: dict[str, int]) -> bytes:
        """The last event before ``[DONE]`` with ``include_usage``: no choices, the usage."""
        return self.event([], usage=usage)


def error_event(body: dict[str, Any]) -> bytes:
    """An error in the middle of a stream (the status line is long sent): OpenAI's error
    object as the last event."""
    return sse(body, ensure_ascii=True)


def score_object(
    model: str, n_tokens: int, chars: int, tokens: list[TokenInfo], k: int
) -> dict[str, Any]:
    """lstmgen's ``/v1/score`` response: loss, perplexity and bits of a text's ``n_tokens``
    tokens (``chars`` characters), with its logprobs object."""
    loss = -math.fsum(t.logprob for t in tokens) / len(tokens)
    return {
        "object": "score",
        "model": model,
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_token": loss / math.log(2),
        "bits_per_char": loss * n_tokens / math.log(2) / max(chars, 1),
        "logprobs": logprobs_object(tokens, k),
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }
