"""``lstmgen export``: a model directory -> an ONNX folder for onnxruntime (export/)."""

from __future__ import annotations

import click

from .common import run_argument


@click.command("export")
@run_argument
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "web"]),
    default="onnx",
    show_default=True,
    help="onnx: step.onnx + prime.onnx, tokenizer and generation config, for"
    " `lstmgen generate DIR --backend onnx` or any onnxruntime. web: the same plus index.html"
    " and onnxruntime-web, a static folder that generates in the browser (char and byte"
    " tokenizers; serve it with `python -m http.server`).",
)
@click.option("-o", "--output", required=True, type=click.Path(), help="The folder to write.")
@click.option(
    "--int8",
    is_flag=True,
    help="Quantize the graphs' matrices to int8 (onnxruntime's dynamic quantization).",
)
@click.option(
    "--ort-web",
    type=click.Path(exists=True),
    help="--format web: onnxruntime-web from this `npm pack` tarball or package folder"
    " [default: run `npm pack onnxruntime-web`].",
)
def export_command(run: str, fmt: str, output: str, int8: bool, ort_web: str | None) -> None:
    """Export RUN's model for decoding without PyTorch (needs: pip install lstmgen[onnx]).

    \b
      lstmgen export runs/poems --format onnx -o runs/poems-onnx
      lstmgen generate runs/poems-onnx --backend onnx --prompt "ROMEO:"
    """
    if fmt == "web":
        from ..export.web import export_web

        if int8:
            raise click.UsageError("--int8 applies to --format onnx")
        files = export_web(run, output, ort_web)
    else:
        from ..export.onnx_export import export_onnx

        if ort_web:
            raise click.UsageError("--ort-web applies to --format web")
        files = export_onnx(run, output, int8=int8)
    click.echo(f"wrote {output}: {', '.join(files)}")
