"""Token ids -> streamed text, shared by every generator (PyTorch, NumPy, server); torch-free.

Each sample's ids are decoded incrementally (a multi-byte character is never split), text that
might be the start of a stop string is held back until it is not, and a stop string ends the
sample with the text before it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .config import GenerationConfig
from .errors import ConfigError


@dataclass
class Event:
    """New text for sample ``index``; ``finish_reason`` ("stop" | "length") on its last event."""

    index: int
    text: str
    finish_reason: str | None = None


def resolve_config(
    model: Any, config: GenerationConfig | None = None, **overrides: Any
) -> GenerationConfig:
    """``config`` (or the model's default) with ``overrides``; unknown options are errors."""
    base = config or getattr(model, "generation_config", None) or GenerationConfig()
    unknown = sorted(set(overrides) - set(GenerationConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown generation option(s): {', '.join(unknown)}")
    return base.replace(**{k: v for k, v in overrides.items() if v is not None})


def prompt_ids(tokenizer: Any, prompts: Sequence[str], unknown: str) -> list[list[int]]:
    """Each prompt as ``[bos_id, *encode(prompt)]``: what generation primes the state with."""
    return [[tokenizer.bos_id, *tokenizer.encode(p, unknown=unknown)] for p in prompts]


def resolve_seed(config: GenerationConfig) -> int:
    """The config's seed, or a fresh random one."""
    return config.seed if config.seed is not None else random.SystemRandom().randrange(2**63)


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def find_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    """Index of the earliest stop string in ``text[start:]`` (text before ``start`` was sent
    only because no stop string could begin there)."""
    best = None
    for s in stops:
        i = text.find(s, start)
        if i != -1 and (best is None or i < best):
            best = i
    return best


class TextStreams:
    """The text side of B samples decoded together; ``prompts`` (B) are the texts they continue.

    >>> streams = TextStreams(tokenizer, 2, stops=["\\n\\n"])  # doctest: +SKIP
    >>> for ev in streams.push(next_ids, last=False): ...  # once per step  # doctest: +SKIP
    """

    def __init__(
        self, tokenizer: Any, batch: int, stops: Sequence[str], prompts: Sequence[str] = ()
    ):
        self.stops = list(stops)
        # A word model's first word is spaced from a prompt that ends mid-line.
        after = list(prompts) or [""] * batch
        self.decoders = [tokenizer.stream_decoder(a) for a in after]
        self.texts = [""] * batch  # generated text so far, per sample
        self.emitted = [0] * batch  # how much of it has been sent
        self.done = [False] * batch

    @property
    def all_done(self) -> bool:
        return all(self.done)

    def push(self, ids: Sequence[int], last: bool) -> Iterator[Event]:
        """One new id per sample; ``last`` when no more will come (max_new_tokens reached)."""
        return self.push_block([(t,) for t in ids], last)

    def push_block(self, rows: Sequence[Sequence[int]], last: bool) -> Iterator[Event]:
        """Several new ids per sample (``rows[b]`` for sample b) as one event per sample. The
        text is what pushing them one at a time gives: a stop string ends it at its first
        occurrence whichever id completed it."""
        for b, ids in enumerate(rows):
            if self.done[b]:
                continue
            dec = self.decoders[b]
            self.texts[b] += dec.steps(ids) + (dec.flush() if last else "")
            text, sent = self.texts[b], self.emitted[b]
            hit = find_stop(text, self.stops, sent)
            if hit is not None:
                self.done[b] = True
                yield Event(b, text[sent:hit], "stop")
                continue
            upto = len(text) if last else len(text) - held_back(text, self.stops)
            if upto > sent or last:
                yield Event(b, text[sent:upto], "length" if last else None)
                self.emitted[b] = upto
            self.done[b] = last

    def close(self) -> Iterator[Event]:
        """End samples that never got a token (max_new_tokens == 0)."""
        for b, done in enumerate(self.done):
            if not done:
                self.done[b] = True
                yield Event(b, "", "length")
