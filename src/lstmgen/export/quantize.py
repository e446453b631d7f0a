"""``lstmgen quantize``: a model directory -> the same model with int8 weights (export/int8.py).

Torch-free: the weights are read and written with safetensors' NumPy API. The result is an
ordinary model directory (config.json with a ``quantization`` entry, tokenizer.json,
generation_config.json, model.safetensors with ``X.qweight`` / ``X.scale``) that ``generate``,
``eval``, ``serve`` and ``info`` load like any other.
"""

from __future__ import annotations

from pathlib import Path

from ..config import GenerationConfig
from ..errors import CheckpointError
from ..files import atomic_write
from ..modeldir import FORMAT, WEIGHTS, read_quantization, write_model_meta
from ..models.adaptive import refuse as refuse_adaptive
from .int8 import METHOD, SCHEME, quantizable, quantize_weights


def quantize_model_dir(src: str | Path, dst: str | Path, embedding: bool = False) -> list[str]:
    """Write ``dst``: ``src``'s model with int8 matrices; returns the quantized names.

    >>> quantize_model_dir("runs/poems", "runs/poems-int8")  # doctest: +SKIP
    ['decoder.weight', 'rnn.weight_hh_l0', ...]
    """
    from safetensors.numpy import save_file

    from ..reference.checkpoint import read_model_dir

    src, dst = Path(src), Path(dst)
    existing = read_quantization(src)
    if existing is not None:
        raise CheckpointError(
            f"{src} is already quantized ({existing['method']}): quantize the float32 model"
        )
    config, tokenizer, gen, weights = read_model_dir(src)
    refuse_adaptive(config, "int8 quantization")  # its step multiplies a plain decoder
    if dst.resolve() == src.resolve():
        raise CheckpointError("the output directory must differ from the model directory")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise CheckpointError(f"{dst} already exists and is not an empty directory")
    names = quantizable(weights, embedding)
    tensors = quantize_weights(weights, names)
    dst.mkdir(parents=True, exist_ok=True)
    entry = {"method": METHOD, "scheme": SCHEME, "weights": names}
    write_model_meta(dst, config, tokenizer, gen or GenerationConfig(), quantization=entry)
    atomic_write(dst / WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    return names
