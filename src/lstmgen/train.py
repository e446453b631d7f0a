"""The training loop: AdamW, warmup then cosine decay, TBPTT with carried state, evaluation,
best-checkpoint keeping, early stopping and exact resume.

No argparse and no printing here: progress goes to ``Callback``s (the CLI draws a progress bar
from them). A run directory holds the model directory files of the *best* model so far (see
checkpoint.py) plus::

    train_config.json          TrainConfig of the run
    trainer/state.safetensors  latest weights, optimizer moments, carried hidden state, RNG
                               states, and (in its metadata) step, data position, best loss
    metrics.jsonl              one JSON object per log line and per evaluation
    loss.png                   train and validation loss curves, written at the end
    data/                      the memmapped token cache
    train.lock                 held (flock) by the one process training the run (runlock.py)

Resuming restores everything in ``trainer/state.safetensors``, so on CPU a run stopped and
resumed ends with bit-identical weights to an uninterrupted one (unless ``max_time`` drives the
schedule, since wall-clock time is not reproducible).

On CUDA the step loop never waits for the GPU except every ``log_every`` steps (to read the
loss) and at evaluations: windows are sliced from streams kept on the GPU (``Windows``),
AdamW is fused, gradient clipping uses foreach kernels and keeps its norm on the device, the
learning rate is a Python float, and the loss is summed on the device. ``precision`` (see
``resolve_precision``) picks bf16 autocast or fp32 with TF32.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import (
    load_tensors,
    load_weights_into,
    save_model,
    save_tensors_atomic,
    weights_of,
)
from .config import GenerationConfig, ModelConfig, TrainConfig
from .corpus import Corpus, load_run_corpus, prepare_corpus, read_run_config, write_run_config
from .data import batchify, get_window, num_windows
from .errors import CheckpointError, ConfigError, NumericalError, TrainingError
from .evaluate import EvaluationStopped, evaluate_tokens
from .files import MAX_METRICS_BYTES, parse_json, read_text
from .loop import Position, RunSchedule
from .model import LanguageModel
from .runlock import RunLock, remove_stale_temp_files
from .statefile import check_tensors, expected_tensors, read_param_groups, read_position
from .tokenizers import load_tokenizer

STATE_FILE = Path("trainer") / "state.safetensors"
# Settings that may change on --resume without breaking the data order or the optimizer.
RESUMABLE = {
    "max_steps",
    "epochs",
    "max_time",
    "eval_every",
    "eval_tokens",
    "patience",
    "sample_tokens",
    "device",
    "log_every",
    "precision",
}
# Training streams up to this size (as int32) are copied to the GPU once; see Windows.
DEVICE_STREAMS_MAX_BYTES = 1 << 30


class Callback:
    """Receives progress. Override what you need; every method is a no-op by default."""

    def on_start(self, trainer: Trainer) -> None: ...
    def on_step(self, trainer: Trainer) -> None: ...  # every step: keep it cheap, no host sync
    def on_log(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...
    def on_eval(self, trainer: Trainer, metrics: dict[str, Any], sample: str) -> None: ...
    def on_end(self, trainer: Trainer, summary: dict[str, Any]) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps requested but MPS is not available")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"`` for a TrainConfig ``precision`` on ``device``.

    auto: bf16 on CUDA, fp32 elsewhere. bf16 means ``torch.autocast(dtype=torch.bfloat16)``
    around the forward pass and loss (weights, gradients and optimizer stay fp32); note that
    under any autocast PyTorch runs cuDNN RNNs in fp16 (ATen's cudnn/AutocastRNN.cpp), the
    embedding lookup and decoder in bf16. fp32 on CUDA lets matmuls and cuDNN (the LSTM) use
    TF32 tensor cores (``torch.backends.cuda.matmul.allow_tf32`` and
    ``torch.backends.cudnn.allow_tf32``) while the trainer runs; see ``tf32``. bf16 elsewhere
    is refused: PyTorch's CPU (oneDNN) LSTM has no bf16 kernel on most processors.

    ``torch.backends.cudnn.benchmark`` is left alone: it autotunes convolution algorithms
    only; cuDNN RNNs get their algorithm from fixed heuristics, so it would change nothing."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name == "bf16" and device.type != "cuda":
        raise ConfigError(
            f"precision bf16 needs a CUDA device (this run is on {device.type}):"
            " use --precision auto or fp32"
        )
    return name


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Let fp32 matmuls and cuDNN use TF32 inside the block; restore the flags after it.

    Uses the legacy ``allow_tf32`` flags, which set PyTorch's newer ``fp32_precision`` settings
    too (setting them also repairs a state where the two APIs disagree)."""
    if not enabled:
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    try:
        saved: tuple[bool, bool] | None = (matmul.allow_tf32, cudnn.allow_tf32)
    except RuntimeError:  # flags set through a mix of old and new APIs: leave ours set after
        saved = None
    matmul.allow_tf32 = cudnn.allow_tf32 = True
    try:
        yield
    finally:
        if saved is not None:
            matmul.allow_tf32, cudnn.allow_tf32 = saved


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def window_tensors(streams: torch.Tensor, k: int, seq_len: int) -> tuple[torch.Tensor, ...]:
    """Window k of (B, n) streams held in a tensor on any device: int64 inputs and targets,
    each (B, T') with T' <= seq_len; the same values as ``data.get_window``."""
    start = k * seq_len
    end = min(start + seq_len, streams.shape[1] - 1)
    x = streams[:, start:end].to(torch.int64)  # (B, T')
    y = streams[:, start + 1 : end + 1].to(torch.int64)  # (B, T')
    return x, y


