"""Corpus reading, train/validation splits, the memmapped token cache and TBPTT batching.

Text comes in as files, folders (recursive), globs or explicit split files. It is read in
blocks of ``READ_BLOCK`` bytes, re-cut where the tokenizer allows (``Tokenizer.safe_cut``: after
a line break for words, before a space for BPE, anywhere for characters and bytes), so neither
tokenizer fitting nor tokenizing ever holds the whole corpus in memory and the tokens are those
of the whole text whatever the block size; it is tokenized once into
``<run>/data/<split>.bin`` (a flat array of token ids that training memory-maps). Files are
decoded with the run's ``encoding`` (UTF-8 by default) and line endings are normalised on
reading (``\r\n`` and a lone ``\r`` become ``\n``, as Python's universal newlines do) unless
``keep_line_endings``: a corpus saved on Windows should not teach the model a ``\r`` before
every line break.

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
import contextlib
import errno
import filecmp
import glob
import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, DataError, TokenizerError
from .files import read_json, write_json_atomic
from .tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    unseen_words_message,
)

READ_BLOCK = 1 << 20  # bytes per read: memory stays bounded whatever the corpus size


def resolve_sources(sources: Sequence[str | Path], encoding: str = "utf-8") -> list[Path]:
    """Expand files, folders (recursively: every regular non-hidden file) and globs, in order.

    Binary files (images, archives) found in a folder or by a glob are skipped with one warning
    that lists them; a binary file named on its own is read, and refused, like any other."""
    files: list[Path] = []
    binary: list[Path] = []
    for src in sources:
        src = str(src)
        if any(ch in src for ch in "*?["):
            matches = sorted(glob.glob(src, recursive=True))
            if not matches:
                raise DataError(f"no files match {src}")
            found = [Path(m) for m in matches if Path(m).is_file()]
        elif os.path.isdir(src):
            found = sorted(
                p
                for p in Path(src).rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(src).parts)
            )
            if not found:
                raise DataError(f"folder {src} has no files")
        elif os.path.isfile(src):
            files.append(Path(src))
            continue
        elif os.path.exists(src):
            raise DataError(f"{src} is not a regular file")
        else:
            raise DataError(f"no such file or folder: {src}")
        skipped = {p for p in found if looks_binary(p, encoding)}
        binary += [p for p in found if p in skipped]  # in order
        files += [p for p in found if p not in skipped]
    if binary:
        shown = ", ".join(str(p) for p in binary[:3])
        more = f" and {len(binary) - 3} more" if len(binary) > 3 else ""
        if not files:
            raise DataError(f"no text files to read: every file found is binary ({shown}{more})")
        warnings.warn(
            f"skipped {len(binary)} binary file{'s' if len(binary) > 1 else ''}: {shown}{more}",
            stacklevel=2,
        )
    if not files:
        raise DataError("no input files")
    return files


SNIFF_BYTES = 8000  # how much of a file decides "binary": git's rule (a NUL in the first 8000)


def _ascii_compatible(encoding: str) -> bool:
    """Whether NUL bytes mean binary in this encoding (they do not in UTF-16 or UTF-32)."""
    return "a\n".encode(encoding) == b"a\n"


def looks_binary(path: Path, encoding: str = "utf-8") -> bool:
    """A NUL byte in the first ``SNIFF_BYTES``, in an ASCII-compatible ``encoding``."""
    try:
        if not _ascii_compatible(text_encoding(encoding)):
            return False
        with open(path, "rb") as f:
            return b"\x00" in f.read(SNIFF_BYTES)
    except (OSError, DataError):
        return False  # reading it later reports the problem


def text_encoding(name: str) -> str:
    """The canonical name of a text encoding (``latin-1`` -> ``iso8859-1``); ``DataError`` if
    Python has no such text codec (``base64`` is a codec, but not one for text)."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        info = None
    if info is None or not getattr(info, "_is_text_encoding", True):
        raise DataError(
            f"unknown text encoding {name!r} (for example utf-8, latin-1, cp1252, utf-16)"
        )
    return info.name


def line_cut(text: str) -> int:
    """Where line-aligned text may be cut: after its last line break (0: nowhere)."""
    return text.rfind("\n") + 1


