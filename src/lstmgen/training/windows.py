"""TBPTT windows on the training device.

The window arithmetic (and the batching layout's drawing) is ``data.get_window``'s; this module
only decides where the streams live so that the CUDA step loop never waits for the host.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import get_window

# Training streams up to this size (as int32) are copied to the GPU once; see Windows.
DEVICE_STREAMS_MAX_BYTES = 1 << 30


COPY_BYTES = 1 << 26  # host memory for one piece of the streams on their way to the device


def _copy_to(streams: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, n) streams as an int32 tensor on ``device``, copied a block of columns at a time:
    the host never holds more than ``COPY_BYTES`` of them (a whole int32 copy of a 1 GB
    memmap would double the process's memory for a moment)."""
    B, n = streams.shape
    out = torch.empty((B, n), dtype=torch.int32, device=device)  # (B, n)
    cols = max(1, COPY_BYTES // (4 * B))
    for c in range(0, n, cols):
        piece = np.ascontiguousarray(streams[:, c : c + cols], dtype=np.int32)  # (B, cols)
        out[:, c : c + cols].copy_(torch.from_numpy(piece))
    return out


class Windows:
    """TBPTT windows for the step loop: ``x, y = windows(k)``, each (B, T') int64 on ``device``.

    CPU: read from the memmapped (B, n) streams (``data.get_window``).
    CUDA: the streams are copied to the GPU once, as int32, when they take at most
    ``DEVICE_STREAMS_MAX_BYTES`` (tiny-shakespeare: 4 MB); a window is then two slices and casts
    on the GPU (``data.get_window`` on the tensor), with no host work and no host-to-device copy
    per step. Larger corpora are read from the memmap into pinned memory and copied with
    ``non_blocking=True``, so the copy is queued behind the previous step instead of stalling
    the loop. ``resident`` forces either path (tests use it to run the GPU path's slicing on
    CPU)."""

    def __init__(
        self,
        streams: np.ndarray,
        seq_len: int,
        device: torch.device,
        resident: bool | None = None,
    ):
        self.streams, self.seq_len, self.device = streams, seq_len, device
        if resident is None:
            resident = device.type == "cuda" and streams.size * 4 <= DEVICE_STREAMS_MAX_BYTES
        self.on_device: torch.Tensor | None = None  # (B, n) int32
        if resident:
            self.on_device = _copy_to(streams, device)

    def __call__(self, k: int) -> tuple[torch.Tensor, ...]:
        if self.on_device is not None:
            return get_window(self.on_device, k, self.seq_len)
        x, y = get_window(self.streams, k, self.seq_len)  # (B, T') each
        xb, yb = torch.from_numpy(x), torch.from_numpy(y)
        if self.device.type == "cuda":
            xb, yb = xb.pin_memory(), yb.pin_memory()
        return xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)

    def span(self, start: int, end: int) -> tuple[torch.Tensor, ...]:
        """Inputs ``start:end`` of every stream and their targets, (B, end - start) each: the
        windows of variable-length BPTT (bptt.py), on ``device`` like ``__call__``'s."""
        src = self.on_device if self.on_device is not None else self.streams
        x, y = src[:, start:end], src[:, start + 1 : end + 1]  # (B, T') each
        if self.on_device is not None:
            return x.long(), y.long()
        xb = torch.from_numpy(np.asarray(x, dtype=np.int64))
        yb = torch.from_numpy(np.asarray(y, dtype=np.int64))
        if self.device.type == "cuda":
            xb, yb = xb.pin_memory(), yb.pin_memory()
        return xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
