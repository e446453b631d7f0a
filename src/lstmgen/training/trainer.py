"""The training loop: TBPTT with carried state, evaluation, best-checkpoint keeping, early
stopping and exact resume. The schedule and stopping rules are schedule.py's, the optimizer
optim.py's, the state file's contents state.py's, and every file of the run folder rundir.py's.

No argparse and no printing here: progress goes to ``Callback``s (the CLI draws a progress bar
from them).

Resuming restores everything in ``trainer/state.safetensors``, so on CPU a run stopped and
resumed ends with bit-identical weights to an uninterrupted one (unless ``max_time`` drives the
schedule, since wall-clock time is not reproducible).

On CUDA the step loop never waits for the GPU except every ``log_every`` steps (to read the
loss) and at evaluations: windows are sliced from streams kept on the GPU (``Windows``),
AdamW is fused, gradient clipping uses foreach kernels and keeps its norm on the device, the
learning rate is a Python float, and the loss is summed on the device. ``precision`` (see
``runtime.resolve_precision``) picks bf16 autocast or fp32 with TF32.
"""

from __future__ import annotations

import contextlib
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import GenerationConfig, ModelConfig, TrainConfig
from ..corpus import Corpus, load_run_corpus, open_run_corpus, prepare_corpus
from ..data import batchify, num_windows
from ..errors import CheckpointError, ConfigError, NumericalError, TrainingError
from ..evaluate import EvaluationStopped, evaluate_tokens
from ..model import LanguageModel
from ..modeldir import TOKENIZER
from ..models.adaptive import auto_cutoffs
from ..rundir import STATE_FILE, NoLock, RunDir
from ..runlock import RunLock
from ..runtime import (
    flush_denormals,
    is_out_of_memory,
    resolve_device,
    resolve_precision,
    synchronize,
    tf32,
)
from ..state import State
from ..tokenizers import Tokenizer, load_tokenizer
from . import distributed, finetune
from . import state as trainer_state
from .bptt import window_cuts
from .label_rows import LabelRows, evaluate_label_rows
from .ntasgd import NONMONO, Averager
from .ntasgd import PREFIX as AVG_PREFIX
from .optim import adamw, clip_gradients, decay_groups
from .schedule import Position, RunSchedule
from .windows import Windows

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


