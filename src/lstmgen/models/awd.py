"""AWD-LSTM's regularisers for the recurrent stack (Merity et al. 2017, "Regularizing and
Optimizing LSTM Language Models", arXiv:1708.02182), applied only while training.

Dimensions: B batch, T time, V vocabulary, E embedding, H hidden, G gates x H, L layers.

    ids (B, T) -> embedding, whole rows dropped (dropout_embedding)     (B, T, E)
               -> locked dropout (dropout_input)
               -> layer k: LSTM/GRU/RNN with weight_hh_lk DropConnect-ed (weight_drop)
                  -> locked dropout between layers (dropout_hidden)      (B, T, H)
               -> locked dropout on the last layer's output (dropout_output)

The weights stay the plain ``rnn.weight_*_l{k}`` of the one ``nn.LSTM`` (so names, the
model directory and the fast steppers are unchanged): each forward pass computes the dropped
``weight_hh`` and calls the functional kernel (``torch._VF.lstm`` / ``gru`` / ``rnn_tanh``)
with it: all layers in one call, as ``nn.LSTM`` does, unless ``dropout_hidden`` puts a locked
dropout between them, then layer by layer. On CUDA the weight tensors are first concatenated
into one buffer and passed as views of it, in cuDNN's order (per layer w_ih, w_hh, b_ih, b_hh):
cuDNN then finds them "part of a single contiguous chunk" and runs its fused kernel without
compacting them (and without the warning). The concatenation is differentiable, so gradients
reach the raw weights.

In eval mode none of this runs: DropConnect rescales kept weights by 1 / (1 - p), so the
expected weight is the plain one, and dropout is the identity; ``recurrent.py`` then takes its
plain path (the fused multi-layer kernel), which the steppers match.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..config import ModelConfig


def active(config: ModelConfig) -> bool:
    """Whether any regulariser that needs the layer-by-layer path is on."""
    return bool(
        config.weight_drop
        or config.dropout_input
        or config.dropout_hidden
        or config.dropout_output
        or config.dropout_embedding
    )


def locked_dropout(x: Tensor, p: float) -> Tensor:
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence, shared over time.
    x (B, T, D) -> (B, T, D), with a mask (B, 1, D) scaled by 1 / (1 - p)."""
    if not p:
        return x
    mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p)  # (B, 1, D)
    return x * mask


def embedding_dropout(weight: Tensor, ids: Tensor, p: float) -> Tensor:
    """Drop whole words: rows of the (V, E) matrix zeroed, the kept ones scaled by 1 / (1 - p),
    one mask per forward pass (every occurrence of a word in the batch is dropped together).
    ids (B, T) -> (B, T, E). The mask is applied to the looked-up rows, ``mask[ids]``, which
    gives the same values and gradients as masking the matrix first but costs B x T x E
    instead of V x E, forward and backward: 18.6 -> 10.0 ms (median, forward + backward) for
    PTB's 10,000 x 400 matrix and a 32 x 35 batch on one Xeon core."""
    import torch.nn.functional as F

    if not p:
        return F.embedding(ids, weight)
    mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)  # (V, 1)
    return F.embedding(ids, weight) * mask[ids]  # (B, T, E) * (B, T, 1)


def dropconnect(w: Tensor, p: float) -> Tensor:
    """``w`` with each entry zeroed with probability ``p`` and the rest scaled by 1 / (1 - p),
    as ``F.dropout``. On CUDA F.dropout's one fused kernel (GPU-tested). On CPU, where the
    generator's draws are the cost (F.dropout's ``bernoulli_`` took 8.5-9.7 ms for a
    (1600, 400) weight_hh on one Xeon core, ``rand`` 2.9-4 ms), the mask compares 16-bit
    uniform integers, four from each 64-bit draw, against ``p`` rounded to 1 / 65536 (the
    scale uses that rounded probability, so the expected weight stays exactly ``w``): forward
    + backward 8.0 -> 5.8 ms (median) against the ``rand`` mask."""
    import torch
    import torch.nn.functional as F

    if w.is_cuda:
        return F.dropout(w, p, training=True)
    n = w.numel()
    drop = min(round(p * 65536), 65535)  # of 65,536 equally likely values
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=w.device).random_(-(2**63), None)
    r = bits.view(torch.int16)[:n].view(w.shape)  # uniform over [-32768, 32767]
    mask = r.ge(drop - 32768).to(w.dtype).mul_(65536 / (65536 - drop))  # 0 or 1 / (1 - p)
    return w * mask


