"""Training on a labelled corpus (issue #13): every document from a fresh state, as generated.

Dimensions: R rows (batch size x grad accumulation x processes), T = seq_len, W windows per epoch.

Generation starts a labelled sample from the initial state, then ``bos`` and the label's token
(``textstream.prompt_ids``). A plain run's streams carry the state across document boundaries,
so in training a label token always came after the end of some other document, never after a
fresh state. The model learnt to read the label in that context and not in generation's:
a small char model trained that way scored Shakespeare's first 200 characters 0.08 nats/char
better after the right label than after the wrong one when the state came from a WikiText
document, but only 0.025 from generation's fresh state; 300 s of training steered only 37 %
of Shakespeare samples (benchmarks/labels_steer.py). So a labelled corpus is laid out here
so that training sees what generation does::

    row r:  [bos, <|label:a|>, doc 1 ... pad] [bos, <|label:b|>, doc 2 ... pad] ...
            |<- whole windows of T tokens  ->| state reset to the initial one here

Each document, ``bos`` and its label token first, starts at a window boundary of its row and
is padded to whole windows (padding targets are not scored; a 2,000-token document wastes 1.6 %
at T = 64); at the window where a row's next document starts, that row's carried state is
reset to ``model.init_state``. Within a document the state is carried across windows (TBPTT)
as in a plain run. The label token is an input, never a target: the model is not taught to
emit labels. Documents go to the row with the fewest windows so far, in the corpus's order
(shuffled by ``seed``, documents.py), so rows end within one document of each other; the
layout is the same every epoch, so a resumed run continues exactly.

A document start is wherever a label token is: labels are special tokens that text never
encodes to (tokenizers.py), and this also holds for a training split cut from the held-out
tail (``data.split_tail``).
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from ..evaluate import EvaluationStopped, scored_metrics
from ..state import State

IGNORE = -100  # F.cross_entropy's ignore_index: padding and label targets are not scored


def document_starts(tokens: np.ndarray, label_ids: list[int]) -> np.ndarray:
    """(D,) int64: where each document starts, its label token (position 0 always starts one)."""
    starts = np.flatnonzero(np.isin(tokens, np.asarray(label_ids, dtype=tokens.dtype)))
    if not len(starts) or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    return starts.astype(np.int64)


def layout(
    tokens: np.ndarray, starts: np.ndarray, rows: int, seq_len: int, bos: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (R, W*T) int32 inputs, y (R, W*T) int32 targets (``IGNORE`` where not scored) and
    resets (R, W) bool (a document starts that row's window) of the module docstring. Held in
    memory: 8 bytes a token (a plain corpus's streams stay memmapped)."""
    T = seq_len
    ends = [*starts[1:].tolist(), len(tokens)]
    spans = [(s, e) for s, e in zip(starts.tolist(), ends, strict=True) if e > s]
    if not spans:
        raise DataError("the labelled corpus has no documents to train on")
    heap = [(0, r) for r in range(rows)]  # (windows so far, row)
    placed: list[list[tuple[int, int]]] = [[] for _ in range(rows)]
    for s, e in spans:
        used, r = heapq.heappop(heap)
        placed[r].append((s, e))
        heapq.heappush(heap, (used + -(-(e - s) // T), r))
    W = max(used for used, _ in heap)
    x = np.full((rows, W * T), bos, dtype=np.int32)
    y = np.full((rows, W * T), IGNORE, dtype=np.int32)
    resets = np.zeros((rows, W), dtype=bool)
    for r, docs in enumerate(placed):
        at = 0
        for s, e in docs:
            doc = np.asarray(tokens[s:e], dtype=np.int64)  # [label, text...]
            n = len(doc)
            x[r, at + 1 : at + n] = doc[:-1]  # x[r, at] stays bos
            y[r, at + 1 : at + n] = doc[1:]  # the label's own target is left out
            resets[r, at // T] = True
            at += -(-n // T) * T
    return x, y, resets


class LabelRows:
    """The step loop's windows for a labelled corpus: ``x, y = rows(k)`` (B, T) int64 on
    ``device``, and ``reset(state, k, model)`` before window ``k`` is trained on."""

    def __init__(self, tokens: np.ndarray, label_ids: list[int], rows: int, seq_len: int,
                 bos: int, device: torch.device, shard: Any = None):  # fmt: skip
        self.seq_len = seq_len
        self.device = device
        x, y, resets = layout(tokens, document_starts(tokens, label_ids), rows, seq_len, bos)
        if shard is not None:  # this process's block of rows (distributed.py)
            x, y, resets = shard(x), shard(y), shard(resets)
        self.x, self.y, self.resets = x, y, resets
        self.windows = resets.shape[1]

    def __call__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        cols = slice(k * self.seq_len, (k + 1) * self.seq_len)
        x = torch.from_numpy(self.x[:, cols].astype(np.int64)).to(self.device)  # (B, T)
        y = torch.from_numpy(self.y[:, cols].astype(np.int64)).to(self.device)
        return x, y

    def reset(self, state: State | None, k: int, model: Any) -> State | None:
        """The carried state for window ``k``: rows starting a document at ``k`` from
        ``model.init_state`` (None, the initial state, stays None)."""
        if state is None or not self.resets[:, k].any():
            return state
        rows = torch.from_numpy(self.resets[:, k]).to(state[0].device)
        fresh = model.init_state(len(rows)).to(state[0].device)
        return state.where(rows, fresh)


@torch.inference_mode()
def evaluate_label_rows(
    model: Any,
    data: Any,
    seq_len: int,
    batch_size: int = 16,
    max_tokens: int = 0,
    should_stop: Any = None,
) -> dict[str, Any]:
    """The trainer's validation metrics of a labelled split (``data``: a ``TokenFile``) scored
    as it trains: every document from a fresh state after ``bos`` and its label, the label not
    a target; ``max_tokens`` stops after the first window that reaches it."""
    was_training = model.training
    model.eval()
    tok = model.tokenizer
    labels = [tok.label_id(n) for n in tok.labels]
    rows = LabelRows(data.tokens, labels, batch_size, seq_len, tok.bos_id, model.device)
    total = torch.zeros((), dtype=torch.float64, device=model.device)
    n, state = 0, None
    for k in range(rows.windows):
        if should_stop is not None and should_stop():
            model.train(was_training)
            raise EvaluationStopped
        state = rows.reset(state, k, model)
        x, y = rows(k)
        logits, state = model(x, state)  # (B, T, V)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        total += F.cross_entropy(logits.transpose(1, 2), y, reduction="sum").double()
        n += int((rows.y[:, k * seq_len : (k + 1) * seq_len] != IGNORE).sum())
        if max_tokens and n >= max_tokens:
            break
    model.train(was_training)
    return scored_metrics(total.item(), n, data)
