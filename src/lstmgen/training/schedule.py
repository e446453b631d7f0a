"""What both trainers (PyTorch ``training/trainer.py`` and NumPy ``reference/train.py``) share,
torch-free: where a run is, its learning-rate schedule and its stopping rules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import TrainingError
from ..rundir import RunDir

# Warmup takes at most this fraction of a run (of its steps, or of --max-time).
WARMUP_FRACTION = 0.1


@dataclass
class Position:
    """Where training is: optimizer steps taken, epoch, next window in that epoch."""

    step: int = 0
    epoch: int = 0
    window: int = 0
    # Wall-clock seconds of the run across resumes, evaluations included: --max-time bounds the
    # whole run, not just its steps (issue #10: --max-time 90 took 205 s with evaluations).
    elapsed: float = 0.0
    best_val: float = math.inf
    best_step: int = -1
    bad_evals: int = 0  # evaluations since the last improvement
    best_tokens: int = 0  # validation tokens behind best_val (0: unknown, from an older run)
    eval_pending: bool = False  # the evaluation at ``step`` was interrupted: redo it on resume
    warmup: int = -1  # warmup steps, fixed when the run starts (-1: an older run, planned anew)


class RunSchedule:
    """Mixin for a trainer with ``config``, ``pos``, ``windows_per_epoch``, ``stop_requested``,
    ``out_dir``, ``callbacks`` and ``run`` (its ``RunDir``, where the metrics go)."""

    config: TrainConfig
    run: RunDir
    pos: Position
    windows_per_epoch: int
    stop_requested: bool
    out_dir: Path
    callbacks: list[Any]
    # Seconds kept free at the end of a --max-time budget for the final evaluation.
    eval_reserve: float = 0.0

    def horizon_steps(self) -> int:
        """Steps the run will take, when step or epoch limits fix it (0 if time-limited only)."""
        c = self.config
        limits = [c.max_steps] if c.max_steps else []
        if c.epochs:
            limits.append(math.ceil(c.epochs * self.windows_per_epoch))
        return min(limits) if limits else 0

    def progress(self) -> float:
        """Fraction of the run done, from whichever limit is closest."""
        fractions = []
        horizon = self.horizon_steps()
        if horizon:
            fractions.append(self.pos.step / horizon)
        if self.config.max_time:
            fractions.append(self.pos.elapsed / self.config.max_time)
        return min(1.0, max(fractions)) if fractions else 0.0

    def planned_warmup(self) -> int:
        """Warmup steps: ``warmup_steps``, capped at ``WARMUP_FRACTION`` of the run's steps when
        step or epoch limits fix them. A fixed 100-step warmup left a 60-step run at 17 % of
        its learning rate (issue #10). Depends on the config only, so a resume repeats it."""
        horizon = self.horizon_steps()
        cap = math.ceil(WARMUP_FRACTION * horizon) if horizon else self.config.warmup_steps
        return min(self.config.warmup_steps, cap)

    def warmup_steps(self) -> int:
        """The run's warmup, as fixed at its start (raising --max-steps on resume keeps it)."""
        return self.pos.warmup if self.pos.warmup >= 0 else self.planned_warmup()

    def lr_at(self) -> float:
        """Linear warmup, then cosine decay to ``lr * min_lr_ratio`` over the run.

        Under ``max_time`` the warmup also ends by ``WARMUP_FRACTION`` of the time budget
        (whichever comes first); time is not reproducible, so neither is such a schedule."""
        c = self.config
        steps = self.warmup_steps()
        warm = min(1.0, (self.pos.step + 1) / steps) if steps else 1.0
        if c.max_time and warm < 1.0:
            warm = max(warm, min(1.0, self.pos.elapsed / (WARMUP_FRACTION * c.max_time)))
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress()))
        return c.lr * warm * (c.min_lr_ratio + (1 - c.min_lr_ratio) * cosine)

    def _finished(self) -> str | None:
        c = self.config
        if self.stop_requested:
            return "interrupted"
        if c.max_steps and self.pos.step >= c.max_steps:
            return "max_steps"
        if c.epochs and self.pos.step >= c.epochs * self.windows_per_epoch:
            return "epochs"
        if c.max_time and self.pos.elapsed + self.eval_reserve >= c.max_time:
            return "max_time"
        if c.patience and self.pos.bad_evals >= c.patience:
            return "early_stop"
        return None

    def _check_finite(self, what: str, value: float) -> float:
        """``value`` if finite; else the run diverged (``_diverged``)."""
        if not math.isfinite(value):
            raise self._diverged(what, value)
        return value

    def _diverged(self, what: str, value: float) -> TrainingError:
        """A non-finite loss means the weights are lost: stop with the best model kept (the
        trainer state on disk is the last one saved, before the divergence)."""
        return TrainingError(
            f"training diverged: the {what} became {value} by step {self.pos.step}; the best "
            f"model so far is kept in {self.out_dir} (start again with a lower --lr, or keep "
            "--grad-clip on)"
        )

    def request_stop(self) -> None:
        """Ask the loop to stop after the current step and save (signal handlers call this)."""
        self.stop_requested = True

    def _summary(self, reason: str | None, new_steps: int) -> dict[str, Any]:
        """The run's summary, also passed to every callback's ``on_end``."""
        pos = self.pos
        summary = {
            "reason": reason,
            "step": pos.step,
            "new_steps": new_steps,  # taken by this fit (0: a resumed run was already done)
            "epoch": pos.step / self.windows_per_epoch,
            "elapsed": pos.elapsed,
            "best_val_loss": pos.best_val,
            "best_step": pos.best_step,
            "out_dir": str(self.out_dir),
        }
        for cb in self.callbacks:
            cb.on_end(self, summary)
        return summary

    def _forget_log_after(self, step: int) -> None:
        self.run.forget_metrics_after(step)

    def _log(self, record: dict[str, Any]) -> None:
        self.run.append_metrics(record)
