"""lstmgen: train LSTM language models on your own text and generate from them.

>>> from lstmgen import LanguageModel  # doctest: +SKIP
>>> model = LanguageModel.from_pretrained("runs/poems")  # doctest: +SKIP
>>> print("".join(model.generate("ROMEO:", max_new_tokens=100, seed=0)))  # doctest: +SKIP
"""

from .config import GenerationConfig, ModelConfig, TrainConfig
from .corpus import Corpus, prepare_corpus
from .errors import CheckpointError, ConfigError, DataError, LstmgenError, TokenizerError
from .evaluate import EvalResult, evaluate_tokens
from .generate import Event, stream_text
from .model import LanguageModel
from .tokenizers import (
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
)
from .train import Callback, Trainer

__version__ = "0.1.0"

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
    "GenerationConfig",
    "LanguageModel",
    "LstmgenError",
    "ModelConfig",
    "Tokenizer",
    "TokenizerError",
    "TrainConfig",
    "Trainer",
    "WordTokenizer",
    "evaluate_tokens",
    "load_tokenizer",
    "prepare_corpus",
    "stream_text",
]
