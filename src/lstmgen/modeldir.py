"""The model directory format, without PyTorch: file names, the JSON parts, weight shapes.

A model directory holds::

    config.json              ModelConfig plus a format marker
    tokenizer.json           the vocabulary (tokenizers.py)
    generation_config.json   default sampling settings
    model.safetensors        the weights (written by checkpoint.py with torch, or by
                             reference/checkpoint.py with NumPy: the same file either way)

Every file is written and read through files.py (atomic writes; bounded reads of regular files
and JSON). Nothing here imports torch, so the NumPy reference can use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import GenerationConfig, ModelConfig
from .errors import CheckpointError, ConfigError, LstmgenError
from .files import MAX_TOKENIZER_BYTES, check_regular_file, read_json, write_json_atomic
from .models.registry import get_architecture
from .tokenizers import Tokenizer, tokenizer_from_dict

FORMAT = "lstmgen"
FORMAT_VERSION = 1
CONFIG, TOKENIZER, GENERATION, WEIGHTS = (
    "config.json",
    "tokenizer.json",
    "generation_config.json",
    "model.safetensors",
)
# config.json's entry for int8 weights (export/int8.py), written only by `lstmgen quantize`: a
# version of lstmgen that predates it refuses the folder with "unknown key(s) quantization".
QUANTIZATION = "quantization"


def read_model_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such model directory: {path}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a model directory")
    if not any(os.path.lexists(path / name) for name in (CONFIG, TOKENIZER, WEIGHTS)):
        # "missing file RUN/config.json" would suggest repairing a folder that never was a model
        raise CheckpointError(f"{path} is not an lstmgen model directory")
    data = read_json(path / CONFIG)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path / CONFIG} is not an lstmgen model config")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has unsupported format version {data.get('format_version')}")
    # "quantization" is the weights' encoding, not the network: read_quantization checks it.
    data = {k: v for k, v in data.items() if k not in ("format", "format_version", QUANTIZATION)}
    try:
        config = ModelConfig.from_dict(data)
        get_architecture(config.arch)  # an unknown arch: one error naming the known ones
        return config
    except ConfigError as exc:
        raise CheckpointError(f"{path / CONFIG}: {exc}") from None


def read_model_meta(path: str | Path) -> tuple[ModelConfig, Tokenizer, GenerationConfig | None]:
    """config.json, tokenizer.json and (if present) generation_config.json, checked together."""
    path = Path(path)
    config = read_model_config(path)
    try:
        tokenizer = tokenizer_from_dict(read_json(path / TOKENIZER, MAX_TOKENIZER_BYTES))
    except CheckpointError:
        raise
    except LstmgenError as exc:
        raise CheckpointError(f"{path / TOKENIZER}: {exc}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: tokenizer has {tokenizer.vocab_size} tokens, config says {config.vocab_size}"
        )
    gen_path = path / GENERATION
    try:
        gen = GenerationConfig.from_dict(read_json(gen_path)) if gen_path.exists() else None
    except CheckpointError:  # already names the file
        raise
    except LstmgenError as exc:
        raise CheckpointError(f"{gen_path}: {exc}") from None
    return config, tokenizer, gen


def read_quantization(path: str | Path) -> dict[str, Any] | None:
    """config.json's ``quantization`` entry (None for float32 weights), checked against the
    config: ``{"method": "int8", "scheme": ..., "weights": [names of the int8 matrices]}``."""
    path = Path(path)
    config = read_model_config(path)
    entry = read_json(path / CONFIG).get(QUANTIZATION)
    if entry is None:
        return None
    from .export.int8 import METHOD

    where = f"{path / CONFIG}: {QUANTIZATION}"
    if not isinstance(entry, dict) or not isinstance(entry.get("weights"), list):
        raise CheckpointError(f"{where} must be an object with a list of weights")
    if entry.get("method") != METHOD:
        raise CheckpointError(
            f"{path} holds weights quantized as {entry.get('method')!r}, which this version of"
            f" lstmgen cannot load (it reads {METHOD!r})"
        )
    shapes = weight_shapes(config)
    for name in entry["weights"]:
        if not isinstance(name, str) or len(shapes.get(name, ())) != 2:
            raise CheckpointError(f"{where} names {name!r}, not a weight matrix of this model")
    return entry


def write_model_meta(
    path: str | Path,
    config: ModelConfig,
    tokenizer: Tokenizer | None,
    generation_config: GenerationConfig,
    quantization: dict[str, Any] | None = None,
) -> None:
    """The JSON parts of a model directory (the weights are the backend's job)."""
    path = Path(path)
    extra = {QUANTIZATION: quantization} if quantization else {}
    write_json_atomic(
        path / CONFIG,
        {"format": FORMAT, "format_version": FORMAT_VERSION, **config.to_dict(), **extra},
    )
    if tokenizer is not None:
        tokenizer.save(path / TOKENIZER)
    write_json_atomic(path / GENERATION, generation_config.to_dict())


def weight_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors a weights file holds for ``config``, by PyTorch state-dict name, computed
    without building the model (so a config that does not fit its weights fails at once). The
    names and shapes are the architecture's (models/registry.py), asked without torch."""
    return get_architecture(config.arch).weight_shapes(config)


WEIGHT_DTYPE = "F32"  # every float parameter is float32 (both backends save float32)


def weight_table(
    config: ModelConfig, quantization: dict[str, Any] | None = None
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, safetensors dtype) that a weights file must hold: the
    architecture's float32 weights, each int8 matrix X as ``X.qweight`` (I8, X's shape) and
    ``X.scale`` (F32, one per output channel)."""
    from .export.int8 import QWEIGHT, SCALE

    table = {k: (shape, WEIGHT_DTYPE) for k, shape in weight_shapes(config).items()}
    for name in (quantization or {}).get("weights", []):
        shape, _ = table.pop(name)
        table[name + QWEIGHT] = (shape, "I8")
        table[name + SCALE] = ((shape[0],), WEIGHT_DTYPE)
    return table


def read_weight_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor names -> (shape, safetensors dtype such as "F32") from a safetensors header,
    without reading the tensors."""
    from safetensors import SafetensorError, safe_open

    check_regular_file(path)
    try:
        with safe_open(str(path), "numpy") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            return {k: (tuple(s.get_shape()), s.get_dtype()) for k, s in slices.items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc})") from None


