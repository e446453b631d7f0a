"""``lstmgen eval``: loss, perplexity and bits per character on held-out text."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from ..config import TrainConfig
from ..corpus import load_run_corpus
from ..data import resolve_sources, tokenize_to_file
from ..errors import DataError, LstmgenError
from ..rundir import RunDir
from ..tokenizers import unknown_policy
from .common import device_option, load_run, run_argument, unknown_option


@click.command("eval")
@run_argument
@click.argument("files", nargs=-1)
@click.option(
    "--split",
    type=click.Choice(["train", "valid", "test"]),
    help="Score a split of the run's own corpus instead of FILES.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--seq-len", type=click.IntRange(1), default=256, show_default=True)
@click.option(
    "--encoding-errors",
    type=click.Choice(["strict", "replace"]),
    default="strict",
    show_default=True,
)
@click.option(
    "--encoding",
    help="Text encoding of FILES: latin-1, cp1252, utf-16... [the run's, else utf-8].",
)
@unknown_option
@device_option
def eval_command(
    run: str,
    files: tuple[str, ...],
    split: str | None,
    as_json: bool,
    batch_size: int,
    seq_len: int,
    encoding_errors: str,
    encoding: str | None,
    unknown: str | None,
    device: str,
) -> None:
    """Score FILES (or a --split of the run's corpus) under the model in RUN.

    \b
      lstmgen eval runs/poems heldout.txt
      lstmgen eval runs/ptb --split test --json
    """
    if bool(files) == bool(split):
        raise click.UsageError("give FILES or --split (one of them)")
    if split and encoding:
        raise click.UsageError("--encoding applies to FILES: a --split is read as the run read it")
    from ..evaluate import evaluate_tokens  # torch: imported here, not for --help

    model = load_run(run, device)
    if model.config.feature_size:  # its text depends on vectors a stream of text lacks
        raise DataError(
            "this model is conditioned on feature vectors: its validation loss, scored per "
            "document from each vector, is in RUN/metrics.jsonl (lstmgen eval feeds no vectors)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        if split:
            data = _run_split(run, split, model.tokenizer)
        else:
            # FILES are read as the run read its corpus (encoding, line endings) unless told.
            config = _run_config(run)
            encoding = encoding or config.encoding
            data = tokenize_to_file(
                resolve_sources(files, encoding),
                model.tokenizer,
                Path(tmp) / "eval.bin",
                encoding_errors,
                unknown_policy(model.tokenizer, unknown),
                encoding=encoding,
                keep_line_endings=config.keep_line_endings,
            )
        result = evaluate_tokens(model, data, batch_size=batch_size, seq_len=seq_len)
    source = f"split {split}" if split else ", ".join(files)
    if as_json:
        click.echo(json.dumps({"source": source, **result.to_dict()}))
        return
    click.echo(
        f"{source}: {result.tokens:,} tokens, {result.chars:,} characters\n"
        f"loss        {result.loss:.4f} nats/token\n"
        f"perplexity  {result.perplexity:.3f}\n"
        f"bits/token  {result.bits_per_token:.4f}\n"
        f"bits/char   {result.bits_per_char:.4f}\n"
        f"bits/byte   {result.bits_per_byte:.4f}"
    )


def _run_config(run: str) -> TrainConfig:
    """The run's TrainConfig, for how it read text; the defaults for a bare model directory
    (no train_config.json) or one whose train config is unreadable (files need none of it)."""
    if not RunDir(run).has_config():
        return TrainConfig()
    try:
        return RunDir(run).read_config()[0]
    except LstmgenError:
        return TrainConfig()


def _run_split(run: str, split: str, tokenizer):
    config, sources = RunDir(run).read_config()
    return load_run_corpus(run, config, sources, tokenizer).split(split)