def iter_text(
    path: Path,
    errors: str = "strict",
    encoding: str = "utf-8",
    keep_line_endings: bool = False,
    cut: Callable[[str], int] = line_cut,
) -> Iterator[str]:
    """Yield the text of ``path`` in chunks of about ``READ_BLOCK`` bytes that end where
    ``cut`` allows (by default at line breaks; the last chunk ends where the file does).

    ``cut(text)`` is the last index at which ``text`` may be split so that tokenizing the two
    parts gives the tokens of the whole (``Tokenizer.safe_cut``); 0 means nowhere, and the text
    is then held until a later block allows a cut. It may look one character left of a block.
    Text that is not valid in ``encoding`` raises ``DataError`` naming the file and byte offset
    unless ``errors`` is ``"replace"``; a file with NUL bytes is refused as binary (in an
    ASCII-compatible encoding); an empty file is an error. ``\r\n`` and lone ``\r`` become
    ``\n`` unless ``keep_line_endings``; offsets in errors count the file's bytes either way.
    """
    return _aligned(_decoded(path, errors, encoding, keep_line_endings), cut)


def _aligned(pieces: Iterator[str], cut: Callable[[str], int]) -> Iterator[str]:
    """``pieces`` re-cut where ``cut`` allows. Text with no cut is kept as a list of pieces
    (joined once), so a long stretch without one costs linear, not quadratic, time."""
    held: list[str] = []
    last = ""  # the character before ``piece``: the one character of context ``cut`` may use
    for piece in pieces:
        at = cut(last + piece) - len(last)
        if at > 0 or (at == 0 and held):
            chunk = "".join(held) + piece[:at]
            if chunk:
                yield chunk
            held = [piece[at:]] if at < len(piece) else []
        else:
            held.append(piece)
        last = piece[-1:] or last
    if held:
        yield "".join(held)


def _decoded(path: Path, errors: str, encoding: str, keep_line_endings: bool) -> Iterator[str]:
    """The decoded, newline-normalised text of ``path`` in pieces of up to ``READ_BLOCK`` bytes
    of the file, cut anywhere (a character split across reads is completed by the incremental
    decoder, a ``\r`` ending a read waits for the next one's ``\n``). See ``iter_text``."""
    codec = text_encoding(encoding)
    shown = "UTF-8" if codec == "utf-8" else encoding
    nul_is_binary = _ascii_compatible(codec)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        decoder = codecs.getincrementaldecoder(codec)(errors=errors)
        offset, hold, total = 0, "", 0
        while True:
            # The first read takes at least the 3 bytes of a UTF-8 byte-order mark.
            block = f.read(READ_BLOCK if offset else max(READ_BLOCK, 3))
            eof = not block  # (not ``block`` itself: a first read may be just the mark)
            if offset == 0 and codec == "utf-8" and block.startswith(codecs.BOM_UTF8):
                block, offset = block[3:], 3
            if nul_is_binary and b"\x00" in block:
                at = offset + block.index(b"\x00")
                raise DataError(f"{path} looks like a binary file (NUL byte at offset {at})")
            try:
                text = hold + decoder.decode(block, final=eof)
            except UnicodeDecodeError as exc:
                pending = len(decoder.getstate()[0])
                at = offset - pending + exc.start
                raise DataError(
                    f"{path} is not valid {shown} (byte offset {max(at, 0)});"
                    " use --encoding-errors replace to substitute bad bytes, or --encoding to"
                    " name the file's encoding"
                ) from None
            total += len(block)
            offset += len(block)
            hold = ""
            if not keep_line_endings and "\r" in text:  # the test is 4x cheaper than replace
                if not eof and text.endswith("\r"):  # its \n may open the next block
                    text, hold = text[:-1], "\r"
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            if text:
                yield text
            if eof:
                break
        if total == 0 or offset == 0:
            raise DataError(f"{path} is empty")


def iter_corpus(
    paths: Sequence[Path],
    errors: str = "strict",
    encoding: str = "utf-8",
    keep_line_endings: bool = False,
    cut: Callable[[str], int] = line_cut,
) -> Iterator[str]:
    """The chunks of every file in turn (``iter_text``); no chunk spans two files."""
    for p in paths:
        yield from iter_text(p, errors, encoding, keep_line_endings, cut)


