"""A small training loop in NumPy: truncated BPTT with the state carried between windows,
AdamW, gradient clipping, warmup then cosine decay, evaluation and best-model keeping.

It follows the PyTorch trainer (``lstmgen.train``) step for step, so the two can be read side
by side, and writes a run directory that the PyTorch backend loads (config.json, tokenizer.json,
generation_config.json, model.safetensors, train_config.json, metrics.jsonl). It does not write
the trainer state that ``--resume`` needs. Speed: on one CPU thread a forward and backward pass
of the default 2 x 256 model takes 0.8 to 1.3 times PyTorch's time (a Python loop over time
steps, BLAS for every product), and whole training steps are compared in
benchmarks/results/study_speed.json. Only PyTorch runs on a GPU.

>>> trainer = Trainer.create("runs/np", ["poems.txt"], TrainConfig(max_steps=200),
...                          ModelConfig(hidden_size=64, num_layers=1))  # doctest: +SKIP
>>> trainer.fit()  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import AWD_MODEL_OPTIONS, GenerationConfig, ModelConfig, TrainConfig
from ..corpus import Corpus, prepare_corpus
from ..data import TokenFile, batchify, eval_window, get_window, num_windows
from ..errors import ConfigError
from ..rundir import RunDir
from ..training.schedule import Position, RunSchedule
from .layers import Adam, clip_grad_norm, log_softmax
from .model import LanguageModel


def evaluate(
    model: LanguageModel,
    data: TokenFile,
    batch_size: int = 16,
    seq_len: int = 256,
    warmup: int = 256,
    max_tokens: int = 0,
) -> dict[str, float]:
    """Mean loss over ``data`` (every token scored once, the first predicted from ``bos_id``),
    laid out like ``lstmgen.evaluate``: B contiguous pieces scored in parallel, each after
    reading the ``warmup`` tokens before it."""
    tokens = data.tokens[: max_tokens or None]  # (n,) the memmap: read one window at a time
    n = len(tokens)
    B = max(1, min(batch_size, n // max(1, 4 * warmup)))
    size = -(-n // B)
    pieces = [(max(0, s - warmup), s, min(n, s + size)) for s in range(0, n, size)]
    width = max(end - read for read, _, end in pieces)
    bos = model.tokenizer.bos_id
    total, state = 0.0, None
    for t in range(0, width, seq_len):
        x, y, scored = eval_window(tokens, pieces, bos, t, min(seq_len, width - t))  # (B, T)
        logits, state = model(x, state)  # (B, T, V)
        logp = log_softmax(logits.astype(np.float64))
        nll = -np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]  # (B, T)
        total += float((nll * scored).sum())
    loss = total / n
    chars = data.chars if len(tokens) == len(data) else round(data.chars * n / len(data))
    return {
        "val_loss": loss,
        "val_perplexity": math.exp(min(loss, 700.0)),
        "val_bits_per_char": loss * n / math.log(2) / max(chars, 1),
        "val_tokens": n,
    }


class Trainer(RunSchedule):
    """Train a NumPy ``LanguageModel``; the interface (``fit``, ``pos``, callbacks) is the
    PyTorch ``lstmgen.Trainer``'s, so the same progress display drives both."""

    device = "numpy (CPU)"

    def __init__(
        self,
        model: LanguageModel,
        config: TrainConfig,
        corpus: Corpus,
        out_dir: str | Path,
        callbacks: Sequence[Any] = (),
    ):
        config.validate()
        self.model, self.config, self.corpus = model, config, corpus
        self.out_dir = Path(out_dir)
        self.run = RunDir(self.out_dir)
        self.callbacks = list(callbacks)
        self.pos = Position()
        self.hidden: Any = None
        self.stop_requested = False
        self.streams = batchify(corpus.train.tokens, config.batch_size)  # (B, n)
        self.windows_per_epoch = num_windows(self.streams, config.seq_len)
        self.optimizer = Adam(
            model.params, lr=config.lr, betas=(0.9, 0.99), weight_decay=config.weight_decay
        )
        self.rng = np.random.default_rng(config.seed)  # dropout masks

    @classmethod
    def create(
        cls,
        out_dir: str | Path,
        train: Sequence[str | Path] = (),
        config: TrainConfig | None = None,
        model_config: ModelConfig | None = None,
        valid: Sequence[str | Path] = (),
        test: Sequence[str | Path] = (),
        callbacks: Sequence[Any] = (),
    ) -> Trainer:
        """Tokenize the corpus, build a fresh float32 model, write the run directory."""
        config = config or TrainConfig()
        awd = [k for k in AWD_MODEL_OPTIONS if getattr(model_config or ModelConfig(), k)]
        awd += [k for k in ("ar", "tar", "variable_seq_len") if getattr(config, k)]
        awd += ["optimizer"] if config.optimizer != "adamw" else []
        if awd:  # AWD-LSTM's options (issue #16) are the PyTorch trainer's only
            raise ConfigError(f"{', '.join(awd)}: not supported by the NumPy reference")
        run = RunDir(out_dir)
        if run.has_state():
            raise ConfigError(f"{out_dir} already holds a PyTorch run: choose another --output")
        corpus = prepare_corpus(out_dir, config, train, valid, test)
        model_config = (model_config or ModelConfig()).replace(
            vocab_size=corpus.tokenizer.vocab_size
        )
        model = LanguageModel.init(
            model_config, config.seed, np.float32, corpus.tokenizer, GenerationConfig()
        )
        model.check_state_fits(config.batch_size)  # before the run folder is written
        run.write_new_run(config, corpus.sources, model)
        return cls(model, config, corpus, out_dir, callbacks)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """Forward one window from the carried state, backward through it only (truncated
        BPTT: the carried state is a constant here), clip, AdamW step."""
        loss, grads, self.hidden = self.model.loss_and_grads(x, y, self.hidden, self.rng)
        if self.config.grad_clip:
            clip_grad_norm(grads, self.config.grad_clip)
        self.optimizer.lr = self.lr_at()
        self.optimizer.step(grads)
        return loss

    def evaluate(self, max_tokens: int = 0) -> dict[str, Any]:
        return evaluate(
            self.model, self.corpus.valid, seq_len=self.config.seq_len, max_tokens=max_tokens
        )

    def _eval_and_checkpoint(self, max_tokens: int) -> None:
        pos = self.pos
        metrics = {
            "step": pos.step,
            "epoch": pos.step / self.windows_per_epoch,
            "elapsed": round(pos.elapsed, 3),
            **self.evaluate(max_tokens),
        }
        self._check_finite("validation loss", metrics["val_loss"])
        if metrics["val_loss"] < pos.best_val:
            pos.best_val, pos.best_step, pos.bad_evals = metrics["val_loss"], pos.step, 0
            self.run.save_model(self.model)
        else:
            pos.bad_evals += 1
        metrics["best_val_loss"] = pos.best_val
        self._log(metrics)
        sample = ""
        if self.config.sample_tokens:
            sample = "".join(
                self.model.generate(
                    "",
                    max_new_tokens=self.config.sample_tokens,
                    temperature=0.8,
                    seed=pos.step,
                    stop=[],
                )
            )
        for cb in self.callbacks:
            cb.on_eval(self, metrics, sample)

    def fit(self) -> dict[str, Any]:
        """Train until a limit is reached or a stop is requested; return a summary."""
        c, pos = self.config, self.pos
        if not (c.max_steps or c.epochs or c.max_time):
            raise ConfigError("no stopping rule: set max_steps, epochs or max_time")
        for cb in self.callbacks:
            cb.on_start(self)
        loss_sum, steps_since, tokens_since, last_log = 0.0, 0, 0, time.perf_counter()
        reason = self._finished()
        while reason is None:
            t0 = time.perf_counter()
            if pos.window >= self.windows_per_epoch:
                pos.epoch, pos.window, self.hidden = pos.epoch + 1, 0, None
            x, y = get_window(self.streams, pos.window, c.seq_len)  # (B, T') each
            loss_sum += self.train_step(x, y)
            pos.step, pos.window = pos.step + 1, pos.window + 1
            steps_since, tokens_since = steps_since + 1, tokens_since + x.size
            pos.elapsed += time.perf_counter() - t0
            if pos.step % c.log_every == 0:
                now = time.perf_counter()
                record = {
                    "step": pos.step,
                    "epoch": pos.step / self.windows_per_epoch,
                    "train_loss": self._check_finite("training loss", loss_sum / steps_since),
                    "lr": self.lr_at(),
                    "tokens_per_s": tokens_since / max(now - last_log, 1e-9),
                    "elapsed": round(pos.elapsed, 3),
                }
                self._log(record)
                for cb in self.callbacks:
                    cb.on_log(self, record)
                loss_sum, steps_since, tokens_since, last_log = 0.0, 0, 0, now
            reason = self._finished()
            if pos.step % c.eval_every == 0 and reason != "interrupted":
                self._eval_and_checkpoint(c.eval_tokens)
                reason = self._finished()
                last_log = time.perf_counter()
        if reason != "interrupted" and pos.step % c.eval_every != 0:
            self._eval_and_checkpoint(0)
        elif pos.best_step < 0:  # stopped before any evaluation: keep the latest weights
            self.run.save_model(self.model)
        return self._summary(reason, new_steps=pos.step)
