"""Sampling and streaming generation in NumPy: the same options and the same text stream as
``lstmgen.generate`` / ``lstmgen.sampling`` (repetition penalty, temperature, top-k, top-p, stop
strings, several samples as one batch).

Greedy decoding (temperature 0) gives exactly the PyTorch backend's tokens. With a temperature
the draws come from NumPy's generator seeded with ``seed``: the same seed gives the same text
here, but not the same text as PyTorch's generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..config import GREEDY_BELOW, MIN_TOP_P, GenerationConfig
from ..textstream import Event, TextStreams, prompt_ids, resolve_config, resolve_seed
from .layers import softmax

# --- logits (B, V) -> next token (B,) ---------------------------------------------------------


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL's penalty (Keskar et al. 2019): seen tokens' positive logits are divided by
    ``penalty``, negative ones multiplied."""
    if penalty == 1.0:
        return logits
    penalised = np.where(logits > 0, logits / penalty, logits * penalty)
    return np.where(seen, penalised, logits)


def filter_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest logits of each row (ties at the k-th value too)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = -np.partition(-logits, k - 1, axis=-1)[:, k - 1 : k]  # (B, 1) the k-th largest
    return np.where(logits < kth, -np.inf, logits)


def filter_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens
    whose probability reaches ``p``; the most likely token always stays."""
    if p >= 1.0:
        return logits
    p = max(p, MIN_TOP_P)  # as lstmgen.sampling: tiny values take their limit (issue #10)
    order = np.argsort(-logits, axis=-1, kind="stable")  # (B, V) most likely first
    probs = softmax(np.take_along_axis(logits, order, axis=-1))
    before = np.cumsum(probs, axis=-1) - probs  # mass of strictly better tokens
    drop = np.zeros(logits.shape, dtype=bool)
    np.put_along_axis(drop, order, before >= p, axis=-1)
    return np.where(drop, -np.inf, logits)


def next_token(
    logits: np.ndarray,
    config: GenerationConfig,
    rng: np.random.Generator,
    seen: np.ndarray | None = None,
) -> np.ndarray:
    """One token per row of ``logits`` (B, V) -> (B,). Temperature 0 is greedy."""
    logits = logits.astype(np.float64)
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
    if config.temperature < GREEDY_BELOW:  # 0, or too small to divide by: greedy
        return logits.argmax(axis=-1)
    logits = filter_top_p(filter_top_k(logits / config.temperature, config.top_k), config.top_p)
    cdf = np.cumsum(softmax(logits), axis=-1)  # (B, V)
    u = rng.random((len(cdf), 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=-1), cdf.shape[-1] - 1)  # inverse-CDF draw


# --- the stream ---------------------------------------------------------------------------


def prime(model: Any, prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, Any]:
    """Run each distinct prompt once; -> last logits (B, V) and the state of all B prompts.
    Each part of the state is gathered along its own batch axis (``model.state_batch_dims``:
    1 for h and c, 0 for a sha-lstm's memory and lengths), so the memory is carried too."""
    unique: dict[tuple[int, ...], int] = {}
    for p in prompts:
        unique.setdefault(tuple(p), len(unique))
    logits, states = [], []
    for p in unique:
        out, state = model(np.array([p], dtype=np.int64))  # (1, T, V)
        logits.append(out[:, -1])
        states.append(state if isinstance(state, tuple) else (state,))
    rows = np.array([unique[tuple(p)] for p in prompts])  # (B,)
    last = np.concatenate(logits)[rows]  # (B, V)
    dims = model.state_batch_dims
    parts = tuple(
        np.take(np.concatenate(s, axis=d), rows, axis=d)
        for s, d in zip(zip(*states, strict=True), dims, strict=True)
    )
    return last, parts if len(parts) > 1 else parts[0]


def stream_text(
    model: Any,
    prompts: Sequence[str],
    config: GenerationConfig | None = None,
    unknown: str = "error",
    random: Callable[[int], Any] = np.random.default_rng,
    **overrides: Any,
) -> Iterator[Event]:
    """One continuation per prompt as a stream of ``Event``s (see ``lstmgen.generate``).
    ``random(seed)`` makes the generator of the draws (its ``random(shape)`` is called; the
    onnx backend passes one that replays PyTorch's stream).

    >>> for ev in stream_text(model, ["ROMEO:"] * 2, temperature=0.8, seed=1):  # doctest: +SKIP
    ...     print(ev.index, ev.text)
    """
    cfg = resolve_config(model, config, **overrides)
    tok = model.tokenizer
    seed = resolve_seed(cfg)
    rng = random(seed)
    ids = prompt_ids(tok, prompts, unknown)
    B = len(ids)
    logits, state = prime(model, ids)
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = np.zeros((B, model.config.vocab_size), dtype=bool)
        for b, p in enumerate(ids):
            seen[b, p[1:]] = True
    streams = TextStreams(tok, B, cfg.stop, prompts)
    for step in range(cfg.max_new_tokens):
        nxt = next_token(logits, cfg, rng, seen)  # (B,)
        if seen is not None:
            seen[np.arange(B), nxt] = True
        yield from streams.push(nxt.tolist(), last=step == cfg.max_new_tokens - 1)
        if streams.all_done:
            break
        out, state = model(nxt[:, None], state)  # (B, 1, V)
        logits = out[:, -1]
    yield from streams.close()
