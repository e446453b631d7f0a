"""The run directory: every file name in it is defined here, and every write into it goes
through ``RunDir``.

A run directory is a model directory (modeldir.py: the *best* model so far) plus::

    train_config.json          TrainConfig of the run, the files each split came from, and
                               (fine-tuned runs) the base model: provenance.py
    trainer/state.safetensors  latest weights, optimizer moments, carried hidden state, RNG
                               states, and (in its metadata) step, data position, best loss
                               (what the tensors are: training/state.py; their checks:
                               statefile.py)
    metrics.jsonl              one JSON object per log line and per evaluation
    loss.png                   train and validation loss curves, written at the end
    data/                      the memmapped token cache, one SPLIT.bin per split
    train.lock                 held (flock) by the one process training the run (runlock.py)
    labels.json                a labelled run's documents per split and label (documents.py)

``RunDir(path, writer=False)`` reads like any other but its write methods do nothing: a
multi-process run gives every rank but the first one of those, so that only one process
writes, logs and plots. Torch-free at import (the NumPy reference trainer uses it too).

>>> run = RunDir("runs/poems")  # doctest: +SKIP
>>> run.append_metrics({"step": 10, "train_loss": 2.5})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import TrainConfig
from .errors import CheckpointError, ConfigError, DataError
from .files import MAX_METRICS_BYTES, parse_json, read_json, read_text, write_json_atomic
from .models.base import Model
from .runlock import RunLock

if TYPE_CHECKING:
    import torch

RUN_CONFIG = "train_config.json"
STATE_FILE = Path("trainer") / "state.safetensors"
METRICS = "metrics.jsonl"
PLOT = "loss.png"
DATA = "data"
LOCK_FILE = "train.lock"
LABELS = "labels.json"  # a labelled run's document count per split and label (documents.py)


class NoLock:
    """What a reader-only ``RunDir`` holds instead of the run lock."""

    def release(self) -> None: ...


class RunDir:
    """One run folder. ``writer=False``: every method that writes returns without writing."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, writer={self.writer})"

    # --- names ----------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def plot_file(self) -> Path:
        return self.path / PLOT

    @property
    def config_file(self) -> Path:
        return self.path / RUN_CONFIG

    @property
    def data_dir(self) -> Path:
        return self.path / DATA

    def token_file(self, split: str) -> Path:
        """The token cache of ``split`` (train, valid, test)."""
        return self.data_dir / f"{split}.bin"

    def has_state(self) -> bool:
        return self.state_file.exists()

    def has_config(self) -> bool:
        return self.config_file.exists()

    # --- the folder -----------------------------------------------------------------------

    def lock(self) -> RunLock | NoLock:
        """The exclusive lock on the folder (created if missing); see runlock.py."""
        if not self.writer:
            return NoLock()
        return RunLock.acquire(self.path, LOCK_FILE)

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temporary files that a writer killed mid-write left in the folder.

        Every writer uses a ``*.tmp`` name beside its target (``files.atomic_write``:
        ``.NAME.XXXX.tmp``; the token cache: ``data/SPLIT.tmp``; the metrics rewrite:
        ``metrics.tmp``), so with the lock held every ``*.tmp`` there is a leftover: a
        full-size trainer state can be one. Returns what was removed."""
        removed: list[Path] = []
        if not self.writer:
            return removed
        for folder in (self.path, self.state_file.parent, self.data_dir):
            if not folder.is_dir():
                continue
            for path in folder.glob("*.tmp"):  # pathlib's * matches dot-files too
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def discard(self) -> None:
        """Delete the whole folder (a run whose creation failed must not pass for a run)."""
        if self.writer:
            shutil.rmtree(self.path, ignore_errors=True)

    # --- train config ---------------------------------------------------------------------

    def write_config(
        self,
        config: TrainConfig,
        sources: dict[str, list[str]],
        base: dict[str, Any] | None = None,
    ) -> None:
        """Save a run's TrainConfig together with the files each split came from, and the
        base model it started from (provenance.py; by default the one already recorded, so a
        resume keeps it)."""
        if not self.writer:
            return
        base = base if base is not None else self.read_base()
        extra = {"base": base} if base else {}
        write_json_atomic(self.config_file, {**config.to_dict(), "sources": sources, **extra})

    def read_base(self) -> dict[str, Any] | None:
        """The base-model record of a fine-tuned run (provenance.py), None for any other."""
        if not self.config_file.exists():
            return None
        saved = read_json(self.config_file)
        base = saved.get("base") if isinstance(saved, dict) else None
        return base if isinstance(base, dict) else None

    def read_config(self) -> tuple[TrainConfig, dict[str, list[str]]]:
        """The TrainConfig and the corpus sources saved by ``write_config``."""
        path = self.config_file
        if not path.exists():
            raise DataError(f"{self.path} has no {RUN_CONFIG}: it was not trained by lstmgen train")
        saved = read_json(path)
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path} is not a train config")
        sources = saved.pop("sources", {})
        saved.pop("base", None)  # provenance, read_base's
        # Runs from before line endings were normalised read them as they were: keep doing so,
        # or resuming one would re-tokenize its corpus into other tokens.
        saved.setdefault("keep_line_endings", True)
        if not isinstance(sources, dict) or not all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in sources.values()
        ):
            raise CheckpointError(f"{path}: sources must map split names to lists of file names")
        try:
            return TrainConfig.from_dict(saved), sources
        except ConfigError as exc:
            raise CheckpointError(f"{path}: {exc}") from None

    # --- the model directory and the trainer state -----------------------------------------

    def write_labels(self, counts: dict[str, dict[str, int]]) -> None:
        """``{"train": {"comedy": 12, ...}, "valid": {...}}``: documents per split and label."""
        if self.writer:
            write_json_atomic(self.path / LABELS, counts)

    def read_labels(self) -> dict[str, dict[str, int]]:
        """What ``write_labels`` wrote ({} without the file or with a broken one)."""
        path = self.path / LABELS
        if not path.exists():
            return {}
        try:
            counts = read_json(path)
        except CheckpointError:
            return {}
        ok = isinstance(counts, dict) and all(
            isinstance(v, dict) and all(isinstance(n, int) for n in v.values())
            for v in counts.values()
        )
        return counts if ok else {}

    def write_new_run(
        self,
        config: TrainConfig,
        sources: dict[str, list[str]],
        model: Model,
        base: dict[str, Any] | None = None,
    ) -> None:
        """The files of a run just created (by either trainer): its config and sources (and
        base model, if fine-tuned), the initial model, and no metrics from a run that was
        there before."""
        self.write_config(config, sources, base or {})
        self.save_model(model)
        self.clear_metrics()

    def save_model(self, model: Model) -> None:
        """Write the model directory files (modeldir.py) of ``model``: the best one so far."""
        if self.writer:
            model.save_pretrained(self.path)

    def save_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        """Write the trainer state in one atomic file (its contents: training/state.py)."""
        if not self.writer:
            return
        from .checkpoint import save_tensors_atomic

        save_tensors_atomic(self.state_file, tensors, metadata=metadata)

    def load_state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The trainer state's tensors (finite, or a ``CheckpointError``) and metadata."""
        from safetensors import safe_open

        from .checkpoint import load_tensors

        path = self.state_file
        tensors = load_tensors(path)
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return tensors, meta

    # --- metrics and the plot ---------------------------------------------------------------

    def append_metrics(self, record: dict[str, Any]) -> None:
        if self.writer:
            with open(self.metrics_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def clear_metrics(self) -> None:
        if self.writer:
            self.metrics_file.unlink(missing_ok=True)

    def forget_metrics_after(self, step: int) -> None:
        """Drop metrics rows past ``step``: a run that crashed after its last checkpoint logged
        steps that its resume takes again (and would log twice)."""
        path = self.metrics_file
        if not self.writer or not path.exists():
            return
        lines = read_text(path, MAX_METRICS_BYTES).splitlines(keepends=True)  # a FIFO: an error
        kept = [line for line in lines if _step_of(line) <= step]
        if len(kept) < len(lines):
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            tmp.replace(path)

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_file)

    def plot(self) -> Path | None:
        """Write loss.png (train and validation loss against step) from metrics.jsonl. The run
        is saved by then: a plot that cannot be drawn (no matplotlib, a full disk) is a
        warning, not a failed run."""
        if not self.writer:
            return None
        try:
            return plot_metrics(self.metrics_file, self.plot_file)
        except (ImportError, OSError, RuntimeError, ValueError) as err:
            warnings.warn(f"{PLOT} not written: {err}", stacklevel=2)
            return None


