"""Checks of a trainer state (``trainer/state.safetensors``) read back for ``--resume``.

The file holds tensors by name (``model.*`` weights, ``opt.<i>.<key>`` AdamW moments,
``rng.cpu``/``rng.cuda``, ``hidden.<i>`` the carried recurrent state) and, in its metadata, the
position and the optimizer's param groups as JSON. A hand-edited or foreign file must fail here,
as one ``CheckpointError`` naming it, and never later: a renamed moment used to be dropped by
``load_state_dict`` (training went on from zero moments), a hidden state of the wrong shape
crashed the first step, a position of strings crashed the loop (issue #10).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from .checkpoint import weights_of
from .errors import CheckpointError
from .files import parse_json
from .models.base import Model
from .training.schedule import Position

Expected = dict[str, tuple[tuple[int, ...], tuple[torch.dtype, ...]]]

# A bf16 run carries its hidden state in fp16 (cuDNN under autocast); fp32 runs in fp32.
HIDDEN_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def expected_tensors(model: Model, optimizer: torch.optim.Optimizer, batch: int) -> Expected:
    """Name -> (shape, allowed dtypes) of every tensor a state of this run may hold."""
    expected: Expected = {
        f"model.{k}": (tuple(v.shape), (v.dtype,)) for k, v in weights_of(model).items()
    }
    # AdamW's per-parameter state, indexed over all groups in order (Optimizer.state_dict)
    moments = ["exp_avg", "exp_avg_sq"] + (
        ["max_exp_avg_sq"] if optimizer.defaults.get("amsgrad") else []
    )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in enumerate(params):
        expected[f"opt.{i}.step"] = ((), (torch.float32, torch.float64))
        for key in moments:
            expected[f"opt.{i}.{key}"] = (tuple(p.shape), (p.dtype,))
    expected["rng.cpu"] = (tuple(torch.get_rng_state().shape), (torch.uint8,))
    # the carried state's parts, as the architecture makes them (hidden.0, hidden.1, ...)
    for name, t in model.init_state(batch).tensors().items():
        # a part that counts (the attention memory's length) keeps its integer dtype
        expected[name] = (tuple(t.shape), HIDDEN_DTYPES if t.is_floating_point() else (t.dtype,))
    return expected


def check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: Expected) -> None:
    """Refuse names, shapes or dtypes that differ from ``expected``. The optimizer moments and
    the hidden state are all present or all absent (a state saved before the first step, or at
    an epoch boundary); ``rng.cuda`` is there when the run was on a GPU."""
    names = set(tensors)
    missing: set[str] = set()
    for prefix in ("model.", "opt.", "hidden.", "rng.cpu"):
        group = {k for k in expected if k.startswith(prefix)}
        optional = prefix in ("opt.", "hidden.")
        if not optional or names & group:
            missing |= group - names
    unexpected = names - set(expected) - {"rng.cuda"}
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match this run's model and optimizer"
            f" (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    if "rng.cuda" in tensors:
        expected = {**expected, "rng.cuda": ((tensors["rng.cuda"].numel(),), (torch.uint8,))}
    for name, t in tensors.items():
        shape, dtypes = expected[name]
        if tuple(t.shape) != shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(t.shape)}, expected {shape}")
        if t.dtype not in dtypes:
            want = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
            got = str(t.dtype).removeprefix("torch.")
            raise CheckpointError(f"{path}: {name} has dtype {got}, expected {want}")


def read_position(path: Path, meta: dict[str, str], windows_per_epoch: int) -> Position:
    """The ``position`` metadata as a ``Position``, every field checked."""
    data = _metadata_json(path, meta, "position")
    fields = {f.name for f in dataclasses.fields(Position)}
    if not isinstance(data, dict) or set(data) != fields:
        raise CheckpointError(
            f"{path}: position must be an object with {', '.join(sorted(fields))}"
        )
    for name in ("step", "epoch", "window", "best_step", "bad_evals"):
        value, low = data[name], -1 if name == "best_step" else 0
        if not _is_int(value) or value < low:
            raise CheckpointError(f"{path}: position {name} must be an integer >= {low}")
    if data["window"] > windows_per_epoch:
        raise CheckpointError(
            f"{path}: position window {data['window']} is past the epoch's {windows_per_epoch}"
        )
    if not _is_number(data["elapsed"]) or not 0 <= data["elapsed"] < math.inf:
        raise CheckpointError(f"{path}: position elapsed must be a finite number >= 0")
    if not _is_number(data["best_val"]) or math.isnan(data["best_val"]):
        raise CheckpointError(f"{path}: position best_val must be a number (Infinity: none yet)")
    return Position(**data)


def read_param_groups(
    path: Path, meta: dict[str, str], optimizer: torch.optim.Optimizer
) -> list[dict[str, Any]]:
    """The ``param_groups`` metadata, checked against ``optimizer``'s own: same groups, same
    parameters, the same keys with values of the same kinds (numbers, flags, lists)."""
    groups = _metadata_json(path, meta, "param_groups")
    current = optimizer.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(current):
        raise CheckpointError(f"{path}: param_groups must be a list of {len(current)} groups")
    for saved, now in zip(groups, current, strict=True):
        if not isinstance(saved, dict) or set(saved) != set(now):
            raise CheckpointError(f"{path}: param_groups do not match this run's optimizer")
        if saved["params"] != now["params"]:
            raise CheckpointError(f"{path}: param_groups list other parameters than the model's")
        for key, value in now.items():
            if not _same_kind(saved[key], value):
                raise CheckpointError(f"{path}: param_groups {key} is {saved[key]!r}")
    return groups


def _metadata_json(path: Path, meta: dict[str, str], key: str) -> Any:
    if not isinstance(meta.get(key), str):
        raise CheckpointError(f"{path} has no valid trainer metadata (no {key})")
    return parse_json(meta[key], f"{path} metadata {key}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same_kind(saved: Any, now: Any) -> bool:
    """Whether a JSON value read back can stand for the optimizer's ``now`` (a tuple was
    written as a list; a flag may be null where the default is)."""
    if isinstance(now, bool) or now is None:
        return saved is None or isinstance(saved, bool)
    if _is_number(now):
        return _is_number(saved) and math.isfinite(saved)
    if isinstance(now, (list, tuple)):
        return (
            isinstance(saved, list)
            and len(saved) == len(now)
            and all(_same_kind(s, n) for s, n in zip(saved, now, strict=True))
        )
    return type(saved) is type(now)
