"""The one streaming generator behind the CLI, the Python API (and later the server).

The prompt primes the recurrent state once; then each step feeds only the newest token with the
carried state (an LSTM never re-reads its prefix). Several samples run as one batch. Text comes
out as ``Event``s: the new text of sample ``index``, decoded incrementally so a multi-byte
character is never split, and held back while it might be the start of a stop string.

``complete_texts`` (``LanguageModel.complete``) wants only the whole texts: without stop strings
nothing ends a sample early, so it decodes each sample's ids once at the end instead of once per
block (batch 1024 on CUDA spent more time on per-sample text work than on decoding).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .config import GenerationConfig
from .cudagraph import block_decoder
from .decode import prime, seen_mask
from .errors import NumericalError
from .models.base import Model
from .textstream import (
    Event,
    TextStreams,
    prompt_ids,
    resolve_config,
    resolve_seed,
    whole_texts,
)


def all_finite(t: torch.Tensor) -> Any:
    """Whether ``t`` holds no NaN/inf: a 0-d tensor on a GPU (read it after the host has waited
    anyway), NumPy's answer for CPU floats (torch's reduction can wake its thread pool, which
    then fights NumPy's BLAS threads: ~5 % of a batch-64 CPU step)."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64):
        return np.isfinite(t.numpy()).all()
    return torch.isfinite(t).all()


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
    streams = TextStreams(model.tokenizer, len(prompts), cfg.stop, prompts)
    finished = lambda: streams.all_done  # noqa: E731
    blocks = token_blocks(model, prompts, cfg, unknown, cuda_graphs, label, features, finished)
    try:
        for block, last in blocks:
            yield from streams.push_block(block.tolist(), last)
    finally:  # a caller that stops reading gets the model's training mode back now
        blocks.close()
    yield from streams.close()


def complete_texts(
    model: Model,
    prompts: Sequence[str],
    config: GenerationConfig | None = None,
    unknown: str = "error",
    cuda_graphs: bool = True,
    label: str | None = None,
    features: Sequence[float] | None = None,
    **overrides: Any,
) -> list[str]:
    """The whole text of each continuation: what ``stream_text``'s events add up to, the same
    text for the same seed. With stop strings it is exactly that sum (a stop string may end a
    sample, or all of them, at any block). Without, each sample's ids are kept on the host as
    blocks of a tensor and decoded once at the end, all rows at once (``textstream.whole_texts``):
    the decoders are incremental, so ids decoded together give the text of the same ids decoded
    block by block."""
    cfg = resolve_config(model, config, **overrides)
    texts = [""] * len(prompts)
    if cfg.stop:
        for ev in stream_text(model, prompts, cfg, unknown, cuda_graphs, label, features):
            texts[ev.index] += ev.text
        return texts
    blocks = token_blocks(
        model, prompts, cfg, unknown, cuda_graphs, label, features, finished=lambda: False
    )
    kept = [block for block, _ in blocks]
    if not kept:  # max_new_tokens 0
        return texts
    return whole_texts(model.tokenizer, torch.cat(kept, 1).numpy(), prompts)  # (B, N) ids


def token_blocks(
    model: Model,
    prompts: Sequence[str],
    cfg: GenerationConfig,
    unknown: str,
    cuda_graphs: bool,
    label: str | None,
    features: Sequence[float] | None,
    finished: Callable[[], bool],
) -> Iterator[tuple[torch.Tensor, bool]]:
    """The decode loop: prime ``prompts``, then blocks of tokens (B, k) on the host, each with
    whether it is the last; it stops early once ``finished()`` (every sample hit a stop string).

    Only the device work runs under ``torch.inference_mode``: a generator decorated with it
    enters and leaves the mode around every ``yield``, which cost ~4 us per event (one event per
    sample per block: a third of the host time of batch 1024 on CPU)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            ids = prompt_ids(model.tokenizer, prompts, unknown, label)
            start = None if features is None else model.feature_state(list(features))
            logits, state = prime(model, ids, start)
            seen = None
            if cfg.repetition_penalty != 1.0:
                seen = seen_mask(ids, model.config.vocab_size, model.device, [True] * len(ids))
            decoder = block_decoder(model, cfg, logits, state, seen, cuda_graphs)
        gen = torch.Generator(device=model.device).manual_seed(resolve_seed(cfg))
        done = 0
        while done < cfg.max_new_tokens and not finished():
            left = cfg.max_new_tokens - done
            with torch.inference_mode():
                tokens = decoder.run(gen, left)  # (B, K)
                finite = all_finite(decoder.logits)
                block = tokens[:, :left].cpu()  # the one host sync of a block
            if not finite:  # computed by now: reading it costs no second wait
                raise NumericalError()
            done += block.shape[1]
            yield block, done == cfg.max_new_tokens
    finally:
        model.train(was_training)
