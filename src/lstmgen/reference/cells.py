"""LSTM, GRU and tanh-RNN layers in NumPy: forward over a sequence and backpropagation through time.

Dimensions: B batch, T time, I input size, H hidden size. Every layer is a pair of functions::

    y, state, cache = <cell>_forward(x, state, p)      x (B, T, I) -> y (B, T, H)
    dx, dstate, grads = <cell>_backward(dy, dstate, cache)

``state`` is a tuple of (B, H) arrays: ``(h, c)`` for the LSTM, ``(h,)`` for GRU and RNN. ``p`` is
the layer's parameters in PyTorch's layout and names (``torch.nn.LSTM`` and friends)::

    W_ih (G*H, I)   W_hh (G*H, H)   b_ih (G*H,)   b_hh (G*H,)      G = 4 (LSTM), 3 (GRU), 1 (RNN)

so a PyTorch checkpoint loads without any reshuffling. The gate blocks are stacked in PyTorch's
order: i, f, g, o for the LSTM and r, z, n for the GRU.

``backward`` takes the gradient of the loss with respect to every output ``dy`` (B, T, H) and
with respect to the final state, and returns the gradient with respect to the input ``dx``
(B, T, I), the initial state and the parameters. It walks the sequence backwards, carrying
``dh`` (and ``dc``) from step t to step t - 1: that carried term *is* backpropagation through
time. docs/lstm.md derives every line.
"""

from __future__ import annotations

import numpy as np

Params = dict[str, np.ndarray]
State = tuple[np.ndarray, ...]

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def sigmoid(x: np.ndarray) -> np.ndarray:
    # sigma(x) = (1 + tanh(x / 2)) / 2 exactly; unlike 1 / (1 + exp(-x)) it never overflows.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _input_part(x: np.ndarray, p: Params) -> np.ndarray:
    """W_ih x_t + b_ih for every step at once: one big matrix product instead of T small ones."""
    return x @ p["W_ih"].T + p["b_ih"]  # (B, T, G*H)


def _param_grads(
    x: np.ndarray, h_prev: np.ndarray, dax: np.ndarray, dah: np.ndarray, p: Params
) -> tuple[np.ndarray, Params]:
    """Gradients of the four parameters and of the input, given the gradients of the
    pre-activations: ``dax`` of the input part and ``dah`` of the recurrent part, each (B, T, G*H).
    (For LSTM and RNN the two are the same array; the GRU's n gate makes them differ.)"""
    B, T, n_in = x.shape
    GH = dax.shape[-1]
    H = h_prev.shape[-1]
    grads = {
        "W_ih": dax.reshape(B * T, GH).T @ x.reshape(B * T, n_in),  # (G*H, I): sum over b and t
        "W_hh": dah.reshape(B * T, GH).T @ h_prev.reshape(B * T, H),  # (G*H, H)
        "b_ih": dax.sum(axis=(0, 1)),  # (G*H,)
        "b_hh": dah.sum(axis=(0, 1)),  # (G*H,)
    }
    dx = dax @ p["W_ih"]  # (B, T, I)
    return dx, grads


# --- LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000) ------------


def lstm_forward(x: np.ndarray, state: State, p: Params) -> tuple[np.ndarray, State, tuple]:
    """PyTorch's LSTM, one layer::

    i = sigma(W_ii x + b_ii + W_hi h + b_hi)      input gate
    f = sigma(W_if x + b_if + W_hf h + b_hf)      forget gate
    g = tanh (W_ig x + b_ig + W_hg h + b_hg)      candidate (tanh, not sigma)
    o = sigma(W_io x + b_io + W_ho h + b_ho)      output gate
    c' = f * c + i * g                            the cell state: additive update
    h' = o * tanh(c')                             the output and the next hidden state
    """
    h, c = state  # (B, H) each
    B, T, _ = x.shape
    H = h.shape[1]
    ax = _input_part(x, p)  # (B, T, 4H)
    hs = np.empty((B, T + 1, H), x.dtype)  # hs[:, t] is h_{t-1}; hs[:, 1:] is the output
    cs = np.empty((B, T + 1, H), x.dtype)
    acts = np.empty((B, T, 4 * H), x.dtype)  # i, f, g, o after their nonlinearities
    tanh_c = np.empty((B, T, H), x.dtype)
    hs[:, 0], cs[:, 0] = h, c
    for t in range(T):
        a = ax[:, t] + h @ p["W_hh"].T + p["b_hh"]  # (B, 4H) pre-activations
        i = sigmoid(a[:, :H])
        f = sigmoid(a[:, H : 2 * H])
        g = np.tanh(a[:, 2 * H : 3 * H])
        o = sigmoid(a[:, 3 * H :])
        c = f * c + i * g  # (B, H)
        tc = np.tanh(c)
        h = o * tc  # (B, H)
        acts[:, t] = np.concatenate([i, f, g, o], axis=1)
        hs[:, t + 1], cs[:, t + 1], tanh_c[:, t] = h, c, tc
    return hs[:, 1:], (h, c), (x, p, hs, cs, acts, tanh_c)


