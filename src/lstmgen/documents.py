"""Corpora of documents that carry a label or a feature vector (issue #13: conditioning).

A plain corpus is one stream of text. A labelled or featured corpus is a list of documents:

- ``labels_from="folders"``: every top-level sub-folder of a corpus folder is a label and the
  files under it (recursively) its documents; files directly in the corpus folder are
  unlabelled.
- ``labels_from="jsonl"`` / ``features_from="jsonl"``: one JSON object per line,
  ``{"text": ..., "label": ..., "features": [floats]}`` (``label`` and ``features`` as asked;
  a missing or null label is unlabelled). A bad line is an error naming ``file:line``.

Labels are control codes, as in CTRL (Keskar et al. 2019): each document becomes its label's
special token (``<|label:NAME|>``, tokenizers.py) followed by its tokens, so the model learns
``p(text | label)`` with no change to any architecture, and generation primes with the token.
Every document ends with a line break (one is added where missing), so the stream reads
``... end of one document \\n <|label:b|> next document \\n``, and generation primes with
``bos (\\n), <|label:b|>, prompt``: what training saw before a document.

Training documents are shuffled (seeded by ``seed``) so that labels mix across batch rows and
the held-out tail (without ``--valid``) samples every label when there are many documents.
Feature corpora hold out whole documents instead, and keep each document's start
(``DocumentFile.starts``) and vector (``DocumentFile.features``): training/features.py trains on
per-document windows that start from the vector's state.

The tokenized splits are written to ``RUN/data`` like a plain corpus's (``SPLIT.bin`` with its
record, plus ``SPLIT.docs.npz`` for feature corpora, read without pickle), so a run whose
sources are gone resumes from them.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .data import (
    TokenFile,
    _encode_chunk,
    iter_text,
    open_token_cache,
    resolve_sources,
    split_tail,
    token_dtype,
)
from .errors import DataError, TokenizerError
from .files import write_json_atomic
from .tokenizers import Tokenizer, check_label_name, fit_tokenizer, label_token

LABEL_IN_TEXT = re.compile(r"<\|label:([^|\s]*)\|>")  # a label token spelled out in text
MAX_FEATURES = 65536  # longest feature vector accepted


@dataclass
class Document:
    text: str
    source: str  # the file, or file:line for JSONL
    label: str | None = None
    features: list[float] | None = None


@dataclass
class DocumentFile(TokenFile):
    """A split of documents: the token stream plus where each document starts (D,) and, for a
    feature corpus, its vector (D, F) float32."""

    starts: np.ndarray | None = None
    features: np.ndarray | None = None


def is_document_corpus(config: TrainConfig) -> bool:
    return bool(config.labels_from or config.features_from)


# --- reading -----------------------------------------------------------------------------------


def _read_file(path: Path, config: TrainConfig) -> str:
    return "".join(
        iter_text(path, config.encoding_errors, config.encoding, config.keep_line_endings)
    )


def _folder_documents(sources: Sequence[str | Path], config: TrainConfig) -> list[Document]:
    docs: list[Document] = []
    for src in sources:
        root = Path(src)
        if not root.is_dir():
            raise DataError(f"--labels-from folders needs folders of label sub-folders: {src}")
        for entry in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
            label = entry.name if entry.is_dir() else None
            if label is not None and not any(entry.rglob("*")):
                continue  # an empty label folder has no documents
            for path in resolve_sources([entry], config.encoding):
                docs.append(Document(_read_file(path, config), str(path), label))
    return docs


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_features(values: object, size: int | None = None, where: str = "features") -> list[float]:
    """``values`` as a list of finite floats of length ``size`` (any length when None); one
    ``DataError`` naming ``where`` otherwise. The CLI's --features file and the server's
    ``features`` field are checked here too."""
    if not isinstance(values, list) or not values or not all(map(_number, values)):
        raise DataError(f"{where} must be a non-empty list of numbers")
    if len(values) > MAX_FEATURES:
        raise DataError(f"{where} has {len(values):,} numbers, more than {MAX_FEATURES:,}")
    try:
        floats = [float(v) for v in values]
    except OverflowError:  # an integer beyond float range (JSON allows any)
        raise DataError(f"{where} holds a number too large for a float") from None
    if not all(map(math.isfinite, floats)):
        raise DataError(f"{where} holds NaN or infinity")
    if size is not None and len(floats) != size:
        raise DataError(f"{where} has {len(floats)} numbers; the model takes {size}")
    return floats


def _jsonl_documents(sources: Sequence[str | Path], config: TrainConfig) -> list[Document]:
    docs: list[Document] = []
    for path in resolve_sources(sources, config.encoding):
        for n, line in enumerate(_read_file(path, config).split("\n"), 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise DataError(f"{where}: not valid JSON ({exc})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise DataError(f'{where}: expected an object with a "text" string')
            unknown = sorted(set(obj) - {"text", "label", "features"})
            if unknown:
                raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}")
            label = obj.get("label")
            if label is not None and not isinstance(label, str):
                raise DataError(f'{where}: "label" must be a string')
            features = None
            if config.features_from:
                if "features" not in obj:
                    raise DataError(f'{where}: no "features" (--features-from jsonl)')
                features = check_features(obj["features"], where=f"{where}: features")
            docs.append(
                Document(obj["text"], where, label if config.labels_from else None, features)
            )
    return docs


def read_documents(sources: Sequence[str | Path], config: TrainConfig) -> list[Document]:
    """The documents of ``sources`` with their labels and features checked (see the module
    docstring): a mix of labelled and unlabelled documents is an error unless
    ``config.unlabelled_as`` names their label, and so are invalid label names, a label token
    spelled out in a document's text, and feature vectors of different lengths."""
    if config.labels_from == "folders":
        if config.features_from:
            raise DataError(
                "--features-from jsonl reads labels from the JSONL too: use --labels-from jsonl"
            )
        docs = _folder_documents(sources, config)
    else:
        docs = _jsonl_documents(sources, config)
    if not docs:
        raise DataError("the corpus has no documents")
    if config.labels_from:
        _check_labels(docs, config.unlabelled_as)
    if config.features_from:
        sizes = Counter(len(d.features or ()) for d in docs)
        if len(sizes) > 1:
            first = next(d for d in docs if len(d.features or ()) != len(docs[0].features or ()))
            raise DataError(
                f"{first.source}: {len(first.features or ())} features where "
                f"{docs[0].source} has {len(docs[0].features or ())}: every vector must have "
                "the same length"
            )
    for d in docs:
        if not d.text.endswith("\n"):
            d.text += "\n"
    return docs


