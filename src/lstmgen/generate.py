"""The one streaming generator behind the CLI, the Python API (and later the server).

The prompt primes the recurrent state once; then each step feeds only the newest token with the
carried state (an LSTM never re-reads its prefix). Several samples run as one batch. Text comes
out as ``Event``s: the new text of sample ``index``, decoded incrementally so a multi-byte
character is never split, and held back while it might be the start of a stop string.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .config import GenerationConfig
from .decode import decode_block
from .errors import NumericalError
from .sampling import uniforms
from .state import cat_states, index_state
from .steppers import make_stepper, rnn_kernels
from .textstream import Event, TextStreams, prompt_ids, resolve_config, resolve_seed

# Prompts are primed in pieces of this many tokens, at fixed offsets 0, C, 2C... The server
# interleaves pieces with decode steps (chunked prefill, server/batcher.py), so that one long
# prompt delays other streams by a piece instead of the whole prompt; priming here runs the same
# pieces, so a prompt gives bit-identical logits either way (the CPU RNN kernel depends on the
# call's length: a whole prompt and its pieces differ in the last bits). 128 tokens of a 2x256
# LSTM take ~12 ms on one CPU core, ~10 % slower per token than one call for the whole prompt.
PRIME_CHUNK = 128


class Primer:
    """One prompt primed a piece at a time: ``step()`` runs the next ``PRIME_CHUNK`` tokens.

    >>> p = Primer(model, [bos, *ids])  # doctest: +SKIP
    >>> while not p.done: p.step()  # doctest: +SKIP
    >>> p.logits, p.state  # (1, V), (L, 1, H)  # doctest: +SKIP
    """

    def __init__(self, model: Any, prompt: Sequence[int]):
        self.model = model
        self.ids = torch.tensor([prompt], dtype=torch.long, device=model.device)  # (1, T)
        self.pos = 0  # tokens primed so far
        self.logits: torch.Tensor | None = None  # (1, V) after the last primed token
        self.state: Any = None  # (L, 1, H)

    @property
    def done(self) -> bool:
        return self.pos >= self.ids.shape[1]

    @property
    def remaining(self) -> int:
        """Prompt tokens not primed yet."""
        return self.ids.shape[1] - self.pos

    @property
    def next_piece(self) -> int:
        """Tokens the next ``step()`` runs."""
        return min(PRIME_CHUNK, self.remaining)

    @torch.inference_mode()
    def step(self) -> int:
        """Run the next piece; return its length."""
        piece = self.ids[:, self.pos : self.pos + PRIME_CHUNK]  # (1, t)
        with rnn_kernels(self.model.device, steps=piece.shape[1]):
            out, self.state = self.model(piece, self.state)  # (1, t, V)
        self.logits = out[:, -1]  # (1, V)
        self.pos += piece.shape[1]
        return piece.shape[1]


@torch.inference_mode()
def prime(model: Any, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, Any]:
    """Run each prompt once; return the last logits (B, V) and the state for all B prompts.

    Identical prompts are run once and their state is copied."""
    unique: dict[tuple[int, ...], int] = {}
    for p in prompts:
        unique.setdefault(tuple(p), len(unique))
    logits, states = [], []
    for p in unique:
        primer = Primer(model, p)
        while not primer.done:
            primer.step()
        logits.append(primer.logits)  # (1, V)
        states.append(primer.state)
    rows = torch.tensor([unique[tuple(p)] for p in prompts], device=model.device)  # (B,)
    state = states[0] if len(states) == 1 else cat_states(states)
    return torch.cat(logits)[rows], index_state(state, rows)  # (B, V), (L, B, H)


# Tokens sampled per block: each block draws its uniforms at once, then samples and steps
# token by token, and its text is pushed at once. On CUDA a block is one CUDA-graph replay and
# one device-to-host copy. On CPU small batches stream token by token; from LARGE_BATCH
# sequences the per-sample text work, done once per block, would cost ~4 % of a step.
BLOCK = {"cpu": 1, "cuda": 16}
LARGE_BATCH, LARGE_BATCH_BLOCK = 128, 8


def block_size(device: torch.device, batch: int) -> int:
    if device.type == "cuda":
        return BLOCK["cuda"]
    return LARGE_BATCH_BLOCK if batch >= LARGE_BATCH else BLOCK.get(device.type, 1)


def all_finite(t: torch.Tensor) -> Any:
    """Whether ``t`` holds no NaN/inf: a 0-d tensor on a GPU (read it after the host has waited
    anyway), NumPy's answer for CPU floats (torch's reduction can wake its thread pool, which
    then fights NumPy's BLAS threads: ~5 % of a batch-64 CPU step)."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64):
        return np.isfinite(t.numpy()).all()
    return torch.isfinite(t).all()


def model_step(model: Any) -> Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]:
    """``logits (B, V), state = step(ids (B,), state)`` through ``model.forward`` (nn.LSTM)."""

    def step(ids: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        out, state = model(ids[:, None], state)  # (B, 1, V)
        return out[:, -1], state

    return step


@torch.inference_mode()
def stream_text(
    model: Any,
    prompts: Sequence[str],
    config: GenerationConfig | None = None,
    unknown: str = "error",
    cuda_graphs: bool = True,
    **overrides: Any,
) -> Iterator[Event]:
    """Generate one continuation per prompt, as a stream of ``Event``s.

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
    ids = prompt_ids(tok, prompts, unknown)
    B = len(ids)
    logits, state = prime(model, ids)
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=device)
        for b, p in enumerate(ids):
            seen[b, p[1:]] = True
    # Small CPU batches step faster through fused matmuls than through nn.LSTM (steppers.py).
    step = make_stepper(model, B) or model_step(model)
    K = block_size(device, B)
    graph = None
    if device.type == "cuda" and cuda_graphs and cfg.max_new_tokens > K:
        from .cudagraph import GraphDecoder

        try:
            graph = GraphDecoder(step, cfg, logits, state, seen, block=K)
        except RuntimeError as err:  # a PyTorch/driver that cannot capture this step
            warnings.warn(f"CUDA graph capture failed, decoding eagerly: {err}", stacklevel=2)
    streams = TextStreams(tok, B, cfg.stop, prompts)
    try:
        done = 0
        while done < cfg.max_new_tokens and not streams.all_done:
            left = cfg.max_new_tokens - done
            if graph is not None:
                tokens = graph.run(gen)  # (B, K)
            else:
                # A CPU block stops at max_new_tokens; CUDA blocks keep the graph's size so
                # that both paths draw the same uniforms.
                k = K if device.type == "cuda" else min(K, left)
                u = uniforms((k, B), gen, device)  # (k, B)
                tokens, logits, state = decode_block(step, logits, state, u, cfg, seen, k >= left)
            finite = all_finite(graph.logits if graph is not None else logits)
            rows = tokens[:, :left].tolist()  # the one host sync of a block
            if not finite:  # computed by now: reading it costs no second wait
                raise NumericalError()
            done += len(rows[0])
            yield from streams.push_block(rows, last=done == cfg.max_new_tokens)
        yield from streams.close()
    finally:
        model.train(was_training)
