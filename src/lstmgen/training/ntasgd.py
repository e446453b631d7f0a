"""NT-ASGD: non-monotonically triggered averaged SGD (AWD-LSTM, Merity et al. 2017, section 3).

Plain SGD at a constant learning rate until validation has not improved for ``NONMONO``
evaluations (the paper's n = 5); from then on the weights are also averaged over every step
(Polyak averaging, what ``torch.optim.ASGD(t0=0, lambd=0)`` keeps as ``ax``), and evaluation and
the saved best model use the average. SGD itself goes on unchanged, so the optimizer has no
state to switch; the average is kept here and saved in the trainer state as ``avg.*`` tensors
(``avg.count`` the number of steps averaged), so a resumed run goes on exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import CheckpointError

NONMONO = 5  # evaluations without improvement before averaging starts (the paper's n)
PREFIX = "avg."


class Averager:
    """The running average of ``model``'s parameters once ``start`` is called."""

    def __init__(self, model: torch.nn.Module):
        self.params = dict(model.named_parameters())  # tied weights appear once
        self.avg: dict[str, torch.Tensor] | None = None
        self.count = 0

    @property
    def on(self) -> bool:
        return self.avg is not None

    def start(self) -> None:
        self.avg = {n: p.detach().clone() for n, p in self.params.items()}
        self.count = 1

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step: fold the new weights into the mean."""
        if self.avg is None:
            return
        self.count += 1
        for n, p in self.params.items():
            self.avg[n].lerp_(p, 1.0 / self.count)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block (eval, save), its own after."""
        if self.avg is None:
            yield
            return
        with torch.no_grad():
            saved = {n: p.detach().clone() for n, p in self.params.items()}
            for n, p in self.params.items():
                p.copy_(self.avg[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(saved[n])

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.avg is None:
            return {}
        out = {PREFIX + n: t for n, t in self.avg.items()}
        out[PREFIX + "count"] = torch.tensor(self.count, dtype=torch.int64)
        return out

    def load(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        """Restore from a trainer state's ``avg.*`` tensors (none: averaging not started)."""
        if not tensors:
            self.avg, self.count = None, 0
            return
        want = {PREFIX + n for n in self.params} | {PREFIX + "count"}
        if set(tensors) != want:
            raise CheckpointError(f"{path}: its averaged weights do not match this model")
        avg = {}
        for n, p in self.params.items():
            t = tensors[PREFIX + n]
            if t.shape != p.shape or t.dtype != p.dtype:
                raise CheckpointError(f"{path}: {PREFIX}{n} has shape {tuple(t.shape)}")
            avg[n] = t.to(p.device).clone()
        count = tensors[PREFIX + "count"]
        if count.dtype != torch.int64 or count.numel() != 1 or int(count) < 1:
            raise CheckpointError(f"{path}: {PREFIX}count must be an integer >= 1")
        self.avg, self.count = avg, int(count)
