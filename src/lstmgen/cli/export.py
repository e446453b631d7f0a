"""``lstmgen export``: a model directory -> an ONNX folder for onnxruntime (export/)."""

from __future__ import annotations

import click

from .common import run_argument


@click.command("export")
@run_argument
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx"]),
    default="onnx",
    show_default=True,
    help="onnx: step.onnx + prime.onnx, tokenizer and generation config, for"
    " `lstmgen generate DIR --backend onnx` or any onnxruntime.",
)
@click.option("-o", "--output", required=True, type=click.Path(), help="The folder to write.")
@click.option(
    "--int8",
    is_flag=True,
    help="Quantize the graphs' matrices to int8 (onnxruntime's dynamic quantization).",
)
def export_command(run: str, fmt: str, output: str, int8: bool) -> None:
    """Export RUN's model for decoding without PyTorch (needs: pip install lstmgen[onnx]).

    \b
      lstmgen export runs/poems --format onnx -o runs/poems-onnx
      lstmgen generate runs/poems-onnx --backend onnx --prompt "ROMEO:"
    """
    from ..export.onnx_export import export_onnx

    files = export_onnx(run, output, int8=int8)
    click.echo(f"wrote {output}: {', '.join(files)}")
