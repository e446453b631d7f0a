"""The sha-lstm's one-token decoding step written out in torch ops (models/attention.py).

The same function as ``forward`` on one token in eval mode: the LSTM layers as fused matmuls
(``i, f, g, o = [x, h] @ W_l + b_l``, as recurrent_steppers.py) instead of two ``nn.LSTM``
calls, and the head as two batched products over the memory instead of a masked
``scaled_dot_product_attention`` over [memory, window] (with one token the window is the token
itself, so the mask is the memory's valid entries plus that one key).

Dimensions: B batch, H hidden, M memory capacity, L layers, a the attention layer.
"""

from __future__ import annotations

import math
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


class AttentionStepper:
    """``logits (B, V), state = step(ids (B,), state)`` for the sha-lstm (any device)."""

    # Measured on CPU (one thread, 2x384, interleaved medians; benchmarks/attention_cost.py
    # is the end-to-end figure): 1.2-1.3x forward's speed at batch 1 (memory 256 and 1,024),
    # even at 4, slower at 16 (the masked SDPA kernel reads the memory better than bmm).
    batch_below = 4

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
        s = 1.0 / math.sqrt(self.H)
        e_mem = torch.bmm(memory, q[:, :, None])[:, :, 0] * s  # (B, M)
        e_mem = e_mem.masked_fill(
            torch.arange(M, device=ids.device) < (M - length)[:, None], -math.inf
        )
        e_now = (q * n).sum(-1, keepdim=True) * s  # (B, 1): the token itself
        p = torch.softmax(torch.cat([e_mem, e_now], dim=1), dim=1)  # (B, M+1)
        o = torch.bmm(p[:, None, :M], memory)[:, 0] + p[:, M:] * n  # (B, H)
        y = x + o * torch.sigmoid(att.value_gate)
        if att.ff_in is not None:
            y = y + att.ff_out(F.gelu(att.ff_in(att.ff_norm(y)), approximate="tanh"))
        if self.upper:
            y = self._layers(y, h0[self.a + 1 :], c0[self.a + 1 :], self.upper, hs, cs)
        if self.projection is not None:
            y = y @ self.projection.t()  # (B, E)
        logits = F.linear(y, *self.decoder)  # (B, V)
        new_memory = torch.cat([memory[:, 1:], n[:, None]], dim=1)  # (B, M, H): shift by one
        parts = (torch.stack(hs), torch.stack(cs), new_memory, (length + 1).clamp(max=M))
        return logits, self.state_class(parts)


def make_stepper(model: Model, batch_size: int) -> AttentionStepper | None:
    """The written-out step for ``batch_size`` sequences on CPU where it is the faster, or None
    (``forward`` on one token; on CUDA that is what the graph captures)."""
    if model.device.type != "cpu" or batch_size >= AttentionStepper.batch_below:
        return None
    return AttentionStepper(model)
