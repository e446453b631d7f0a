"""The rest of a language model in NumPy: embedding, linear layer, dropout, softmax
cross-entropy, gradient clipping and Adam(W).

Each layer is a forward function that returns what its backward function needs, and a backward
function that turns the gradient of the output into gradients of the inputs and parameters.
"""

from __future__ import annotations

import math

import numpy as np

# --- embedding: a table lookup; its gradient is a scatter-add into the rows that were read -----


def embedding_forward(ids: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return weight[ids]  # (B, T) -> (B, T, E)


def embedding_backward(ids: np.ndarray, dout: np.ndarray, vocab_size: int) -> np.ndarray:
    dweight = np.zeros((vocab_size, dout.shape[-1]), dout.dtype)  # (V, E)
    np.add.at(dweight, ids.reshape(-1), dout.reshape(-1, dout.shape[-1]))  # repeated ids add up
    return dweight


# --- linear: y = x W^T + b, PyTorch's nn.Linear layout (W is (out, in)) ------------------------


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    y = x @ weight.T  # (..., in) -> (..., out)
    return y if bias is None else y + bias


def linear_backward(
    x: np.ndarray, dy: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (dx, dweight, dbias); dbias is the sum of dy over every leading axis."""
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    return dy @ weight, dy2.T @ x2, dy2.sum(axis=0)


# --- dropout (inverted: scaled at training time so evaluation needs nothing) ------------------


def dropout_mask(
    shape: tuple[int, ...], p: float, rng: np.random.Generator | None, dtype: np.dtype
) -> np.ndarray | None:
    """A mask of 0 and 1 / (1 - p), or None when there is no dropout (p = 0 or no ``rng``:
    evaluation). Multiply the activations by it going forward and the gradients going back."""
    if p == 0.0 or rng is None:
        return None
    return (rng.random(shape) >= p).astype(dtype) / (1.0 - p)


# --- loss ----------------------------------------------------------------------------------


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)  # exp never overflows
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of ``targets`` (B, T) under ``logits`` (B, T, V), and its
    gradient with respect to the logits: ``(softmax - onehot) / N``."""
    V = logits.shape[-1]
    logp = log_softmax(logits).reshape(-1, V)  # (N, V)
    flat = targets.reshape(-1)
    n = len(flat)
    loss = -logp[np.arange(n), flat].mean()
    dlogits = np.exp(logp)
    dlogits[np.arange(n), flat] -= 1.0
    return float(loss), (dlogits / n).reshape(logits.shape)


# --- optimisation --------------------------------------------------------------------------


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most ``max_norm`` (as
    ``torch.nn.utils.clip_grad_norm_``: Pascanu et al. 2013). Returns the norm before clipping."""
    total = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for g in grads.values():
            g *= scale
    return total


class Adam:
    """Adam (Kingma & Ba 2015) with decoupled weight decay (AdamW, Loshchilov & Hutter 2019) on
    matrices only, as the PyTorch trainer does. ``weight_decay=0`` is plain Adam.

    >>> opt = Adam(params, lr=1e-3)  # doctest: +SKIP
    >>> opt.step(grads)              # doctest: +SKIP
    """

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m = {k: np.zeros_like(v) for k, v in params.items()}  # first moment
        self.v = {k: np.zeros_like(v) for k, v in params.items()}  # second moment
        self.t = 0

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Update ``params`` in place from ``grads`` (same keys)."""
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t  # bias corrections
        for k, p in self.params.items():
            g = grads[k]
            if self.weight_decay and p.ndim >= 2:
                p *= 1 - self.lr * self.weight_decay
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            p -= self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)
