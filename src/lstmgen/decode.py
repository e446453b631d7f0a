"""Priming and block decoding: the one decode loop under the generator, the CUDA graph and the
server's batcher.

Dimensions: B sequences, V vocabulary, K tokens per block; a state is a ``State`` (state.py)
of B sequences, whatever the architecture keeps in it.

  prompt ids -> ``Primer`` / ``prime`` (pieces of ``PRIME_CHUNK`` tokens through ``forward``)
             -> logits (B, V), state
             -> ``decode_block``: K x (sample a token, mark it seen, ``Step`` the model on it)
             -> tokens (B, K)

``EagerDecoder`` and ``cudagraph.GraphDecoder`` run ``decode_block`` behind the same ``run``,
so ``cudagraph.block_decoder`` hands ``generate.stream_text`` either one. The batcher samples
each row with its own settings and steps only the rows that go on, so it uses ``Primer``,
``Step`` and ``mark_seen`` directly (one token per loop iteration).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import GenerationConfig
from .models.base import Model, StepFn
from .runtime import rnn_kernels
from .sampling import next_token, uniforms
from .state import State

# Prompts are primed in pieces of this many tokens, at fixed offsets 0, C, 2C... The server
# interleaves pieces with decode steps (chunked prefill, server/batcher.py), so that one long
# prompt delays other streams by a piece instead of the whole prompt; priming here runs the same
# pieces, so a prompt gives bit-identical logits either way (the CPU RNN kernel depends on the
# call's length: a whole prompt and its pieces differ in the last bits). 128 tokens of a 2x256
# LSTM take ~12 ms on one CPU core, ~10 % slower per token than one call for the whole prompt.
PRIME_CHUNK = 128

# Tokens sampled per block: each block draws its uniforms at once, then samples and steps
# token by token, and its text is pushed at once. On CUDA a block is one CUDA-graph replay and
# one device-to-host copy. On CPU small batches stream token by token; from LARGE_BATCH
# sequences the per-sample text work, done once per block, would cost ~4 % of a step.
BLOCK = {"cpu": 1, "cuda": 16}
LARGE_BATCH, LARGE_BATCH_BLOCK = 128, 8


class Primer:
    """One prompt primed a piece at a time: ``step()`` runs the next ``PRIME_CHUNK`` tokens.

    >>> p = Primer(model, [bos, *ids])  # doctest: +SKIP
    >>> while not p.done: p.step()  # doctest: +SKIP
    >>> p.logits, p.state  # (1, V), a State of one sequence  # doctest: +SKIP
    """

    def __init__(self, model: Model, prompt: Sequence[int], state: State | None = None):
        """``state``: one sequence's state to start from (a feature vector's, issue #13);
        None: the model's initial state."""
        self.model = model
        self.ids = torch.tensor([prompt], dtype=torch.long, device=model.device)  # (1, T)
        self.pos = 0  # tokens primed so far
        self.logits: torch.Tensor | None = None  # (1, V) after the last primed token
        self.state: State | None = state  # one sequence

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
def prime(
    model: Model, prompts: Sequence[Sequence[int]], state: State | None = None
) -> tuple[torch.Tensor, State]:
    """Run each prompt once; return the last logits (B, V) and the state for all B prompts.

    Identical prompts are run once and their state is copied. ``state`` (one sequence) is where
    every prompt starts (None: the model's initial state)."""
    unique: dict[tuple[int, ...], int] = {}
    for p in prompts:
        unique.setdefault(tuple(p), len(unique))
    logits, states = [], []
    for p in unique:
        primer = Primer(model, p, state)
        while not primer.done:
            primer.step()
        logits.append(primer.logits)  # (1, V)
        states.append(primer.state)
    rows = torch.tensor([unique[tuple(p)] for p in prompts], device=model.device)  # (B,)
    return torch.cat(logits)[rows], State.cat(states).select(rows)  # (B, V), B sequences