class Windows:
    """TBPTT windows for the step loop: ``x, y = windows(k)``, each (B, T') int64 on ``device``.

    CPU: read from the memmapped (B, n) streams (``data.get_window``).
    CUDA: the streams are copied to the GPU once, as int32, when they take at most
    ``DEVICE_STREAMS_MAX_BYTES`` (tiny-shakespeare: 4 MB); a window is then two slices and casts
    on the GPU, with no host work and no host-to-device copy per step. Larger corpora are read
    from the memmap into pinned memory and copied with ``non_blocking=True``, so the copy is
    queued behind the previous step instead of stalling the loop. ``resident`` forces either
    path (tests use it to run the GPU path's slicing on CPU)."""

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
            host = torch.from_numpy(np.ascontiguousarray(streams, dtype=np.int32))
            self.on_device = host.to(device)

    def __call__(self, k: int) -> tuple[torch.Tensor, ...]:
        if self.on_device is not None:
            return window_tensors(self.on_device, k, self.seq_len)
        x, y = get_window(self.streams, k, self.seq_len)  # (B, T') each
        xb, yb = torch.from_numpy(x), torch.from_numpy(y)
        if self.device.type == "cuda":
            xb, yb = xb.pin_memory(), yb.pin_memory()
        return xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)


def fused_adamw(device: torch.device) -> bool | None:
    """Whether AdamW runs fused here: on CUDA and CPU, where one kernel updates every tensor (on
    CPU about 3x faster than the default foreach step: benchmarks/train_throughput.py)."""
    return device.type in ("cuda", "cpu") or None


def clip_gradients(model: torch.nn.Module, max_norm: float) -> None:
    """``clip_grad_norm_``, exactly, without its pass over the gradients when nothing is clipped.

    On CUDA the norm stays on the device (reading it would be a host sync) and every gradient is
    scaled by ``min(1, max_norm / (norm + 1e-6))``; on CPU reading it costs nothing, and skipping
    the multiplication by 1 saves a pass over all the gradients in the usual unclipped step.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    if norm.device.type != "cpu" or not float(norm) + 1e-6 <= max_norm:
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, norm, foreach=True)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator failure: ``torch.OutOfMemoryError`` on CUDA, the
    RuntimeError of PyTorch's CPU allocator (``DefaultCPUAllocator: can't allocate memory``),
    or MPS's."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text
    )


@contextlib.contextmanager
def memory_hint(config: TrainConfig, hidden_size: int) -> Iterator[None]:
    """Turn running out of memory into one line naming the settings that size memory."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not (isinstance(exc, MemoryError) or is_out_of_memory(exc)):
            raise
        raise TrainingError(
            f"out of memory on {config.device} (batch {config.batch_size}x{config.seq_len}, "
            f"hidden size {hidden_size}): lower --batch-size, --seq-len or --hidden-size"
        ) from None


