"""Token ids -> streamed text, shared by every generator (PyTorch, NumPy, server); torch-free.

Each sample's ids are decoded incrementally (a multi-byte character is never split), text that
might be the start of a stop string is held back until it is not, and a stop string ends the
sample with the text before it.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .config import GenerationConfig
from .errors import ConfigError
from .models.base import Model


@dataclass
class Event:
    """New text for sample ``index``; ``finish_reason`` ("stop" | "length") on its last event."""

    index: int
    text: str
    finish_reason: str | None = None


def resolve_config(
    model: Model, config: GenerationConfig | None = None, **overrides: Any
) -> GenerationConfig:
    """``config`` (or the model's default) with ``overrides``; unknown options are errors."""
    base = config or getattr(model, "generation_config", None) or GenerationConfig()
    unknown = sorted(set(overrides) - set(GenerationConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown generation option(s): {', '.join(unknown)}")
    return base.replace(**{k: v for k, v in overrides.items() if v is not None})


def prompt_ids(
    tokenizer: Any, prompts: Sequence[str], unknown: str, label: str | None = None
) -> list[list[int]]:
    """Each prompt as ``[bos_id, *encode(prompt)]``: what generation primes the state with.
    With ``label``, its token goes after ``bos_id``, where a document of it starts in training
    (documents.py); an unknown label is one error listing the known ones."""
    head = [tokenizer.bos_id]
    if label is not None:
        head.append(tokenizer.label_id(label))
    return [[*head, *tokenizer.encode(p, unknown=unknown)] for p in prompts]


def resolve_seed(config: GenerationConfig) -> int:
    """The config's seed, or a fresh random one."""
    return config.seed if config.seed is not None else random.SystemRandom().randrange(2**63)


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string.

    Only the last ``max(len(stop)) - 1`` characters can matter; they are scanned once
    (``StopMatcher``), so the work is linear in the stop strings' length."""
    matcher = StopMatcher(stops)
    matcher.feed(text[-(matcher.longest - 1) :] if matcher.longest > 1 else "")
    return matcher.held


@functools.lru_cache(maxsize=64)
def _failure(stop: str) -> tuple[int, ...]:
    """Knuth-Morris-Pratt's failure function: ``f[j]`` is the length of the longest proper
    prefix of ``stop[: j + 1]`` that is also its suffix. O(len(stop)); cached because every row
    of a request (n choices) has the same stop strings."""
    f = [0] * len(stop)
    k = 0
    for j in range(1, len(stop)):
        while k and stop[j] != stop[k]:
            k = f[k - 1]
        if stop[j] == stop[k]:
            k += 1
        f[j] = k
    return tuple(f)


class StopMatcher:
    """Stop strings searched for in a growing text, each character looked at once.

    For each stop string it keeps how many of its first characters the text ends with
    (Knuth-Morris-Pratt), so a new piece of text costs amortised O(1) per character and stop
    string, however long the stop strings: re-checking every suffix of the text against every
    prefix of a stop string after each token was O(len(stop)^2) per token (issue #10: four
    900k-character stop strings slowed every other stream of the server to a third).

    >>> m = StopMatcher(["aab"]); m.feed("aaa"), m.held, m.feed("b")
    (None, 2, 1)
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = list(stops)
        self.failures = [_failure(s) for s in self.stops]
        self.matched = [0] * len(self.stops)  # per stop: characters of it the text ends with
        self.fed = 0  # characters fed so far
        self.longest = max(map(len, self.stops), default=0)

    @property
    def held(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string:
        what must be held back, as it may yet become a stop string."""
        return max(self.matched, default=0)

    def feed(self, text: str) -> int | None:
        """Append ``text``; return where (in the whole text) the earliest stop string found in
        it begins, or None. Occurrences that began in earlier text count too."""
        best = None
        for i, (stop, fail) in enumerate(zip(self.stops, self.failures, strict=True)):
            k, m = self.matched[i], len(stop)
            for j, ch in enumerate(text):
                while k and stop[k] != ch:
                    k = fail[k - 1]
                if stop[k] == ch:
                    k += 1
                if k == m:
                    # One string's occurrences all have its length: the first to end is the
                    # first to begin, so later ones need not be recorded.
                    start = self.fed + j + 1 - m
                    best = start if best is None or start < best else best
                    k = fail[k - 1]
            self.matched[i] = k
        self.fed += len(text)
        return best


class TextStream:
    """One sample's ids -> text: incremental decoding (a multi-byte character is never split),
    the stop-string search, and the hold-back of text that may yet become a stop string. The one
    implementation behind ``TextStreams`` (the generators) and the server's batcher rows.

    ``after`` is the text it continues (a word model's first word is spaced from a prompt that
    ends mid-line).

    >>> s = TextStream(tokenizer, ["\\n\\n"])  # doctest: +SKIP
    >>> s.push([id_a, id_b], last=False)  # ("ab", None); None while held  # doctest: +SKIP
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], after: str = ""):
        self.decoder = tokenizer.stream_decoder(after)
        self.matcher = StopMatcher(stops)
        self.text = ""  # generated text so far
        self.emitted = 0  # how much of it has been sent
        self.done = False

    def push(self, ids: Sequence[int], last: bool) -> tuple[str, str | None] | None:
        """Add new ``ids``; ``last`` when no more will come (max_new_tokens reached). Returns the
        text to send now and the finish reason ("stop" | "length" | None), or None when all new
        text is held back. The text is what pushing the ids one at a time gives: a stop string
        ends it at its first occurrence, whichever id completed it."""
        new = self.decoder.steps(ids) + (self.decoder.flush() if last else "")
        self.text += new
        sent = self.emitted
        hit = self.matcher.feed(new)
        if hit is not None:
            self.done, self.emitted = True, hit
            return self.text[sent:hit], "stop"
        upto = len(self.text) if last else len(self.text) - self.matcher.held
        self.done = last
        if upto > sent or last:
            self.emitted = upto
            return self.text[sent:upto], "length" if last else None
        return None


def whole_texts(tokenizer: Any, rows: Any, prompts: Sequence[str] = ()) -> list[str]:
    """The text of each row of ``rows`` (B, N ids, a NumPy array) continuing ``prompts[b]``,
    when no stop string applies: what ``TextStreams`` gives for the rows pushed block by block
    (``generate.complete_texts``). All rows at once where the tokenizer can
    (``Tokenizer.decode_rows``), else a ``TextStream`` per row, pushed once."""
    texts = tokenizer.decode_rows(rows)
    if texts is not None:
        return texts
    streams = TextStreams(tokenizer, len(rows), (), prompts)
    for _ in streams.push_block(rows.tolist(), last=True):
        pass
    return streams.texts


class TextStreams:
    """The text side of B samples decoded together; ``prompts`` (B) are the texts they continue.

    >>> streams = TextStreams(tokenizer, 2, stops=["\\n\\n"])  # doctest: +SKIP
    >>> for ev in streams.push(next_ids, last=False): ...  # once per step  # doctest: +SKIP
    """

    def __init__(
        self, tokenizer: Any, batch: int, stops: Sequence[str], prompts: Sequence[str] = ()
    ):
        after = list(prompts) or [""] * batch
        self.streams = [TextStream(tokenizer, stops, a) for a in after]

    @property
    def all_done(self) -> bool:
        return all(s.done for s in self.streams)

    @property
    def texts(self) -> list[str]:
        """Generated text so far, per sample."""
        return [s.text for s in self.streams]

    def push(self, ids: Sequence[int], last: bool) -> Iterator[Event]:
        """One new id per sample; ``last`` when no more will come (max_new_tokens reached)."""
        return self.push_block([(t,) for t in ids], last)

    def push_block(self, rows: Sequence[Sequence[int]], last: bool) -> Iterator[Event]:
        """Several new ids per sample (``rows[b]`` for sample b) as one event per sample."""
        for b, ids in enumerate(rows):
            stream = self.streams[b]
            if stream.done:
                continue
            out = stream.push(ids, last)
            if out is not None:
                yield Event(b, *out)

    def close(self) -> Iterator[Event]:
        """End samples that never got a token (max_new_tokens == 0)."""
        for b, stream in enumerate(self.streams):
            if not stream.done:
                stream.done = True
                yield Event(b, "", "length")
