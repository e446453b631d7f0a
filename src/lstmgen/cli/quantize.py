"""``lstmgen quantize``: int8 weights with per-output-channel scales (export/quantize.py)."""

from __future__ import annotations

import click

from .common import run_argument


@click.command("quantize")
@run_argument
@click.option(
    "-o", "--output", required=True, type=click.Path(), help="The int8 model directory to write."
)
@click.option(
    "--embedding",
    is_flag=True,
    help="Quantize the embedding too (smaller on disk and in memory; a lookup is no faster).",
)
def quantize_command(run: str, output: str, embedding: bool) -> None:
    """Write RUN's model with int8 weights to OUTPUT (about a quarter of the size).

    The recurrent matrices and the decoder become int8 with one float32 scale per output
    channel; OUTPUT is an ordinary model directory for generate, eval, serve and info.

    \b
      lstmgen quantize runs/poems -o runs/poems-int8
    """
    from ..export.quantize import quantize_model_dir

    names = quantize_model_dir(run, output, embedding=embedding)
    click.echo(f"wrote {output}: {len(names)} int8 matrices ({', '.join(names)})")
