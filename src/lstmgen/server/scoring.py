"""Per-token log-probabilities of a given text (``POST /v1/score`` and ``echo`` + ``logprobs``).

Token i is predicted from the tokenizer's ``bos_id`` and tokens 0..i-1, as in generation and in
``evaluate.evaluate_tokens``. The text is read in windows with the state carried across them, so
memory stays O(window x V) however long the text is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models.base import Model


@dataclass
class Scored:
    token_logprobs: list[float]  # log p(token i | bos, tokens < i), natural log
    top: list[dict[int, float]] | None  # the k most likely ids at each position, when asked

    @property
    def loss(self) -> float:
        """Mean negative log-likelihood in nats per token."""
        return -math.fsum(self.token_logprobs) / max(len(self.token_logprobs), 1)


@torch.inference_mode()
def score_ids(model: Model, ids: list[int], top_k: int = 0, window: int = 1024) -> Scored:
    """Score ``ids`` (without the leading ``bos_id``) under ``model``."""
    inputs = [model.tokenizer.bos_id, *ids[:-1]]
    logprobs: list[float] = []
    top: list[dict[int, float]] | None = [] if top_k > 0 else None
    state = None
    for start in range(0, len(ids), window):
        x = torch.tensor([inputs[start : start + window]], device=model.device)  # (1, T)
        y = torch.tensor(ids[start : start + window], device=model.device)  # (T,)
        logits, state = model(x, state)  # (1, T, V)
        lp = torch.log_softmax(logits[0].float(), dim=-1)  # (T, V)
        logprobs += lp.gather(-1, y[:, None])[:, 0].tolist()
        if top is not None:
            values, indices = lp.topk(min(top_k, lp.shape[-1]), dim=-1)  # (T, k)
            for vs, js in zip(values.tolist(), indices.tolist(), strict=True):
                top.append(dict(zip(js, vs, strict=True)))
    return Scored(logprobs, top)
