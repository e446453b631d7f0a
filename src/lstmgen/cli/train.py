"""``lstmgen train``: start or resume a run."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import (
    AWD_MODEL_OPTIONS,
    CELLS,
    FINETUNE_DEFAULTS,
    OPTIMIZERS,
    PRECISIONS,
    PRESETS,
    REGULARISERS,
    TOKENIZERS,
    ModelConfig,
    TrainConfig,
)
from ..errors import ConfigError
from ..modeldir import read_model_config
from ..models.registry import ARCHITECTURES
from ..rundir import LOCK_FILE, RunDir
from .defaults import preset_defaults

if TYPE_CHECKING:  # torch: imported by train_command, not for --help
    from ..train import Trainer

MODEL_OPTIONS = (
    "cell",
    "embedding_size",
    "hidden_size",
    "num_layers",
    "dropout",
    "tie_weights",
    "arch",
    "memory",
    "attention_layer",
    "boom_size",
)
MODEL_OPTIONS += AWD_MODEL_OPTIONS  # weight_drop, dropout_input, ... (issue #16)
MODEL_OPTIONS += ("adaptive_cutoffs",)  # --adaptive-softmax (models/adaptive.py)
# Presets for word-level corpora: a warning when a run pairs them with another tokenizer.
WORD_PRESETS = ("word-cpu", "word-gpu")


class ProgressCallback:  # a train.Callback (which imports torch) by its methods
    """A tqdm bar with loss, tokens/s and ETA; evaluation lines and samples above it.

    It counts steps, or seconds of the --max-time budget when time alone ends the run. It
    moves every step (``on_step``: no host sync, tqdm redraws at most every 0.1 s), so it shows
    progress before the first loss is logged, and ``on_end`` sets it to the true final count
    before closing it: one bar, ending where the run ended."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar: Any = None
        self.by_time = False
        self.post: dict[str, Any] = {}  # the bar's postfix: loss, tok/s (and step, by time)

    def on_start(self, trainer: Trainer) -> None:
        from tqdm import tqdm

        m, c = trainer.model, trainer.config
        # torchrun processes x --grad-accum micro-steps (training/distributed.py)
        parts = getattr(getattr(trainer, "dist", None), "world", 1) * getattr(c, "grad_accum", 1)
        rows = f" ({c.batch_size * parts} rows a step)" if parts > 1 else ""
        click.echo(
            f"{m.config.cell.upper()} {m.config.num_layers}x{m.config.hidden_size}, "
            f"{m.num_parameters():,} parameters, {trainer.corpus.tokenizer.kind} vocabulary "
            f"{m.config.vocab_size:,}; {len(trainer.corpus.train):,} training tokens, "
            f"{len(trainer.corpus.valid):,} validation; batch {c.batch_size}x{c.seq_len}{rows} "
            f"on {trainer.device} ({getattr(trainer, 'precision', 'fp32')})",
            err=True,
        )
        if not self.quiet:
            self.by_time = bool(c.max_time) and not trainer.horizon_steps()
            if self.by_time:  # seconds of the budget; the step count goes in the postfix
                bar = {
                    "total": c.max_time,
                    "initial": int(min(trainer.pos.elapsed, c.max_time)),
                    "unit": "s",
                    "bar_format": "{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}{postfix}]",
                }
            else:
                bar = {"total": trainer.horizon_steps() or None, "initial": trainer.pos.step}
                bar["unit"] = "step"
            self.post = {"step": trainer.pos.step} if self.by_time else {}
            self.bar = tqdm(
                file=sys.stderr, dynamic_ncols=True, leave=True, postfix=self.post, **bar
            )

    def _advance(self, trainer: Trainer) -> None:
        """Move the bar to where the trainer is (tqdm redraws at most every 0.1 s). It stops
        one short of its total: only ``on_end`` draws the final state, so it is drawn once."""
        if self.by_time:
            self.post["step"] = trainer.pos.step
            self.bar.set_postfix(self.post, refresh=False)
            now = int(trainer.pos.elapsed)  # whole seconds of the budget
        else:
            now = trainer.pos.step
        if self.bar.total:
            now = min(now, math.ceil(self.bar.total) - 1)
        if now > self.bar.n:
            self.bar.update(now - self.bar.n)

    def on_step(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self._advance(trainer)

    def on_log(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.post["loss"] = f"{metrics['train_loss']:.3f}"
        self.post["tok/s"] = f"{metrics['tokens_per_s']:,.0f}"
        self.bar.set_postfix(self.post, refresh=False)
        self._advance(trainer)

    def on_eval(self, trainer: Trainer, metrics: dict[str, Any], sample: str) -> None:
        line = (
            f"step {metrics['step']}: val loss {metrics['val_loss']:.4f} "
            f"(bpc {metrics['val_bits_per_char']:.3f}), best {metrics['best_val_loss']:.4f}"
        )
        text = line
        if sample and not self.quiet:
            text += "\n--- sample ---\n" + sample.strip("\n") + "\n--------------"
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def on_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if self.bar is None:
            return
        if self.by_time:
            self.post["step"] = summary["step"]
            self.bar.set_postfix(self.post, refresh=False)
            # A run that used its whole budget shows a full bar, not 98 % of it.
            full = summary["reason"] == "max_time"
            self.bar.n = self.bar.total if full else int(min(summary["elapsed"], self.bar.total))
        else:
            self.bar.n = summary["step"]
        self.bar.close()  # draws the final state once (leave=True)
        self.bar = None


def _cutoffs(value: str | None) -> list[int] | str | None:
    """``--adaptive-softmax 2000,10000`` -> [2000, 10000] (the config checks their order);
    ``auto`` stays a rule until the vocabulary is known (models/adaptive.auto_cutoffs)."""
    if value is None or value == "auto":
        return value
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: comma-separated token ids, e.g. 2000,10000",
            param_hint="--adaptive-softmax",
        ) from None


def _base_model_config(init_from: str, given: dict[str, Any]) -> tuple[ModelConfig, str]:
    """The base model's config (with ``--dropout`` and the other regularisers if given) and
    tokenizer kind. A size or
    tokenizer flag that disagrees with the base is a usage error (repeating the base's value is
    fine)."""
    from ..modeldir import read_model_meta
    from ..training.finetune import resolve_base

    path = resolve_base(init_from)
    base, tokenizer, _ = read_model_meta(path)
    bad = [
        f"--{k.replace('_', '-')} {given[k]} (the base has {getattr(base, k)})"
        for k in MODEL_OPTIONS
        if k in given and k not in REGULARISERS and given[k] != getattr(base, k)
    ]
    if given.get("tokenizer", tokenizer.kind) != tokenizer.kind:
        bad.append(f"--tokenizer {given['tokenizer']} (the base has {tokenizer.kind})")
    if bad:
        raise click.UsageError(
            f"{', '.join(bad)}: the architecture, sizes and tokenizer come from the base model "
            f"{path}; leave the flag out"
        )
    return base.replace(**{k: given[k] for k in REGULARISERS if k in given}), tokenizer.kind


def _install_stop_handlers(trainer: Trainer) -> None:
    """First Ctrl-C / SIGTERM: finish the step, save, exit. A second one: stop at once."""

    first_at: list[float] = []

    def handler(signum: int, frame: Any) -> None:
        # Under torchrun one Ctrl-C arrives twice: from the terminal, and forwarded by the
        # launcher a moment later. That second copy is not a second Ctrl-C.
        echo = "WORLD_SIZE" in os.environ and first_at and time.monotonic() - first_at[0] < 2.0
        if trainer.stop_requested and not echo:
            raise KeyboardInterrupt
        if trainer.stop_requested:
            return
        first_at.append(time.monotonic())
        trainer.request_stop()
        from tqdm import tqdm  # tqdm.write keeps an open bar whole (click.echo would split it)

        tqdm.write("stopping: saving a checkpoint (press Ctrl-C again to abort)", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@preset_defaults
@click.command("train")
@click.argument("sources", nargs=-1)
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Run directory to create.")
@click.option(
    "--train", "train_files", multiple=True, help="Training file/folder/glob (repeatable)."
)
@click.option("--valid", "valid_files", multiple=True, help="Validation file/folder/glob.")
@click.option("--test", "test_files", multiple=True, help="Test file/folder/glob.")
@click.option(
    "--resume", type=click.Path(file_okay=False), help="Continue the run in this directory."
)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Named settings.")
@click.option(
    "--init-from",
    help="Fine-tune: start from this trained model directory (its architecture, sizes, "
    "tokenizer and weights; char/word vocabularies gain the corpus's new tokens). 'base': "
    "runs/base, made by `make base`.",
)
@click.option(
    "--lr-layer-decay",
    type=float,
    help="Layer group k from the top (decoder + top layer, ..., embedding) learns at "
    "lr / X^k (ULMFiT); 2.6 with --init-from.",
)
@click.option(
    "--unfreeze-every",
    type=int,
    help="Gradual unfreezing: train the top layer group only, one more every N steps (0 = off).",
)
@click.option(
    "--freeze-embeddings",
    is_flag=True,
    default=None,
    help="Keep the embedding (and a tied decoder matrix) as it is.",
)
@click.option("--tokenizer", type=click.Choice(TOKENIZERS))
@click.option("--vocab-size", type=int, help="BPE vocabulary size.")
@click.option("--min-freq", type=int, help="Word level: rarer words become <unk>.")
@click.option("--max-vocab", type=int, help="Word level: keep the N most frequent words.")
@click.option("--val-fraction", type=float, help="Held-out tail without --valid.")
@click.option("--encoding-errors", type=click.Choice(["strict", "replace"]), help="Bad bytes.")
@click.option("--encoding", help="Text encoding of the corpus: latin-1, cp1252, utf-16 ...")
@click.option(
    "--keep-line-endings",
    is_flag=True,
    default=None,
    help="Read \\r\\n and \\r as they are (by default both become \\n).",
)
@click.option(
    "--labels-from",
    type=click.Choice(["folders", "jsonl"]),
    help="Label each document: by its top-level sub-folder, or the JSONL 'label' field.",
)
@click.option(
    "--unlabelled-as", metavar="NAME", help="Label for unlabelled documents in a labelled corpus."
)
@click.option(
    "--features-from",
    type=click.Choice(["jsonl"]),
    help="Condition on each JSONL document's 'features' vector (its initial state).",
)
@click.option("--cell", type=click.Choice(CELLS), help="Recurrent cell.")
@click.option("--embedding-size", type=int)
@click.option("--hidden-size", type=int)
@click.option("--num-layers", type=int)
@click.option("--dropout", type=float)
@click.option("--tie-weights/--no-tie-weights", default=None)
@click.option(
    "--arch",
    type=click.Choice(sorted(ARCHITECTURES)),
    help="recurrent (the LSTM/GRU/RNN stack) or sha-lstm (an LSTM with one attention head).",
)
@click.option(
    "--memory",
    type=int,
    help="sha-lstm: past tokens the attention head sees beyond the window (>= 1).",
)
@click.option(
    "--attention-layer",
    type=int,
    help="sha-lstm: the LSTM layer (0-based) the head follows; negative counts from the end.",
)
@click.option(
    "--boom-size",
    type=int,
    help="sha-lstm: width of the feed-forward sublayer after attention (0 = none).",
)
@click.option("--weight-drop", type=float, help="DropConnect on the hidden-to-hidden weights.")
@click.option("--dropout-input", type=float, help="Locked dropout on the embeddings.")
@click.option("--dropout-hidden", type=float, help="Locked dropout between recurrent layers.")
@click.option("--dropout-output", type=float, help="Locked dropout before the decoder.")
@click.option("--dropout-embedding", type=float, help="Drop whole words (embedding rows).")
@click.option(
    "--adaptive-softmax",
    "adaptive_cutoffs",
    metavar="CUTOFFS",
    callback=lambda ctx, param, value: _cutoffs(value),
    help="Word models: an adaptive softmax with these cluster cutoffs, e.g. 2000,10000 (ids "
    "are by frequency), or auto (2000 and half the vocabulary within 3000-10000; none up to "
    "4000 words); with --tie-weights its word vectors are the embedding's.",
)
@click.option("--ar", type=float, help="Activation regularisation (AWD-LSTM's alpha).")
@click.option("--tar", type=float, help="Temporal activation regularisation (beta).")
@click.option(
    "--variable-seq-len/--fixed-seq-len",
    default=None,
    help="Draw each window's length around --seq-len, lr scaled to it (AWD-LSTM).",
)
@click.option(
    "--optimizer",
    type=click.Choice(OPTIMIZERS),
    help="adamw (warmup + cosine) or nt-asgd (SGD at a constant --lr, averaged when "
    "validation stalls).",
)
@click.option("--batch-size", type=int)
@click.option(
    "--grad-accum",
    type=int,
    help="Micro-steps of --batch-size rows per optimizer step (gradient accumulation).",
)
@click.option("--seq-len", type=int, help="Backpropagation-through-time window.")
@click.option("--lr", type=float, help="Peak learning rate; 3e-3 with --init-from.")
@click.option("--weight-decay", type=float)
@click.option(
    "--warmup-steps", type=int, help="At most 10% of the run's steps or time; 20 with --init-from."
)
@click.option("--grad-clip", type=float)
@click.option("--max-steps", type=int, help="Steps of training (0 = no limit).")
@click.option("--epochs", type=float)
@click.option(
    "--max-time",
    type=float,
    help="Seconds of wall-clock time, evaluations included (0 = no limit).",
)
@click.option("--eval-every", type=int, help="Steps between evaluations.")
@click.option(
    "--eval-tokens",
    type=int,
    help="Validation tokens per evaluation, the final one too (0 = all); a full pass "
    "afterwards: lstmgen eval RUN --split valid.",
)
@click.option("--patience", type=int, help="Early stop after N evals without improvement.")
@click.option("--sample-tokens", type=int, help="Tokens of sample at each eval (0 = none).")
@click.option("--log-every", type=int, help="Steps between progress updates.")
@click.option("--seed", type=int)
@click.option("--device", help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    help="auto: bf16 autocast on CUDA and on CPUs with bf16 instructions (AMX or AVX512-BF16), "
    "fp32 elsewhere; bf16 on a CPU needs them; fp32 on CUDA uses TF32.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or samples.")
@click.option(
    "--backend",
    type=click.Choice(["torch", "numpy"]),
    default="torch",
    show_default=True,
    help="numpy: the from-scratch reference (lstmgen.reference): CPU only, no --resume.",
)
def train_command(
    sources: tuple[str, ...],
    output: str | None,
    train_files: tuple[str, ...],
    valid_files: tuple[str, ...],
    test_files: tuple[str, ...],
    resume: str | None,
    preset: str | None,
    init_from: str | None,
    quiet: bool,
    backend: str,
    **options: Any,
) -> None:
    """Train a model on SOURCES (files, folders, globs); the built-in Shakespeare if none.

    \b
      lstmgen train poems.txt -o runs/poems --max-time 600
      lstmgen train --train ptb.train.txt --valid ptb.valid.txt --tokenizer word -o runs/ptb
      lstmgen train --resume runs/poems --max-steps 20000
      lstmgen train my_letters.txt --init-from runs/base -o runs/letters --max-time 300
    """
    from ..train import Trainer

    given = {k: v for k, v in options.items() if v is not None}
    callback = ProgressCallback(quiet)
    # Under torchrun only rank 0 reports (training/distributed.py); the others stay quiet.
    first = os.environ.get("RANK", "0") == "0"
    trainer_class: Any = Trainer
    if given.get("features_from") or (
        resume and RunDir(resume).has_config() and RunDir(resume).read_config()[0].features_from
    ):
        from ..training.features import FeatureTrainer  # per-document windows (issue #13)

        Trainer = trainer_class = FeatureTrainer  # for create and for resume
    if backend == "numpy":
        from ..reference.train import Trainer as trainer_class

        if resume:
            raise click.UsageError("--resume needs --backend torch (numpy runs keep no state)")
        if given.get("features_from"):
            raise click.UsageError("--features-from needs --backend torch")
        if given.get("device", "cpu") not in ("auto", "cpu"):
            raise click.UsageError("--device applies to --backend torch only")
        if given.get("precision", "fp32") not in ("auto", "fp32"):
            raise click.UsageError("--precision applies to --backend torch only")
        tools = ("lr_layer_decay", "unfreeze_every", "freeze_embeddings")
        if any(k in given for k in tools):
            raise click.UsageError(
                "--lr-layer-decay, --unfreeze-every and --freeze-embeddings need --backend torch"
            )
        if given.get("grad_accum", 1) != 1:
            raise click.UsageError("--grad-accum applies to --backend torch only")
        if "WORLD_SIZE" in os.environ:
            raise click.UsageError("--backend numpy runs in one process, not under torchrun")
        awd = AWD_MODEL_OPTIONS + ("ar", "tar", "variable_seq_len", "optimizer", "adaptive_cutoffs")
        off = {"optimizer": "adamw", "variable_seq_len": False}
        torch_only = [k for k in awd if given.get(k, off.get(k, 0.0)) != off.get(k, 0.0)]
        if torch_only or preset in WORD_PRESETS:
            what = f"--preset {preset}" if preset in WORD_PRESETS else ""
            flag = {"adaptive_cutoffs": "adaptive_softmax"}  # the option's flag name
            names = [f"--{flag.get(k, k).replace('_', '-')}" for k in torch_only] or [what]
            raise click.UsageError(f"{', '.join(names)} applies to --backend torch only")
    if init_from and resume:
        raise click.UsageError("--init-from starts a new run: --resume's run has its weights")
    if init_from and backend == "numpy":
        raise click.UsageError("--init-from needs --backend torch")
    if resume:
        if sources or train_files or valid_files or test_files or output:
            raise click.UsageError("--resume takes no sources or --output: the run knows them")
        model_given = {k: given.pop(k) for k in MODEL_OPTIONS if k in given}
        if model_given:  # repeating the run's own values is fine; changing them is not
            saved = read_model_config(resume)
            model_given = {k: v for k, v in model_given.items() if getattr(saved, k) != v}
        fixed = [f"--{k.replace('_', '-')}" for k in model_given]
        if fixed or preset:
            raise click.UsageError(
                f"--resume keeps the run's model and settings: {', '.join(fixed or ['--preset'])} "
                "cannot change (start a new run with -o)"
            )
        trainer = Trainer.resume(resume, [callback], **given)
    else:
        preset = preset or "cpu-small"
        if init_from:  # the model is the base's; fine-tuning's own defaults
            given = {**FINETUNE_DEFAULTS, **given}  # its regularisers too (dropout)
            model_cfg, kind = _base_model_config(init_from, given)
            given["tokenizer"] = kind
        else:
            model_cfg = ModelConfig.from_dict(
                {**PRESETS[preset]["model"], **{k: given[k] for k in MODEL_OPTIONS if k in given}}
            )
        train_cfg = TrainConfig.from_dict(
            {
                **PRESETS[preset]["train"],
                **{k: v for k, v in given.items() if k not in MODEL_OPTIONS},
            }
        )
        if not (train_cfg.max_steps or train_cfg.epochs or train_cfg.max_time):
            train_cfg = train_cfg.replace(epochs=10.0)
        all_train = list(sources) + list(train_files)
        out = (
            Path(output)
            if output
            else Path("runs") / (Path(all_train[0]).stem if all_train else "shakespeare")
        )
        others = [p for p in out.iterdir() if p.name != LOCK_FILE] if out.exists() else []
        # A run being created has its lock only (rank 0's check: under torchrun the others
        # find the folder that rank 0 is making).
        if first and others and not RunDir(out).data_dir.exists():
            raise ConfigError(f"{out} exists and is not an lstmgen run: choose another --output")
        t0 = time.perf_counter()
        extra = {"init_from": init_from} if init_from else {}
        trainer = trainer_class.create(
            out,
            all_train,
            train_cfg,
            model_cfg,
            valid_files,
            test_files,
            callbacks=[callback],
            **extra,
        )
        if first:
            click.echo(f"corpus ready in {time.perf_counter() - t0:.1f}s", err=True)
        if first and init_from:
            click.echo(
                f"fine-tuning {init_from}: added {trainer.added_tokens} tokens to its vocabulary "
                f"({trainer.model.config.vocab_size:,} now)",
                err=True,
            )
        if first and preset in WORD_PRESETS and train_cfg.tokenizer != "word":
            warnings.warn(
                f"--preset {preset} is tuned for word-level models (--tokenizer word, corpora "
                f"like Penn Treebank or WikiText-2); with --tokenizer {train_cfg.tokenizer} "
                "--preset cpu-small is the better start",
                stacklevel=1,
            )
        if first and preset == "gpu-fast" and backend == "torch" and trainer.device.type != "cuda":
            warnings.warn(
                f"--preset gpu-fast is sized for a large GPU; on {trainer.device.type} each step "
                "takes tens of seconds (--preset cpu-small is the CPU setting)",
                stacklevel=1,
            )
    _install_stop_handlers(trainer)
    summary = trainer.fit()
    if not first:
        return
    if summary["new_steps"] == 0 and summary["reason"] != "interrupted":
        click.echo(
            f"nothing to do: the run already stopped at step {summary['step']} "
            f"({summary['reason']}); raise --max-steps, --epochs or --max-time to go on",
            err=True,
        )
        return
    best = (
        f"best validation loss {summary['best_val_loss']:.4f} at step {summary['best_step']}"
        if summary["best_step"] >= 0
        else "not evaluated yet (the model holds the latest weights)"
    )
    click.echo(
        f"{summary['reason']} at step {summary['step']} ({summary['elapsed']:.0f}s of training); "
        f"{best}; model in {summary['out_dir']}",
        err=True,
    )
    if backend == "numpy":
        trainer.run.plot()
        if summary["reason"] == "interrupted":
            click.echo("(a numpy run cannot be resumed: its best model is kept)", err=True)
    elif summary["reason"] == "interrupted":
        how = "the same torchrun command with" if "WORLD_SIZE" in os.environ else "lstmgen train"
        click.echo(f"resume with: {how} --resume {summary['out_dir']}", err=True)