def _layer_weights(rnn: nn.Module, k: int, p: float) -> list[Tensor]:
    """Layer k's [w_ih, w_hh (DropConnect-ed), b_ih, b_hh]."""
    w_hh = getattr(rnn, f"weight_hh_l{k}")  # (G, H)
    return [
        getattr(rnn, f"weight_ih_l{k}"),  # (G, E or H)
        dropconnect(w_hh, p) if p else w_hh,  # a fresh mask every forward
        getattr(rnn, f"bias_ih_l{k}"),  # (G,)
        getattr(rnn, f"bias_hh_l{k}"),  # (G,)
    ]


def _one_buffer(weights: list[Tensor]) -> list[Tensor]:
    """``weights`` as views of one contiguous buffer, in order: cuDNN's layout (layer by layer:
    w_ih, w_hh, b_ih, b_hh), so it uses them in place instead of compacting them each call."""
    import torch

    flat = torch.cat([w.reshape(-1) for w in weights])  # differentiable: grads reach weights
    views = flat.split([w.numel() for w in weights])
    return [v.view_as(w) for v, w in zip(views, weights, strict=True)]


def recurrent_stack(
    model: nn.Module, ids: Tensor, hx: Tensor | tuple[Tensor, Tensor] | None
) -> tuple[Tensor, Tensor, Tensor | tuple[Tensor, Tensor]]:
    """The training forward with the regularisers, up to the decoder: the last layer's output
    before and after its dropout, (B, T, H) each, and the new state ((L, B, H) h, or (h, c))."""
    import torch
    import torch.nn.functional as F
    from torch import _VF

    cfg = model.config
    cell, L = cfg.cell, cfg.num_layers
    kernel = {"lstm": _VF.lstm, "gru": _VF.gru, "rnn": _VF.rnn_tanh}[cell]
    x = embedding_dropout(model.embedding.weight, ids, cfg.dropout_embedding)  # (B, T, E)
    x = locked_dropout(x, cfg.dropout_input)
    if hx is None:
        h0 = x.new_zeros(L, ids.shape[0], cfg.hidden_size)  # (L, B, H)
        hx = (h0, torch.zeros_like(h0)) if cell == "lstm" else h0
    if not cfg.dropout_hidden:  # nothing between layers but nn.LSTM's dropout: one fused call
        p = cfg.weight_drop
        weights = [w for k in range(L) for w in _layer_weights(model.rnn, k, p)]
        if x.is_cuda:
            weights = _one_buffer(weights)
        between = cfg.dropout if L > 1 else 0.0
        if cell == "lstm":
            out, h, c = kernel(x, hx, weights, True, L, between, True, False, True)
            return out, locked_dropout(out, cfg.dropout_output), (h, c)
        out, h = kernel(x, hx, weights, True, L, between, True, False, True)
        return out, locked_dropout(out, cfg.dropout_output), h
    hs, cs = [], []
    for k in range(L):
        weights = _layer_weights(model.rnn, k, cfg.weight_drop)
        if x.is_cuda:  # cuDNN's layout: one buffer per call
            weights = _one_buffer(weights)
        if cell == "lstm":
            h, c = hx
            out, hk, ck = kernel(x, (h[k : k + 1], c[k : k + 1]), weights, True, 1, 0.0, True,
                                 False, True)  # fmt: skip
            cs.append(ck)
        else:
            out, hk = kernel(x, hx[k : k + 1], weights, True, 1, 0.0, True, False, True)
        hs.append(hk)  # (1, B, H)
        if k < L - 1:  # nn.LSTM's own dropout between layers, then the locked one
            x = locked_dropout(F.dropout(out, cfg.dropout, training=True), cfg.dropout_hidden)
    state = torch.cat(hs)  # (L, B, H)
    new = (state, torch.cat(cs)) if cell == "lstm" else state
    return out, locked_dropout(out, cfg.dropout_output), new
