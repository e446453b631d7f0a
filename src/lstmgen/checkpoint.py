"""Model directories and trainer state with PyTorch tensors, read without unpickling.

The format and the JSON parts live in modeldir.py (torch-free); this module adds the weights
(safetensors). It knows no model class (model.py builds ``LanguageModel``s with it), so that
model.py can import it without a cycle.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
from .files import atomic_write, check_regular_file
from .modeldir import FORMAT, WEIGHTS, check_weights, non_finite, write_model_meta
from .models.base import Model


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


def save_model(model: Model, path: str | Path) -> None:
    """Write a complete model directory (see modeldir.py)."""
    write_model_meta(path, model.config, model.tokenizer, model.generation_config)
    save_tensors_atomic(Path(path) / WEIGHTS, weights_of(model), metadata={"format": FORMAT})


def load_weights_into(
    model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path
) -> None:
    expected = {k: tuple(v.shape) for k, v in weights_of(model).items()}
    check_weights(tensors, expected, source)
    model.load_state_dict(tensors, strict=False)
