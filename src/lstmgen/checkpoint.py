"""Model directories and trainer state with PyTorch tensors, read without unpickling.

The format and the JSON parts live in modeldir.py (torch-free); this module adds the weights
(safetensors) and builds ``LanguageModel``s. Re-exports the JSON helpers for convenience.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
from .modeldir import (  # noqa: F401  (re-exported)
    CONFIG,
    FORMAT,
    GENERATION,
    TOKENIZER,
    WEIGHTS,
    atomic_write,
    check_regular_file,
    check_weights,
    check_weights_file,
    non_finite,
    read_json,
    read_model_config,
    read_model_meta,
    write_json_atomic,
    write_model_meta,
)


def save_tensors_atomic(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, refusing NaN/inf (``modeldir.non_finite``)."""
    path = Path(path)
    check_regular_file(path)  # a FIFO would block safetensors' open forever
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc})") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise non_finite(path, name)
    return tensors


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without the tied duplicate (safetensors refuses shared storage)."""
    state = model.state_dict()
    if getattr(model.config, "tie_weights", False):
        state.pop("decoder.weight", None)
    return state


def save_model(model: Any, path: str | Path) -> None:
    """Write a complete model directory (see modeldir.py)."""
    write_model_meta(path, model.config, model.tokenizer, model.generation_config)
    save_tensors_atomic(Path(path) / WEIGHTS, weights_of(model), metadata={"format": FORMAT})


def load_weights_into(
    model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path
) -> None:
    expected = {k: tuple(v.shape) for k, v in weights_of(model).items()}
    check_weights(tensors, expected, source)
    model.load_state_dict(tensors, strict=False)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Any:
    from .model import LanguageModel

    path = Path(path)
    config, tokenizer, gen = read_model_meta(path)
    check_weights_file(path / WEIGHTS, config)
    model = LanguageModel(config, tokenizer, gen)
    load_weights_into(model, load_tensors(path / WEIGHTS), path / WEIGHTS)
    model.eval()
    return model.to(device)
