"""The recurrent stack's one-token decoding steps: ``logits (B, V), state = step(ids (B,), state)``.

Generation feeds one token at a time, so a step is a handful of small matrix-vector products and
the fixed cost of each call matters more than its arithmetic. ``nn.LSTM`` pays a per-call setup
(about 4 ms in oneDNN on CPU) that dwarfs a batch-1 step. These steppers compute the same
function as ``LanguageModel.forward`` on one token in eval mode (no dropout), written out per
layer with the input and recurrent matmuls fused into one product over pre-concatenated weights:

  LSTM: i, f, g, o = [x, h] @ W_l + b_l;  c' = σ(f) c + σ(i) tanh(g);  h' = σ(o) tanh(c')
  GRU:  r, z from (x W_ih^T + b_ih) + (h W_hh^T + b_hh);  n = tanh(x_n + r (h_n));
        h' = (1 - z) n + z h
  RNN:  h' = tanh([x, h] @ W_l + b_l)

with W_l = [W_ih; W_hh]^T and b_l = b_ih + b_hh, as in PyTorch's formulation.

``TorchStepper`` runs on any device. ``NumpyStepper`` runs the same step on the CPU through
NumPy, whose OpenBLAS matrix-vector kernels are 2-3x faster here than the MKL ones PyTorch's CPU
build calls at small batch (2-core AMD EPYC, 1024 x 2048 float32 weights: 90 vs 250 µs at batch
1, 2.3 vs 4.9 ms at batch 64); see benchmarks/generation.py. Both share the model's weights'
values but hold their own copies, so make a new stepper after training changes the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..reference.cells import sigmoid
from ..runtime import NATIVE_RNN_BELOW
from ..state import State

if TYPE_CHECKING:
    from .base import Model

# Batches below this size step through NumPy on CPU; larger ones go through nn.LSTM (oneDNN),
# whose per-call cost is amortised there. Measured with benchmarks/generation.py.
NUMPY_BELOW = 128
NUMPY_DTYPES = (torch.float32, torch.float64)


def _layer_weights(model: Model) -> list[tuple[Tensor, ...]]:
    """Per layer: (W (E_l + H, G*H), b) fused for LSTM/RNN; (W_ih^T, b_ih, W_hh^T, b_hh) for GRU,
    whose candidate needs r * (h W_hn + b_hn) and so keeps the two products apart."""
    rnn, cfg = model.rnn, model.config
    layers = []
    with torch.no_grad():
        for layer in range(cfg.num_layers):
            w_ih = getattr(rnn, f"weight_ih_l{layer}")
            w_hh = getattr(rnn, f"weight_hh_l{layer}")
            b_ih = getattr(rnn, f"bias_ih_l{layer}")
            b_hh = getattr(rnn, f"bias_hh_l{layer}")
            if cfg.cell == "gru":
                layers.append(
                    (w_ih.t().contiguous(), b_ih.clone(), w_hh.t().contiguous(), b_hh.clone())
                )
            else:
                w = torch.cat([w_ih, w_hh], dim=1).t().contiguous()  # (E_l + H, G*H)
                layers.append((w, b_ih + b_hh))
    return layers


class TorchStepper:
    """The fused step in PyTorch ops (any device)."""

    batch_below = NATIVE_RNN_BELOW  # on CPU, larger batches are as fast through nn.LSTM

    def __init__(self, model: Model):
        self.cell = model.config.cell
        self.layers = _layer_weights(model)
        self.embedding = model.embedding.weight.detach()
        self.projection = None if model.projection is None else model.projection.weight.detach()
        self.head = _adaptive_head(model)
        self.decoder = (
            None if self.head else (model.decoder.weight.detach(), model.decoder.bias.detach())
        )

    @torch.inference_mode()
    def __call__(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        x = F.embedding(ids, self.embedding)  # (B, E)
        hs, cs = [], []
        state = State.of(state)
        h_all, c_all = state[0], state[1] if self.cell == "lstm" else None
        for layer, weights in enumerate(self.layers):
            h = h_all[layer]  # (B, H)
            if self.cell == "lstm":
                w, b = weights
                gates = torch.addmm(b, torch.cat([x, h], dim=1), w)  # (B, 4H)
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.sigmoid(f) * c_all[layer] + torch.sigmoid(i) * torch.tanh(g)
                x = torch.sigmoid(o) * torch.tanh(c)  # (B, H)
                cs.append(c)
            elif self.cell == "gru":
                w_ih, b_ih, w_hh, b_hh = weights
                gi = torch.addmm(b_ih, x, w_ih).chunk(3, dim=1)  # r, z, n parts, (B, H) each
                gh = torch.addmm(b_hh, h, w_hh).chunk(3, dim=1)
                r = torch.sigmoid(gi[0] + gh[0])
                z = torch.sigmoid(gi[1] + gh[1])
                n = torch.tanh(gi[2] + r * gh[2])
                x = (1 - z) * n + z * h
            else:
                w, b = weights
                x = torch.tanh(torch.addmm(b, torch.cat([x, h], dim=1), w))
            hs.append(x)
        if self.projection is not None:
            x = x @ self.projection.t()  # (B, E)
        if self.head is not None:  # adaptive softmax: its log-probabilities are the logits
            logits = self.head.log_prob(x)  # (B, V)
        else:
            logits = F.linear(x, *self.decoder)  # (B, V)
        h_new = torch.stack(hs)  # (L, B, H)
        return logits, State((h_new, torch.stack(cs)) if self.cell == "lstm" else (h_new,))


class NumpyStepper:
    """The fused step through NumPy on CPU (float32 or float64 weights); tensors in and out.

    Inputs and outputs are CPU tensors sharing memory with NumPy arrays (no copies)."""

    batch_below = NUMPY_BELOW

    def __init__(self, model: Model):
        self.cell = model.config.cell
        self.H = model.config.hidden_size
        self.layers = [tuple(w.numpy() for w in ws) for ws in _layer_weights(model)]
        with torch.no_grad():
            self.embedding = model.embedding.weight.detach().numpy().copy()  # (V, E)
            proj = None if model.projection is None else model.projection.weight.detach()
            self.projection = None if proj is None else proj.t().contiguous().numpy()  # (H, E)
            self.head = _adaptive_head(model)
            if self.head is None:
                self.decoder_w = model.decoder.weight.detach().t().contiguous().numpy()  # (E|H, V)
                self.decoder_b = model.decoder.bias.detach().numpy().copy()  # (V,)

    def __call__(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        # Overflow (weights of a diverged run) gives inf/NaN as torch does, silently: the
        # generator reports non-finite logits as one error.
        with np.errstate(over="ignore", invalid="ignore"):
            return self._step(ids, state)

    def _step(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        H = self.H
        x = self.embedding[ids.numpy()]  # (B, E)
        state = State.of(state)
        h_all = state[0].detach().numpy()  # (L, B, H)
        c_all = state[1] if self.cell == "lstm" else None
        c_all = None if c_all is None else c_all.detach().numpy()
        L, B = h_all.shape[0], x.shape[0]
        h_new = np.empty((L, B, H), dtype=x.dtype)  # (L, B, H)
        c_new = np.empty_like(h_new) if self.cell == "lstm" else None
        for layer, weights in enumerate(self.layers):
            h = h_all[layer]  # (B, H)
            if self.cell == "lstm":
                w, b = weights
                gates = np.concatenate([x, h], axis=1) @ w  # (B, 4H)
                gates += b
                act = sigmoid(gates)  # i, f, o parts used; g replaced by tanh below
                g = np.tanh(gates[:, 2 * H : 3 * H])
                c = np.multiply(act[:, H : 2 * H], c_all[layer], out=c_new[layer])
                c += act[:, :H] * g
                x = np.multiply(act[:, 3 * H :], np.tanh(c), out=h_new[layer])
            elif self.cell == "gru":
                w_ih, b_ih, w_hh, b_hh = weights
                gi = x @ w_ih + b_ih  # (B, 3H): r, z, n parts
                gh = h @ w_hh + b_hh
                rz = sigmoid(gi[:, : 2 * H] + gh[:, : 2 * H])
                r, z = rz[:, :H], rz[:, H:]
                n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
                x = h_new[layer]
                np.multiply(1 - z, n, out=x)
                x += z * h
            else:
                w, b = weights
                pre = np.concatenate([x, h], axis=1) @ w  # (B, H)
                pre += b
                x = np.tanh(pre, out=h_new[layer])
        if self.projection is not None:
            x = x @ self.projection  # (B, E)
        h_t = torch.from_numpy(h_new)
        parts = (h_t, torch.from_numpy(c_new)) if c_new is not None else (h_t,)
        if self.head is not None:  # adaptive softmax: its log-probabilities are the logits
            with torch.inference_mode():
                return self.head.log_prob(torch.from_numpy(np.ascontiguousarray(x))), State(parts)
        logits = x @ self.decoder_w  # (B, V)
        logits += self.decoder_b
        return torch.from_numpy(logits), State(parts)


def _adaptive_head(model: Model) -> Any:
    """A copy of the model's adaptive-softmax head (models/adaptive.py), or None: the recurrent
    step stays fused, the head's ``log_prob`` gives the (B, V) log-probabilities."""
    if not model.config.adaptive_cutoffs:
        return None
    import copy

    return copy.deepcopy(model.decoder).eval()  # a stepper holds its own weights


def make_stepper(model: Model, batch_size: int) -> Any:
    """The fastest one-token step for ``batch_size`` sequences on the model's device, or None
    where a plain ``model(ids[:, None], state)`` call is as fast (large CPU batches, GPU)."""
    if model.device.type != "cpu":
        return None
    if getattr(model, "int8", None) and model.embedding.weight.dtype == torch.float32:
        from .recurrent_int8 import INT8_BELOW, int8_stepper  # an int8 directory

        return int8_stepper(model) if batch_size < INT8_BELOW else None
    cls = NumpyStepper if model.embedding.weight.dtype in NUMPY_DTYPES else TorchStepper
    return cls(model) if batch_size < cls.batch_below else None