def _encode_chunk(
    tokenizer: Tokenizer, text: str, unknown: str, unseen: Counter[str] | None = None
) -> list[int] | np.ndarray:
    """Corpus text in the corpus convention (word level: <eos> ends every line). Characters a
    char vocabulary lacks and ``unknown="replace"`` replaces, and words a word vocabulary lacks
    and scores as ``<unk>`` (or drops), are counted into ``unseen``."""
    if isinstance(tokenizer, WordTokenizer):
        return tokenizer.encode_lines(text, unknown, unseen)
    if isinstance(tokenizer, ByteTokenizer):  # the same ids, without a list of ints
        return np.frombuffer(text.encode("utf-8", errors="surrogatepass"), dtype=np.uint8)
    if isinstance(tokenizer, CharTokenizer):
        ids = tokenizer.encode_array(text)
        if ids is not None:
            return ids
    if unseen is not None and unknown == "replace" and isinstance(tokenizer, CharTokenizer):
        try:
            return tokenizer.encode(text, unknown="error")  # the usual case, at no extra cost
        except TokenizerError:
            unseen.update(c for c in text if c not in tokenizer.index)
    return tokenizer.encode(text, unknown=unknown)


def _unseen_warning(
    source: str, tokenizer: Tokenizer, unseen: Counter[str], unknown: str, words: int
) -> str:
    """``t.txt: 3 of 1,200 words were not in the vocabulary and were scored as <unk>: ...``"""
    if isinstance(tokenizer, WordTokenizer):
        return f"{source}: {unseen_words_message(unseen, words, unknown)}"
    shown = ", ".join(f"{c!r} ({n})" for c, n in unseen.most_common(5))
    n = sum(unseen.values())
    what = "1 character" if n == 1 else f"{n:,} characters"
    verb = "is" if n == 1 else "are"
    more = ", ..." if len(unseen) > 5 else ""
    replacement = getattr(tokenizer, "replacement", "")
    return (
        f"{source}: {what} outside the vocabulary {verb} scored as {replacement!r}: {shown}{more}"
    )


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


def _fingerprint(
    paths: Sequence[Path],
    tokenizer: Tokenizer,
    errors: str,
    unknown: str,
    encoding: str = "utf-8",
    keep_line_endings: bool = False,
) -> str:
    """Everything the tokens depend on: a cache is never reused across encodings or line-ending
    rules (the same files then make other text)."""
    h = hashlib.sha256()
    h.update(json.dumps(tokenizer.to_dict(), sort_keys=True).encode())
    h.update(f"{errors}|{unknown}|{text_encoding(encoding)}|{keep_line_endings}".encode())
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
    if size and _max_token(out, dtype) >= vocab_size:
        return f"it holds token ids past the vocabulary of {vocab_size:,}"
    return None


def _max_token(path: Path, dtype: np.dtype) -> int:
    """The largest id in a token file, read in 16 MB pieces: a memmap's pages would count in
    the process's resident memory, up to the whole file, while the check runs."""
    top = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):  # a multiple of every token size
            top = max(top, int(np.frombuffer(block, dtype=dtype).max()))
    return top


