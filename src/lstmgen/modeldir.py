"""The model directory format, without PyTorch: file names, atomic writes, JSON parts.

A model directory holds::

    config.json              ModelConfig plus a format marker
    tokenizer.json           the vocabulary (tokenizers.py)
    generation_config.json   default sampling settings
    model.safetensors        the weights (written by checkpoint.py with torch, or by
                             reference/checkpoint.py with NumPy: the same file either way)

Every file is written to a temporary name in the same folder, fsynced, then renamed over the
old one, so a crash mid-save leaves the previous file intact, never a half-written one; a full
disk is one ``CheckpointError`` naming the file. Every file of a model or run folder is read
through ``read_bytes`` / ``read_json`` (or, for tensors, checked by ``check_regular_file``
first): it must be a regular file under a size limit for its kind, and JSON may nest at most
``MAX_JSON_DEPTH`` deep, so a ``config.json`` linked to /dev/zero, a FIFO or a file nested
200,000 deep is a clear error, not a process that fills memory, hangs or hits RecursionError
(issue #10). Nothing here imports torch, so the NumPy reference and the tokenizers can use it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
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

# Size limits, checked before a byte is read. Each is far above what a real file of its kind
# holds, and far below what would exhaust memory.
KB, MB = 1 << 10, 1 << 20
MAX_CONFIG_BYTES = 4 * MB  # config.json, generation_config.json, train_config.json, data/*.json:
#                            a few hundred bytes in practice (a long ``stop`` list stays < 1 MB)
MAX_TOKENIZER_BYTES = 256 * MB  # tokenizer.json: WikiText-103's 267k words take ~3 MB, a 50k
#                                 BPE ~2 MB; a million-token BPE vocabulary still fits
MAX_METRICS_BYTES = 256 * MB  # metrics.jsonl: ~150 bytes a line, over a million log lines
MAX_JSON_DEPTH = 64  # lstmgen's own files nest 4 deep (a BPE tokenizer's merges)
# Weights and trainer state have no size limit: safetensors memory-maps them and checks the
# header against the file size. They must still be regular files (a FIFO blocks its reader).

# A JSON string, escapes included: brackets inside strings are text, not structure.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def check_regular_file(path: str | Path) -> os.stat_result:
    """``os.stat`` of ``path`` (links followed), refusing anything but a regular file: a FIFO
    would block its reader forever, /dev/zero or /dev/urandom never end."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    _require_regular(path, st)
    return st


def _require_regular(path: Path, st: os.stat_result) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    kind = (
        "a folder"
        if stat.S_ISDIR(st.st_mode)
        else "a FIFO"
        if stat.S_ISFIFO(st.st_mode)
        else "a device"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
        else "a socket"
        if stat.S_ISSOCK(st.st_mode)
        else "not a file"
    )
    raise CheckpointError(f"{path} is not a regular file ({kind})")


def _too_large(path: Path, limit: int) -> CheckpointError:
    return CheckpointError(f"{path} is too large (over {limit // MB} MB): not an lstmgen file")


