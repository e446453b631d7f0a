"""The SHA-LSTM attention block in NumPy: layer norm, one gated attention head over a memory of
past states plus the causal window, and the optional "boom" feed-forward. Forward and backward.

Dimensions: B batch, T window, H hidden, M memory capacity, F boom width, S = M + T keys.
The block sits after LSTM layer ``a`` of the reference model (model.py); docs/lstm.md section 6
derives every line. The equations are the spec shared with ``lstmgen.models.attention``::

    n_t = LN_a(h_t)                                  what the memory stores
    q_t = W_q n_t + b_q                              the query: a full matrix
    k_j = n_j * sigma(g_k),  v_j = n_j * sigma(g_v)  keys and values: one gate per dimension
    j runs over the row's m_b valid memory entries (oldest first), then window positions <= t
    p_tj = softmax_j(q_t . k_j / sqrt(H)),  o_t = sum_j p_tj v_j
    u_t = h_t + o_t                                  residual
    y_t = u_t + W_2 gelu(W_1 LN_f(u_t) + b_1) + b_2  only when F > 0 (else y_t = u_t)

The memory is right-aligned: row b's valid entries are ``memory[b, M - m_b:]``, the rest zeros,
``length[b] = m_b``. After the block the memory is the last M rows of [memory, n_1 .. n_T], and
``length`` becomes min(M, m_b + T): the oldest entries are evicted, and the zeros before a row's
entries move along with them (as in ``lstmgen.models.attention``).

    y, memory, length, cache = attention_forward(h, memory, length, p)
    dh, dmemory, grads = attention_backward(dy, dmemory_out, cache)

``p`` holds the block's parameters under their state-dict names without the ``attention.``
prefix (``norm.weight``, ``query.weight``, ``key_gate``, ... ``ff_out.bias``).
"""

from __future__ import annotations

import math

import numpy as np

from .cells import sigmoid

Params = dict[str, np.ndarray]
EPS = 1e-5  # torch.nn.LayerNorm's default
GELU_C = math.sqrt(2.0 / math.pi)  # the tanh approximation of GELU (Hendrycks & Gimpel 2016)

# --- layer norm (Ba et al. 2016) over the last axis --------------------------------------------


def layer_norm_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, tuple]:
    """``(x - mean) / sqrt(var + eps) * weight + bias``, the (biased) variance as PyTorch's."""
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + EPS)  # (..., 1)
    xhat = xc * rstd  # (..., H): zero mean, unit variance
    return xhat * weight + bias, (xhat, rstd, weight)


def layer_norm_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (dx, dweight, dbias). xhat depends on every x of its row through the mean and the
    variance, which gives the two subtracted means (docs/lstm.md derives them)."""
    xhat, rstd, weight = cache
    dxhat = dy * weight
    dx = rstd * (
        dxhat
        - dxhat.mean(axis=-1, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    )
    H = dy.shape[-1]
    return dx, (dy * xhat).reshape(-1, H).sum(axis=0), dy.reshape(-1, H).sum(axis=0)


# --- GELU, tanh approximation (torch.nn.functional.gelu(x, approximate="tanh")) -------------


def gelu_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    th = np.tanh(GELU_C * (x + 0.044715 * x**3))
    return 0.5 * x * (1.0 + th), (x, th)


def gelu_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    x, th = cache
    dinner = GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return dy * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * dinner)


# --- the attention block ----------------------------------------------------------------------


def key_mask(length: np.ndarray, M: int, T: int) -> np.ndarray:
    """(B, T, M + T) booleans: may query t see key j? Memory slot i of row b is valid when
    i >= M - m_b; window position j is visible from t when j <= t (causal, t itself included)."""
    mem_ok = np.arange(M)[None, :] >= (M - length)[:, None]  # (B, M)
    causal = np.tril(np.ones((T, T), dtype=bool))  # (T, T)
    B = len(length)
    return np.concatenate(
        [np.broadcast_to(mem_ok[:, None, :], (B, T, M)), np.broadcast_to(causal, (B, T, T))],
        axis=2,
    )


def update_memory(
    memory: np.ndarray, length: np.ndarray, n: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """-> (new memory (B, M, H), new length (B,)): the last M rows of [memory, n]. The memory
    is right-aligned, so that is each row's newest min(M, m_b + T) entries, zeros before."""
    M, T = memory.shape[1], n.shape[1]
    new = np.concatenate([memory, n], axis=1)[:, T:]  # (B, M, H)
    return new, np.minimum(M, length + T).astype(np.int64)