def _detach(state: Any) -> Any:
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class Trainer(RunSchedule):
    """Train a ``LanguageModel`` on a ``Corpus`` into ``out_dir``.

    >>> cfg = TrainConfig(max_steps=200)
    >>> trainer = Trainer.create("runs/poems", ["poems.txt"], cfg)  # doctest: +SKIP
    >>> summary = trainer.fit()  # doctest: +SKIP
    >>> Trainer.resume("runs/poems", max_steps=400).fit()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: LanguageModel,
        config: TrainConfig,
        corpus: Corpus,
        out_dir: str | Path,
        callbacks: Sequence[Callback] = (),
    ):
        config.validate()
        self.config = config
        self.corpus = corpus
        self.out_dir = Path(out_dir)
        self.callbacks = list(callbacks)
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.model = model.to(self.device)
        self.pos = Position()
        self.hidden: Any = None  # state carried between windows (detached)
        self.stop_requested = False
        self.lock: RunLock | None = None  # held from create/resume to the end of fit
        self.eval_seconds: float | None = None  # how long the last evaluation took
        self._clock = (0.0, time.perf_counter())  # (pos.elapsed, perf_counter) at fit's start
        self.streams = batchify(corpus.train.tokens, config.batch_size)  # (B, n)
        self.windows_per_epoch = num_windows(self.streams, config.seq_len)
        self.windows = Windows(self.streams, config.seq_len, self.device)
        B, n = self.streams.shape
        if n - 1 < config.seq_len:
            warnings.warn(
                f"the training text makes {B} streams of {n - 1:,} tokens, shorter than seq_len "
                f"{config.seq_len:,}: every window is {n - 1:,} tokens (lower --batch-size or "
                "--seq-len)",
                stacklevel=2,
            )
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.lr,
            betas=(0.9, 0.99),
            fused=fused_adamw(self.device),
        )
        self.autocast = self.precision == "bf16"

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        out_dir: str | Path,
        train: Sequence[str | Path] = (),
        config: TrainConfig | None = None,
        model_config: ModelConfig | None = None,
        valid: Sequence[str | Path] = (),
        test: Sequence[str | Path] = (),
        callbacks: Sequence[Callback] = (),
    ) -> Trainer:
        """Start a new run: tokenize the corpus, build the model, write the run directory."""
        config = config or TrainConfig()
        out_dir = Path(out_dir)
        resolve_precision(config.precision, resolve_device(config.device))  # errors come first
        fresh = not out_dir.exists()
        lock = RunLock.acquire(out_dir)  # before anything in the folder is written or cleaned
        try:
            if (out_dir / STATE_FILE).exists():
                raise ConfigError(
                    f"{out_dir} already holds a run: use --resume, or another --output"
                )
            remove_stale_temp_files(out_dir)
            corpus = prepare_corpus(out_dir, config, train, valid, test)
            model_config = (model_config or ModelConfig()).replace(
                vocab_size=corpus.tokenizer.vocab_size
            )
            with memory_hint(config, model_config.hidden_size):
                torch.manual_seed(config.seed)
                model = LanguageModel(model_config, corpus.tokenizer, GenerationConfig())
                trainer = cls(model, config, corpus, out_dir, callbacks)
            trainer.pos.warmup = trainer.planned_warmup()
            write_run_config(out_dir, config, corpus.sources)
            save_model(model, out_dir)
            (out_dir / "metrics.jsonl").unlink(missing_ok=True)
            trainer.save_state()
        except BaseException:
            if fresh:  # a half-made run directory would pass for a run later: leave nothing
                shutil.rmtree(out_dir, ignore_errors=True)
            lock.release()
            raise
        trainer._hold(lock)
        return trainer

    @classmethod
    def resume(
        cls, out_dir: str | Path, callbacks: Sequence[Callback] = (), **overrides: Any
    ) -> Trainer:
        """Continue a run exactly where it stopped; ``overrides`` may change limits only."""
        out_dir = Path(out_dir)
        if not (out_dir / STATE_FILE).exists():
            raise CheckpointError(f"{out_dir} has no trainer state to resume ({STATE_FILE})")
        saved, sources = read_run_config(out_dir)
        changes = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(changes) - set(TrainConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"cannot change {', '.join(unknown)} when resuming: not a training option (the "
                "model's shape is fixed)"
            )
        bad = sorted(k for k, v in changes.items() if k not in RESUMABLE and getattr(saved, k) != v)
        if bad:
            raise ConfigError(
                f"cannot change {', '.join(bad)} when resuming (only "
                f"{', '.join(sorted(RESUMABLE))})"
            )
        config = saved.replace(**{k: v for k, v in changes.items() if k in RESUMABLE})
        lock = RunLock.acquire(out_dir)  # before anything in the folder is written or cleaned
        try:
            remove_stale_temp_files(out_dir)
            corpus = load_run_corpus(
                out_dir, config, sources, load_tokenizer(out_dir / "tokenizer.json")
            )
            write_run_config(out_dir, config, sources)  # raised limits hold for later resumes
            model = LanguageModel.from_pretrained(out_dir)  # best weights; the latest come below
            trainer = cls(model, config, corpus, out_dir, callbacks)
            trainer.load_state()
            trainer._forget_log_after(trainer.pos.step)
            # A best score from another --eval-tokens budget is not comparable: score it again.
            recorded = trainer.pos.best_tokens or trainer.eval_token_count(saved.eval_tokens)
            if trainer.pos.best_step >= 0 and recorded != trainer.eval_token_count():
                trainer.rescore_best()
        except BaseException:
            lock.release()
            raise
        trainer._hold(lock)
        return trainer

    def _hold(self, lock: RunLock) -> None:
        """Keep ``lock`` until ``fit`` ends, or until this trainer is garbage-collected."""
        self.lock = lock
        weakref.finalize(self, lock.release)

    def eval_token_count(self, eval_tokens: int | None = None) -> int:
        """Validation tokens an evaluation with ``eval_tokens`` (default: the run's) scores."""
        budget = self.config.eval_tokens if eval_tokens is None else eval_tokens
        n = len(self.corpus.valid)
        return min(budget, n) if budget else n

    def rescore_best(self) -> None:
        """Score the saved best model on the current ``eval_tokens`` budget (a resume that
        changed it), so later evaluations are compared with a score of the same budget."""
        with torch.random.fork_rng(devices=[]):  # building a model draws from the CPU RNG
            best = LanguageModel.from_pretrained(self.out_dir).to(self.device)
        metrics = self.evaluate(self.config.eval_tokens, model=best)
        self.pos.best_val, self.pos.best_tokens = metrics["val_loss"], metrics["val_tokens"]

    # --- state ------------------------------------------------------------------------------

    def save_state(self) -> None:
        """Latest weights, optimizer, hidden state, RNG and position in one atomic file."""
        tensors = {f"model.{k}": v for k, v in weights_of(self.model).items()}
        opt = self.optimizer.state_dict()
        for idx, st in opt["state"].items():
            for key, value in st.items():
                tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value)
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        if self.hidden is not None:
            parts = self.hidden if isinstance(self.hidden, tuple) else (self.hidden,)
            for i, h in enumerate(parts):
                tensors[f"hidden.{i}"] = h
        meta = {
            "position": json.dumps(self.pos.__dict__),
            "param_groups": json.dumps(opt["param_groups"]),
        }
        save_tensors_atomic(self.out_dir / STATE_FILE, tensors, metadata=meta)

    def load_state(self) -> None:
        path = self.out_dir / STATE_FILE
        tensors = load_tensors(path)
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        # every name, shape, dtype and field checked here, so nothing crashes later (statefile)
        self.pos = read_position(path, meta, self.windows_per_epoch)
        groups = read_param_groups(path, meta, self.optimizer)
        check_tensors(
            path, tensors, expected_tensors(self.model, self.optimizer, self.streams.shape[0])
        )
        load_weights_into(
            self.model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path
        )
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        hidden = [
            tensors[f"hidden.{i}"].to(self.device) for i in range(2) if f"hidden.{i}" in tensors
        ]
        if not self.autocast:  # a bf16 run's state is fp16 (cuDNN under autocast); fp32 needs fp32
            hidden = [h.float() for h in hidden]
        self.hidden = None if not hidden else tuple(hidden) if len(hidden) == 2 else hidden[0]

    # --- the loop ---------------------------------------------------------------------------

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits, hidden = self.model(x, self.hidden)  # (B, T, V)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            clip_gradients(self.model, self.config.grad_clip)
        self.optimizer.step()
        self.hidden = _detach(hidden)
        return loss.detach()

    def tokens_seen(self) -> int:
        """Training tokens read by the steps taken so far (an epoch's last window may be short)."""
        B, n = self.streams.shape
        per_epoch = n - 1  # every column but the last is an input once per epoch
        return B * (
            self.pos.epoch * per_epoch + min(self.pos.window * self.config.seq_len, per_epoch)
        )

    def evaluate(self, max_tokens: int = 0, model: LanguageModel | None = None) -> dict[str, Any]:
        """Validation metrics of ``model`` (default: the one training) on the first
        ``max_tokens`` (0: all). A stop request ends it early: ``EvaluationStopped``."""
        with (
            tf32(self._tf32()),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast),
        ):
            try:
                result = evaluate_tokens(
                    model or self.model,
                    self.corpus.valid,
                    seq_len=self.config.seq_len,
                    max_tokens=max_tokens,
                    should_stop=lambda: self.stop_requested,
                )
            except NumericalError as exc:  # evaluate_tokens returns finite losses only
                raise self._diverged("validation loss", exc.value) from None
        return {
            "val_loss": result.loss,
            "val_perplexity": result.perplexity,
            "val_bits_per_char": result.bits_per_char,
            "val_tokens": result.tokens,
        }

    def _eval_and_checkpoint(self, max_tokens: int) -> None:
        """Evaluate on ``max_tokens`` (the run's --eval-tokens), keep the model if it is the
        best, save the trainer state.

        Its time counts against ``max_time`` and is remembered (``eval_seconds``) so that the
        loop stops early enough for the final evaluation to end within the budget. Interrupted
        (Ctrl-C), it saves the state with ``eval_pending`` set: the resumed run evaluates this
        step first, so stopping never changes which checkpoint is kept."""
        began = time.perf_counter()
        self._tick()
        metrics = {"step": self.pos.step, "epoch": self.pos.step / self.windows_per_epoch}
        try:
            metrics.update(self.evaluate(max_tokens))
        except EvaluationStopped:
            self.pos.eval_pending = True
            self._tick()
            self.save_state()
            return
        self.pos.eval_pending = False
        metrics["elapsed"] = round(self.pos.elapsed, 3)
        if metrics["val_loss"] < self.pos.best_val:
            self.pos.best_val, self.pos.best_step, self.pos.bad_evals = (
                metrics["val_loss"],
                self.pos.step,
                0,
            )
            self.pos.best_tokens = metrics["val_tokens"]
            save_model(self.model, self.out_dir)
        else:
            self.pos.bad_evals += 1
        metrics["best_val_loss"] = self.pos.best_val
        self._log(metrics)
        sample = ""
        if self.config.sample_tokens:
            sample = "".join(
                self.model.generate(
                    "",
                    max_new_tokens=self.config.sample_tokens,
                    temperature=0.8,
                    seed=self.pos.step,
                    stop=[],
                )
            )
        for cb in self.callbacks:
            cb.on_eval(self, metrics, sample)
        self.eval_seconds = time.perf_counter() - began
        self.eval_reserve = self.eval_seconds
        self._tick()
        self.save_state()

    def _tick(self) -> None:
        """Bring ``pos.elapsed`` up to now: wall-clock time since fit started, on top of what
        earlier sessions of the run used."""
        base, started = self._clock
        self.pos.elapsed = base + time.perf_counter() - started

    def _tf32(self) -> bool:
        return self.device.type == "cuda" and self.precision == "fp32"

    def fit(self) -> dict[str, Any]:
        """Train until a limit is reached or a stop is requested; return a summary."""
        c = self.config
        if not (c.max_steps or c.epochs or c.max_time):
            raise ConfigError("no stopping rule: set max_steps, epochs or max_time")
        if self.lock is None:  # a second fit of the same trainer
            self._hold(RunLock.acquire(self.out_dir))
        try:
            with memory_hint(c, self.model.config.hidden_size):
                return self._fit()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def _fit(self) -> dict[str, Any]:
        c = self.config
        for cb in self.callbacks:
            cb.on_start(self)
        start = self.pos.step
        self._clock = (self.pos.elapsed, time.perf_counter())
        with tf32(self._tf32()):
            if self.pos.eval_pending:  # a resume after a stop that cut an evaluation short
                self._eval_and_checkpoint(c.eval_tokens)
            reason = self._loop()
            if self.pos.step == start:  # resumed at a limit already reached: nothing to redo
                return self._summary(reason, new_steps=0)
            if reason != "interrupted" and self.pos.step % c.eval_every != 0:
                # The final evaluation has the periodic ones' budget (--eval-tokens), so its
                # time is known and reserved; a full pass is `lstmgen eval RUN --split valid`.
                self._eval_and_checkpoint(c.eval_tokens)
                if self.stop_requested:
                    reason = "interrupted"
            if self.pos.best_step < 0:
                # Stopped before any evaluation: the model directory would still hold the
                # initial weights, so it gets the latest ones until an evaluation picks a best.
                save_model(self.model, self.out_dir)
            self._tick()
            self.save_state()
        self.plot()
        return self._summary(reason, new_steps=self.pos.step - start)

    def _loop(self) -> str | None:
        """The step loop. ``pos.elapsed`` is wall-clock time, evaluations included: on CUDA the
        loop runs ahead of the GPU, so it waits for the queued steps before each evaluation
        and at the end."""
        c, pos = self.config, self.pos
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        tokens_since, steps_since = 0, 0
        last_log = loop_start = time.perf_counter()
        loop_tokens = 0
        reason = self._finished()
        while reason is None:
            if pos.window >= self.windows_per_epoch:
                pos.epoch, pos.window, self.hidden = pos.epoch + 1, 0, None
            xb, yb = self.windows(pos.window)  # (B, T') each, on the device
            loss_sum += self.train_step(xb, yb)
            pos.step, pos.window = pos.step + 1, pos.window + 1
            steps_since, tokens_since = steps_since + 1, tokens_since + xb.numel()
            loop_tokens += xb.numel()
            if pos.step % c.log_every == 0:  # the only host sync of the step loop
                train_loss = loss_sum.item() / steps_since
                self._check_finite("training loss", train_loss)
                now = time.perf_counter()
                self._tick()
                tokens_per_s = tokens_since / max(now - last_log, 1e-9)
                record = {
                    "step": pos.step,
                    "epoch": pos.step / self.windows_per_epoch,
                    "train_loss": train_loss,
                    "lr": self.lr_at(),
                    "tokens_per_s": tokens_per_s,
                    "elapsed": round(pos.elapsed, 3),
                }
                self._log(record)
                for cb in self.callbacks:
                    cb.on_log(self, record)
                loss_sum.zero_()
                steps_since, tokens_since, last_log = 0, 0, now
            else:
                self._tick()
            if self.eval_seconds is None:
                # Until an evaluation is timed, guess the final one from the training speed so
                # far (a forward pass is about a third of a training step's work), from the
                # first step on: a run whose budget ends before its first log step must still
                # leave room for it. On CUDA the rate is exact at log steps (they sync).
                rate = loop_tokens / max(time.perf_counter() - loop_start, 1e-9)
                self.eval_reserve = self.eval_token_count() / max(3 * rate, 1e-9)
            for cb in self.callbacks:
                cb.on_step(self)
            reason = self._finished()
            if pos.step % c.eval_every == 0 and reason != "interrupted":
                synchronize(self.device)
                self._eval_and_checkpoint(c.eval_tokens)
                reason = self._finished()
                last_log = time.perf_counter()  # tokens_per_s leaves the evaluation out
        synchronize(self.device)
        self._tick()
        return reason

    def plot(self) -> Path | None:
        """Write loss.png (train and validation loss against step) from metrics.jsonl. The run
        is saved by then: a plot that cannot be drawn (no matplotlib, a full disk) is a warning,
        not a failed run."""
        try:
            return plot_metrics(self.out_dir / "metrics.jsonl", self.out_dir / "loss.png")
        except (ImportError, OSError, RuntimeError, ValueError) as err:
            warnings.warn(f"loss.png not written: {err}", stacklevel=2)
            return None


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


def plot_metrics(metrics_path: Path, out: Path) -> Path | None:
    rows = read_metrics(metrics_path)
    train = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if not train and not val:
        return None
    import matplotlib

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
