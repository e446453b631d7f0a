"""Model directories and trainer state, written atomically, read without unpickling.

A model directory holds::

    config.json              ModelConfig plus a format marker
    tokenizer.json           the vocabulary (tokenizers.py)
    generation_config.json   default sampling settings
    model.safetensors        the weights

Every file is written to a temporary name in the same folder, fsynced, then renamed over the
old one, so a crash mid-save leaves the previous file intact, never a half-written one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import GenerationConfig, ModelConfig
from .errors import CheckpointError, ConfigError, LstmgenError, TokenizerError

FORMAT = "lstmgen"
FORMAT_VERSION = 1
CONFIG, TOKENIZER, GENERATION, WEIGHTS = (
    "config.json",
    "tokenizer.json",
    "generation_config.json",
    "model.safetensors",
)


def _atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
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
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def write_json_atomic(path: str | Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_tensors_atomic(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


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


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc})") from None


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without the tied duplicate (safetensors refuses shared storage)."""
    state = model.state_dict()
    if getattr(model.config, "tie_weights", False):
        state.pop("decoder.weight", None)
    return state


def save_model(model: Any, path: str | Path) -> None:
    """Write a complete model directory (see the module docstring)."""
    path = Path(path)
    write_json_atomic(
        path / CONFIG,
        {"format": FORMAT, "format_version": FORMAT_VERSION, **model.config.to_dict()},
    )
    if model.tokenizer is not None:
        model.tokenizer.save(path / TOKENIZER)
    write_json_atomic(path / GENERATION, model.generation_config.to_dict())
    save_tensors_atomic(path / WEIGHTS, weights_of(model), metadata={"format": FORMAT})


def read_model_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such model directory: {path}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a model directory")
    data = read_json(path / CONFIG)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path / CONFIG} is not an lstmgen model config")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has unsupported format version {data.get('format_version')}")
    data = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    try:
        return ModelConfig.from_dict(data)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path / CONFIG}: {exc}") from None


def load_weights_into(
    model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path
) -> None:
    expected = weights_of(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the model config"
            f" (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for k, v in tensors.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(v.shape)}, config says {tuple(expected[k].shape)}"
            )
    model.load_state_dict(tensors, strict=False)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Any:
    from .model import LanguageModel
    from .tokenizers import load_tokenizer

    path = Path(path)
    config = read_model_config(path)
    try:
        tokenizer = load_tokenizer(path / TOKENIZER)
    except TokenizerError as exc:
        raise CheckpointError(f"{path / TOKENIZER}: {exc}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: tokenizer has {tokenizer.vocab_size} tokens, config says {config.vocab_size}"
        )
    gen_path = path / GENERATION
    try:
        gen = GenerationConfig.from_json_file(gen_path) if gen_path.exists() else None
    except LstmgenError as exc:
        raise CheckpointError(f"{gen_path}: {exc}") from None
    model = LanguageModel(config, tokenizer, gen)
    load_weights_into(model, load_tensors(path / WEIGHTS), path / WEIGHTS)
    model.eval()
    return model.to(device)