def _check_labels(docs: list[Document], unlabelled_as: str) -> None:
    unlabelled = [d for d in docs if d.label is None]
    if unlabelled and unlabelled_as:
        for d in unlabelled:
            d.label = unlabelled_as
    elif unlabelled and len(unlabelled) < len(docs):
        raise DataError(
            f"{unlabelled[0].source} has no label but other documents do"
            f"{f' (and {len(unlabelled) - 1} more)' if len(unlabelled) > 1 else ''}: "
            "label every document, or give --unlabelled-as NAME"
        )
    elif unlabelled:
        raise DataError(
            "no document has a label: --labels-from folders needs label sub-folders, "
            '--labels-from jsonl a "label" field'
        )
    for name in sorted({d.label for d in docs if d.label is not None}):
        try:
            check_label_name(name)
        except TokenizerError as exc:
            raise DataError(str(exc)) from None
    names = {d.label for d in docs}
    for d in docs:
        spelled = (m.group(1) for m in LABEL_IN_TEXT.finditer(d.text))
        name = next((n for n in spelled if n in names), None)
        if name is not None:
            token = label_token(name)
            raise DataError(
                f"{d.source}: the text spells out the label token {token!r}, which "
                "would collide with the label: rename the label or edit the text"
            )


# --- tokenizing ---------------------------------------------------------------------------------


def label_counts(docs: Sequence[Document]) -> dict[str, int]:
    return dict(sorted(Counter(d.label for d in docs if d.label is not None).items()))


def fit_document_tokenizer(docs: Sequence[Document], config: TrainConfig) -> Tokenizer:
    """The text tokenizer fitted on the documents, plus one special token per label."""
    tokenizer = fit_tokenizer(
        config.tokenizer,
        (d.text for d in docs),
        vocab_size=config.vocab_size,
        min_freq=config.min_freq,
        max_vocab=config.max_vocab,
    )
    return tokenizer.add_specials(label_token(name) for name in label_counts(docs))


