"""Where a fine-tuned model came from: the base model's directory and a hash of its weights.

A run started with ``--init-from BASE`` records, under ``"base"`` in its ``train_config.json``
(rundir.py writes it)::

    {"path": "/abs/runs/base", "sha256": "<of BASE/model.safetensors>", "base": {...}}

where the inner ``"base"`` is the base's own record when it was itself fine-tuned, so chains
(base -> fine-tuned -> fine-tuned again) survive. ``lstmgen info`` prints the chain and warns
when a base's weights have changed or gone since. Torch-free.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .files import check_regular_file
from .modeldir import WEIGHTS

# A chain longer than this in a train_config.json is cut (a hand-made cycle cannot be one, but
# a hand-made nesting could be deep).
MAX_CHAIN = 32


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB pieces."""
    path = Path(path)
    check_regular_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def base_record(base_dir: str | Path, base_of_base: dict[str, Any] | None) -> dict[str, Any]:
    """The record of a run started from ``base_dir`` (``base_of_base``: the base's own)."""
    base_dir = Path(base_dir).resolve()
    record: dict[str, Any] = {"path": str(base_dir), "sha256": sha256_of(base_dir / WEIGHTS)}
    if base_of_base:
        record["base"] = base_of_base
    return record


def is_record(value: Any) -> bool:
    """Whether ``value`` (read from JSON) has the shape of a base record."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("path"), str)
        and isinstance(value.get("sha256"), str)
        and (value.get("base") is None or isinstance(value["base"], dict))
    )


def chain(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The records from the nearest base to the first one (records of a bad shape end it)."""
    out: list[dict[str, Any]] = []
    while is_record(record) and len(out) < MAX_CHAIN:
        assert record is not None
        out.append(record)
        record = record.get("base")
    return out


def changed(record: dict[str, Any]) -> str | None:
    """Why the base a record names is no longer what the run started from (None if it is)."""
    weights = Path(record["path"]) / WEIGHTS
    if not weights.is_file():
        return f"{weights} is gone"
    try:
        now = sha256_of(weights)
    except (OSError, CheckpointError):
        return f"{weights} cannot be read"
    if now != record["sha256"]:
        return f"{weights} has changed since (sha256 {now[:12]}, was {record['sha256'][:12]})"
    return None
