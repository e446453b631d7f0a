"""Per-row sampling for the request batcher: every row of the batch is a different request.

``lstmgen.sampling.next_token`` applies one ``GenerationConfig`` to a whole batch and draws from
one generator. Here each row b has its own temperature, top-k, top-p, repetition penalty and
seeded ``torch.Generator``, and the result for row b is exactly what ``next_token`` returns for
that row alone with the same settings and generator: same filters in the same order (penalty,
temperature, top-k, top-p), and one uniform per row from that row's generator, turned into a
token by the same ``lstmgen.sampling.draw``. So a seeded request gives the same text alone or in
a batch.

Shapes: B rows, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..sampling import draw, softmax, uniforms


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
        probs = softmax(sorted_logits)
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
    probs = softmax(filtered)  # (B, V)
    none = torch.zeros(1, dtype=torch.float64, device=probs.device)  # greedy rows draw nothing
    u = torch.cat(
        [none if g else uniforms(1, generators[b], probs.device) for b, g in enumerate(greedy)]
    )  # (B,)
    drawn = draw(probs, u)  # (B,)
    return torch.where(torch.tensor(greedy, device=chosen.device), chosen, drawn)
