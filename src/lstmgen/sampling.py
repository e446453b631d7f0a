"""Logits -> next token: repetition penalty, temperature, top-k, top-p, then a draw.

All functions take logits of shape (B, V) and work on a batch at once. The order follows the
common convention (Hugging Face's logits processors): penalty, temperature, top-k, top-p.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import GenerationConfig


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
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # probability mass of strictly better tokens
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_token(
    logits: Tensor,
    config: GenerationConfig,
    generator: torch.Generator | None,
    seen: Tensor | None = None,
) -> Tensor:
    """Choose one token per row of ``logits`` (B, V) -> (B,). Temperature 0 is greedy."""
    logits = logits.float()
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_top_p(filter_top_k(logits / config.temperature, config.top_k), config.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
