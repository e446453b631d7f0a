"""Generic file helpers: atomic writes and bounded reads of regular files and JSON.

Every file lstmgen writes is written to a temporary name in the same folder, fsynced, then
renamed over the old one, so a crash mid-save leaves the previous file intact, never a
half-written one; a full disk is one ``CheckpointError`` naming the file. Every file of a model
or run folder is read through ``read_bytes`` / ``read_json`` (or, for tensors, checked by
``check_regular_file`` first): it must be a regular file under a size limit for its kind, and
JSON may nest at most ``MAX_JSON_DEPTH`` deep, so a ``config.json`` linked to /dev/zero, a FIFO
or a file nested 200,000 deep is a clear error, not a process that fills memory, hangs or hits
RecursionError (issue #10).

This module imports nothing from the package but ``errors.py``, which imports nothing itself:
config, tokenizers, data, the model directory and the run directory can all use it without an
import cycle (issue #11). No torch either, so the NumPy reference can use it.
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

from .errors import CheckpointError

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