def write_documents(
    docs: Sequence[Document], tokenizer: Tokenizer, out: Path, config: TrainConfig
) -> DocumentFile:
    """Tokenize ``docs`` into ``out`` (``[label token] + tokens`` each) with the record
    ``data.open_token_cache`` reads, and the starts and features beside it."""
    dtype = token_dtype(tokenizer.vocab_size)
    pieces, starts, pos = [], [], 0
    unseen: Counter[str] = Counter()
    for d in docs:
        head = [tokenizer.label_id(d.label)] if d.label is not None else []
        try:  # a list or, for char and byte text, an array: joined, never added
            body = _encode_chunk(tokenizer, d.text, "replace", unseen)
        except TokenizerError as exc:
            raise TokenizerError(f"{d.source}: {exc}") from None
        ids = np.concatenate([np.asarray(head, dtype=dtype), np.asarray(body, dtype=dtype)])
        starts.append(pos)
        pos += len(ids)
        pieces.append(ids)
    tokens = np.concatenate(pieces)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tokens.tofile(tmp)
    os.replace(tmp, out)
    chars = sum(len(d.text) for d in docs)
    nbytes = sum(len(d.text.encode("utf-8", errors="surrogatepass")) for d in docs)
    record = {
        "fingerprint": "documents",
        "chars": chars,
        "bytes": nbytes,
        "tokens": len(tokens),
        "dtype": dtype.name,
    }
    write_json_atomic(out.with_suffix(".json"), record)
    features = None
    if docs and docs[0].features is not None:
        features = np.asarray([d.features for d in docs], dtype=np.float32)  # (D, F)
    starts_arr = np.asarray(starts, dtype=np.int64)  # (D,)
    extra = (
        {"starts": starts_arr} if features is None else {"starts": starts_arr, "features": features}
    )
    with open(_docs_file(out), "wb") as f:
        np.savez(f, **extra)
    tf = open_token_cache(out, tokenizer)
    return DocumentFile(tf.tokens, tf.chars, tf.nbytes, starts_arr, features)


def _docs_file(out: Path) -> Path:
    return out.with_suffix(".docs.npz")


def open_documents(out: Path, tokenizer: Tokenizer) -> DocumentFile:
    """A split written by ``write_documents`` (for a run whose sources are gone)."""
    tf = open_token_cache(out, tokenizer)
    try:
        with np.load(_docs_file(out), allow_pickle=False) as z:
            starts = z["starts"]
            features = z["features"] if "features" in z.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read {_docs_file(out)}: {exc}") from None
    return DocumentFile(tf.tokens, tf.chars, tf.nbytes, starts, features)


def split_documents(docs: list[Document], fraction: float) -> tuple[list[Document], list[Document]]:
    """The last ``fraction`` of the documents held out (at least one, leaving one)."""
    if len(docs) < 2:
        raise DataError("a feature corpus needs at least 2 documents to hold one out (or --valid)")
    n_val = min(len(docs) - 1, max(1, round(len(docs) * fraction)))
    return docs[:-n_val], docs[-n_val:]


def prepare_documents(
    token_file: dict[str, Path],
    config: TrainConfig,
    paths: dict[str, Sequence[str | Path]],
    tokenizer: Tokenizer | None = None,
) -> tuple[Tokenizer, dict[str, TokenFile], dict[str, dict[str, int]]]:
    """Read, check and tokenize the splits of a document corpus.

    ``token_file`` maps each split name to its token cache path, ``paths`` to its sources.
    Returns the tokenizer (fitted on the training documents unless given: then a label it does
    not know is an error), the splits (``valid`` held out of train when not given) and each
    split's document count per label."""
    read = {name: read_documents(files, config) for name, files in paths.items() if files}
    random.Random(config.seed).shuffle(read["train"])
    if config.features_from and "valid" not in read:
        read["train"], read["valid"] = split_documents(read["train"], config.val_fraction)
    if tokenizer is None:
        tokenizer = fit_document_tokenizer(read["train"], config)
    splits: dict[str, TokenFile] = {}
    for name, docs in read.items():
        splits[name] = write_documents(docs, tokenizer, token_file[name], config)
    if "valid" not in splits:
        splits["train"], splits["valid"] = split_tail(splits["train"], config.val_fraction)
    counts = {name: label_counts(docs) for name, docs in read.items()}
    return tokenizer, splits, {k: v for k, v in counts.items() if v}
