"""``lstmgen distill``: a smaller student trained on a teacher's soft targets (training/distill)."""

from __future__ import annotations

from typing import Any

import click

from ..config import CELLS, PRESETS, TOKENIZERS, ModelConfig, TrainConfig
from .train import MODEL_OPTIONS, ProgressCallback


@click.command("distill")
@click.argument("teacher", type=click.Path())
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "-o", "--output", required=True, type=click.Path(file_okay=False), help="Student run."
)
@click.option("--hidden-size", type=int, help="The student's. [default: cpu-small's]")
@click.option("--num-layers", type=int)
@click.option("--embedding-size", type=int)
@click.option("--cell", type=click.Choice(CELLS))
@click.option(
    "--kd-temperature",
    type=float,
    default=2.0,
    show_default=True,
    help="Softens both distributions; the soft loss is scaled by its square.",
)
@click.option(
    "--kd-alpha",
    type=float,
    default=0.5,
    show_default=True,
    help="Weight of the soft-target KL; 1 - alpha goes to cross-entropy on the text.",
)
@click.option("--tokenizer", type=click.Choice(TOKENIZERS), help="Must be the teacher's.")
@click.option("--vocab-size", type=int, help="Must be the teacher's.")
@click.option("--max-time", type=float, help="Seconds of training.")
@click.option("--max-steps", type=int)
@click.option("--epochs", type=float)
@click.option("--batch-size", type=int)
@click.option("--seq-len", type=int)
@click.option("--lr", type=float)
@click.option("--eval-every", type=int)
@click.option("--sample-tokens", type=int)
@click.option("--seed", type=int)
@click.option("--device", help="auto, cpu, cuda, cuda:N or mps.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or samples.")
def distill_command(
    teacher: str,
    sources: tuple[str, ...],
    output: str,
    kd_temperature: float,
    kd_alpha: float,
    quiet: bool,
    **options: Any,
) -> None:
    """Train a student model in OUTPUT on SOURCES with TEACHER's soft targets.

    The student shares the teacher's tokenizer and is an ordinary run directory (other
    settings: the cpu-small preset's).

    \b
      lstmgen distill runs/big corpus.txt -o runs/small --hidden-size 256 --num-layers 2 \\
          --kd-temperature 2 --kd-alpha 0.5 --max-time 600
    """
    from ..training.distill import distill

    given = {k: v for k, v in options.items() if v is not None}
    preset = PRESETS["cpu-small"]
    model_cfg = ModelConfig.from_dict(
        {**preset["model"], **{k: given[k] for k in MODEL_OPTIONS if k in given}}
    )
    train_cfg = TrainConfig.from_dict(
        {**preset["train"], **{k: v for k, v in given.items() if k not in MODEL_OPTIONS}}
    )
    if not (train_cfg.max_steps or train_cfg.epochs or train_cfg.max_time):
        train_cfg = train_cfg.replace(epochs=10.0)
    summary = distill(
        teacher,
        list(sources),
        output,
        model_cfg,
        train_cfg,
        kd_temperature,
        kd_alpha,
        given=set(given),
        callbacks=[ProgressCallback(quiet)],
    )
    click.echo(
        f"{summary['reason']} at step {summary['step']}; best validation loss"
        f" {summary['best_val_loss']:.4f}; student in {summary['out_dir']}",
        err=True,
    )
