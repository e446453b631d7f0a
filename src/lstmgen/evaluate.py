"""Loss, perplexity and bits per character over a held-out token stream.

Every token is scored exactly once. The first token is predicted from the tokenizer's ``bos_id``
(as in generation). To use a batch, the targets are cut into B contiguous pieces scored in
parallel, each with its state carried across windows; each piece after the first starts by
reading the ``warmup`` tokens before it unscored, so its state is warm like a single stateful
pass over the whole text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .data import TokenFile, eval_window
from .errors import NumericalError


class EvaluationStopped(Exception):
    """``should_stop`` returned true between two windows: there is no score (a part of the
    tokens scores differently from all of them, so it is never reported as one)."""


@dataclass
class EvalResult:
    tokens: int
    loss: float  # mean nats per token
    perplexity: float
    bits_per_token: float
    bits_per_char: float
    bits_per_byte: float
    chars: int
    bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def _layout(n: int, batch_size: int, warmup: int) -> list[tuple[int, int, int]]:
    """Pieces (read_from, score_from, end) over positions of the bos-prefixed stream."""
    B = max(1, min(batch_size, n // max(1, 4 * warmup)))
    size = -(-n // B)
    pieces = []
    for b in range(B):
        start, end = b * size, min(n, (b + 1) * size)
        if start < end:
            pieces.append((max(0, start - warmup), start, end))
    return pieces


@torch.inference_mode()
def evaluate_tokens(
    model,
    data: TokenFile,
    batch_size: int = 16,
    seq_len: int = 256,
    warmup: int = 256,
    max_tokens: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> EvalResult:
    """Score ``data`` (optionally only its first ``max_tokens``) under ``model``.

    ``should_stop`` is asked between windows; when it says yes, ``EvaluationStopped`` is raised
    (the trainer passes its Ctrl-C flag, so a full validation pass is no longer uninterruptible).
    """
    was_training = model.training
    model.eval()
    tokens = data.tokens[: max_tokens or None]  # (n,) the memmap: read one window at a time
    n = len(tokens)
    pieces = _layout(n, batch_size, warmup)
    width = max(end - read for read, _, end in pieces)
    bos = model.tokenizer.bos_id
    device = model.device
    total = torch.zeros((), dtype=torch.float64, device=device)
    state = None
    for t in range(0, width, seq_len):
        if should_stop is not None and should_stop():
            model.train(was_training)
            raise EvaluationStopped
        x, y, scored = eval_window(tokens, pieces, bos, t, min(seq_len, width - t))
        xb = torch.from_numpy(x).to(device)
        yb = torch.from_numpy(y).to(device)
        mb = torch.from_numpy(scored).to(device)
        logits, state = model(xb, state)  # (B, T, V)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32
        nll = F.cross_entropy(logits.transpose(1, 2), yb, reduction="none")  # (B, T)
        total += (nll.double() * mb).sum()
    model.train(was_training)
    loss = total.item() / n
    if not math.isfinite(loss):
        raise NumericalError(f"the loss is {loss}: ", loss)
    chars = (
        data.chars
        if not max_tokens or max_tokens >= len(data)
        else round(data.chars * n / len(data))
    )
    nbytes = data.nbytes if chars == data.chars else round(data.nbytes * n / len(data))
    bits = loss * n / math.log(2)
    return EvalResult(
        tokens=n,
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        bits_per_token=loss / math.log(2),
        bits_per_char=bits / max(chars, 1),
        bits_per_byte=bits / max(nbytes, 1),
        chars=chars,
        bytes=nbytes,
    )


def scored_metrics(total: float, scored: int, data: Any) -> dict[str, Any]:
    """The trainer's validation metrics from ``total`` nats over ``scored`` tokens of ``data``
    (a split with ``tokens`` and ``chars``), when not every token is scored (documents scored
    from fresh states: training/label_rows.py, training/features.py); its characters are
    counted in proportion."""
    loss = total / max(scored, 1)
    if not math.isfinite(loss):
        raise NumericalError(f"the loss is {loss}: ", loss)
    chars = round(data.chars * min(1.0, scored / max(len(data.tokens), 1)))
    return {
        "val_loss": loss,
        "val_perplexity": math.exp(min(loss, 700.0)),
        "val_bits_per_char": total / math.log(2) / max(chars, 1),
        "val_tokens": scored,
    }
