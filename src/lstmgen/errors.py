"""Errors meant for a person.

Library code raises these; the CLI prints ``error: <message>`` on one line and exits non-zero,
the server (later) turns them into a JSON error. Anything else escaping is a bug.
"""

import math


class LstmgenError(Exception):
    """Base class: the message is shown to the user as-is."""


class ConfigError(LstmgenError):
    """A bad option value or an unknown configuration key."""


class DataError(LstmgenError):
    """A corpus that cannot be read: missing, empty, binary or badly encoded."""


class TokenizerError(LstmgenError):
    """Text the tokenizer cannot encode, or a tokenizer file it cannot read."""


class CheckpointError(LstmgenError):
    """A model directory that is missing, truncated, corrupt or not lstmgen's."""


class TrainingError(LstmgenError):
    """Training that cannot go on, e.g. a loss that became NaN or infinite."""


class NumericalError(LstmgenError):
    """A model whose outputs are not finite numbers (weights that overflow: a diverged run)."""

    def __init__(self, detail: str = "", value: float = math.nan):
        self.value = value  # the non-finite number met, e.g. a loss of inf
        super().__init__(
            f"{detail}the model's outputs are not finite numbers: its weights overflow (did its "
            "training diverge?)"
        )