class Callback:
    """Receives progress. Override what you need; every method is a no-op by default."""

    def on_start(self, trainer: Trainer) -> None: ...
    def on_step(self, trainer: Trainer) -> None: ...  # every step: keep it cheap, no host sync
    def on_log(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...
    def on_eval(self, trainer: Trainer, metrics: dict[str, Any], sample: str) -> None: ...
    def on_end(self, trainer: Trainer, summary: dict[str, Any]) -> None: ...


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


# What a subclass's own single-window train_step leaves out (Trainer.step_lacks).
SINGLE_WINDOW_STEP = (
    "grad_accum", "torchrun", "ar", "tar", "variable_seq_len", "optimizer",
    "lr_layer_decay", "unfreeze_every", "freeze_embeddings",
)  # fmt: skip


class Trainer(RunSchedule):
    """Train a ``LanguageModel`` on a ``Corpus`` into ``out_dir``.

    >>> cfg = TrainConfig(max_steps=200)
    >>> trainer = Trainer.create("runs/poems", ["poems.txt"], cfg)  # doctest: +SKIP
    >>> summary = trainer.fit()  # doctest: +SKIP
    >>> Trainer.resume("runs/poems", max_steps=400).fit()  # doctest: +SKIP
    """

    takes_features = False  # a features_from corpus needs training/features.py's FeatureTrainer
    # A subclass whose own train_step is a plain single-window step (distillation, feature
    # corpora) lists here what that step does not do, so such a run is one clear error.
    step_lacks: tuple[str, ...] = ()

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
        self.dist = distributed.init()  # rank and world size under torchrun (distributed.py)
        self._check_step_support(config)
        self.run = RunDir(self.out_dir, writer=self.dist.is_main)
        self.callbacks = list(callbacks)
        self.device = self.dist.device(config.device)  # cuda:LOCAL_RANK under torchrun
        self.precision = resolve_precision(config.precision, self.device)
        self.model = model.to(self.device)
        self.ddp: torch.nn.Module | None = None  # DDP around model, made by fit (a collective)
        self.pos = Position()
        self.hidden: State | None = None  # state carried between windows (detached)
        self.stop_requested = False
        self.lock: RunLock | NoLock | None = None  # held from create/resume to the end of fit
        self.eval_seconds: float | None = None  # how long the last evaluation took
        self.added_tokens = 0  # fine-tuning: tokens added to the base's vocabulary (create)
        self._clock = (0.0, time.perf_counter())  # (pos.elapsed, perf_counter) at fit's start
        # (K*B, n): this process's rows of W*K*B streams (the layout: distributed.py)
        rows = config.batch_size * config.grad_accum * self.dist.world
        self.streams = self.dist.shard(batchify(corpus.train.tokens, rows))
        self.windows_per_epoch = num_windows(self.streams, config.seq_len)
        self.windows = Windows(self.streams, config.seq_len, self.device)  # x, y = windows(k)
        B, n = self.streams.shape
        if n - 1 < config.seq_len:
            warnings.warn(
                f"the training text makes {B} streams of {n - 1:,} tokens, shorter than seq_len "
                f"{config.seq_len:,}: every window is {n - 1:,} tokens (lower --batch-size or "
                "--seq-len)",
                stacklevel=2,
            )
        self.label_rows: LabelRows | None = None  # a labelled corpus's layout (label_rows.py)
        if config.labels_from and not self.takes_features:
            self._lay_out_documents(config, rows)
        self.optimizer = self.configure_optimizer()
        self.autocast = self.precision == "bf16"
        # AWD-LSTM (issue #16): AR/TAR need the last layer's outputs from the architecture
        if (config.ar or config.tar) and not getattr(model.arch, "exposes_activations", False):
            raise ConfigError(
                f"ar and tar need the recurrent architecture's activations; arch "
                f"{model.config.arch!r} does not expose them"
            )
        self.model.init_state(B)  # an architecture refuses a state that cannot fit, before any step
        self.averager = Averager(self.model)  # NT-ASGD's average, once triggered
        self._cuts: tuple[int, Any] = (-1, None)  # (epoch, window_cuts) of variable BPTT
        self.lr_scale = 1.0  # the current window's: drawn length / seq_len (variable BPTT)

    def _lay_out_documents(self, config: TrainConfig, rows: int) -> None:
        """Each document of a labelled corpus from a fresh state, in whole windows, as
        generation starts one (issue #13; training/label_rows.py has why)."""
        if config.variable_seq_len:
            raise ConfigError(
                "--variable-seq-len does not apply to a labelled corpus: its documents are cut "
                "into whole --seq-len windows"
            )
        tok = self.model.tokenizer
        self.label_rows = LabelRows(
            self.corpus.train.tokens, [tok.label_id(n) for n in tok.labels], rows,
            config.seq_len, tok.bos_id, self.device, self.dist.shard,
        )  # fmt: skip
        self.streams = self.label_rows.x  # (K*B, W*T): tokens_seen counts its columns
        self.windows_per_epoch = self.label_rows.windows
        self.windows = self.label_rows  # type: ignore[assignment]

    def _check_step_support(self, config: TrainConfig) -> None:
        asked = {
            "grad_accum": config.grad_accum != 1,
            "torchrun": self.dist.world > 1,
            "ar": bool(config.ar),
            "tar": bool(config.tar),
            "variable_seq_len": config.variable_seq_len,
            "optimizer": config.optimizer != "adamw",
            "lr_layer_decay": config.lr_layer_decay != 1.0,
            "unfreeze_every": bool(config.unfreeze_every),
            "freeze_embeddings": config.freeze_embeddings,
        }
        refused = [k for k in self.step_lacks if asked[k]]
        if refused:
            names = ", ".join(k if k == "torchrun" else "--" + k.replace("_", "-") for k in refused)
            raise ConfigError(f"{type(self).__name__} does not support {names}")

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: weight decay on matrices only (optim.decay_groups).
        Override to fine-tune: leave parameters out to freeze them, give a group its own
        ``weight_decay``. The groups are part of the trainer state: a resumed run must
        make the same ones."""
        if finetune.uses_layer_groups(self.config):  # ULMFiT's groups by layer
            return finetune.param_groups(self.model, self.config)
        return decay_groups(self.model, self.config.weight_decay)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer over ``param_groups()`` (AdamW; the schedule sets its ``lr``). With
        ``optimizer: nt-asgd``: SGD (weight decay as L2), averaged later (ntasgd.py)."""
        if self.config.optimizer == "nt-asgd":
            return torch.optim.SGD(self.param_groups(), lr=self.config.lr)
        return adamw(self.param_groups(), self.config, self.device)

    # --- construction -------------------------------------------------------------------------

    @classmethod
    @distributed.led_by_first
    def create(
        cls,
        out_dir: str | Path,
        train: Sequence[str | Path] = (),
        config: TrainConfig | None = None,
        model_config: ModelConfig | None = None,
        valid: Sequence[str | Path] = (),
        test: Sequence[str | Path] = (),
        callbacks: Sequence[Callback] = (),
        init_from: str | Path | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> Trainer:
        """Start a new run: tokenize the corpus, build the model, write the run directory.

        ``init_from``: a trained model directory to fine-tune (training/finetune.py): its
        architecture, sizes, tokenizer kind and weights; char and word vocabularies gain the
        corpus's unseen tokens (``trainer.added_tokens`` says how many). ``model_config`` may
        then only repeat the base's sizes (its ``dropout`` is used).
        ``tokenizer``: use this one instead of fitting one (a distilled student: the teacher's).
        """
        config = config or TrainConfig()
        cls._check_corpus_kind(config)
        run = RunDir(out_dir)
        resolve_precision(config.precision, resolve_device(config.device))  # errors come first
        base = finetune.Base.open(init_from) if init_from is not None else None
        if base is not None:
            config = base.check_config(config)
            if config.labels_from or config.features_from:  # its vocabulary has no specials
                raise ConfigError("--init-from cannot fine-tune on a labelled or featured corpus")
        fresh = not run.path.exists()
        lock = run.lock()  # before anything in the folder is written or cleaned
        try:
            if run.has_state():
                raise ConfigError(
                    f"{out_dir} already holds a run: use --resume, or another --output"
                )
            run.remove_stale_temp_files()
            corpus = prepare_corpus(
                out_dir, config, train, valid, test, tokenizer,
                base=base.tokenizer if base else None,
            )  # fmt: skip
            features = getattr(corpus.train, "features", None)  # (D, F) of a feature corpus
            vocab = corpus.tokenizer.vocab_size
            if base is not None:
                model_config = base.model_config(model_config, vocab)
            else:
                model_config = model_config or ModelConfig()
                cuts = model_config.adaptive_cutoffs
                model_config = model_config.replace(
                    vocab_size=vocab,
                    feature_size=0 if features is None else features.shape[1],
                    adaptive_cutoffs=auto_cutoffs(vocab) if cuts == "auto" else cuts,
                )
            with memory_hint(config, model_config.hidden_size):
                torch.manual_seed(config.seed)
                model = LanguageModel(model_config, corpus.tokenizer, GenerationConfig())
                added = base.init(model) if base is not None else 0
                trainer = cls(model, config, corpus, out_dir, callbacks)
            trainer.added_tokens = added
            trainer.pos.warmup = trainer.planned_warmup()
            run.write_new_run(config, corpus.sources, model, base.record if base else None)
            trainer.dist.release(True)  # the other processes read the run folder now
            trainer.save_state()
        except BaseException:
            if fresh:  # a half-made run directory would pass for a run later: leave nothing
                run.discard()
            lock.release()
            raise
        trainer._hold(lock)
        return trainer

    @classmethod
    @distributed.led_by_first
    def resume(
        cls, out_dir: str | Path, callbacks: Sequence[Callback] = (), **overrides: Any
    ) -> Trainer:
        """Continue a run exactly where it stopped; ``overrides`` may change limits only."""
        run = RunDir(out_dir)
        if not run.path.is_dir():
            raise CheckpointError(f"no such run directory: {out_dir}")
        if not run.has_state():
            raise CheckpointError(f"{out_dir} has no trainer state to resume ({STATE_FILE})")
        saved, sources = run.read_config()
        cls._check_corpus_kind(saved)
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
        lock = run.lock()  # before anything in the folder is written or cleaned
        try:
            run.remove_stale_temp_files()
            corpus = load_run_corpus(out_dir, config, sources, load_tokenizer(run.path / TOKENIZER))
            run.write_config(config, sources)  # raised limits hold for later resumes
            model = LanguageModel.from_pretrained(out_dir)  # best weights; the latest come below
            trainer = cls(model, config, corpus, out_dir, callbacks)
            trainer.load_state()
            trainer._forget_log_after(trainer.pos.step)
            # A best score from another --eval-tokens budget is not comparable: score it again.
            recorded = trainer.pos.best_tokens or trainer.eval_token_count(saved.eval_tokens)
            if (
                trainer.dist.is_main
                and trainer.pos.best_step >= 0
                and recorded != trainer.eval_token_count()
            ):
                trainer.rescore_best()
        except BaseException:
            lock.release()
            raise
        trainer._hold(lock)
        return trainer

    @classmethod
    def _check_corpus_kind(cls, config: TrainConfig) -> None:
        """A feature corpus needs the trainer that feeds vectors; other corpora the plain one."""
        if bool(config.features_from) != cls.takes_features:
            raise ConfigError(
                "a --features-from corpus trains with lstmgen.training.features.FeatureTrainer"
                if config.features_from
                else f"{cls.__name__} needs a --features-from corpus"
            )

    @classmethod
    def _follow(cls, out_dir: str | Path, new: bool) -> Trainer:
        """A process other than the first under torchrun, once the first has prepared the
        run folder (``distributed.led_by_first``): read the config, tokenizer, token cache
        (memory-mapped, never tokenized again) and model it wrote; write nothing."""
        run = RunDir(out_dir, writer=False)
        config, sources = run.read_config()
        corpus = open_run_corpus(out_dir, config, sources, load_tokenizer(run.path / TOKENIZER))
        torch.manual_seed(config.seed)
        trainer = cls(LanguageModel.from_pretrained(out_dir), config, corpus, out_dir)
        if new:
            trainer.pos.warmup = trainer.planned_warmup()
            torch.manual_seed(config.seed + trainer.dist.rank)  # its own dropout masks
            trainer.save_state()  # takes part in rank 0's gather
        else:
            trainer.load_state()
        trainer._hold(NoLock())
        return trainer

    def _hold(self, lock: RunLock | NoLock) -> None:
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
        warnings.warn(
            f"--eval-tokens changed: the best model (step {self.pos.best_step}) scored again on "
            f"{metrics['val_tokens']:,} tokens: {metrics['val_loss']:.4f} (was "
            f"{self.pos.best_val:.4f} on {self.pos.best_tokens or 'all'} tokens)",
            stacklevel=2,
        )
        self.pos.best_val, self.pos.best_tokens = metrics["val_loss"], metrics["val_tokens"]

    # --- state ------------------------------------------------------------------------------

    def save_state(self) -> None:
        """Latest weights, optimizer, hidden state, RNG and position in one atomic file.
        Under torchrun, every process's carried state and RNG are gathered (a collective:
        every process calls this at the same points) and rank 0 writes them."""
        hidden, rngs = self.dist.gather_state(self.hidden), self.dist.gather_rng(self.device)
        if not self.run.writer:
            return
        model, opt, pos = self.model, self.optimizer, self.pos
        tensors, meta = trainer_state.pack(model, opt, hidden, pos, self.device)
        tensors.update(self.averager.tensors())  # NT-ASGD's average (avg.*)
        if self.dist.active:
            tensors.update(rngs)
            meta.update(self.dist.metadata())
        self.run.save_state(tensors, meta)

    def load_state(self) -> None:
        tensors, meta = self.run.load_state()
        self.dist.check_world(self.run.state_file, meta)
        avg = {k: tensors.pop(k) for k in list(tensors) if k.startswith(AVG_PREFIX)}
        self.averager.load(avg, self.run.state_file)
        rows = self.streams.shape[0] * self.dist.world  # the state holds every process's rows
        rng = {k: tensors.pop(k) for k in list(tensors) if k.startswith("dist.rng.")}
        self.pos, self.hidden = trainer_state.unpack(
            self.run.state_file,
            tensors,
            meta,
            self.model,
            self.optimizer,
            self.device,
            self.windows_per_epoch,
            batch=rows,
            fp32=not self.autocast,
        )
        self.hidden = self.dist.shard_state(self.hidden)
        self.dist.take_rng(self.run.state_file, rng, self.device)

    # --- the loop ---------------------------------------------------------------------------

    def step_lr(self) -> float:
        """This step's learning rate: the warmup + cosine schedule (AdamW), or NT-ASGD's
        constant rate (the paper keeps SGD's rate fixed and lets averaging do the rest)."""
        return self.config.lr if self.config.optimizer == "nt-asgd" else self.lr_at()

    def training_loss(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, hidden: State | None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """(loss to minimise, cross-entropy, new state) of a window through ``model`` (the DDP
        wrapper under torchrun). With ``ar`` / ``tar`` the loss adds AWD-LSTM's activation
        terms on the last layer's output: AR on the dropped output, TAR on the undropped one
        (Merity et al. 2017, section 4.6)."""
        c = self.config
        activations: list[torch.Tensor] = []
        # the architecture computes the loss (an adaptive softmax never builds the logits)
        ce, hidden = model(x, hidden, activations if c.ar or c.tar else None, targets=y)
        loss = ce
        if activations:
            raw, dropped = (a.float() for a in activations)  # (B, T, H) each
            if c.ar:
                loss = loss + c.ar * dropped.pow(2).mean()
            if c.tar and raw.shape[1] > 1:
                loss = loss + c.tar * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
        return loss, ce, hidden

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on (K*B, T') windows: K micro-steps of B rows each (--grad-accum),
        the gradient all-reduced over processes on the last one only (distributed.py), at
        ``step_lr()`` times ``lr_scale`` (variable BPTT's length / seq_len for this window, set
        by the loop); returns the cross-entropy."""
        # each group's share of the step's lr (fine-tuning: by layer, 0 while frozen)
        lr = self.step_lr() * self.lr_scale
        frozen = finetune.set_group_lrs(self.optimizer, lr, self.config, self.pos.step)
        K = self.config.grad_accum
        model = self.ddp or self.model
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        states = []
        for i, (xi, yi, hi) in enumerate(self._micro_batches(x, y, K)):
            with self.dist.no_sync(model, last=i == K - 1):
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                    loss, ce, hidden = self.training_loss(model, xi, yi, hi)
                (loss / K if K > 1 else loss).backward()
            total += ce.detach()
            states.append(hidden.detach())
        finetune.zero_grads(frozen)
        if self.config.grad_clip:
            clip_gradients(self.model, self.config.grad_clip)
        self.optimizer.step()
        self.averager.update()
        self.hidden = State.cat(states)
        return total / K if K > 1 else total

    def _micro_batches(
        self, x: torch.Tensor, y: torch.Tensor, k: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, State | None]]:
        """(K*B, T') windows and the carried state -> K (B, T') pieces, in row order."""
        if k == 1:
            yield x, y, self.hidden
            return
        b = x.shape[0] // k
        for i in range(k):
            rows = torch.arange(i * b, (i + 1) * b, device=x.device)
            h = None if self.hidden is None else self.hidden.select(rows)
            yield x[i * b : (i + 1) * b], y[i * b : (i + 1) * b], h

    def window(self, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Window ``k`` of the current epoch: inputs, targets (B, T') and the learning-rate
        scale (1, or with ``variable_seq_len`` the drawn length / seq_len: bptt.py)."""
        c = self.config
        if self.label_rows is not None:  # rows that start a document at k start afresh
            self.hidden = self.label_rows.reset(self.hidden, k, self.model)
        if not c.variable_seq_len:
            return (*self.windows(k), 1.0)
        if self._cuts[0] != self.pos.epoch:
            tokens = self.streams.shape[1] - 1
            cuts = window_cuts(c.seed, self.pos.epoch, tokens, c.seq_len, self.windows_per_epoch)
            self._cuts = (self.pos.epoch, cuts)
        cuts = self._cuts[1]
        start, end = int(cuts[k]), int(cuts[k + 1])
        return (*self.windows.span(start, end), (end - start) / c.seq_len)

    def tokens_seen(self) -> int:
        """Training tokens read by the steps taken so far (an epoch's last window may be short)."""
        B, n = self.streams.shape
        per_epoch = n - 1  # every column but the last is an input once per epoch
        rows = B * self.dist.world  # every process's rows
        return rows * (
            self.pos.epoch * per_epoch + min(self.pos.window * self.config.seq_len, per_epoch)
        )

    def evaluate(self, max_tokens: int = 0, model: LanguageModel | None = None) -> dict[str, Any]:
        """Validation metrics of ``model`` (default: the one training) on the first
        ``max_tokens`` (0: all). A stop request ends it early: ``EvaluationStopped``."""
        with (
            tf32(self._tf32()),
            flush_denormals(self.device),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast),
        ):
            try:
                if self.label_rows is not None:  # documents scored as they train (label_rows.py)
                    return evaluate_label_rows(
                        model or self.model, self.corpus.valid, self.config.seq_len,
                        max_tokens=max_tokens, should_stop=lambda: self.stop_requested,
                    )  # fmt: skip
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
        if not self.dist.is_main:  # rank 0 evaluates; the others take part in the save
            self.save_state()
            return
        began = time.perf_counter()
        self._tick()
        metrics = {"step": self.pos.step, "epoch": self.pos.step / self.windows_per_epoch}
        try:
            with self.averager.swapped():  # NT-ASGD: the averaged weights, once triggered
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
            with self.averager.swapped():
                self.run.save_model(self.model)
        else:
            self.pos.bad_evals += 1
        if self.config.optimizer == "nt-asgd" and not self.averager.on:
            # the paper's trigger: worse than the best of all but the last n evaluations
            if self.pos.bad_evals > NONMONO:
                self.averager.start()
                metrics["averaging"] = True
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
            self._hold(self.run.lock())
        try:
            with memory_hint(c, self.model.config.hidden_size), self.dist.failures(self.out_dir):
                summary = self._fit()
                self.dist.barrier()  # every process leaves together, after rank 0's last write
                return summary
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
        with tf32(self._tf32()), flush_denormals(self.device):
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
                self.run.save_model(self.model)
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
        if self.ddp is None and self.dist.active:
            self.ddp = self.dist.wrap(self.model)  # a collective: every process is here
        loss_sum = torch.zeros((), device=self.device)
        tokens_since, steps_since = 0, 0
        last_log = loop_start = time.perf_counter()
        loop_tokens = 0
        reason = self._agreed_stop(sync=True)
        while reason is None:
            if pos.window >= self.windows_per_epoch:
                pos.epoch, pos.window, self.hidden = pos.epoch + 1, 0, None
            xb, yb, self.lr_scale = self.window(pos.window)  # (B, T') each, on the device
            loss_sum += self.train_step(xb, yb)
            pos.step, pos.window = pos.step + 1, pos.window + 1
            tokens = xb.numel() * self.dist.world  # every process's rows
            steps_since, tokens_since = steps_since + 1, tokens_since + tokens
            loop_tokens += tokens
            if pos.step % c.log_every == 0:  # the only host sync of the step loop
                train_loss = self.dist.mean(loss_sum.item()) / steps_since
                now = time.perf_counter()
                self._log_progress(train_loss, tokens_since / max(now - last_log, 1e-9))
                loss_sum.zero_()
                steps_since, tokens_since, last_log = 0, 0, now
            else:
                self._tick()
            if self.eval_seconds is None:
                self._reserve_final_eval(loop_tokens / max(time.perf_counter() - loop_start, 1e-9))
            for cb in self.callbacks:
                cb.on_step(self)
            reason = self._agreed_stop()
            if pos.step % c.eval_every == 0 and reason != "interrupted":
                synchronize(self.device)
                self._eval_and_checkpoint(c.eval_tokens)
                reason = self._agreed_stop(sync=True)
                last_log = time.perf_counter()  # tokens_per_s leaves the evaluation out
        synchronize(self.device)
        self._tick()
        return reason

    def _agreed_stop(self, sync: bool = False) -> str | None:
        """``_finished()``; under torchrun rank 0's, broadcast at sync points (log and
        evaluation steps, the step and epoch limits that every process reaches together, and
        ``sync``) and None between them, so every process stops at the same step."""
        if not self.dist.active:
            return self._finished()
        step, c = self.pos.step, self.config
        horizon = self.horizon_steps()
        if (
            sync
            or step % c.log_every == 0
            or step % c.eval_every == 0
            or (horizon and step >= horizon)
        ):
            return self.dist.agree(self._finished())
        return None

    def _log_progress(self, train_loss: float, tokens_per_s: float) -> None:
        """A log step: check the loss, write the metrics row, tell the callbacks."""
        self._check_finite("training loss", train_loss)
        self._tick()
        pos = self.pos
        record = {
            "step": pos.step,
            "epoch": pos.step / self.windows_per_epoch,
            "train_loss": train_loss,
            "lr": self.step_lr(),
            "tokens_per_s": tokens_per_s,
            "elapsed": round(pos.elapsed, 3),
        }
        self._log(record)
        for cb in self.callbacks:
            cb.on_log(self, record)

    def _reserve_final_eval(self, tokens_per_s: float) -> None:
        """Until an evaluation is timed, guess the final one from the training speed so far (a
        forward pass is about a third of a training step's work), from the first step on: a run
        whose budget ends before its first log step must still leave room for it. On CUDA the
        rate is exact at log steps (they sync)."""
        self.eval_reserve = self.eval_token_count() / max(3 * tokens_per_s, 1e-9)

    def plot(self) -> Path | None:
        """Write loss.png from metrics.jsonl (a warning, not an error, if it cannot be drawn)."""
        return self.run.plot()