def write_run_config(
    run_dir: str | Path, config: TrainConfig, sources: dict[str, list[str]]
) -> None:
    RunDir(run_dir).write_config(config, sources)


def read_run_config(run_dir: str | Path) -> tuple[TrainConfig, dict[str, list[str]]]:
    return RunDir(run_dir).read_config()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl: objects with an integer ``step`` whose losses and times
    are numbers. Other lines (one cut short by a crash, or hand-edited) are skipped."""
    if not path.exists():
        return []
    rows = []
    for line in read_text(path, MAX_METRICS_BYTES).splitlines():
        try:
            row = parse_json(line, path)
        except CheckpointError:
            continue
        if isinstance(row, dict) and _metrics_row(row):
            rows.append(row)
    return rows


def _metrics_row(row: dict[str, Any]) -> bool:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    step = row.get("step")
    return (
        isinstance(step, int)
        and not isinstance(step, bool)
        and all(number(row[k]) for k in ("train_loss", "val_loss", "elapsed") if k in row)
    )


def _step_of(line: str) -> float:
    """The step of a metrics.jsonl line (a line cut short by a crash: past every step)."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: nested deep
        return math.inf
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else math.inf


def plot_metrics(metrics_path: Path, out: Path) -> Path | None:
    rows = read_metrics(metrics_path)
    train = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if not train and not val:
        return None
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*np.array(train).T, label="train", linewidth=1)
    if val:
        ax.plot(*np.array(val).T, "o-", label="validation", linewidth=1.5, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
