"""Gradient checking: analytic gradients against centred finite differences.

For a scalar loss f and each number w in the model, the centred five-point difference

    f'(w) ~ (-f(w + 2h) + 8 f(w + h) - 8 f(w - h) + f(w - 2h)) / (12 h)

has a truncation error of order h^4 (the simple ``(f(w + h) - f(w - h)) / 2h`` has h^2). That
lets h be large enough (1e-3) that float64 rounding in f stays near 1e-13 absolute, so analytic
and numeric gradients agree to better than 1e-6 relative on every element when the backward pass
is right, and are off by orders of magnitude when it is wrong.

>>> report = check_model(model, ids, targets)  # doctest: +SKIP
>>> max(report.values()) < 1e-6                # doctest: +SKIP
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .layers import cross_entropy
from .model import LanguageModel, State


def relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = 1e-6) -> float:
    """max over elements of |a - n| / max(|a|, |n|, floor). Elements whose gradient is below
    ``floor`` are thus held to an absolute error of ``floor`` times the result (rounding noise
    alone would make the relative error of a gradient of 1e-12 meaningless)."""
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return float((np.abs(analytic - numeric) / denom).max(initial=0.0))


def numeric_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Five-point centred differences of ``f()`` with respect to every element of ``x``
    (changed in place and restored)."""
    if not x.flags.c_contiguous:
        raise ValueError("numeric_gradient perturbs x through a flat view: x must be contiguous")
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views
    for i in range(flat.size):
        old = flat[i]
        values = []
        for step in (2, 1, -1, -2):
            flat[i] = old + step * h
            values.append(f())
        flat[i] = old
        gflat[i] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * h)
    return grad


STATE_PARTS = ("h", "c", "memory")  # the float parts of a state; sha-lstm's lengths are ints


def _state_parts(state: State) -> tuple[np.ndarray, ...]:
    """The differentiable parts of a state: (h,), (h, c) or (h, c, memory)."""
    parts = state if isinstance(state, tuple) else (state,)
    return tuple(s for s in parts if np.issubdtype(s.dtype, np.floating))


def check_model(
    model: LanguageModel,
    ids: np.ndarray,
    targets: np.ndarray,
    state: State | None = None,
    seed: int = 0,
    h: float = 1e-3,
) -> dict[str, float]:
    """Max relative error of every parameter's gradient and of the initial state's.

    The loss is the cross-entropy plus a random linear function of the final state, so the
    gradient that arrives through the state (from a later window) is checked too, the
    attention memory of a sha-lstm included. With
    dropout, the same masks are drawn on every call (the rng is reseeded). Use float64."""
    state = model.init_state(ids.shape[0]) if state is None else state
    rng = np.random.default_rng(seed)
    weights = tuple(rng.standard_normal(s.shape) for s in _state_parts(state))

    def loss() -> float:
        logits, final, _ = model.forward(ids, state, np.random.default_rng(seed + 1))
        value, _ = cross_entropy(logits, targets)
        return value + sum(
            float((w * s).sum()) for w, s in zip(weights, _state_parts(final), strict=True)
        )

    logits, _, cache = model.forward(ids, state, np.random.default_rng(seed + 1))
    _, dlogits = cross_entropy(logits, targets)
    dfinal = weights if isinstance(state, tuple) else weights[0]  # sha-lstm: (dh, dc, dmemory)
    grads, dstate = model.backward(cache, dlogits, dfinal)
    report = {
        name: relative_error(grads[name], numeric_gradient(loss, p, h))
        for name, p in model.params.items()
    }
    for i, (s, ds) in enumerate(zip(_state_parts(state), _state_parts(dstate), strict=True)):
        report[f"state.{STATE_PARTS[i]}"] = relative_error(ds, numeric_gradient(loss, s, h))
    return report
