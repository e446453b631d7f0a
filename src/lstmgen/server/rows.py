"""Per-row sampling for the request batcher: every row of the batch is a different request.

``lstmgen.sampling.next_token`` applies one ``GenerationConfig`` to a whole batch and draws from
one generator. Here each row b has its own temperature, top-k, top-p, repetition penalty and
seeded ``torch.Generator``, and the result for row b is exactly what ``next_token`` returns for
that row alone with the same settings and generator: the very filters of ``lstmgen.sampling``
(penalty, temperature, top-k, top-p), given one value per row, and one uniform per row from that
row's generator, turned into a token by the same ``lstmgen.sampling.draw``. So a seeded request
gives the same text alone or in a batch.

Shapes: B rows, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..sampling import (
    apply_repetition_penalty,
    draw,
    effective_temperature,
    filter_logits,
    softmax,
    uniforms,
)


@dataclass(frozen=True)
class RowSettings:
    """Sampling settings of one row (the fields of ``GenerationConfig`` that act per token)."""

    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off


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
        logits = apply_repetition_penalty(logits, seen, [s.repetition_penalty for s in settings])
    temperatures = [effective_temperature(s.temperature) for s in settings]
    greedy = [t == 0 for t in temperatures]
    chosen = logits.argmax(dim=-1)  # (B,) the answer for greedy rows
    if all(greedy):
        return chosen
    filtered = filter_logits(
        logits,
        [1.0 if g else t for t, g in zip(temperatures, greedy, strict=True)],
        [s.top_k for s in settings],
        [s.top_p for s in settings],
    )
    probs = softmax(filtered)  # (B, V)
    none = torch.zeros(1, dtype=torch.float64, device=probs.device)  # greedy rows draw nothing
    u = torch.cat(
        [none if g else uniforms(1, generators[b], probs.device) for b, g in enumerate(greedy)]
    )  # (B,)
    drawn = draw(probs, u)  # (B,)
    return torch.where(torch.tensor(greedy, device=chosen.device), chosen, drawn)
