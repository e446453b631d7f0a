"""One block of decoding: sample a token, step the model on it, K times, on the device.

The generator (generate.py) runs it eagerly and the CUDA graph (cudagraph.py) captures it, so
both give the same tokens for the same uniforms. It lives apart from both so that neither
imports the other (they did: an import cycle, issue #11).

Dimensions: B batch, K tokens per block, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .config import GenerationConfig
from .sampling import next_token


def decode_block(
    step: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]],
    logits: torch.Tensor,
    state: Any,
    u: torch.Tensor,
    cfg: GenerationConfig,
    seen: torch.Tensor | None,
    final: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Sample a token from ``logits`` (B, V) with ``u[k]`` (B,), step the model on it, K times
    for ``u`` (K, B). Returns the tokens (B, K), the logits and the state after the last one
    (``final``: no step after the last token, whose logits nobody needs).

    Device work only (no host syncs), so the same function runs eagerly or inside a CUDA graph
    (cudagraph.py) with identical results. ``seen`` (B, V) is updated in place."""
    tokens = []
    K = u.shape[0]
    for k in range(K):
        nxt = next_token(logits, cfg, None, seen, u=u[k])  # (B,)
        if seen is not None:
            seen.scatter_(1, nxt[:, None], True)
        tokens.append(nxt)
        if not (final and k == K - 1):
            logits, state = step(nxt, state)  # (B, V)
    return torch.stack(tokens, dim=1), logits, state  # (B, K)
