"""Logits -> next token: repetition penalty, temperature, top-k, top-p, then a draw.

All functions take logits of shape (B, V) and work on a batch at once. The order follows the
common convention (Hugging Face's logits processors): penalty, temperature, top-k, top-p.

The draw is by inverse CDF from one float64 uniform per row, taken from the caller's
``torch.Generator``: the same seed gives the same tokens on every path (the CLI, the server's
per-request rows, a CUDA graph), and the kernels involved (a cumsum and a binary search over V)
are cheap and never start a thread pool, unlike ``torch.multinomial`` at small sizes.

Tiny settings take their limit instead of underflowing float32 (issue #10: temperature 1e-40
divided the logits into infinities and gave "zzzz"): a temperature below ``GREEDY_BELOW`` is
greedy, a top_p below ``MIN_TOP_P`` keeps only the most likely token (as does any top_p under
that token's probability, which is at least 1/V), and a repetition penalty below
``MIN_REPETITION_PENALTY`` is refused when the settings are checked (all three in config.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .config import GREEDY_BELOW, MIN_TOP_P, GenerationConfig

LOG2E = math.log2(math.e)


def effective_temperature(temperature: float) -> float:
    """The temperature actually used: 0 (greedy) below ``GREEDY_BELOW``."""
    return 0.0 if temperature < GREEDY_BELOW else temperature


def effective_top_p(top_p: float) -> float:
    """The top_p actually used: at least ``MIN_TOP_P``, which keeps only the top token."""
    return max(top_p, MIN_TOP_P)


def softmax(logits: Tensor) -> Tensor:
    """``torch.softmax`` over the last dimension, written out. Same values to rounding, but
    nothing in it starts a thread pool at decoding sizes: ``torch.softmax`` parallelises over
    as few as 32 rows and ``torch.exp`` calls MKL's threaded vector math, whose threads then
    fight NumPy's BLAS threads (steppers.py) for the cores and make a step ten times slower.
    exp(x) is computed as 2^(x log2 e), which PyTorch runs on the calling thread."""
    e = torch.exp2((logits - logits.amax(dim=-1, keepdim=True)) * LOG2E)
    return e / e.sum(dim=-1, keepdim=True)


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty (Keskar et al. 2019): tokens already in ``seen`` (B, V bool) become less
    likely: positive logits are divided by ``penalty``, negative ones multiplied."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row (ties at the k-th value are kept too)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens
    whose probability reaches ``p``; the most likely token always stays."""
    if p >= 1.0:
        return logits
    p = effective_top_p(p)
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = softmax(sorted_logits)
    before = torch.cumsum(probs, dim=-1) - probs  # probability mass of strictly better tokens
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def uniforms(
    shape: int | tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """float64 uniforms in [0, 1) from ``generator``: the randomness of draws, one per row."""
    return torch.empty(shape, dtype=torch.float64, device=device).uniform_(generator=generator)


def draw(probs: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF sampling: row b of ``probs`` (B, V), not necessarily normalised, gives token
    i with probability probs[b, i] / sum(probs[b]), decided by ``u[b]`` in [0, 1) -> (B,).

    The token is the first whose cumulative mass exceeds u_b * total_b; tokens of probability 0
    (filtered out) can never be chosen, since their cumulative mass equals their predecessor's."""
    cdf = probs.double().cumsum(dim=-1)  # (B, V)
    total = cdf[:, -1:]  # (B, 1)
    target = torch.minimum(u[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    # NaN probabilities (logits that overflowed) would give V, an id past the vocabulary that
    # crashes the next embedding lookup (a device-side assert on CUDA): keep it in range, and
    # let the caller report the non-finite logits (generate.stream_text does).
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return index.clamp_(max=probs.shape[-1] - 1)


def next_token(
    logits: Tensor,
    config: GenerationConfig,
    generator: torch.Generator | None,
    seen: Tensor | None = None,
    u: Tensor | None = None,
) -> Tensor:
    """Choose one token per row of ``logits`` (B, V) -> (B,). Temperature 0 is greedy.

    The draw uses ``u`` (B,) uniforms if given, else takes them from ``generator``."""
    logits = logits.float()
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
    temperature = effective_temperature(config.temperature)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_top_p(filter_top_k(logits / temperature, config.top_k), config.top_p)
    probs = softmax(logits)  # (B, V)
    return draw(probs, uniforms(len(probs), generator, probs.device) if u is None else u)
