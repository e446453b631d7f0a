"""Corpus reading, train/validation splits, the memmapped token cache and TBPTT batching.

Text comes in as files, folders (recursive), globs or explicit split files. It is read in
line-aligned chunks, so neither tokenizer fitting nor tokenizing ever holds the whole corpus in
memory, and tokenized once into ``<run>/data/<split>.bin`` (a flat array of token ids that
training memory-maps).

Batching for truncated backpropagation through time (the classic PTB layout). The token stream
of N tokens is cut into B parallel streams, one per batch row, each contiguous::

    stream 0: t[0]      t[1]      ... t[n-1]           n = N // B
    stream 1: t[n]      t[n+1]    ... t[2n-1]
    ...
    stream B-1: t[(B-1)n] ...      t[Bn-1]

Window k takes columns [kT, kT+T) as input and [kT+1, kT+T+1) as target, so row b of window k+1
continues exactly where row b of window k stopped: the hidden state is carried from one window
to the next (detached) and each row reads its stream in order.
"""

from __future__ import annotations

import codecs
import filecmp
import glob
import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointError, DataError, TokenizerError
from .modeldir import read_json, write_json_atomic
from .tokenizers import CharTokenizer, Tokenizer, WordTokenizer

READ_BLOCK = 1 << 20  # bytes per read: memory stays bounded whatever the corpus size


