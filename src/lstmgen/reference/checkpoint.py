"""Reading and writing lstmgen model directories without PyTorch.

The format is the PyTorch backend's (``lstmgen/checkpoint.py``): config.json with a format
marker, tokenizer.json, generation_config.json and model.safetensors whose tensor names are the
PyTorch state dict's. ``safetensors.numpy`` reads and writes the same file. The small JSON
helpers are repeated here because ``lstmgen.checkpoint`` imports torch at module level.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GenerationConfig, ModelConfig
from ..errors import CheckpointError, LstmgenError
from ..tokenizers import Tokenizer, tokenizer_from_dict

FORMAT = "lstmgen"
FORMAT_VERSION = 1
CONFIG, TOKENIZER, GENERATION, WEIGHTS = (
    "config.json",
    "tokenizer.json",
    "generation_config.json",
    "model.safetensors",
)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is corrupt (not valid JSON)") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None


def read_model_dir(
    path: str | Path,
) -> tuple[ModelConfig, Tokenizer, GenerationConfig, dict[str, np.ndarray]]:
    """-> (model config, tokenizer, generation config, weights by PyTorch name)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"no such model directory: {path}" if not path.exists() else f"{path} is not a folder"
        )
    data = read_json(path / CONFIG)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path / CONFIG} is not an lstmgen model config")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has unsupported format version {data.get('format_version')}")
    try:
        config = ModelConfig.from_dict(
            {k: v for k, v in data.items() if k not in ("format", "format_version")}
        )
        tokenizer = tokenizer_from_dict(read_json(path / TOKENIZER))
        gen_path = path / GENERATION
        gen = GenerationConfig.from_dict(read_json(gen_path)) if gen_path.exists() else None
    except (LstmgenError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: tokenizer has {tokenizer.vocab_size} tokens, config says {config.vocab_size}"
        )
    weights_path = path / WEIGHTS
    if not weights_path.is_file():
        raise CheckpointError(f"missing file {weights_path}")
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path} is truncated or corrupt ({exc})") from None
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
    write_json(
        path / CONFIG, {"format": FORMAT, "format_version": FORMAT_VERSION, **config.to_dict()}
    )
    if tokenizer is not None:
        write_json(path / TOKENIZER, {"type": tokenizer.kind, **tokenizer.to_dict()})
    write_json(path / GENERATION, generation_config.to_dict())
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    atomic_write(path / WEIGHTS, lambda tmp: save_file(arrays, tmp, metadata={"format": FORMAT}))


def check_weights(
    weights: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], source: Path | str
) -> None:
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the model config"
            f" (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for k, shape in expected.items():
        if tuple(weights[k].shape) != shape:
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(weights[k].shape)}, config says {shape}"
            )
