"""Recurrent state helpers: join and select sequences along the batch dimension.

Dimensions: B batch, L layers, H hidden. An LSTM's state is ``(h, c)``, each (L, B, H); a GRU's
or RNN's is ``h`` (L, B, H). The model (model.py), the generator (generate.py) and the server's
batcher all use these; they live apart from the model so that the decoding modules need not
import it (model.py imports them lazily: that was an import cycle, issue #11).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

State = Tensor | tuple[Tensor, Tensor]


def cat_states(states: Sequence[State]) -> State:
    """Join per-sequence states along the batch dimension: each (L, b_i, H) -> (L, sum b_i, H)."""
    if isinstance(states[0], tuple):
        return tuple(torch.cat([s[i] for s in states], dim=1) for i in range(2))  # type: ignore[return-value]
    return torch.cat(states, dim=1)  # type: ignore[arg-type]


def index_state(state: State, idx: Tensor) -> State:
    """Rows ``idx`` of a state along the batch dimension: (L, B, H) -> (L, len(idx), H)."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, idx) for s in state)  # type: ignore[return-value]
    return state.index_select(1, idx)