def tokenize_to_file(
    paths: Sequence[Path],
    tokenizer: Tokenizer,
    out: Path,
    errors: str = "strict",
    unknown: str = "replace",
    encoding: str = "utf-8",
    keep_line_endings: bool = False,
    report_unseen: bool = True,
) -> TokenFile:
    """Tokenize ``paths`` chunk by chunk into ``out`` (flat ids) unless a matching cache exists.

    ``unknown`` is the policy for text outside the vocabulary (see ``Tokenizer.encode``); what
    it replaced or dropped is summed up in one warning (unless not ``report_unseen``: a word
    vocabulary's own training text, whose rare words are ``<unk>`` by design). ``encoding`` and
    ``keep_line_endings`` are how the files are read (see ``iter_text``). A cache whose size
    does not match its record is rebuilt (with a warning); a cache made from other text is
    rebuilt too, with a warning when the tokens differ, since a resumed run then no longer
    continues exactly where it stopped. A write that fails (a full disk) is a ``DataError``
    naming the file and the cause."""
    meta_path = out.with_suffix(".json")
    dtype = token_dtype(tokenizer.vocab_size)
    fp = _fingerprint(paths, tokenizer, errors, unknown, encoding, keep_line_endings)
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
    chars = nbytes = words = 0
    unseen: Counter[str] = Counter()  # characters or words outside the vocabulary
    eos = tokenizer.index[tokenizer.EOS] if isinstance(tokenizer, WordTokenizer) else -1
    try:
        with _writing(out):
            f = open(tmp, "wb")
        with f:
            for path in paths:
                chunks = iter_text(path, errors, encoding, keep_line_endings, tokenizer.safe_cut)
                for chunk in chunks:
                    chars += len(chunk)
                    nbytes += len(chunk.encode("utf-8", errors="surrogatepass"))
                    try:
                        ids = _encode_chunk(tokenizer, chunk, unknown, unseen)
                    except TokenizerError as exc:
                        raise TokenizerError(f"{path}: {exc}") from None
                    if eos >= 0:
                        words += len(ids) - ids.count(eos)
                    with _writing(out):
                        np.asarray(ids, dtype=dtype).tofile(f)
            with _writing(out):
                f.flush()
                os.fsync(f.fileno())
        if unseen and report_unseen:
            source = f"{paths[0]}" + (f" (and {len(paths) - 1} more)" if len(paths) > 1 else "")
            warnings.warn(_unseen_warning(source, tokenizer, unseen, unknown, words), stacklevel=2)
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
    with _writing(meta_path):
        write_json_atomic(meta_path, record)  # renamed over: never written into a planted FIFO
    return _open_token_file(out, dtype, chars, nbytes)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a failed write into a ``DataError`` that names ``path`` and the cause. NumPy's
    ``tofile`` reports a full disk as a bare short write (``1003836 requested and 524288
    written``, no errno), which on a local file system means no space was left."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            cause = "no space left on device"
        elif exc.errno is None and "requested and" in str(exc):
            cause = f"no space left on device ({exc})"
        else:
            cause = exc.strerror or str(exc)
        raise DataError(f"cannot write the token cache {path}: {cause}") from None


def open_token_cache(out: Path, tokenizer: Tokenizer) -> TokenFile:
    """The tokens already in ``out`` (written by ``tokenize_to_file``), whatever text they came
    from: for a run whose sources are gone. ``DataError`` when the cache is missing or does not
    match its record."""
    dtype = token_dtype(tokenizer.vocab_size)
    try:
        meta = read_json(out.with_suffix(".json"))
        problem = _cache_problem(out, meta, dtype, tokenizer.vocab_size)
        chars, nbytes = meta["chars"], meta["bytes"]
    except (OSError, ValueError, KeyError, AttributeError, TypeError, CheckpointError):
        problem = "it is missing or has no valid record"
    if problem is not None:
        raise DataError(f"cannot use the token cache {out}: {problem}")
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


def get_window(streams: Any, k: int, seq_len: int) -> tuple[Any, Any]:
    """Window k of (B, n) streams: int64 inputs (B, T') and targets (B, T'), T' <= seq_len.

    ``streams`` is a NumPy array (the memmap) or a torch tensor on any device (the trainer's
    GPU-resident copy, training/windows.py); the window is of the same kind, sliced where the
    streams live."""
    start = k * seq_len
    end = min(start + seq_len, streams.shape[1] - 1)
    x, y = streams[:, start:end], streams[:, start + 1 : end + 1]  # (B, T') each
    if isinstance(streams, np.ndarray):
        return np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
    return x.long(), y.long()  # a tensor: no torch import needed here


def eval_window(
    tokens: np.ndarray, pieces: list[tuple[int, int, int]], bos: int, t: int, T: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns [t, t + T) of evaluation pieces ``(read_from, score_from, end)`` laid side by
    side (``evaluate._layout``): inputs (B, T), targets (B, T) and which targets count (B, T),
    zero past a piece's end. Only these columns are read from ``tokens`` (the memmap), so a
    split of any size is scored in the memory of one window (both evaluators use it)."""
    B = len(pieces)
    x = np.zeros((B, T), dtype=np.int64)  # input i predicts target i
    y = np.zeros((B, T), dtype=np.int64)
    scored = np.zeros((B, T), dtype=bool)
    for b, (read, score, end) in enumerate(pieces):
        lo, hi = read + t, min(read + t + T, end)  # positions of the bos-prefixed stream
        if lo >= hi:
            continue
        y[b, : hi - lo] = tokens[lo:hi]
        if lo == 0:  # the first token is predicted from bos
            x[b, 0] = bos
            x[b, 1 : hi - lo] = tokens[: hi - 1]
        else:
            x[b, : hi - lo] = tokens[lo - 1 : hi - 1]
        scored[b, max(score, lo) - lo : hi - lo] = True
    return x, y, scored
