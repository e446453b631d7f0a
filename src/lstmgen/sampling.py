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
from collections.abc import Sequence

import torch
from torch import Tensor

from .config import GREEDY_BELOW, MIN_TOP_P, GenerationConfig

LOG2E = math.log2(math.e)
NUMBER = (int, float)  # a setting for every row, not a sequence of one per row


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
    fight NumPy's BLAS threads (models/recurrent_steppers.py) for the cores and make a step ten
    times slower. exp(x) is computed as 2^(x log2 e), which PyTorch runs on the calling thread."""
    e = torch.exp2((logits - logits.amax(dim=-1, keepdim=True)) * LOG2E)
    return e / e.sum(dim=-1, keepdim=True)


def per_row(value: float | Sequence[float], like: Tensor) -> float | Tensor:
    """A setting as the filters use it: one number for every row stays a number; one value per
    row becomes a (B, 1) column of ``like``'s dtype, which broadcasts over the vocabulary. The
    server's batcher (server/rows.py) passes a value per row: each row is another request."""
    if isinstance(value, NUMBER):
        return value
    return torch.tensor(value, dtype=like.dtype, device=like.device)[:, None]  # (B, 1)


# One setting for the whole batch is checked first and without building lists: next_token runs
# once per generated token, and at batch 1 on a CPU a microsecond is a percent of a step.


def apply_repetition_penalty(
    logits: Tensor, seen: Tensor, penalty: float | Sequence[float]
) -> Tensor:
    """CTRL's penalty (Keskar et al. 2019): tokens already in ``seen`` (B, V bool) become less
    likely: positive logits are divided by ``penalty``, negative ones multiplied. ``penalty`` is
    one value or one per row; a row with 1.0 is unchanged (x / 1 and x * 1 are exact)."""
    if penalty == 1.0 if isinstance(penalty, NUMBER) else all(x == 1.0 for x in penalty):
        return logits
    penalty = per_row(penalty, logits)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_top_k(logits: Tensor, k: int | Sequence[int]) -> Tensor:
    """Keep the k largest logits of each row (ties at the k-th value are kept too). ``k`` is one
    value or one per row; k <= 0 or k >= V keeps the row whole."""
    V = logits.shape[-1]
    if isinstance(k, int):
        if not 0 < k < V:
            return logits
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    else:  # the k_b-th value of row b; rows without top-k compare with -inf and keep everything
        on = [0 < x < V for x in k]
        if not any(on):
            return logits
        top = torch.topk(logits, max(x for x, o in zip(k, on, strict=True) if o), dim=-1).values
        index = torch.tensor([x - 1 if o else 0 for x, o in zip(k, on, strict=True)])
        kth = top.gather(-1, index.to(logits.device)[:, None])  # (B, 1)
        kth = torch.where(torch.tensor(on, device=kth.device)[:, None], kth, float("-inf"))
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float | Sequence[float]) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens
    whose probability reaches ``p``; the most likely token always stays. ``p`` is one value or
    one per row; p >= 1 keeps the row whole."""
    if isinstance(p, NUMBER):
        if p >= 1.0:
            return logits
        limit: float | Tensor = effective_top_p(p)
    else:
        if all(x >= 1.0 for x in p):
            return logits
        # A row without top-p gets 2, which nothing reaches: with 1, rounding in the cumulative
        # sum could still drop a row's least likely tokens.
        limit = per_row([effective_top_p(x) if x < 1.0 else 2.0 for x in p], logits)
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = softmax(sorted_logits)
    before = torch.cumsum(probs, dim=-1) - probs  # probability mass of strictly better tokens
    drop_sorted = before >= limit
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(
    logits: Tensor,
    temperature: float | Sequence[float],
    top_k: int | Sequence[int],
    top_p: float | Sequence[float],
) -> Tensor:
    """Temperature, then top-k, then top-p: the logits a draw is made from. Each setting is one
    value or one per row; a temperature here must not be 0 (greedy rows take the argmax)."""
    return filter_top_p(filter_top_k(logits / per_row(temperature, logits), top_k), top_p)


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
    probs = softmax(filter_logits(logits, temperature, config.top_k, config.top_p))  # (B, V)
    return draw(probs, uniforms(len(probs), generator, probs.device) if u is None else u)
