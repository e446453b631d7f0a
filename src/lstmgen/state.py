"""The state a model carries from one call to the next: ``logits, state = model(ids, state)``.

A ``State`` is a tuple of tensors, each with the batch along dimension 1 (the recurrent stack's
``(h, c)`` for an LSTM, ``(h,)`` for a GRU or RNN: each (L, B, H)). Its architecture makes it
(models/); every consumer — the generator, the CUDA graph, the server's batcher, the trainer —
only calls the operations below, so an architecture may carry other parts (a growing attention
memory, say) by setting ``batch_dims`` in a subclass without any consumer changing (issue #11).

The tuple itself is the flat form for export; ``tensors`` / ``from_tensors`` name its parts
for the trainer state (``hidden.0``, ``hidden.1``: the names ``trainer/state.safetensors`` has
always used).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch-free at import: config.py reaches this through models/registry.py
    import torch
    from torch import Tensor

PREFIX = "hidden."  # tensor names in the trainer state: hidden.0, hidden.1, ...


class State(tuple):
    """Tensors carried between calls; immutable like a tuple, every operation returns a new one.

    >>> state = model.init_state(2)  # doctest: +SKIP
    >>> both = State.cat([state, state]).select(torch.tensor([0, 3]))  # doctest: +SKIP
    """

    # The dimension each part keeps its batch in (None: 1 for every part). Joining and
    # selecting sequences happen along these.
    batch_dims: tuple[int, ...] | None = None

    @classmethod
    def of(cls, state: Any) -> State:
        """A ``State`` for the forms callers used before there was one: a tuple of tensors
        such as ``(h, c)``, or one tensor ``h``."""
        if isinstance(state, State):
            return state
        return cls(state) if isinstance(state, tuple) else cls((state,))

    def _dim(self, i: int) -> int:
        return 1 if self.batch_dims is None else self.batch_dims[i]

    def _new(self, parts: Any) -> State:
        return type(self)(parts)

    @classmethod
    def cat(cls, states: Sequence[State]) -> State:
        """Join sequences: parts (L, b_i, H) -> (L, sum b_i, H)."""
        import torch

        first = states[0]
        if len(states) == 1:
            return first
        return first._new(
            torch.cat([s[i] for s in states], dim=first._dim(i)) for i in range(len(first))
        )

    def select(self, idx: Tensor) -> State:
        """Rows ``idx`` (a long tensor) along the batch: (L, B, H) -> (L, len(idx), H)."""
        return self._new(t.index_select(self._dim(i), idx) for i, t in enumerate(self))

    def where(self, rows: Tensor, other: State) -> State:
        """This state with the rows where ``rows`` (B,) bool is True taken from ``other`` (the
        same shapes): a labelled corpus resets the rows that start a document
        (training/label_rows.py)."""
        import torch

        parts = []
        for i, (t, o) in enumerate(zip(self, other, strict=True)):
            shape = [1] * t.dim()
            shape[self._dim(i)] = -1
            parts.append(torch.where(rows.view(shape), o.to(t.dtype), t))
        return self._new(parts)

    @property
    def batch_size(self) -> int:
        return self[0].shape[self._dim(0)]

    def detach(self) -> State:
        """The same values cut from the autograd graph (truncated BPTT between windows)."""
        return self._new(t.detach() for t in self)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> State:
        return self._new(t.to(device=device, dtype=dtype) for t in self)

    def clone(self) -> State:
        """Fresh storage: the CUDA graph's fixed-address buffers (cudagraph.py)."""
        return self._new(t.clone() for t in self)

    def copy_(self, other: State) -> State:
        """Copy ``other``'s values into this state's own storage (addresses kept)."""
        for dst, src in zip(self, other, strict=True):
            dst.copy_(src)
        return self

    def tensors(self, prefix: str = PREFIX) -> dict[str, Tensor]:
        """Named parts, for a safetensors file: ``{"hidden.0": h, "hidden.1": c}``."""
        return {f"{prefix}{i}": t for i, t in enumerate(self)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], prefix: str = PREFIX) -> State | None:
        """The state ``tensors`` wrote (other names ignored), or None when it holds none."""
        parts = []
        while f"{prefix}{len(parts)}" in tensors:
            parts.append(tensors[f"{prefix}{len(parts)}"])
        return cls(parts) if parts else None
