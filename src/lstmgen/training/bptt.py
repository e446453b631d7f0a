"""Variable-length backpropagation through time (AWD-LSTM, Merity et al. 2017, section 4.1).

With a fixed ``seq_len`` every epoch cuts the streams at the same places, so the tokens at a
window's start never see a gradient through a long history. AWD-LSTM draws each window's length
instead: N(seq_len, 5) with probability 0.95, else N(seq_len / 2, 5), at least 5; and scales the
learning rate by length / seq_len, so that short windows do not weigh as much as long ones.

Here an epoch's cuts are drawn up front from a generator seeded by (seed, epoch), so window k of
an epoch is the same on an uninterrupted run and on one stopped and resumed (no state to save).
The epoch keeps the fixed setting's number of windows (``data.num_windows``), which epochs,
schedules and saved positions count in; the drawn lengths are stretched by a common factor (a
few per cent: the draws average 0.975 x seq_len) to cover the epoch's tokens exactly.
"""

from __future__ import annotations

import numpy as np

P_FULL = 0.95  # probability of drawing around seq_len rather than seq_len / 2
STD = 5.0  # tokens
MIN_LEN = 5


def window_cuts(seed: int, epoch: int, tokens: int, seq_len: int, windows: int) -> np.ndarray:
    """Cut points (windows + 1,) from 0 to ``tokens``, strictly increasing: window k covers
    input columns ``cuts[k]:cuts[k + 1]``. Needs ``1 <= windows <= tokens``."""
    rng = np.random.default_rng([seed, epoch])
    mean = np.where(rng.random(windows) < P_FULL, seq_len, seq_len / 2)  # (windows,)
    lengths = np.maximum(MIN_LEN, rng.normal(mean, STD))
    share = np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])  # (windows + 1,)
    # one token per window for sure, the rest shared in proportion to the drawn lengths
    cuts = np.arange(windows + 1) + np.round(share * (tokens - windows)).astype(np.int64)
    cuts[-1] = tokens
    return cuts
