"""The model directory format, without PyTorch: file names, atomic writes, JSON parts.

A model directory holds::

    config.json              ModelConfig plus a format marker
    tokenizer.json           the vocabulary (tokenizers.py)
    generation_config.json   default sampling settings
    model.safetensors        the weights (written by checkpoint.py with torch, or by
                             reference/checkpoint.py with NumPy: the same file either way)

Every file is written to a temporary name in the same folder, fsynced, then renamed over the
old one, so a crash mid-save leaves the previous file intact, never a half-written one. Nothing
here imports torch, so the NumPy reference and the tokenizers can use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import GenerationConfig, ModelConfig
from .errors import CheckpointError, ConfigError, LstmgenError
from .tokenizers import Tokenizer, tokenizer_from_dict

FORMAT = "lstmgen"
FORMAT_VERSION = 1
CONFIG, TOKENIZER, GENERATION, WEIGHTS = (
    "config.json",
    "tokenizer.json",
    "generation_config.json",
    "model.safetensors",
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make model folders unshareable
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
    except ConfigError as exc:
        raise CheckpointError(f"{path / CONFIG}: {exc}") from None


def read_model_meta(path: str | Path) -> tuple[ModelConfig, Tokenizer, GenerationConfig | None]:
    """config.json, tokenizer.json and (if present) generation_config.json, checked together."""
    path = Path(path)
    config = read_model_config(path)
    try:
        tokenizer = tokenizer_from_dict(read_json(path / TOKENIZER))
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


def write_model_meta(
    path: str | Path,
    config: ModelConfig,
    tokenizer: Tokenizer | None,
    generation_config: GenerationConfig,
) -> None:
    """The JSON parts of a model directory (the weights are the backend's job)."""
    path = Path(path)
    write_json_atomic(
        path / CONFIG, {"format": FORMAT, "format_version": FORMAT_VERSION, **config.to_dict()}
    )
    if tokenizer is not None:
        tokenizer.save(path / TOKENIZER)
    write_json_atomic(path / GENERATION, generation_config.to_dict())


def weight_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors a weights file holds for ``config``, by PyTorch state-dict name, computed
    without building the model (so a config that does not fit its weights fails at once)."""
    V, E, H = config.vocab_size, config.embedding_size, config.hidden_size
    G = {"lstm": 4, "gru": 3, "rnn": 1}[config.cell] * H  # gates stacked: i,f,g,o / r,z,n / h
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (V, E)}
    for k in range(config.num_layers):
        shapes[f"rnn.weight_ih_l{k}"] = (G, E if k == 0 else H)
        shapes[f"rnn.weight_hh_l{k}"] = (G, H)
        shapes[f"rnn.bias_ih_l{k}"] = (G,)
        shapes[f"rnn.bias_hh_l{k}"] = (G,)
    if config.tie_weights and E != H:
        shapes["projection.weight"] = (E, H)
    if not config.tie_weights:  # tied: the decoder's weight is the embedding, stored once
        shapes["decoder.weight"] = (V, H)
    shapes["decoder.bias"] = (V,)
    return shapes


def read_weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header, without reading the tensors."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"missing file {path}")
    try:
        with safe_open(str(path), "numpy") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc})") from None


def check_weights_file(path: str | Path, config: ModelConfig) -> None:
    """Refuse a weights file whose header does not fit ``config``, before the model is built
    (a hand-edited ``"num_layers": 1000000000`` would otherwise build for hours)."""
    path = Path(path)
    shapes = read_weight_shapes(path)
    layers = sum(k.startswith("rnn.weight_hh_l") for k in shapes)
    if layers != config.num_layers:
        raise CheckpointError(
            f"{path} holds {layers} recurrent layer(s), {CONFIG} says {config.num_layers}"
        )
    check_shapes(shapes, weight_shapes(config), path)


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
