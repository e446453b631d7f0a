"""The defaults of ``lstmgen train``, written into its ``--help``.

Its model and training options default to None on purpose: ``train_command`` tells what the
user gave from what the preset (or, on ``--resume``, the run) supplies. So click cannot show the
defaults itself; ``preset_defaults`` appends the value ``--preset cpu-small`` gives each option,
and where another preset differs, that preset's value (#10: ``train --help`` showed none).
"""

from __future__ import annotations

import dataclasses

import click

from ..config import PRESETS, ModelConfig, TrainConfig

DEFAULT_PRESET = "cpu-small"

# Options whose default is not simply a config field's.
SPECIAL = {
    "preset": DEFAULT_PRESET,
    "epochs": "10 when neither --max-steps nor --max-time is given",
    "output": "runs/NAME, NAME from the first source; runs/shakespeare",
    "labels_from": "none: one unlabelled text",
    "unlabelled_as": "none: unlabelled documents are an error",
    "features_from": "none",
}


def preset_value(preset: str, name: str) -> object:
    """What ``--preset preset`` sets option ``name`` to (a ModelConfig or TrainConfig field)."""
    # TrainConfig first: --vocab-size is the BPE setting (ModelConfig's is the tokenizer's size).
    for part, cls in (("train", TrainConfig), ("model", ModelConfig)):
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        if name in fields:
            return PRESETS[preset][part].get(name, fields[name])
    raise KeyError(name)


def describe(name: str) -> str | None:
    """``from --preset cpu-small (16); gpu-fast 128, tiny 8`` for option ``name``, or None."""
    if name in SPECIAL:
        return SPECIAL[name]
    try:
        base = preset_value(DEFAULT_PRESET, name)
    except KeyError:
        return None
    others = [
        f"{p} {preset_value(p, name)}"
        for p in sorted(PRESETS)
        if p != DEFAULT_PRESET and preset_value(p, name) != base
    ]
    return f"from --preset {DEFAULT_PRESET} ({base})" + (f"; {', '.join(others)}" if others else "")


def preset_defaults(command: click.Command) -> click.Command:
    """Decorator: append ``[default: ...]`` to the help of every option with a preset-supplied
    (or SPECIAL) default, unless click already shows one (``show_default``)."""
    for param in command.params:
        if not isinstance(param, click.Option) or param.show_default or param.name is None:
            continue
        text = describe(param.name)
        if text is not None:
            param.help = f"{param.help or ''} [default: {text}]".lstrip()
    return command
