"""lstmgen: train LSTM language models on your own text and generate from them.

>>> from lstmgen import LanguageModel  # doctest: +SKIP
>>> model = LanguageModel.from_pretrained("runs/poems")  # doctest: +SKIP
>>> print("".join(model.generate("ROMEO:", max_new_tokens=100, seed=0)))  # doctest: +SKIP
"""

from .config import GenerationConfig, ModelConfig, TrainConfig
from .corpus import Corpus, prepare_corpus
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    LstmgenError,
    NumericalError,
    TokenizerError,
    TrainingError,
)
from .textstream import Event
from .tokenizers import (
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
)

__version__ = "0.1.0"

# These import torch: loaded on first use (PEP 562), so that the tokenizers, the data tools and
# the NumPy reference (`lstmgen.reference`) work without importing torch.
_LAZY = {
    "EvalResult": ".evaluate",
    "evaluate_tokens": ".evaluate",
    "stream_text": ".generate",
    "LanguageModel": ".model",
    "Callback": ".training.trainer",
    "Trainer": ".training.trainer",
    "FeatureTrainer": ".training.features",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "Callback",
    "CharTokenizer",
    "CheckpointError",
    "ConfigError",
    "Corpus",
    "DataError",
    "EvalResult",
    "Event",
    "FeatureTrainer",
    "GenerationConfig",
    "LanguageModel",
    "LstmgenError",
    "ModelConfig",
    "NumericalError",
    "Tokenizer",
    "TokenizerError",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "WordTokenizer",
    "evaluate_tokens",
    "load_tokenizer",
    "prepare_corpus",
    "stream_text",
]