def model_step(model: Model) -> StepFn:
    """``logits (B, V), state = step(ids (B,), state)`` through ``model.forward``."""

    def step(ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        # a one-token call: the CPU RNN kernel for short calls, as Primer's pieces use (an
        # architecture may step here at any batch: its nn.LSTM layers one token at a time)
        with rnn_kernels(model.device, steps=1, batch=len(ids)):
            out, state = model(ids[:, None], state)  # (B, 1, V)
        return out[:, -1], state

    return step


class Step:
    """One decoding step on the fastest path for the batch it is given: the architecture's
    fused stepper (``model.fast_stepper``) below its ``batch_below``, else ``model.forward``.
    An architecture that declares no stepper always steps through ``forward``, so no layer of it
    is ever skipped. The batch may change from call to call (the server's rows come and go).

    >>> step = Step(model, batch_size=4)  # doctest: +SKIP
    >>> logits, state = step(ids, state)  # ids (B,) -> logits (B, V)  # doctest: +SKIP
    """

    def __init__(self, model: Model, batch_size: int):
        # Small CPU batches step faster through fused matmuls than through nn.LSTM; the stepper
        # copies the weights, so it is made only when the batch can use it (None on GPU).
        self.stepper = model.fast_stepper(batch_size)
        self.forward = model_step(model)

    def __call__(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.stepper is not None and len(ids) < self.stepper.batch_below:
            return self.stepper(ids, state)
        return self.forward(ids, state)


def mark_seen(seen: torch.Tensor | None, tokens: torch.Tensor) -> None:
    """Record ``tokens`` (B,) in ``seen`` (B, V bool), for the repetition penalty."""
    if seen is not None:
        seen.scatter_(1, tokens[:, None], True)


def seen_mask(
    prompts: Sequence[Sequence[int]], vocab_size: int, device: torch.device, wanted: Sequence[bool]
) -> torch.Tensor:
    """(B, V) bool: the prompt tokens after ``bos`` of the rows that want a repetition penalty."""
    seen = torch.zeros(len(prompts), vocab_size, dtype=torch.bool, device=device)
    for b, p in enumerate(prompts):
        if wanted[b]:
            seen[b, list(p[1:])] = True
    return seen


def block_size(device: torch.device, batch: int) -> int:
    if device.type == "cuda":
        return BLOCK["cuda"]
    return LARGE_BATCH_BLOCK if batch >= LARGE_BATCH else BLOCK.get(device.type, 1)


def decode_block(
    step: StepFn,
    logits: torch.Tensor,
    state: State,
    u: torch.Tensor,
    cfg: GenerationConfig,
    seen: torch.Tensor | None,
    final: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, State]:
    """Sample a token from ``logits`` (B, V) with ``u[k]`` (B,), step the model on it, K times
    for ``u`` (K, B). Returns the tokens (B, K), the logits and the state after the last one
    (``final``: no step after the last token, whose logits nobody needs).

    Device work only (no host syncs), so the same function runs eagerly or inside a CUDA graph
    (cudagraph.py) with identical results. ``seen`` (B, V) is updated in place."""
    tokens = []
    K = u.shape[0]
    for k in range(K):
        nxt = next_token(logits, cfg, None, seen, u=u[k])  # (B,)
        mark_seen(seen, nxt)
        tokens.append(nxt)
        if not (final and k == K - 1):
            logits, state = step(nxt, state)  # (B, V)
    return torch.stack(tokens, dim=1), logits, state  # (B, K)


class EagerDecoder:
    """``decode_block`` run eagerly, block after block; the same ``run`` as ``GraphDecoder``.

    >>> dec = EagerDecoder(step, cfg, logits, state, seen, block=1)  # doctest: +SKIP
    >>> tokens = dec.run(generator, left=50)  # (B, 1)  # doctest: +SKIP
    """

    def __init__(
        self,
        step: StepFn,
        cfg: GenerationConfig,
        logits: torch.Tensor,
        state: State,
        seen: torch.Tensor | None,
        block: int,
    ):
        self.step, self.cfg, self.seen, self.block = step, cfg, seen, block
        self.logits, self.state = logits, state  # (B, V), B sequences

    def run(self, generator: torch.Generator, left: int | None = None) -> torch.Tensor:
        """Decode the next block -> tokens (B, K). With ``left`` (tokens still wanted), a CPU
        block stops there and skips the step after the last token; CUDA blocks keep their size
        so that eager and graph decoding draw the same uniforms."""
        B, device = self.logits.shape[0], self.logits.device
        k = self.block if left is None or device.type == "cuda" else min(self.block, left)
        u = uniforms((k, B), generator, device)  # (k, B)
        final = left is not None and k >= left
        tokens, self.logits, self.state = decode_block(
            self.step, self.logits, self.state, u, self.cfg, self.seen, final
        )
        return tokens
