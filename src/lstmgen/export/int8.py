"""int8 weights with one float32 scale per output channel, in NumPy (no torch).

A weight matrix W (out, in) is stored as ``q = round(W / s)`` (int8, in [-127, 127]) and
``s = max|W[r, :]| / 127`` per row r (float32, (out,)): symmetric, so no zero point, and the
row (an output channel: one gate unit, one vocabulary entry) keeps its own range, which is what
keeps the loss increase small (per-tensor scales let one large row crush every other). -128 is
never used, so that ``-q`` is always representable. In a safetensors file ``X`` becomes
``X.qweight`` (I8) and ``X.scale`` (F32); config.json lists the quantized names
(modeldir.read_quantization).
"""

from __future__ import annotations

import numpy as np

METHOD = "int8"
SCHEME = "symmetric int8, one float32 scale per output channel (row)"
QWEIGHT, SCALE = ".qweight", ".scale"
QMAX = 127
# A row of zeros (an unused vocabulary entry) would get scale 0 and divide by it.
MIN_SCALE = np.float32(1e-12)


def quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) float -> int8 (out, in), float32 scales (out,)."""
    w = np.asarray(w, dtype=np.float32)
    scale = np.maximum(np.abs(w).max(axis=1) / QMAX, MIN_SCALE).astype(np.float32)  # (out,)
    q = np.clip(np.rint(w / scale[:, None]), -QMAX, QMAX).astype(np.int8)  # (out, in)
    return q, scale


def dequantize(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 (out, in), scales (out,) -> float32 (out, in): the weights the int8 model computes
    with (evaluation and the float paths use exactly these)."""
    return q.astype(np.float32) * scale.astype(np.float32)[:, None]


def quantizable(weights: dict[str, np.ndarray], embedding: bool) -> list[str]:
    """The names to quantize: every matrix (the recurrent weights, the decoder, a projection,
    any architecture's 2-D weights), the embedding only when asked (``--embedding``: a lookup
    reads one row per token, so int8 saves disk and memory there, not time)."""
    return sorted(
        k
        for k, w in weights.items()
        if w.ndim == 2
        and np.issubdtype(w.dtype, np.floating)
        and (embedding or k != "embedding.weight")
    )


def quantize_weights(weights: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Float weights by name -> the same with each of ``names`` as ``.qweight`` + ``.scale``."""
    out = {k: w for k, w in weights.items() if k not in names}
    for k in names:
        out[k + QWEIGHT], out[k + SCALE] = quantize(weights[k])
    return out


def dequantize_weights(tensors: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The inverse of ``quantize_weights`` (up to rounding): float32 weights by name."""
    out = {k: v for k, v in tensors.items() if not k.endswith((QWEIGHT, SCALE))}
    for k in names:
        out[k] = dequantize(tensors[k + QWEIGHT], tensors[k + SCALE])
    return out
