"""The trainer state: what ``trainer/state.safetensors`` holds and how it comes back.

Tensors by name: ``model.*`` the latest weights, ``opt.<i>.<key>`` the AdamW moments,
``rng.cpu`` / ``rng.cuda`` the RNG states, ``hidden.<i>`` the recurrent state carried between
windows; in the metadata, the ``Position`` and the optimizer's param groups as JSON. Restoring
all of it is what makes a stopped and resumed CPU run end bit-identical to an uninterrupted one.
The file itself is written and read by ``RunDir`` (rundir.py); the checks are statefile.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoint import load_weights_into, weights_of
from ..state import State
from ..statefile import check_tensors, expected_tensors, read_param_groups, read_position
from .schedule import Position


def pack(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    hidden: State | None,
    pos: Position,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a trainer state."""
    tensors = {f"model.{k}": v for k, v in weights_of(model).items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, value in st.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value)
    tensors["rng.cpu"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    if hidden is not None:
        tensors.update(hidden.tensors())  # hidden.0, hidden.1, ...
    meta = {
        "position": json.dumps(pos.__dict__),
        "param_groups": json.dumps(opt["param_groups"]),
    }
    return tensors, meta


def unpack(
    path: Path,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    windows_per_epoch: int,
    batch: int,
    fp32: bool,
) -> tuple[Position, State | None]:
    """Load a state read from ``path`` into ``model``, ``optimizer`` and the RNGs; return the
    position and the carried hidden state (on ``device``; fp32 when ``fp32``)."""
    # every name, shape, dtype and field checked here, so nothing crashes later (statefile)
    pos = read_position(path, meta, windows_per_epoch)
    groups = read_param_groups(path, meta, optimizer)
    check_tensors(path, tensors, expected_tensors(model, optimizer, batch))
    load_weights_into(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    # checked against model.init_state above; its class, so an architecture's parts come back
    # as its own State (the attention state keeps its length int64 when cast)
    hidden = type(model.init_state(1)).from_tensors(tensors)
    if hidden is not None:
        # a bf16 run's state is fp16 (cuDNN under autocast); fp32 needs fp32
        hidden = hidden.to(device, torch.float32 if fp32 else None)
    return pos, hidden
