"""The sha-lstm's one-token decoding step written out in torch ops (models/attention.py).

The same function as ``forward`` on one token in eval mode: the LSTM layers as fused matmuls
(``i, f, g, o = [x, h] @ W_l + b_l``, as recurrent_steppers.py) instead of ``nn.LSTM`` calls,
whose fixed per-call cost dominates one token; the head is forward's: one masked
``scaled_dot_product_attention`` over [memory, the token] (with one token the causal window is
the token itself, so the mask is only the row's valid memory entries), and that same
concatenation, shifted by one, is the new memory.

The concatenation is not a copy: memories are views of a buffer with room beyond them
(``_Slide``), and while a step is given the memory its previous step returned, it writes the
token's entry into the next free slot and returns the memory as a view one slot further on.
A step then writes H numbers per sequence instead of copying all M x H (``forward``'s
``torch.cat``), the cost that dominated at large batches and memories
(benchmarks/attention_cost.py). The state stays a value: a slot is only ever written beyond
every view handed out, and any other memory (primed by ``forward``, rows joined or split by
``State.cat`` / ``select``, a state stepped twice) is first copied into a fresh buffer.

Dimensions: B batch, H hidden, M memory capacity, L layers, a the attention layer.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from ..state import State
    from .base import Model


def _fused(rnn: torch.nn.LSTM, layers: int) -> list[tuple[Tensor, Tensor]]:
    """Per layer: W (E_l + H, 4H) = [W_ih; W_hh]^T and b = b_ih + b_hh."""
    out = []
    with torch.no_grad():
        for k in range(layers):
            w = torch.cat([getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")], 1)
            b = getattr(rnn, f"bias_ih_l{k}") + getattr(rnn, f"bias_hh_l{k}")
            out.append((w.t().contiguous(), b))
    return out


class _Slide:
    """Memories handed out as views of a buffer with ``spare`` free slots past them.

    A fresh buffer is (B, M + 1 + spare, H). ``next(memory, n)`` returns the step's keys/values
    [memory, n] (B, M + 1, H) and the new memory, its ``[:, 1:]``: when ``memory`` is the very
    tensor the last call returned and a slot is left, [memory, n] is memory's view extended by
    the next slot (n is written there, beyond every view handed out); otherwise the memory is
    first copied into a fresh buffer. Each step costs H numbers per sequence, plus M x H every
    ``spare`` steps. Only a weak reference is kept: the buffer lives as long as a state does.
    Consecutive memories share M - 1 entries of storage, so a memory must not be written in
    place (nothing in lstmgen does: states are replaced, never edited)."""

    def __init__(self) -> None:
        self.last: weakref.ref[Tensor] | None = None  # the memory the last call returned
        self.left = 0  # free slots past it

    def next(self, memory: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
        """memory (B, M, H), the token's entry n (B, H) -> [memory, n], the new memory."""
        B, M, H = memory.shape
        if self.last is not None and self.last() is memory and self.left > 0:
            nm = memory.as_strided((B, M + 1, H), memory.stride(), memory.storage_offset())
            self.left -= 1
        else:
            spare = max(64, M // 4)  # a fresh buffer every `spare` steps; 25 % more memory
            buf = memory.new_empty(B, M + 1 + spare, H)
            buf[:, :M] = memory
            nm, self.left = buf[:, : M + 1], spare
        nm[:, M] = n
        new = nm[:, 1:]
        self.last = weakref.ref(new)
        return nm, new


class AttentionStepper:
    """``logits (B, V), state = step(ids (B,), state)`` for the sha-lstm (any device)."""

    # Measured on CPU (one thread, 2x384, memory 256 and 1,024, interleaved medians of
    # per-step times on a busy 2-core machine): 1.3-1.5x forward's speed at batch 1, 1.1-1.3x at
    # 4, 1.0-1.2x at 16 and 1.1x at 64 (the fused LSTM matmuls against nn.LSTM's per-call cost;
    # the attention is the same SDPA call). Not measured above 64: forward there.
    batch_below = 65

    def __init__(self, model: Model):
        cfg = model.config
        self.a, self.H = cfg.attention_layer % cfg.num_layers, cfg.hidden_size  # as attention.py
        self.lower = _fused(model.lower, self.a + 1)
        self.upper = [] if model.upper is None else _fused(model.upper, cfg.num_layers - self.a - 1)
        self.attention = model.attention  # its LayerNorms, query, gates and boom (eval: no dropout)
        self.embedding = model.embedding.weight.detach()
        self.projection = None if model.projection is None else model.projection.weight.detach()
        self.decoder = (model.decoder.weight.detach(), model.decoder.bias.detach())
        self.state_class = type(model.init_state(0))  # attention.AttentionState
        self.slide = _Slide()

    @staticmethod
    def _layers(x: Tensor, h: Tensor, c: Tensor, weights: list, hs: list, cs: list) -> Tensor:
        for k, (w, b) in enumerate(weights):
            gates = torch.addmm(b, torch.cat([x, h[k]], dim=1), w)  # (B, 4H)
            i, f, g, o = gates.chunk(4, dim=1)
            c_k = torch.sigmoid(f) * c[k] + torch.sigmoid(i) * torch.tanh(g)
            x = torch.sigmoid(o) * torch.tanh(c_k)  # (B, H)
            hs.append(x)
            cs.append(c_k)
        return x

    @torch.inference_mode()
    def __call__(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        h0, c0, memory, length = state
        M, att = memory.shape[1], self.attention
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        x = F.embedding(ids, self.embedding)  # (B, E)
        x = self._layers(x, h0[: self.a + 1], c0[: self.a + 1], self.lower, hs, cs)  # (B, H)
        n = att.norm(x)  # (B, H)
        q = att.query(n) * torch.sigmoid(att.key_gate)  # (B, H): the key gate moved onto q
        # keys/values: the memory and the token itself; [:, 1:] of it is the new memory
        nm, new = self.slide.next(memory, n)  # (B, M+1, H), a view: no copy of the memory
        valid = torch.arange(M + 1, device=ids.device) >= (M - length)[:, None]  # (B, M+1)
        o = F.scaled_dot_product_attention(
            q[:, None, None], nm[:, None], nm[:, None], attn_mask=valid[:, None, None]
        )[:, 0, 0]  # (B, H)
        y = x + o * torch.sigmoid(att.value_gate)
        if att.ff_in is not None:
            y = y + att.ff_out(F.gelu(att.ff_in(att.ff_norm(y)), approximate="tanh"))
        if self.upper:
            y = self._layers(y, h0[self.a + 1 :], c0[self.a + 1 :], self.upper, hs, cs)
        if self.projection is not None:
            y = y @ self.projection.t()  # (B, E)
        logits = F.linear(y, *self.decoder)  # (B, V)
        parts = (torch.stack(hs), torch.stack(cs), new, (length + 1).clamp(max=M))
        return logits, self.state_class(parts)


def make_stepper(model: Model, batch_size: int) -> AttentionStepper | None:
    """The written-out step for ``batch_size`` sequences on CPU where it is the faster, or None
    (``forward`` on one token; on CUDA that is what the graph captures)."""
    if model.device.type != "cpu" or batch_size >= AttentionStepper.batch_below:
        return None
    return AttentionStepper(model)
