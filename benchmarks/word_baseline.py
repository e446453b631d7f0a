"""The standard word-level baseline (issue #16): pytorch/examples ``word_language_model`` at its
defaults, written here from its published description (its README and command-line defaults),
not from its code:

- a 2-layer LSTM of 200 units over 200-dimensional embeddings, untied;
- dropout 0.2 on the embeddings, between the layers and on the last layer's output;
- embedding and decoder weights uniform in [-0.1, 0.1], decoder bias 0;
- plain SGD (w -= lr * grad) at lr 20, gradients clipped to norm 0.25, batch 20, BPTT 35,
  the hidden state carried across windows (detached);
- after every epoch, the validation loss; when it did not improve, lr /= 4; the best model
  by validation is the one tested.

Here a wall-clock ``budget`` (evaluations included) replaces the epoch count, and a run that
ends mid-epoch is evaluated once more at its end (``train``). ``stateful_perplexity`` is the
test protocol both sides of ``word_quality.py`` use: one pass over the whole split with the
state carried, ``batch`` contiguous streams (batch 1: every token but the first is scored).

Subnormal floats are flushed to zero while training and scoring (``runtime.flush_denormals``),
as lstmgen's trainer does: a machine setting, not part of the recipe, so both sides of
``word_quality.py`` run on the same arithmetic speed.

Dimensions: B batch, T time, V vocabulary, E = H = 200, L = 2.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lstmgen.runtime import flush_denormals

EMBED = HIDDEN = 200
LAYERS = 2
DROPOUT = 0.2
LR = 20.0
CLIP = 0.25
BATCH = 20
BPTT = 35
EVAL_BATCH = 10

# forward(ids (B, T), state) -> logits (B, T, V), state
ForwardFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


class BaselineLSTM(nn.Module):
    """embedding -> dropout -> LSTM x 2 (dropout between) -> dropout -> linear decoder."""

    def __init__(self, vocab: int):
        super().__init__()
        self.drop = nn.Dropout(DROPOUT)
        self.embedding = nn.Embedding(vocab, EMBED)
        self.rnn = nn.LSTM(EMBED, HIDDEN, LAYERS, dropout=DROPOUT, batch_first=True)
        self.decoder = nn.Linear(HIDDEN, vocab)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        x = self.drop(self.embedding(ids))  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H), ((L, B, H), (L, B, H))
        return self.decoder(self.drop(out)), state  # (B, T, V)


def streams(tokens: np.ndarray, batch: int, device: torch.device) -> torch.Tensor:
    """(N,) -> (B, N // B): B contiguous streams, the tail that does not fill a row dropped."""
    n = len(tokens) // batch
    ids = torch.from_numpy(np.asarray(tokens[: n * batch], dtype=np.int64))
    return ids.view(batch, n).to(device)


def _detach(state: Any) -> Any:
    return None if state is None else tuple(s.detach() for s in state)


@torch.no_grad()
def stateful_perplexity(
    forward: ForwardFn, tokens: np.ndarray, device: torch.device, batch: int = EVAL_BATCH
) -> tuple[float, int]:
    """(perplexity, tokens scored) of one stateful pass over ``tokens``: ``batch`` streams,
    windows of BPTT tokens, the state carried from window to window."""
    with flush_denormals(device):
        return _stateful_perplexity(forward, tokens, device, batch)


def _stateful_perplexity(
    forward: ForwardFn, tokens: np.ndarray, device: torch.device, batch: int
) -> tuple[float, int]:
    data = streams(tokens, batch, device)  # (B, n)
    total, count, state = 0.0, 0, None
    for start in range(0, data.shape[1] - 1, BPTT):
        end = min(start + BPTT, data.shape[1] - 1)
        x, y = data[:, start:end], data[:, start + 1 : end + 1]  # (B, T') each
        logits, state = forward(x, state)
        total += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                       y.reshape(-1), reduction="sum"))  # fmt: skip
        count += y.numel()
        state = _detach(state)
    return math.exp(total / count), count


@dataclass
class BaselineResult:
    model: BaselineLSTM  # the best by validation
    curve: list[dict[str, float]] = field(default_factory=list)  # elapsed_s, val_ppl, lr, epoch
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0


def train(
    train_tokens: np.ndarray,
    valid_tokens: np.ndarray,
    vocab: int,
    budget: float,
    device: torch.device,
    seed: int = 1111,
    log: Callable[[str], None] = print,
) -> BaselineResult:
    """Train the recipe for ``budget`` seconds of wall-clock time, evaluations included."""
    with flush_denormals(device):
        return _train(train_tokens, valid_tokens, vocab, budget, device, seed, log)


def _train(
    train_tokens: np.ndarray,
    valid_tokens: np.ndarray,
    vocab: int,
    budget: float,
    device: torch.device,
    seed: int,
    log: Callable[[str], None],
) -> BaselineResult:
    torch.manual_seed(seed)
    model = BaselineLSTM(vocab).to(device)
    data = streams(train_tokens, BATCH, device)  # (B, n)
    windows = range(0, data.shape[1] - 1, BPTT)
    lr, best, best_state = LR, math.inf, copy.deepcopy(model.state_dict())
    result = BaselineResult(model)
    began = time.perf_counter()
    # an epoch's evaluation takes about as long as the last one: stop early enough for it
    eval_reserve = 0.0

    def evaluate(epoch: float) -> None:
        nonlocal lr, best, best_state, eval_reserve
        t0 = time.perf_counter()
        model.eval()
        ppl, _ = stateful_perplexity(model, valid_tokens, device)
        model.train()
        if ppl < best:
            best, best_state = ppl, copy.deepcopy(model.state_dict())
        else:
            lr /= 4.0  # the recipe's annealing: validation did not improve
        eval_reserve = time.perf_counter() - t0
        elapsed = time.perf_counter() - began
        result.curve.append({"elapsed_s": round(elapsed, 1), "val_ppl": round(ppl, 2),
                             "lr": lr, "epoch": round(epoch, 3)})  # fmt: skip
        log(f"baseline epoch {epoch:.2f}: val ppl {ppl:.2f} at {elapsed:.0f}s (lr {lr:g})")

    epoch, out_of_time = 0, False
    while not out_of_time:
        model.train()
        state, stopped_at = None, len(windows)
        for i, start in enumerate(windows):
            if time.perf_counter() - began + eval_reserve >= budget:
                out_of_time, stopped_at = True, i
                break
            end = min(start + BPTT, data.shape[1] - 1)
            x, y = data[:, start:end], data[:, start + 1 : end + 1]  # (B, T') each
            model.zero_grad(set_to_none=True)
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
            state = _detach(state)
            result.steps += 1
            result.tokens += x.numel()
            if not result.curve and result.steps % 20 == 0:  # no evaluation timed yet: guess
                rate = result.tokens / (time.perf_counter() - began)  # (a forward ~ 1/3 a step)
                eval_reserve = len(valid_tokens) / (3 * rate)
        if stopped_at == 0 and result.curve:
            break  # the budget ended right after an epoch's evaluation
        evaluate(epoch + stopped_at / len(windows))
        epoch += 1
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - began
    return result
