"""The adaptive-softmax heads (adaptive.py's module doc) and their shared two-level math.

Dimensions: N rows, D the width the head reads (H, or E when tied), V vocabulary, S the
shortlist (the first cutoff), C clusters, V_c the words of cluster c.

Both heads give the logits of the head (the S shortlist words and the C clusters) and of each
tail; ``TwoLevel`` turns them into log-probabilities the same way for both:

    log p(w) = log_softmax(head(x))[w]                                    w < S
    log p(w) = log_softmax(head(x))[S + c] + log_softmax(tail_c(x))[w - lo_c]   w in cluster c

The matrix products follow autocast (bf16 on CPUs with native bf16 and on CUDA: the head is
a third of a word model's training step on CPU in float32); each log-softmax runs in float32
(``.float()`` first), so no log-probability is rounded to bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TwoLevel:
    """The log-probabilities of a head that has ``cutoffs`` ([S, ..., V]), ``head_logits``
    (x (N, D) -> (N, S + C)) and ``tail_logits`` (x (n, D), c -> (n, V_c))."""

    cutoffs: list[int]

    def head_logits(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def tail_logits(self, x: Tensor, c: int) -> Tensor:
        raise NotImplementedError

    def target_log_probs(self, x: Tensor, targets: Tensor) -> Tensor:
        """x (N, D), targets (N,) in [0, V) -> float32 (N,) log-probabilities of the targets;
        a tail runs only on the rows whose target is in its cluster."""
        S, cuts = self.cutoffs[0], self.cutoffs
        bounds = torch.tensor(cuts[:-1], device=targets.device)
        cluster = torch.bucketize(targets, bounds, right=True)  # (N,) 0: the shortlist
        column = torch.where(cluster == 0, targets, S + cluster - 1)  # (N,) of the head
        # cross_entropy: log-softmax and pick in one op (its backward writes no (N, S + C)
        # one-hot, as gather's would)
        logits = self.head_logits(x).float()  # (N, S + C)
        out = -F.cross_entropy(logits, column, reduction="none")  # (N,)
        for c in range(len(cuts) - 1):
            rows = (cluster == c + 1).nonzero().squeeze(1)  # (n,)
            if rows.numel():
                tail = self.tail_logits(x[rows], c).float()  # (n, V_c)
                word = targets[rows] - cuts[c]  # (n,)
                out = out.index_add(0, rows, -F.cross_entropy(tail, word, reduction="none"))
        return out

    def log_prob(self, x: Tensor) -> Tensor:
        """x (N, D) -> float32 (N, V) log-probabilities of every word."""
        S = self.cutoffs[0]
        head = self.head_logits(x).float().log_softmax(dim=1)  # (N, S + C)
        tails = [
            self.tail_logits(x, c).float().log_softmax(dim=1) + head[:, S + c : S + c + 1]
            for c in range(len(self.cutoffs) - 1)
        ]
        return torch.cat([head[:, :S], *tails], dim=1)  # (N, V)


class UntiedAdaptiveSoftmax(TwoLevel, nn.AdaptiveLogSoftmaxWithLoss):
    """torch's module (its weights and their names: ``head``, ``tail.{c}.{0,1}``, low-rank
    tails H -> H / 4^(c+1) -> V_c), read through ``TwoLevel``."""

    def head_logits(self, x: Tensor) -> Tensor:
        return self.head(x)  # (N, S + C)

    def tail_logits(self, x: Tensor, c: int) -> Tensor:
        return self.tail[c](x)  # (n, V_c)


class TiedAdaptiveSoftmax(TwoLevel, nn.Module):
    """Every word's output vector is its embedding row: ``weight`` (V, E) is the embedding
    (recurrent.py ties it), ``bias`` (V,) one per word, ``cluster`` the C cluster rows. The
    tails are full rank (E wide): a rare word keeps the vector its embedding learns."""

    def __init__(self, vocab_size: int, cutoffs: list[int], in_features: int):
        super().__init__()
        self.cutoffs = [*cutoffs, vocab_size]
        self.register_parameter("weight", None)  # the embedding, set by the architecture
        self.bias = nn.Parameter(torch.zeros(vocab_size))  # (V,)
        self.cluster = nn.Linear(in_features, len(cutoffs))  # (C, E)
        nn.init.uniform_(self.cluster.weight, -0.1, 0.1)  # as the embedding's rows
        nn.init.zeros_(self.cluster.bias)

    def head_logits(self, x: Tensor) -> Tensor:
        S = self.cutoffs[0]
        words = F.linear(x, self.weight[:S], self.bias[:S])  # (N, S)
        return torch.cat([words, self.cluster(x).to(words.dtype)], dim=1)  # (N, S + C)

    def tail_logits(self, x: Tensor, c: int) -> Tensor:
        lo, hi = self.cutoffs[c], self.cutoffs[c + 1]
        return F.linear(x, self.weight[lo:hi], self.bias[lo:hi])  # (n, V_c)
