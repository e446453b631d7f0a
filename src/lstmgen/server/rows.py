"""Per-row sampling for the request batcher: every row of the batch is a different request.

``lstmgen.sampling.next_token`` applies one ``GenerationConfig`` to a whole batch and draws from
one generator. Here each row b has its own temperature, top-k, top-p, repetition penalty and
seeded ``torch.Generator``, and the result for row b is exactly what ``next_token`` returns for
that row alone with the same settings and generator: same filters in the same order (penalty,
temperature, top-k, top-p), and one draw per row from that row's generator, made exactly as
``torch.multinomial`` makes it. So a seeded request gives the same text alone or in a batch.

Shapes: B rows, V vocabulary.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RowSettings:
    """Sampling settings of one row (the fields of ``GenerationConfig`` that act per token)."""

    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off


def _column(values: Sequence[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)[:, None]  # (B, 1)


def penalise_rows(logits: Tensor, seen: Tensor, penalties: Sequence[float]) -> Tensor:
    """``apply_repetition_penalty`` with a penalty per row (rows with 1.0 are unchanged)."""
    if all(p == 1.0 for p in penalties):
        return logits
    pen = _column(penalties, logits)  # (B, 1)
    penalised = torch.where(logits > 0, logits / pen, logits * pen)
    return torch.where(seen & (pen != 1.0), penalised, logits)


def filter_rows(logits: Tensor, top_ks: Sequence[int], top_ps: Sequence[float]) -> Tensor:
    """``filter_top_p(filter_top_k(logits, k_b), p_b)`` for each row b, in one sort."""
    V = logits.shape[-1]
    use_k = [0 < k < V for k in top_ks]
    use_p = [p < 1.0 for p in top_ps]
    if not any(use_k) and not any(use_p):
        return logits
    if any(use_k):
        sorted_logits = torch.sort(logits, dim=-1, descending=True).values  # (B, V)
        kth_index = torch.tensor([k - 1 if u else 0 for k, u in zip(top_ks, use_k, strict=True)])
        kth = sorted_logits.gather(-1, kth_index.to(logits.device)[:, None])  # (B, 1)
        kth = torch.where(
            torch.tensor(use_k, device=logits.device)[:, None], kth, float("-inf")
        )  # rows without top-k keep everything
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if any(use_p):
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly better tokens
        p = _column([p if u else 2.0 for p, u in zip(top_ps, use_p, strict=True)], probs)
        drop_sorted = before >= p  # p = 2 never drops: rows without top-p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_rows(
    logits: Tensor,
    settings: Sequence[RowSettings],
    generators: Sequence[torch.Generator],
    seen: Tensor | None = None,
) -> Tensor:
    """One token per row of ``logits`` (B, V) -> (B,), row b drawn with ``settings[b]`` from
    ``generators[b]``. ``seen`` (B, V bool) marks tokens for the repetition penalty."""
    logits = logits.float()
    if seen is not None:
        logits = penalise_rows(logits, seen, [s.repetition_penalty for s in settings])
    greedy = [s.temperature == 0 for s in settings]
    chosen = logits.argmax(dim=-1)  # (B,) the answer for greedy rows
    if all(greedy):
        return chosen
    temps = _column(
        [1.0 if g else s.temperature for s, g in zip(settings, greedy, strict=True)], logits
    )
    filtered = filter_rows(logits / temps, [s.top_k for s in settings], [s.top_p for s in settings])
    probs = torch.softmax(filtered, dim=-1)  # (B, V)
    sampled = [b for b, g in enumerate(greedy) if not g]
    if _exponential_race_matches_multinomial():
        # One batched argmax instead of B ``torch.multinomial`` calls (about 50 us each).
        q = torch.ones_like(probs)  # (B, V); greedy rows are not used
        for b in sampled:
            q[b].exponential_(1.0, generator=generators[b])
        drawn = (probs / q).argmax(dim=-1)  # (B,)
        return torch.where(torch.tensor(greedy, device=chosen.device), chosen, drawn)
    for b in sampled:
        chosen[b] = torch.multinomial(probs[b : b + 1], 1, generator=generators[b])[0, 0]
    return chosen


@functools.cache
def _exponential_race_matches_multinomial() -> bool:
    """Whether ``torch.multinomial(p, 1, generator=g)`` is ``argmax(p / E)`` with E ~ Exp(1)
    drawn from ``g`` (the "exponential race", which is how PyTorch draws one sample on CPU),
    for the same draws and the same generator state afterwards. Checked once on this PyTorch
    build; where it does not hold, ``sample_rows`` calls ``torch.multinomial`` row by row."""
    probe = torch.Generator().manual_seed(0)
    for seed in range(64):
        V = 3 + seed * 7
        p = torch.rand(1, V, generator=probe) ** 4
        p[0, seed % V] = 0.0  # filtered tokens have probability 0
        p = p / p.sum()
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        a = torch.multinomial(p, 1, generator=g1)[0, 0]
        q = torch.ones(2, V)
        q[1].exponential_(1.0, generator=g2)
        if a != (p[0] / q[1]).argmax() or torch.rand(1, generator=g1) != torch.rand(
            1, generator=g2
        ):
            return False
    return True
