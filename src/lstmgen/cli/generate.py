"""``lstmgen generate``: sample text from a model directory."""

from __future__ import annotations

import sys

import click

from ..config import GenerationConfig
from ..errors import DataError
from ..tokenizers import unknown_policy
from .common import device_option, load_run, run_argument, unknown_option

BUILT_IN = GenerationConfig()


def model_default(name: str, built_in: object = None) -> str:
    """Help text for a sampling option the model's generation_config.json supplies."""
    value = getattr(BUILT_IN, name) if built_in is None else built_in
    return f"[default: the model's, else {value}]"


@click.command("generate")
@run_argument
@click.option(
    "-p",
    "--prompt",
    default="",
    help="Text to continue; '-' reads standard input (less one final line end).",
)
@click.option(
    "-n",
    "--num-samples",
    type=click.IntRange(1, 4096),
    default=1,
    show_default=True,
    help="Samples, generated as one batch.",
)
@click.option(
    "--max-new-tokens",
    type=int,
    help="Tokens to generate per sample. " + model_default("max_new_tokens"),
)
@click.option("-t", "--temperature", type=float, help="0 = greedy. " + model_default("temperature"))
@click.option(
    "--top-k", type=int, help="Keep the k most likely tokens (0 = off). " + model_default("top_k")
)
@click.option(
    "--top-p",
    type=float,
    help="Nucleus: keep the smallest set with this mass. " + model_default("top_p"),
)
@click.option(
    "--repetition-penalty",
    type=float,
    help="> 1 discourages repeats. " + model_default("repetition_penalty"),
)
@click.option(
    "--stop",
    multiple=True,
    help="Stop a sample at this string (repeatable). " + model_default("stop", "none"),
)
@click.option(
    "--seed",
    type=int,
    help="Same seed, same text (on the same --backend). " + model_default("seed", "random"),
)
@click.option(
    "--label", help="Generate in the style of this label (a model trained with --labels-from)."
)
@click.option(
    "--features",
    "features_file",
    type=click.Path(dir_okay=False),
    help="JSON file with a list of floats: the feature vector (a model trained with"
    " --features-from).",
)
@click.option("--stream", is_flag=True, help="Print text as it is generated.")
@click.option("--no-prompt", is_flag=True, help="Print only the generated text.")
@click.option(
    "--separator",
    default="\n\n" + "-" * 40 + "\n\n",
    help="Printed on its own line between samples. [default: a line of dashes]",
)
@unknown_option
@device_option
@click.option(
    "--backend",
    type=click.Choice(["auto", "torch", "numpy", "onnx"]),
    default="auto",
    show_default=True,
    help="auto: onnx for an int8 directory (`lstmgen quantize`) on CPU where onnxruntime is"
    " installed (the fastest CPU path measured), else torch. numpy: the from-scratch reference"
    " (lstmgen.reference), CPU only. onnx: a folder from `lstmgen export --format onnx` or an"
    " int8 directory, decoded by onnxruntime without PyTorch (pip install lstmgen[onnx]), with"
    " the torch backend's random numbers: the same --seed gives the same text. numpy and torch"
    " use different random number generators: the same --seed samples different text on each"
    " (greedy text, -t 0, is the same).",
)
def generate_command(
    run: str,
    prompt: str,
    num_samples: int,
    stream: bool,
    no_prompt: bool,
    separator: str,
    unknown: str | None,
    device: str,
    backend: str,
    stop: tuple[str, ...],
    label: str | None,
    features_file: str | None,
    **options,
) -> None:
    """Generate text from the model in RUN.

    Sampling options left out take the model's own defaults, from RUN's
    generation_config.json (edit it to change them), else the built-in values shown.

    \b
      lstmgen generate runs/poems --prompt "ROMEO:" -n 3 --temperature 0.8 --top-p 0.95
      echo "To be" | lstmgen generate runs/poems --prompt - --stream
    """
    if prompt == "-":
        prompt = read_stdin()
    conditions: dict = {}
    if label is not None:
        conditions["label"] = label
    if features_file is not None:
        conditions["features"] = read_features(features_file)
    if backend == "auto":
        backend = "onnx" if not conditions and int8_on_onnx(run, device) else "torch"
    if conditions and backend != "torch":
        raise click.UsageError("--label and --features need --backend torch")
    if backend != "torch" and device not in ("auto", "cpu"):
        raise click.UsageError("--device applies to --backend torch only")
    if backend == "numpy":
        from .. import reference

        model, generate = reference.LanguageModel.from_pretrained(run), reference.stream_text
    elif backend == "onnx":
        from functools import partial

        from ..export.onnx_runtime import OnnxModel, TorchRandom
        from ..reference.generate import stream_text

        model, generate = OnnxModel(run), partial(stream_text, random=TorchRandom)
    else:
        from ..generate import stream_text

        model, generate = load_run(run, device), stream_text
    unknown = unknown_policy(model.tokenizer, unknown, [prompt])
    if unknown != "error" and not model.tokenizer.covers(prompt):
        # Echo what the model sees: dropped characters gone, replaced ones replaced. A prompt
        # the vocabulary covers is kept as typed (decoding would respace a word prompt).
        tok = model.tokenizer
        prompt = tok.decode(tok.encode(prompt, unknown=unknown))
    separator = own_line(separator)
    overrides = {k: v for k, v in options.items() if v is not None}
    if stop:
        overrides["stop"] = list(stop)
    events = generate(model, [prompt] * num_samples, unknown=unknown, **conditions, **overrides)
    out = sys.stdout
    head = "" if no_prompt else prompt
    if stream:
        # Sample 0 is printed live; the others are buffered and follow it in order.
        buffered = [""] * num_samples
        out.write(head)
        out.flush()
        for ev in events:
            if ev.index == 0:
                out.write(ev.text)
                out.flush()
            else:
                buffered[ev.index] += ev.text
        for text in buffered[1:]:
            out.write(separator + head + text)
        out.write("\n")
        out.flush()
        return
    texts = [""] * num_samples
    for ev in events:
        texts[ev.index] += ev.text
    out.write(separator.join(head + t for t in texts) + "\n")