def attention_forward(
    h: np.ndarray, memory: np.ndarray, length: np.ndarray, p: Params
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """h (B, T, H) the layer's outputs, memory (B, M, H), length (B,) -> y (B, T, H), the new
    memory and length, and the cache for ``attention_backward``."""
    B, T, H = h.shape
    M = memory.shape[1]
    length = np.asarray(length, dtype=np.int64)
    n, ln_cache = layer_norm_forward(h, p["norm.weight"], p["norm.bias"])  # (B, T, H)
    q = n @ p["query.weight"].T + p["query.bias"]  # (B, T, H)
    sk, sv = sigmoid(p["key_gate"]), sigmoid(p["value_gate"])  # (H,) each, in (0, 1)
    kv_in = np.concatenate([memory, n], axis=1)  # (B, S, H): memory first, then the window
    k, v = kv_in * sk, kv_in * sv  # (B, S, H)
    mask = key_mask(length, M, T)  # (B, T, S)
    scale = 1.0 / math.sqrt(H)
    e = np.where(mask, scale * (q @ k.transpose(0, 2, 1)), -np.inf)  # (B, T, S)
    e = e - e.max(axis=-1, keepdims=True)  # every row sees at least itself: the max is finite
    w = np.exp(e)  # masked keys: exactly 0
    probs = w / w.sum(axis=-1, keepdims=True)  # (B, T, S)
    o = probs @ v  # (B, T, H)
    u = h + o  # (B, T, H): the residual keeps the LSTM's output as it was
    ff = None
    if "ff_in.weight" in p:
        f_in, ffn_cache = layer_norm_forward(u, p["ff_norm.weight"], p["ff_norm.bias"])
        a1 = f_in @ p["ff_in.weight"].T + p["ff_in.bias"]  # (B, T, F)
        g, gelu_cache = gelu_forward(a1)
        y = u + g @ p["ff_out.weight"].T + p["ff_out.bias"]  # (B, T, H)
        ff = (ffn_cache, f_in, gelu_cache, g)
    else:
        y = u
    new_memory, new_length = update_memory(memory, length, n)
    cache = (p, ln_cache, n, q, sk, sv, kv_in, k, v, probs, scale, ff, M, T)
    return y, new_memory, new_length, cache


def attention_backward(
    dy: np.ndarray, dmemory_out: np.ndarray | None, cache: tuple
) -> tuple[np.ndarray, np.ndarray, Params]:
    """dy (B, T, H) and the gradient of the new memory (B, M, H) (None: no later use) ->
    (dh (B, T, H), dmemory (B, M, H) of the memory that came in, parameter gradients)."""
    p, ln_cache, n, q, sk, sv, kv_in, k, v, probs, scale, ff, M, T = cache
    H = dy.shape[-1]
    grads: Params = {}
    du = dy.copy()  # y = u + r
    if ff is not None:
        ffn_cache, f_in, gelu_cache, g = ff
        F = g.shape[-1]
        grads["ff_out.weight"] = dy.reshape(-1, H).T @ g.reshape(-1, F)  # (H, F)
        grads["ff_out.bias"] = dy.reshape(-1, H).sum(axis=0)
        da1 = gelu_backward(dy @ p["ff_out.weight"], gelu_cache)  # (B, T, F)
        grads["ff_in.weight"] = da1.reshape(-1, F).T @ f_in.reshape(-1, H)  # (F, H)
        grads["ff_in.bias"] = da1.reshape(-1, F).sum(axis=0)
        du_ln, grads["ff_norm.weight"], grads["ff_norm.bias"] = layer_norm_backward(
            da1 @ p["ff_in.weight"], ffn_cache
        )
        du += du_ln
    dh = du.copy()  # u = h + o: the residual path
    do = du  # (B, T, H)
    # o = P V; softmax: de = P * (dP - sum_j P dP); e = scale * Q K^T
    dprobs = do @ v.transpose(0, 2, 1)  # (B, T, S)
    dv = probs.transpose(0, 2, 1) @ do  # (B, S, H)
    de = probs * (dprobs - (probs * dprobs).sum(axis=-1, keepdims=True))  # masked: P = 0 -> 0
    dq = scale * (de @ k)  # (B, T, H)
    dk = scale * (de.transpose(0, 2, 1) @ q)  # (B, S, H)
    dsk = (dk * kv_in).reshape(-1, H).sum(axis=0)  # k = kv_in * sk
    dsv = (dv * kv_in).reshape(-1, H).sum(axis=0)
    grads["key_gate"] = dsk * sk * (1 - sk)
    grads["value_gate"] = dsv * sv * (1 - sv)
    dkv_in = dk * sk + dv * sv  # (B, S, H)
    grads["query.weight"] = dq.reshape(-1, H).T @ n.reshape(-1, H)  # (H, H)
    grads["query.bias"] = dq.reshape(-1, H).sum(axis=0)
    dn = dq @ p["query.weight"] + dkv_in[:, M:]  # n feeds the query, the keys and the values
    dmemory = dkv_in[:, :M].copy()  # (B, M, H)
    if dmemory_out is not None:  # the new memory is [memory, n][:, T:]
        dcat = np.zeros_like(kv_in)  # (B, S, H)
        dcat[:, T:] = dmemory_out
        dmemory += dcat[:, :M]
        dn += dcat[:, M:]
    dh_ln, grads["norm.weight"], grads["norm.bias"] = layer_norm_backward(dn, ln_cache)
    return dh + dh_ln, dmemory, grads
