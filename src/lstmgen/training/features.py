"""Training on a feature corpus (issue #13): per-document windows from each vector's state.

Dimensions: B documents per batch, T' the longest of them (<= seq_len), F features.

A plain run reads B contiguous streams and carries the state across windows. A feature
corpus cannot: each document's text depends on its own vector, and the model meets the
vector only through the initial state (Show and Tell, Vinyals et al. 2015: the image
embedding is the LSTM's first input; here a linear map gives every layer's h and c, see
``Recurrent.feature_state``). So every batch row is one document, starting at its start from
its vector's state, and the state is never carried from one batch to the next::

    row b:  x = [bos, d_0, d_1, ... d_{T'-2}]   state_0 = feature_state(f_b)
            y = [d_0, d_1, ...       d_{T'-1}]  (padding targets -100: not scored)

which is exactly how generation runs: ``feature_state(f)``, then ``bos`` (and the label token,
which starts the document when the corpus is labelled too), then the prompt. A document longer
than ``seq_len`` is trained on its first ``seq_len`` tokens only (a warning says how many are
cut): raise ``--seq-len`` for long documents. Each epoch visits every document once, in an
order drawn from ``seed`` and the epoch number, so a resumed run sees the same batches.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..documents import DocumentFile
from ..errors import DataError, NumericalError
from ..evaluate import EvaluationStopped, scored_metrics
from .trainer import SINGLE_WINDOW_STEP, Trainer

IGNORE = -100  # F.cross_entropy's ignore_index: padding is not scored


def document_spans(doc_file: DocumentFile) -> list[tuple[int, int]]:
    """(start, end) of each document in the token stream."""
    if doc_file.starts is None or doc_file.features is None:
        raise DataError("this split has no feature vectors (not a --features-from corpus)")
    ends = [*doc_file.starts[1:].tolist(), len(doc_file.tokens)]
    return list(zip(doc_file.starts.tolist(), ends, strict=True))


def document_batch(
    doc_file: DocumentFile, docs: list[int], seq_len: int, bos: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (B, T') int64, y (B, T') int64 (padding ``IGNORE``), features (B, F) float32 of the
    documents ``docs``, each cut to ``seq_len`` tokens."""
    spans = document_spans(doc_file)
    rows = [doc_file.tokens[spans[d][0] : spans[d][1]][:seq_len] for d in docs]
    width = max(len(r) for r in rows)
    x = np.zeros((len(rows), width), dtype=np.int64)
    y = np.full((len(rows), width), IGNORE, dtype=np.int64)
    for b, r in enumerate(rows):
        x[b, 0], x[b, 1 : len(r)] = bos, r[:-1]
        y[b, : len(r)] = r
    assert doc_file.features is not None
    return x, y, np.asarray(doc_file.features[docs], dtype=np.float32)


@torch.inference_mode()
def evaluate_documents(
    model: Any,
    doc_file: DocumentFile,
    seq_len: int,
    batch_size: int = 16,
    max_tokens: int = 0,
    should_stop: Any = None,
) -> dict[str, Any]:
    """Mean loss per scored token of every document (each from its vector's state), in the
    trainer's metric names; ``max_tokens`` stops after the documents that reach it."""
    was_training = model.training
    model.eval()
    bos, device = model.tokenizer.bos_id, model.device
    total, n = 0.0, 0
    D = len(doc_file.starts)
    for first in range(0, D, batch_size):
        if should_stop is not None and should_stop():
            model.train(was_training)
            raise EvaluationStopped
        docs = list(range(first, min(D, first + batch_size)))
        x, y, f = document_batch(doc_file, docs, seq_len, bos)
        yb = torch.from_numpy(y).to(device)
        state = model.feature_state(torch.from_numpy(f).to(device))
        logits, _ = model(torch.from_numpy(x).to(device), state)  # (B, T', V)
        nll = F.cross_entropy(logits.float().transpose(1, 2), yb, reduction="sum")
        total += nll.item()
        n += int((y != IGNORE).sum())
        if max_tokens and n >= max_tokens:
            break
    model.train(was_training)
    return scored_metrics(total, n, doc_file)


class FeatureTrainer(Trainer):
    """``Trainer`` for a corpus read with ``features_from``: per-document windows (see the
    module docstring). ``Trainer.create`` / ``resume`` on this class, as on ``Trainer``.

    >>> cfg = TrainConfig(features_from="jsonl", max_steps=300)  # doctest: +SKIP
    >>> FeatureTrainer.create("runs/captions", ["captions.jsonl"], cfg).fit()  # doctest: +SKIP
    """

    step_lacks = SINGLE_WINDOW_STEP  # its train_step is its own

    takes_features = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        train = self.corpus.train
        if not isinstance(train, DocumentFile) or train.features is None:
            raise DataError("FeatureTrainer needs a corpus read with --features-from jsonl")
        spans = document_spans(train)
        self.documents = len(spans)
        cut = sum(max(0, e - s - self.config.seq_len) for s, e in spans)
        if cut:
            warnings.warn(
                f"{cut:,} tokens of documents longer than seq_len {self.config.seq_len} are not "
                "trained on: raise --seq-len",
                stacklevel=2,
            )
        self.windows_per_epoch = -(-self.documents // self.config.batch_size)
        self.windows = self._document_window  # type: ignore[assignment]
        self._features: torch.Tensor | None = None  # (B, F) of the current batch

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.config.seed, epoch]).permutation(self.documents)

    def _document_window(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        B = self.config.batch_size
        docs = self._order(self.pos.epoch)[k * B : (k + 1) * B].tolist()
        bos = self.model.tokenizer.bos_id
        x, y, f = document_batch(self.corpus.train, docs, self.config.seq_len, bos)  # type: ignore[arg-type]
        self._features = torch.from_numpy(f).to(self.device)
        return torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Each row starts from its document's vector; the map is trained through this state.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            self.hidden = self.model.feature_state(self._features)
        loss = super().train_step(x, y)
        self.hidden = None  # nothing is carried to the next batch (or into the trainer state)
        return loss

    def tokens_seen(self) -> int:
        return self.pos.step * self.config.batch_size * self.config.seq_len  # an upper bound

    def evaluate(self, max_tokens: int = 0, model: Any = None) -> dict[str, Any]:
        try:
            return evaluate_documents(
                model or self.model,
                self.corpus.valid,  # type: ignore[arg-type]
                self.config.seq_len,
                self.config.batch_size,
                max_tokens,
                should_stop=lambda: self.stop_requested,
            )
        except NumericalError as exc:
            raise self._diverged("validation loss", exc.value) from None
