"""``lstmgen export --format onnx``: a model directory -> a folder onnxruntime decodes alone.

The folder holds::

    step.onnx, prime.onnx    the one-token step and the whole-prompt graphs (onnx_graph.py)
    onnx.json                which graph is which, the state's parts, whether it is int8
    config.json, tokenizer.json, generation_config.json   as in the model directory

Torch-free: the weights are read with NumPy (an int8 directory is dequantized first). Every graph
is checked with ``onnx.checker`` before it is written. ``int8``: the graphs' MatMul weights are
quantized with onnxruntime's dynamic quantization (int8 weights per output channel, activations
quantized at run time: MatMulInteger / DynamicQuantizeMatMul).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..files import write_json_atomic
from ..modeldir import write_model_meta
from ..models.adaptive import refuse as refuse_adaptive
from ..models.registry import get_architecture

MANIFEST = "onnx.json"
ONNX_FORMAT, ONNX_FORMAT_VERSION = "lstmgen-onnx", 1
GRAPHS = {"step": "step.onnx", "prime": "prime.onnx"}
EXTRA = "pip install lstmgen[onnx]"
EXPORTABLE = ("recurrent",)  # architectures with an ONNX decoding step (onnx_graph.py)


def need(module: str) -> Any:
    """Import ``onnx`` / ``onnxruntime`` or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{module} is not installed: {EXTRA}") from None


def export_onnx(src: str | Path, dst: str | Path, int8: bool = False) -> list[str]:
    """Write the ONNX folder ``dst`` for the model in ``src``; returns the files written.

    >>> export_onnx("runs/poems", "runs/poems-onnx")  # doctest: +SKIP
    """
    onnx = need("onnx")
    from ..reference.checkpoint import read_model_dir
    from .onnx_graph import prime_model, state_names, step_model

    src, dst = Path(src), Path(dst)
    config, tokenizer, gen, weights = read_model_dir(src)
    arch = get_architecture(config.arch)
    refuse_adaptive(config, "ONNX export")  # its graphs end in the plain decoder
    if config.arch not in EXPORTABLE:
        raise ConfigError(
            f"cannot export arch {arch.name!r} to ONNX: it has no exported decoding step"
            f" (exportable: {', '.join(EXPORTABLE)})"
        )
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise CheckpointError(f"{dst} already exists and is not an empty directory")
    if int8:
        need("onnxruntime")
    dst.mkdir(parents=True, exist_ok=True)
    for kind, build in (("step", step_model), ("prime", prime_model)):
        model = build(config, weights)
        onnx.checker.check_model(model, full_check=True)
        path = dst / GRAPHS[kind]
        if int8:
            _quantize(onnx, model, path)
        else:
            onnx.save(model, str(path))
        onnx.checker.check_model(str(path))
    write_model_meta(dst, config, tokenizer, gen)
    write_json_atomic(
        dst / MANIFEST,
        {
            "format": ONNX_FORMAT,
            "format_version": ONNX_FORMAT_VERSION,
            "graphs": GRAPHS,
            "state": state_names(config.cell),
            "int8": int8,
        },
    )
    return sorted(p.name for p in dst.iterdir())


def _quantize(onnx: Any, model: Any, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / "f32.onnx"
        onnx.save(model, str(f32))
        out = Path(tmp) / "int8.onnx"
        logging.disable(logging.WARNING)  # its advice to pre-process: for image models
        try:
            quantize_dynamic(
                f32,
                out,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "LSTM"],  # GRU, RNN: no int8 kernel, float
            )
        finally:
            logging.disable(logging.NOTSET)
        shutil.move(str(out), path)
