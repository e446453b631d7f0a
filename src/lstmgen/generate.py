"""The one streaming generator behind the CLI, the Python API (and later the server).

The prompt primes the recurrent state once; then each step feeds only the newest token with the
carried state (an LSTM never re-reads its prefix). Several samples run as one batch. Text comes
out as ``Event``s: the new text of sample ``index``, decoded incrementally so a multi-byte
character is never split, and held back while it might be the start of a stop string.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .config import GenerationConfig
from .errors import ConfigError
from .model import NATIVE_RNN_BELOW, cat_states, index_state, rnn_kernels
from .sampling import next_token


@dataclass
class Event:
    """New text for sample ``index``; ``finish_reason`` ("stop" | "length") on its last event."""

    index: int
    text: str
    finish_reason: str | None = None


def resolve_config(
    model: Any, config: GenerationConfig | None = None, **overrides: Any
) -> GenerationConfig:
    base = config or getattr(model, "generation_config", None) or GenerationConfig()
    known = set(GenerationConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown generation option(s): {', '.join(unknown)}")
    return base.replace(**{k: v for k, v in overrides.items() if v is not None})


@torch.inference_mode()
def prime(model: Any, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, Any]:
    """Run each prompt once; return the last logits (B, V) and the state for all B prompts.

    Identical prompts are run once and their state is copied."""
    unique: dict[tuple[int, ...], int] = {}
    for p in prompts:
        unique.setdefault(tuple(p), len(unique))
    logits, states = [], []
    for p in unique:
        ids = torch.tensor([p], dtype=torch.long, device=model.device)  # (1, T)
        with rnn_kernels(model.device, steps=len(p)):
            out, state = model(ids)
        logits.append(out[:, -1])  # (1, V)
        states.append(state)
    rows = torch.tensor([unique[tuple(p)] for p in prompts], device=model.device)  # (B,)
    state = states[0] if len(states) == 1 else cat_states(states)
    return torch.cat(logits)[rows], index_state(state, rows)  # (B, V), (L, B, H)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


@torch.inference_mode()
def stream_text(
    model: Any,
    prompts: Sequence[str],
    config: GenerationConfig | None = None,
    unknown: str = "error",
    **overrides: Any,
) -> Iterator[Event]:
    """Generate one continuation per prompt, as a stream of ``Event``s.

    >>> for ev in stream_text(model, ["ROMEO:"] * 2, temperature=0.8, seed=1):  # doctest: +SKIP
    ...     print(ev.index, ev.text)
    """
    cfg = resolve_config(model, config, **overrides)
    tok = model.tokenizer
    was_training = model.training
    model.eval()
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**63)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    ids = [[tok.bos_id, *tok.encode(p, unknown=unknown)] for p in prompts]
    B = len(ids)
    logits, state = prime(model, ids)
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=model.device)
        for b, p in enumerate(ids):
            seen[b, p[1:]] = True
    # Small CPU batches step faster through fused matmuls than through nn.LSTM (model.py).
    stepper = model.stepper() if model.device.type == "cpu" and B < NATIVE_RNN_BELOW else None
    decoders = [tok.stream_decoder() for _ in range(B)]
    texts = [""] * B  # generated text so far, per sample
    emitted = [0] * B  # how much of it has been sent
    done = [False] * B
    try:
        for step in range(cfg.max_new_tokens):
            nxt = next_token(logits, cfg, gen, seen)  # (B,)
            if seen is not None:
                seen[torch.arange(B), nxt] = True
            last = step == cfg.max_new_tokens - 1
            for b, t in enumerate(nxt.tolist()):
                if done[b]:
                    continue
                texts[b] += decoders[b].step(t) + (decoders[b].flush() if last else "")
                hit = _find_stop(texts[b], cfg.stop, emitted[b])
                if hit is not None:
                    done[b] = True
                    yield Event(b, texts[b][emitted[b] : hit], "stop")
                    continue
                upto = len(texts[b]) if last else len(texts[b]) - _held_back(texts[b], cfg.stop)
                if upto > emitted[b] or last:
                    yield Event(b, texts[b][emitted[b] : upto], "length" if last else None)
                    emitted[b] = upto
                done[b] = done[b] or last
            if all(done):
                break
            if stepper is not None:
                logits, state = stepper(nxt, state)  # (B, V)
            else:
                out, state = model(nxt[:, None], state)  # (B, 1, V)
                logits = out[:, -1]
        for b in range(B):  # max_new_tokens == 0
            if not done[b]:
                yield Event(b, "", "length")
    finally:
        model.train(was_training)


def _find_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    """Index of the earliest stop string in ``text[start:]`` (text before ``start`` was sent
    only because no stop string could begin there)."""
    best = None
    for s in stops:
        i = text.find(s, start)
        if i != -1 and (best is None or i < best):
            best = i
    return best