def resolve_sources(sources: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (recursively: every regular non-hidden file) and globs, in order."""
    files: list[Path] = []
    for src in sources:
        src = str(src)
        if any(ch in src for ch in "*?["):
            matches = sorted(glob.glob(src, recursive=True))
            if not matches:
                raise DataError(f"no files match {src}")
            files += [Path(m) for m in matches if Path(m).is_file()]
        elif os.path.isdir(src):
            found = sorted(
                p
                for p in Path(src).rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(src).parts)
            )
            if not found:
                raise DataError(f"folder {src} has no files")
            files += found
        elif os.path.isfile(src):
            files.append(Path(src))
        elif os.path.exists(src):
            raise DataError(f"{src} is not a regular file")
        else:
            raise DataError(f"no such file or folder: {src}")
    if not files:
        raise DataError("no input files")
    return files


def iter_text(path: Path, errors: str = "strict") -> Iterator[str]:
    """Yield the text of ``path`` in chunks that end at line breaks (except the last).

    Invalid UTF-8 raises ``DataError`` naming the file and byte offset unless ``errors`` is
    ``"replace"``; a file with NUL bytes is refused as binary; an empty file is an error.
    """
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
        offset, carry, total = 0, "", 0
        while True:
            block = f.read(READ_BLOCK)
            if offset == 0 and block.startswith(codecs.BOM_UTF8):
                block, offset = block[3:], 3
            if b"\x00" in block:
                at = offset + block.index(b"\x00")
                raise DataError(f"{path} looks like a binary file (NUL byte at offset {at})")
            try:
                text = carry + decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                pending = len(decoder.getstate()[0])
                at = offset - pending + exc.start
                raise DataError(
                    f"{path} is not valid UTF-8 (byte offset {max(at, 0)});"
                    " use --encoding-errors replace to substitute bad bytes"
                ) from None
            total += len(block)
            offset += len(block)
            if not block:
                if text:
                    yield text
                break
            cut = text.rfind("\n") + 1
            if cut:
                yield text[:cut]
            carry = text[cut:]
        if total == 0 or offset == 0:
            raise DataError(f"{path} is empty")


def iter_corpus(paths: Sequence[Path], errors: str = "strict") -> Iterator[str]:
    for p in paths:
        yield from iter_text(p, errors)


def _encode_chunk(
    tokenizer: Tokenizer, text: str, unknown: str, unseen: Counter[str] | None = None
) -> list[int]:
    """Corpus text in the corpus convention (word level: <eos> ends every line). Characters a
    char vocabulary lacks and ``unknown="replace"`` replaces are counted into ``unseen``."""
    if isinstance(tokenizer, WordTokenizer):
        return tokenizer.encode_lines(text, unknown)
    if unseen is not None and unknown == "replace" and isinstance(tokenizer, CharTokenizer):
        try:
            return tokenizer.encode(text, unknown="error")  # the usual case, at no extra cost
        except TokenizerError:
            unseen.update(c for c in text if c not in tokenizer.index)
    return tokenizer.encode(text, unknown=unknown)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


@dataclass
class TokenFile:
    """A memmapped split: ``tokens`` (N,) and the number of characters it decodes to."""

    tokens: np.ndarray
    chars: int
    nbytes: int

    def __len__(self) -> int:
        return len(self.tokens)


def _fingerprint(paths: Sequence[Path], tokenizer: Tokenizer, errors: str, unknown: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(tokenizer.to_dict(), sort_keys=True).encode())
    h.update(f"{errors}|{unknown}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _cache_problem(out: Path, meta: dict, dtype: np.dtype, vocab_size: int) -> str | None:
    """Why a fingerprint-matching cache cannot be used as it is (None if it can): the JSON
    records the token count and dtype, so a truncated or swapped .bin is caught by its size,
    and ids past the vocabulary (a file overwritten in place) by one pass over them."""
    tokens, kind = meta.get("tokens"), meta.get("dtype")
    if not isinstance(tokens, int) or kind != dtype.name:
        return "it predates token counts" if tokens is None else "its record is corrupt"
    if not out.is_file():  # a FIFO would block the memmap below
        return "it is not a regular file"
    size = out.stat().st_size
    if size != tokens * dtype.itemsize:
        return f"{size:,} bytes where its record says {tokens:,} tokens of {dtype.name}"
    if size and int(np.memmap(out, dtype=dtype, mode="r").max()) >= vocab_size:
        return f"it holds token ids past the vocabulary of {vocab_size:,}"
    return None


def tokenize_to_file(
    paths: Sequence[Path],
    tokenizer: Tokenizer,
    out: Path,
    errors: str = "strict",
    unknown: str = "replace",
) -> TokenFile:
    """Tokenize ``paths`` chunk by chunk into ``out`` (flat ids) unless a matching cache exists.

    ``unknown`` is the policy for text outside the vocabulary (see ``Tokenizer.encode``). A
    cache whose size does not match its record is rebuilt (with a warning); a cache made from
    other text is rebuilt too, with a warning when the tokens differ, since a resumed run then
    no longer continues exactly where it stopped."""
    meta_path = out.with_suffix(".json")
    dtype = token_dtype(tokenizer.vocab_size)
    fp = _fingerprint(paths, tokenizer, errors, unknown)
    changed = False
    if out.exists() and meta_path.exists():
        try:
            meta = read_json(meta_path)  # bounded: a FIFO or /dev/zero is a broken record
            if meta.get("fingerprint") == fp:
                problem = _cache_problem(out, meta, dtype, tokenizer.vocab_size)
                if problem is None:
                    return _open_token_file(out, dtype, meta["chars"], meta["bytes"])
                if meta.get("tokens") is not None:
                    warnings.warn(f"{out} is damaged ({problem}): rebuilding it", stacklevel=2)
            else:
                changed = True
        except (OSError, ValueError, KeyError, AttributeError, CheckpointError):
            pass  # a broken record: rebuild the cache
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    chars = nbytes = 0
    unseen: Counter[str] = Counter()  # characters a char vocabulary lacks, replaced
    try:
        with open(tmp, "wb") as f:
            for path in paths:
                for chunk in iter_text(path, errors):
                    chars += len(chunk)
                    nbytes += len(chunk.encode("utf-8", errors="surrogatepass"))
                    try:
                        ids = _encode_chunk(tokenizer, chunk, unknown, unseen)
                    except TokenizerError as exc:
                        raise TokenizerError(f"{path}: {exc}") from None
                    np.asarray(ids, dtype=dtype).tofile(f)
            f.flush()
            os.fsync(f.fileno())
        if unseen:
            source = f"{paths[0]}" + (f" (and {len(paths) - 1} more)" if len(paths) > 1 else "")
            shown = ", ".join(f"{c!r} ({n})" for c, n in unseen.most_common(5))
            n = sum(unseen.values())
            what = "1 character" if n == 1 else f"{n:,} characters"
            verb = "is" if n == 1 else "are"
            more = ", ..." if len(unseen) > 5 else ""
            warnings.warn(
                f"{source}: {what} outside the vocabulary {verb} scored as "
                f"{tokenizer.replacement!r}: {shown}{more}",
                stacklevel=2,
            )
        if changed and not filecmp.cmp(tmp, out, shallow=False):
            warnings.warn(
                f"the corpus changed since the run started: {out} was tokenized again from the"
                " new text (a resumed run will not continue exactly where it stopped)",
                stacklevel=2,
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tokens = tmp.stat().st_size // dtype.itemsize
    os.replace(tmp, out)
    record = {
        "fingerprint": fp,
        "chars": chars,
        "bytes": nbytes,
        "tokens": tokens,
        "dtype": dtype.name,
    }
    write_json_atomic(meta_path, record)  # renamed over: never written into a planted FIFO
    return _open_token_file(out, dtype, chars, nbytes)


def _open_token_file(path: Path, dtype: np.dtype, chars: int, nbytes: int) -> TokenFile:
    if path.stat().st_size == 0:
        raise DataError(f"{path} holds no tokens")
    return TokenFile(np.memmap(path, dtype=dtype, mode="r"), chars, nbytes)


def split_tail(tf: TokenFile, fraction: float) -> tuple[TokenFile, TokenFile]:
    """Contiguous split: the last ``fraction`` of tokens is validation (chars pro rata)."""
    n = len(tf)
    n_val = max(1, int(n * fraction))
    if n - n_val < 2:
        raise DataError(f"corpus has only {n} tokens: too few to hold out a validation part")
    cut = n - n_val
    share = cut / n
    train = TokenFile(tf.tokens[:cut], round(tf.chars * share), round(tf.nbytes * share))
    valid = TokenFile(tf.tokens[cut:], tf.chars - train.chars, tf.nbytes - train.nbytes)
    return train, valid


def batchify(tokens: np.ndarray, batch_size: int) -> np.ndarray:
    """(N,) -> (B, N // B): B contiguous streams (see the module docstring). A view, no copy."""
    n = len(tokens) // batch_size
    if n < 2:
        raise DataError(
            f"{len(tokens)} tokens are too few for batch size {batch_size}:"
            " use a smaller --batch-size or more text"
        )
    return tokens[: n * batch_size].reshape(batch_size, n)


def num_windows(streams: np.ndarray, seq_len: int) -> int:
    """Windows per pass over (B, n) streams: every column but the last is an input once."""
    return -(-(streams.shape[1] - 1) // seq_len)


def get_window(streams: np.ndarray, k: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Window k of (B, n) streams: inputs (B, T') and targets (B, T'), T' <= seq_len."""
    start = k * seq_len
    end = min(start + seq_len, streams.shape[1] - 1)
    x = np.asarray(streams[:, start:end], dtype=np.int64)  # (B, T')
    y = np.asarray(streams[:, start + 1 : end + 1], dtype=np.int64)  # (B, T')
    return x, y