def read_weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header, without reading the tensors."""
    return {k: shape for k, (shape, _) in read_weight_header(path).items()}


def check_weights_file(
    path: str | Path, config: ModelConfig, quantization: dict[str, Any] | None = None
) -> None:
    """Refuse a weights file whose header does not fit ``config``, before the model is built
    (a hand-edited ``"num_layers": 1000000000`` would otherwise build for hours), and tensors
    of another dtype (an F32 tensor relabelled I32 has the same size: its bits would be read as
    integers and converted)."""
    path = Path(path)
    header = read_weight_header(path)
    shapes = {k: shape for k, (shape, _) in header.items()}
    from .export.int8 import QWEIGHT, SCALE

    # the architecture sees its own names: X, not X.qweight and X.scale
    logical = {k.removesuffix(QWEIGHT): v for k, v in shapes.items() if not k.endswith(SCALE)}
    reason = get_architecture(config.arch).check_weight_header(logical, config)
    if reason is not None:
        raise CheckpointError(f"{path} {reason}")
    table = weight_table(config, quantization)
    check_shapes(shapes, {k: shape for k, (shape, _) in table.items()}, path)
    for k, (_, dtype) in header.items():
        if dtype != table[k][1]:
            want = table[k][1]
            kind = "int8 weights are" if want == "I8" else "weights are"
            raise CheckpointError(f"{path}: {k} has dtype {dtype}, the model's {kind} {want}")


def non_finite(path: Path, name: str) -> CheckpointError:
    """The error for weights with NaN/inf: a run that diverged would otherwise only surface later,
    as an IndexError in sampling or a ``loss nan``."""
    return CheckpointError(f"{path}: tensor {name} has NaN/inf values (the run diverged?)")


def check_shapes(
    shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], source: Any
) -> None:
    """Refuse tensor names or shapes that differ from ``expected``."""
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the model config"
            f" (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for k, shape in expected.items():
        if tuple(shapes[k]) != shape:
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(shapes[k])}, config says {shape}"
            )


def check_weights(
    weights: dict[str, Any], expected: dict[str, tuple[int, ...]], source: Any
) -> None:
    """Refuse weights (tensors or arrays by name) whose names or shapes differ from ``expected``."""
    check_shapes({k: tuple(v.shape) for k, v in weights.items()}, expected, source)
