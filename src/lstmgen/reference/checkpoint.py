"""Reading and writing lstmgen model directories without PyTorch.

The format is shared with the PyTorch backend (``lstmgen/modeldir.py`` holds it, torch-free):
config.json with a format marker, tokenizer.json, generation_config.json and model.safetensors
whose tensor names are the PyTorch state dict's. ``safetensors.numpy`` reads and writes the same
file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import GenerationConfig, ModelConfig
from ..errors import CheckpointError
from ..files import atomic_write
from ..modeldir import (  # noqa: F401  (check_weights re-exported for reference.model)
    FORMAT,
    WEIGHTS,
    check_weights,
    check_weights_file,
    non_finite,
    read_model_meta,
    read_quantization,
    write_model_meta,
)
from ..tokenizers import Tokenizer


def read_model_dir(
    path: str | Path,
) -> tuple[ModelConfig, Tokenizer, GenerationConfig, dict[str, np.ndarray]]:
    """-> (model config, tokenizer, generation config, weights by PyTorch name)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    config, tokenizer, gen = read_model_meta(path)
    weights_path = path / WEIGHTS
    # before reading what may not fit the config: names, shapes, dtypes, and a regular file
    quantization = read_quantization(path)
    check_weights_file(weights_path, config, quantization)
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path} is truncated or corrupt ({exc})") from None
    if quantization is not None:  # int8 weights: the reference computes with their values
        from ..export.int8 import dequantize_weights

        weights = dequantize_weights(weights, quantization["weights"])
    for name, w in weights.items():
        if np.issubdtype(w.dtype, np.floating) and not np.isfinite(w).all():
            raise non_finite(weights_path, name)
    return config, tokenizer, gen or GenerationConfig(), weights


def write_model_dir(
    path: str | Path,
    config: ModelConfig,
    tokenizer: Tokenizer | None,
    generation_config: GenerationConfig,
    weights: dict[str, np.ndarray],
) -> None:
    """Write a model directory that ``LanguageModel.from_pretrained`` (PyTorch) loads."""
    from safetensors.numpy import save_file

    path = Path(path)
    write_model_meta(path, config, tokenizer, generation_config)
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    atomic_write(path / WEIGHTS, lambda tmp: save_file(arrays, tmp, metadata={"format": FORMAT}))