def int8_on_onnx(run: str, device: str) -> bool:
    """Whether ``--backend auto`` decodes RUN with onnxruntime: an int8 directory, onnx and
    onnxruntime importable, and the CPU the device (asked for, or ``auto`` on a machine whose
    PyTorch sees no GPU: a machine without NVIDIA's device files is answered without
    importing torch). benchmarks/quantize.py: 9x eager float32 at batch 1, against 5.6x for
    the torch backend's int8 step (the same onnxruntime graph, called through torch tensors
    and torch's sampler)."""
    import importlib.util
    import os

    from ..export.onnx_runtime import onnx_decodes

    if device not in ("auto", "cpu") or not onnx_decodes(run):
        return False
    if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
        return False
    if device == "auto" and os.path.exists("/dev/nvidiactl"):
        import torch

        return not torch.cuda.is_available()
    return True


def own_line(separator: str) -> str:
    """The separator on a line of its own: a line break before and after unless it has them
    (``--separator '***'`` ran into the samples on one line)."""
    before = "" if separator.startswith("\n") else "\n"
    after = "" if separator.endswith("\n") else "\n"
    return before + separator + after


def read_stdin() -> str:
    """Standard input decoded as UTF-8 here (under a C locale Python would turn bad bytes into
    lone surrogates, which then read as characters the model never saw), less one final line end.
    """
    data = sys.stdin.buffer.read()
    if data.endswith(b"\n"):  # the line end `echo` adds: the prompt goes on where it stops
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"stdin is not valid UTF-8 (byte offset {exc.start})") from None


def read_features(path: str) -> list[float]:
    """The feature vector in ``path``: a JSON list of floats (checked against the model's
    length when generating)."""
    from ..documents import check_features
    from ..files import read_json

    return check_features(read_json(path), where=path)
