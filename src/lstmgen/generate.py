"""The one streaming generator behind the CLI, the Python API (and later the server).

The prompt primes the recurrent state once; then each step feeds only the newest token with the
carried state (an LSTM never re-reads its prefix). Several samples run as one batch. Text comes
out as ``Event``s: the new text of sample ``index``, decoded incrementally so a multi-byte
character is never split, and held back while it might be the start of a stop string.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .config import GenerationConfig
from .cudagraph import block_decoder
from .decode import prime, seen_mask
from .errors import NumericalError
from .models.base import Model
from .textstream import Event, TextStreams, prompt_ids, resolve_config, resolve_seed


def all_finite(t: torch.Tensor) -> Any:
    """Whether ``t`` holds no NaN/inf: a 0-d tensor on a GPU (read it after the host has waited
    anyway), NumPy's answer for CPU floats (torch's reduction can wake its thread pool, which
    then fights NumPy's BLAS threads: ~5 % of a batch-64 CPU step)."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64):
        return np.isfinite(t.numpy()).all()
    return torch.isfinite(t).all()


@torch.inference_mode()
def stream_text(
    model: Model,
    prompts: Sequence[str],
    config: GenerationConfig | None = None,
    unknown: str = "error",
    cuda_graphs: bool = True,
    label: str | None = None,
    features: Sequence[float] | None = None,
    **overrides: Any,
) -> Iterator[Event]:
    """Generate one continuation per prompt, as a stream of ``Event``s.

    ``label`` primes every prompt with that label's token (a model trained with
    ``--labels-from``); ``features`` (F floats) starts every sample from that vector's state
    (a model trained with ``--features-from``). Issue #13; documents.py has the design.

    On CUDA, blocks of tokens are decoded by replaying a CUDA graph of the whole step
    (embedding, LSTM, decoder and sampling; ``cuda_graphs=False`` runs the same ops eagerly).

    >>> for ev in stream_text(model, ["ROMEO:"] * 2, temperature=0.8, seed=1):  # doctest: +SKIP
    ...     print(ev.index, ev.text)
    """
    cfg = resolve_config(model, config, **overrides)
    tok = model.tokenizer
    was_training = model.training
    model.eval()
    seed = resolve_seed(cfg)
    device = model.device
    gen = torch.Generator(device=device).manual_seed(seed)
    ids = prompt_ids(tok, prompts, unknown, label)
    B = len(ids)
    start = None if features is None else model.feature_state(list(features))
    logits, state = prime(model, ids, start)
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = seen_mask(ids, model.config.vocab_size, device, [True] * B)
    decoder = block_decoder(model, cfg, logits, state, seen, cuda_graphs)
    streams = TextStreams(tok, B, cfg.stop, prompts)
    try:
        done = 0
        while done < cfg.max_new_tokens and not streams.all_done:
            left = cfg.max_new_tokens - done
            tokens = decoder.run(gen, left)  # (B, K)
            finite = all_finite(decoder.logits)
            rows = tokens[:, :left].tolist()  # the one host sync of a block
            if not finite:  # computed by now: reading it costs no second wait
                raise NumericalError()
            done += len(rows[0])
            yield from streams.push_block(rows, last=done == cfg.max_new_tokens)
        yield from streams.close()
    finally:
        model.train(was_training)
