"""The one streaming generator behind the CLI, the Python API (and later the server).

The prompt primes the recurrent state once; then each step feeds only the newest token with the
carried state (an LSTM never re-reads its prefix). Several samples run as one batch. Text comes
out as ``Event``s: the new text of sample ``index``, decoded incrementally so a multi-byte
character is never split, and held back while it might be the start of a stop string.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .config import GenerationConfig
from .model import cat_states, index_state, rnn_kernels
from .sampling import next_token
from .steppers import make_stepper
from .textstream import Event, TextStreams, prompt_ids, resolve_config, resolve_seed


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
    seed = resolve_seed(cfg)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    ids = prompt_ids(tok, prompts, unknown)
    B = len(ids)
    logits, state = prime(model, ids)
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=model.device)
        for b, p in enumerate(ids):
            seen[b, p[1:]] = True
    # Small CPU batches step faster through fused matmuls than through nn.LSTM (steppers.py).
    stepper = make_stepper(model, B)
    streams = TextStreams(tok, B, cfg.stop)
    try:
        for step in range(cfg.max_new_tokens):
            nxt = next_token(logits, cfg, gen, seen)  # (B,)
            if seen is not None:
                seen[torch.arange(B), nxt] = True
            yield from streams.push(nxt.tolist(), last=step == cfg.max_new_tokens - 1)
            if streams.all_done:
                break
            if stepper is not None:
                logits, state = stepper(nxt, state)  # (B, V)
            else:
                out, state = model(nxt[:, None], state)  # (B, 1, V)
                logits = out[:, -1]
        yield from streams.close()
    finally:
        model.train(was_training)