def lstm_backward(dy: np.ndarray, dstate: State, cache: tuple) -> tuple[np.ndarray, State, Params]:
    x, p, hs, cs, acts, tanh_c = cache
    B, T, H = dy.shape
    dh, dc = (s.copy() for s in dstate)  # gradients flowing into h_T and c_T from later on
    da = np.empty((B, T, 4 * H), dy.dtype)  # gradients of the pre-activations
    for t in reversed(range(T)):
        i, f, g, o = (acts[:, t, k * H : (k + 1) * H] for k in range(4))
        tc = tanh_c[:, t]
        dh = dh + dy[:, t]  # h_t feeds the output at t and the step t + 1
        do = dh * tc  # h = o * tanh(c)
        dc = dc + dh * o * (1 - tc * tc)  # c_t feeds h_t and c_{t+1}
        di, df, dg = dc * g, dc * cs[:, t], dc * i  # c = f * c_prev + i * g
        dc = dc * f  # -> c_{t-1}: the gradient highway, scaled only by the forget gate
        da[:, t, :H] = di * i * (1 - i)  # sigma' = sigma (1 - sigma)
        da[:, t, H : 2 * H] = df * f * (1 - f)
        da[:, t, 2 * H : 3 * H] = dg * (1 - g * g)  # tanh' = 1 - tanh^2
        da[:, t, 3 * H :] = do * o * (1 - o)
        dh = da[:, t] @ p["W_hh"]  # -> h_{t-1}
    dx, grads = _param_grads(x, hs[:, :T], da, da, p)
    return dx, (dh, dc), grads


# --- GRU (Cho et al. 2014), PyTorch's variant: r multiplies (W_hn h + b_hn) -----------------------


def gru_forward(x: np.ndarray, state: State, p: Params) -> tuple[np.ndarray, State, tuple]:
    """PyTorch's GRU, one layer::

    r = sigma(W_ir x + b_ir + W_hr h + b_hr)          reset gate
    z = sigma(W_iz x + b_iz + W_hz h + b_hz)          update gate
    n = tanh (W_in x + b_in + r * (W_hn h + b_hn))    candidate
    h' = (1 - z) * n + z * h
    """
    (h,) = state  # (B, H)
    B, T, _ = x.shape
    H = h.shape[1]
    ax = _input_part(x, p)  # (B, T, 3H)
    hs = np.empty((B, T + 1, H), x.dtype)
    acts = np.empty((B, T, 3 * H), x.dtype)  # r, z, n
    hn = np.empty((B, T, H), x.dtype)  # W_hn h + b_hn, needed by the backward pass
    hs[:, 0] = h
    for t in range(T):
        ah = h @ p["W_hh"].T + p["b_hh"]  # (B, 3H)
        r = sigmoid(ax[:, t, :H] + ah[:, :H])
        z = sigmoid(ax[:, t, H : 2 * H] + ah[:, H : 2 * H])
        n = np.tanh(ax[:, t, 2 * H :] + r * ah[:, 2 * H :])
        h = (1 - z) * n + z * h  # (B, H)
        acts[:, t] = np.concatenate([r, z, n], axis=1)
        hn[:, t], hs[:, t + 1] = ah[:, 2 * H :], h
    return hs[:, 1:], (h,), (x, p, hs, acts, hn)


def gru_backward(dy: np.ndarray, dstate: State, cache: tuple) -> tuple[np.ndarray, State, Params]:
    x, p, hs, acts, hn = cache
    B, T, H = dy.shape
    dh = dstate[0].copy()
    dax = np.empty((B, T, 3 * H), dy.dtype)  # gradients of the input parts of r, z, n
    dah = np.empty((B, T, 3 * H), dy.dtype)  # ... and of the recurrent parts
    for t in reversed(range(T)):
        r, z, n = (acts[:, t, k * H : (k + 1) * H] for k in range(3))
        h_prev = hs[:, t]
        dh = dh + dy[:, t]
        dn = dh * (1 - z)  # h' = (1 - z) * n + z * h
        dz = dh * (h_prev - n)
        dan = dn * (1 - n * n)  # pre-activation of n
        dar = dan * hn[:, t] * r * (1 - r)  # r enters n through r * (W_hn h + b_hn)
        daz = dz * z * (1 - z)
        dax[:, t] = np.concatenate([dar, daz, dan], axis=1)
        dah[:, t] = np.concatenate([dar, daz, dan * r], axis=1)
        dh = dh * z + dah[:, t] @ p["W_hh"]  # -> h_{t-1}: directly, and through every gate
    dx, grads = _param_grads(x, hs[:, :T], dax, dah, p)
    return dx, (dh,), grads


# --- the plain (Elman) RNN: h' = tanh(W_ih x + b_ih + W_hh h + b_hh) ---------------------------


def rnn_forward(x: np.ndarray, state: State, p: Params) -> tuple[np.ndarray, State, tuple]:
    """PyTorch's ``nn.RNN`` with tanh, one layer: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``."""
    (h,) = state
    B, T, _ = x.shape
    H = h.shape[1]
    ax = _input_part(x, p)  # (B, T, H)
    hs = np.empty((B, T + 1, H), x.dtype)
    hs[:, 0] = h
    for t in range(T):
        h = np.tanh(ax[:, t] + h @ p["W_hh"].T + p["b_hh"])  # (B, H)
        hs[:, t + 1] = h
    return hs[:, 1:], (h,), (x, p, hs)


def rnn_backward(dy: np.ndarray, dstate: State, cache: tuple) -> tuple[np.ndarray, State, Params]:
    x, p, hs = cache
    B, T, H = dy.shape
    dh = dstate[0].copy()
    da = np.empty((B, T, H), dy.dtype)
    for t in reversed(range(T)):
        h = hs[:, t + 1]
        dh = dh + dy[:, t]
        da[:, t] = dh * (1 - h * h)
        # Each step multiplies the carried gradient by diag(1 - h^2) W_hh: over k steps the
        # product shrinks (or blows up) geometrically. This line is why plain RNNs forget.
        dh = da[:, t] @ p["W_hh"]
    dx, grads = _param_grads(x, hs[:, :T], da, da, p)
    return dx, (dh,), grads


FORWARD = {"lstm": lstm_forward, "gru": gru_forward, "rnn": rnn_forward}
BACKWARD = {"lstm": lstm_backward, "gru": gru_backward, "rnn": rnn_backward}