def read_bytes(path: str | Path, limit: int) -> bytes:
    """The contents of the regular file ``path``, refused if larger than ``limit`` bytes.

    Stat first, so a device is never even opened; then open with O_NONBLOCK (a FIFO swapped in
    meanwhile cannot block) and check the open file again; read at most ``limit + 1`` bytes (a
    file growing while read is caught too)."""
    path = Path(path)
    if check_regular_file(path).st_size > limit:
        raise _too_large(path, limit)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    try:
        _require_regular(path, os.fstat(fd))
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 16 * MB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise _too_large(path, limit)
    return data


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON ``text`` nests arrays/objects deeper than ``limit``, found without
    recursion (Python's parser recurses once per level: 200,000 levels are a RecursionError)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # cannot nest deeper than it has brackets: the common case, one C pass
    import numpy as np  # counted in C: a file of millions of brackets takes milliseconds

    outside = _STRING.sub("", text).encode("utf-8", errors="surrogatepass")
    brackets = outside.translate(None, _NOT_BRACKETS)
    step = np.zeros(256, np.int8)
    step[[ord("["), ord("{")]], step[[ord("]"), ord("}")]] = 1, -1
    depth, chunk = 0, 1 << 20
    for start in range(0, len(brackets), chunk):  # in chunks: bounded memory
        steps = step[np.frombuffer(brackets[start : start + chunk], np.uint8)]
        running = np.cumsum(steps, dtype=np.int64) + depth
        if running.max() > limit:
            return True
        depth = int(running[-1])
    return False


def parse_json(text: str, source: Any) -> Any:
    """``json.loads`` with nesting bounded by ``MAX_JSON_DEPTH``; ``CheckpointError`` naming
    ``source`` for anything that is not JSON."""
    if json_depth_exceeds(text):
        raise CheckpointError(f"{source} is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{source} is corrupt (not valid JSON)") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, fsync, rename over ``path``.

    A full disk (an ``OSError`` ENOSPC, or the ``SafetensorError`` that safetensors makes of
    one: "Error while serializing: IoError(Os { code: 28, kind: StorageFull, ... })") is one
    ``CheckpointError`` naming ``path``; the temporary file is removed and ``path`` untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # no room even for an empty file
        error = _write_error(path, exc)
        if error is None:
            raise
        raise error from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make model folders unshareable
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        error = _write_error(path, exc)
        if error is not None:
            raise error from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _write_error(path: Path, exc: BaseException) -> CheckpointError | None:
    """The error for a write of ``path`` that failed with ``exc``, if it is a full disk or a
    safetensors error (which would otherwise escape as a traceback); None for anything else."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return CheckpointError(f"cannot write {path}: no space left on device")
    if isinstance(exc, OSError) and exc.errno == getattr(errno, "EDQUOT", None):
        return CheckpointError(f"cannot write {path}: disk quota exceeded")
    if type(exc).__name__ == "SafetensorError":  # safetensors' errors carry no errno
        text = str(exc)
        if "StorageFull" in text or "code: 28," in text or "No space left" in text:
            return CheckpointError(f"cannot write {path}: no space left on device")
        return CheckpointError(f"cannot write {path}: {text}")
    return None


def write_json_atomic(path: str | Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_text(path: str | Path, limit: int) -> str:
    """The UTF-8 text of the regular file ``path`` (see ``read_bytes``)."""
    try:
        return read_bytes(path, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is corrupt (not UTF-8 text)") from None


def read_json(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> Any:
    """The JSON in ``path``: a regular file of at most ``limit`` bytes, nested at most
    ``MAX_JSON_DEPTH`` deep. Every JSON file of a model or run folder is read here."""
    path = Path(path)
    try:
        text = read_bytes(path, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is corrupt (not valid JSON)") from None
    return parse_json(text, path)


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


WEIGHT_DTYPE = "F32"  # every parameter is float32 (both backends save float32)


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


def check_weights_file(path: str | Path, config: ModelConfig) -> None:
    """Refuse a weights file whose header does not fit ``config``, before the model is built
    (a hand-edited ``"num_layers": 1000000000`` would otherwise build for hours), and tensors
    of another dtype (an F32 tensor relabelled I32 has the same size: its bits would be read as
    integers and converted)."""
    path = Path(path)
    header = read_weight_header(path)
    shapes = {k: shape for k, (shape, _) in header.items()}
    layers = sum(k.startswith("rnn.weight_hh_l") for k in shapes)
    if layers != config.num_layers:
        raise CheckpointError(
            f"{path} holds {layers} recurrent layer(s), {CONFIG} says {config.num_layers}"
        )
    check_shapes(shapes, weight_shapes(config), path)
    for k, (_, dtype) in header.items():
        if dtype != WEIGHT_DTYPE:
            raise CheckpointError(f"{path}: {k} has dtype {dtype}, the model's weights are F32")


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
