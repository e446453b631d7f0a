"""The architectures, keyed by ``ModelConfig.arch``: the only place that lists them.

To add one, write its module next to recurrent.py (see base.Architecture for what it provides)
and add a line here. A ``config.json`` without ``arch`` is the recurrent stack (the only
architecture before issue #11), so model directories written before it still load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .attention import ShaLstm
from .recurrent import Recurrent

if TYPE_CHECKING:
    from .base import Architecture

DEFAULT_ARCH = "recurrent"

ARCHITECTURES: dict[str, Architecture] = {
    "recurrent": Recurrent(),  # embedding -> LSTM/GRU/RNN x L -> decoder
    "sha-lstm": ShaLstm(),  # the LSTM stack with one attention head over a memory (issue #12)
}


def get_architecture(name: str) -> Architecture:
    """The architecture called ``name``; one ``ConfigError`` naming the known ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(ARCHITECTURES))
        raise ConfigError(f"arch must be one of {known}, got {name!r}") from None
