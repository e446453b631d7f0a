"""Char, byte, word and BPE tokenizers behind one interface, saved as JSON.

Every tokenizer maps text to ids (``encode``) and back (``decode``), learns its vocabulary from an
iterable of text chunks (``fit``), and decodes a stream of ids incrementally without ever
emitting half a character (``stream_decoder``). ``save``/``load`` use one JSON file whose
``type`` field picks the class.

>>> tok = CharTokenizer.fit(["hello 世界"])
>>> tok.decode(tok.encode("世界 hello"))
'世界 hello'
"""

from __future__ import annotations

import codecs
import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import TokenizerError
from .files import MAX_TOKENIZER_BYTES, read_json, write_json_atomic

UNKNOWN_POLICIES = ("error", "drop", "replace")


class UnknownLabelError(TokenizerError):
    """A label the model has no token for."""


class UnknownTextError(TokenizerError):
    """Text outside the vocabulary. The message advises the CLI's ``--unknown``; a caller with
    another spelling of that option (the server's request field) words it with ``advise``."""

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(self.advise("--unknown drop or --unknown replace"))

    def advise(self, option: str) -> str:
        return f"{self.problem}; use {option}"


class StreamDecoder:
    """Turns ids into text one at a time; holds back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def step(self, token_id: int) -> str:
        return self._utf8.decode(self._tok.token_bytes(token_id))

    def steps(self, token_ids: Sequence[int]) -> str:
        """``step`` for several ids at once (one table lookup per id, no method call: a batch of
        1024 samples decodes ~1,000 ids per block)."""
        return self._utf8.decode(b"".join(map(self._tok.bytes_table().__getitem__, token_ids)))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


SPECIAL_PREFIX, SPECIAL_SUFFIX = "<|", "|>"
LABEL_PREFIX = "label:"
# A label name: what may follow ``<|label:``. No whitespace, ``|``, ``<`` or ``>``, so that the
# token reads back unambiguously and a word vocabulary could never hold it as one word.
LABEL_CHARS = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def label_token(name: str) -> str:
    """``comedy`` -> ``<|label:comedy|>``, the special token that starts a document of it."""
    return f"{SPECIAL_PREFIX}{LABEL_PREFIX}{name}{SPECIAL_SUFFIX}"


def check_label_name(name: str) -> None:
    if not isinstance(name, str) or not LABEL_CHARS.fullmatch(name):
        raise TokenizerError(
            f"invalid label name {name!r}: use 1-64 letters, digits, '_', '-' or '.'"
        )


class Tokenizer:
    """The interface. Subclasses define ``token_bytes`` and the vocabulary.

    Special tokens (``specials``, e.g. ``<|label:comedy|>``) take the ids after the text
    vocabulary: ``text_vocab_size + i``. No text ever encodes to one (``encode`` only knows the
    text vocabulary, so the literal string ``<|label:comedy|>`` in a prompt is ordinary
    characters), and ``decode`` renders them as nothing: they steer the model, they are not
    text. A tokenizer saved without specials writes no ``specials`` key, so model directories
    from before them read and write back byte for byte."""

    kind = ""
    specials: tuple[str, ...] = ()

    @property
    def text_vocab_size(self) -> int:
        """Ids below this are text; the specials follow."""
        return self.vocab_size - len(self.specials)

    def special_id(self, token: str) -> int:
        """The id of special token ``token``; ``TokenizerError`` if there is none."""
        try:
            return self.text_vocab_size + self.specials.index(token)
        except ValueError:
            raise TokenizerError(f"the tokenizer has no special token {token!r}") from None

    @property
    def labels(self) -> list[str]:
        """The label names this tokenizer has a ``<|label:NAME|>`` token for, in id order."""
        head, tail = SPECIAL_PREFIX + LABEL_PREFIX, SPECIAL_SUFFIX
        return [t[len(head) : -len(tail)] for t in self.specials if t.startswith(head)]

    def label_id(self, name: str) -> int:
        """The id of label ``name``'s token; an unknown label is one ``TokenizerError`` that
        lists the known ones."""
        known = self.labels
        if name not in known:
            if not known:
                raise UnknownLabelError(f"unknown label {name!r}: this model has no labels")
            raise UnknownLabelError(f"unknown label {name!r}: known labels are {', '.join(known)}")
        return self.special_id(label_token(name))

    def add_specials(self, tokens: Iterable[str]) -> Tokenizer:
        """Append special tokens (new ones only, in order) after the vocabulary; returns self."""
        new = [t for t in dict.fromkeys(tokens) if t not in self.specials]
        _check_specials([*self.specials, *new])
        self.specials = (*self.specials, *new)
        return self

    def _specials_dict(self) -> dict[str, Any]:
        return {"specials": list(self.specials)} if self.specials else {}

    def _read_specials(self, data: dict[str, Any]) -> Tokenizer:
        """Set the specials of a tokenizer ``from_dict`` made; returns self."""
        if "specials" in data:
            specials = _strings(data, "specials", self.kind)
            if not specials:
                raise _malformed(self.kind, "specials is empty (leave the key out)")
            try:
                _check_specials(specials)
            except TokenizerError as exc:
                raise _malformed(self.kind, str(exc)) from None
            self.specials = tuple(specials)
        return self

    def _special_bytes(self, token_id: int) -> bytes:
        """A special token decodes to nothing (``IndexError`` past the vocabulary)."""
        if token_id - self.text_vocab_size < len(self.specials) and token_id >= 0:
            return b""
        raise IndexError(f"token id {token_id} is past the vocabulary")

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        """Text -> ids. ``unknown`` says what to do with text outside the vocabulary."""
        raise NotImplementedError

    def covers(self, text: str) -> bool:
        """Whether ``text`` encodes without anything unseen (dropped or replaced)."""
        try:
            self.encode(text, unknown="error")
        except UnknownTextError:
            return False
        return True

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes one id stands for (possibly part of a character)."""
        raise NotImplementedError

    def bytes_table(self) -> list[bytes]:
        """``token_bytes`` of every id, indexed by id: what ``StreamDecoder.steps`` looks ids up
        in. Kept until the vocabulary size changes (``add_specials``); nothing else changes a
        vocabulary after it is built."""
        cached = self.__dict__.get("_bytes_table")
        if cached is None or len(cached) != self.vocab_size:
            cached = [self.token_bytes(i) for i in range(self.vocab_size)]
            self.__dict__["_bytes_table"] = cached
        return cached

    @staticmethod
    def safe_cut(text: str) -> int:
        """The last index at which ``text`` may be cut so that the two parts tokenize (and fit)
        as the whole does; 0 when there is none. Corpora are read in blocks cut there
        (``data.iter_text``), so their tokens never depend on the block size. It may look at
        ``text[i - 1]``, never further left. By default: after the last line break."""
        return text.rfind("\n") + 1

    def decode_rows(self, rows: Any) -> list[str] | None:
        """Each row of ``rows`` (B, N), a NumPy integer array of ids, as the text a
        ``stream_decoder`` gives for them pushed at once and flushed; None where that decoder is
        not the plain UTF-8 stream (the word tokenizer's depends on the text it continues:
        ``textstream.whole_texts`` decodes those row by row). The ids of all rows are looked up
        at once in NumPy and each row's bytes decoded in one call: ~5x faster than a Python
        lookup per id, which took longer than the decoding for 1024 samples of a small model."""
        if type(self).stream_decoder is not Tokenizer.stream_decoder:
            return None
        import numpy as np

        table = self.bytes_table()
        if all(len(b) == 1 for b in table):  # byte and ASCII char vocabularies: a byte per id
            data = np.frombuffer(b"".join(table), dtype=np.uint8)[rows]  # (B, N)
            return [row.tobytes().decode("utf-8", errors="replace") for row in data]
        pieces = np.array(table, dtype=object)[rows]  # (B, N) bytes objects
        return [b"".join(row).decode("utf-8", errors="replace") for row in pieces]

    def decode(self, ids: Iterable[int]) -> str:
        stream = self.stream_decoder()
        return "".join(stream.step(int(i)) for i in ids) + stream.flush()

    def stream_decoder(self, after: str = "") -> StreamDecoder:
        """A decoder for text that continues ``after`` (a prompt; only word models need it)."""
        return StreamDecoder(self)

    @property
    def bos_id(self) -> int:
        """The id fed before the first token (a line break where the vocabulary has one)."""
        ids = self.encode("\n", unknown="drop")
        return ids[0] if ids else 0

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, {"type": self.kind, **self.to_dict()})


def _check_policy(unknown: str) -> None:
    if unknown not in UNKNOWN_POLICIES:
        raise TokenizerError(f"unknown-text policy must be one of {UNKNOWN_POLICIES}")


def _unseen(kind: str, items: Iterable[str], limit: int = 10) -> UnknownTextError:
    """``text has 2 characters the model never saw: 'K' (3 times), 'Z'; use ...``"""
    counts = Counter(items)
    listed = [repr(c) + (f" ({n} times)" if n > 1 else "") for c, n in sorted(counts.items())]
    shown = ", ".join(listed[:limit])
    if len(listed) > limit:
        shown += f" and {len(listed) - limit} more"
    plural = "" if len(counts) == 1 else "s"
    return UnknownTextError(f"text has {len(counts)} {kind}{plural} the model never saw: {shown}")


def unseen_words_message(unseen: Counter[str], words: int, unknown: str = "replace") -> str:
    """``3 of 1,200 words were not in the vocabulary and were scored as <unk>: 'zed' (2), ...``"""
    n = sum(unseen.values())
    shown = ", ".join(repr(w) + (f" ({k})" if k > 1 else "") for w, k in unseen.most_common(5))
    more = ", ..." if len(unseen) > 5 else ""
    verb = "was" if n == 1 else "were"
    done = "dropped" if unknown == "drop" else f"scored as {WordTokenizer.UNK}"
    return (
        f"{n:,} of {words:,} word{'' if words == 1 else 's'} {verb} not in the vocabulary and "
        f"{verb} {done}: {shown}{more}"
    )


def unknown_policy(tokenizer: Tokenizer, unknown: str | None, prompts: Sequence[str] = ()) -> str:
    """The policy for text outside the vocabulary when the user chose ``unknown`` (None: the
    default). By default a word vocabulary maps unseen words to ``<unk>``, as PTB and WikiText
    score held-out text (every ordinary text has words a corpus lacks), and warns once about
    the words of ``prompts`` it replaced; other vocabularies refuse unseen characters."""
    if unknown is not None:
        _check_policy(unknown)
        return unknown
    if not (isinstance(tokenizer, WordTokenizer) and tokenizer.UNK in tokenizer.index):
        return "error"
    unseen: Counter[str] = Counter()
    words = 0
    for p in prompts:
        prompt_words = p.split()
        unseen.update(w for w in prompt_words if w not in tokenizer.index)
        words += len(prompt_words)
    if unseen:
        warnings.warn(f"prompt: {unseen_words_message(unseen, words)}", stacklevel=2)
    return "replace"


class CharTokenizer(Tokenizer):
    """One token per Unicode code point seen in training (CJK and emoji are single tokens)."""

    kind = "char"

    def __init__(self, chars: list[str], replacement: str | None = None):
        if not chars:
            raise TokenizerError("char tokenizer needs at least one character")
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}
        if len(self.index) != len(self.chars):
            raise TokenizerError("char tokenizer vocabulary has duplicate characters")
        # What ``unknown="replace"`` substitutes: a space if there is one, else the first char.
        self.replacement = (
            replacement
            if replacement in self.index
            else (" " if " " in self.index else self.chars[0])
        )

    @classmethod
    def fit(cls, texts: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for chunk in texts:
            seen.update(chunk)
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + len(self.specials)

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        _check_policy(unknown)
        index = self.index
        try:
            return [index[c] for c in text]
        except KeyError:
            pass
        if unknown == "error":
            raise _unseen("character", (c for c in text if c not in index))
        if unknown == "drop":
            return [index[c] for c in text if c in index]
        fill = index[self.replacement]
        return [index.get(c, fill) for c in text]

    def encode_array(self, text: str) -> Any:
        """``encode(text)`` as a NumPy int64 array, or None when ``text`` has a character
        outside the vocabulary (``encode`` then applies its policy). A table lookup over the
        code points: ~10x faster than the dict for the megabytes of a corpus block."""
        import numpy as np

        if getattr(self, "_table", None) is None:
            codes = [ord(c) for c in self.chars]
            table = np.full(max(codes) + 2, -1, dtype=np.int64)  # the last entry: "too big"
            table[codes] = np.arange(len(codes))
            self._table = table
        table = self._table
        codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
        ids = table[np.minimum(codes, len(table) - 1)]  # (N,)
        return None if (ids < 0).any() else ids

    def token_bytes(self, token_id: int) -> bytes:
        if token_id >= len(self.chars):
            return self._special_bytes(token_id)
        return self.chars[token_id].encode("utf-8", errors="surrogatepass")

    @staticmethod
    def safe_cut(text: str) -> int:
        return len(text)  # one token per character: anywhere

    def to_dict(self) -> dict[str, Any]:
        return {"chars": self.chars, "replacement": self.replacement, **self._specials_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        _check_keys(data, {"chars", "replacement"}, "char")
        chars = _strings(data, "chars", "char")
        long = next((c for c in chars if len(c) != 1), None)
        if long is not None:
            raise _malformed("char", f"chars must be single characters, got {long!r}")
        if len(set(chars)) != len(chars):
            raise _malformed("char", "duplicate characters")
        replacement = data.get("replacement")
        if replacement is not None and replacement not in chars:
            raise _malformed("char", f"replacement must be one of its chars, got {replacement!r}")
        return cls(chars, replacement)._read_specials(data)  # type: ignore[return-value]


class ByteTokenizer(Tokenizer):
    """The 256 UTF-8 byte values: nothing is ever out of vocabulary."""

    kind = "byte"

    @classmethod
    def fit(cls, texts: Iterable[str]) -> ByteTokenizer:
        return cls()

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.specials)

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        _check_policy(unknown)
        return list(text.encode("utf-8", errors="surrogatepass"))

    def token_bytes(self, token_id: int) -> bytes:
        if token_id >= 256:
            return self._special_bytes(token_id)
        return bytes((token_id,))

    @staticmethod
    def safe_cut(text: str) -> int:
        return len(text)  # the bytes of each character: anywhere between characters

    def to_dict(self) -> dict[str, Any]:
        return self._specials_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ByteTokenizer:
        _check_keys(data, set(), "byte")
        return cls()._read_specials(data)  # type: ignore[return-value]


class WordTokenizer(Tokenizer):
    """Whitespace words with ``<eos>`` at each line end and ``<unk>`` for rare words.

    This is the convention of the PTB/WikiText benchmarks (``line.split() + ['<eos>']``), so on
    those corpora it reproduces the published vocabulary sizes and token counts exactly.
    """

    kind = "word"
    EOS = "<eos>"
    UNK = "<unk>"

    def __init__(self, words: list[str]):
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        for special in (self.EOS, self.UNK):
            if special not in self.index:
                raise TokenizerError(f"word vocabulary lacks {special}")

    @classmethod
    def fit(cls, texts: Iterable[str], min_freq: int = 1, max_vocab: int = 0) -> WordTokenizer:
        counts: Counter[str] = Counter()
        for chunk in texts:
            counts.update(chunk.split())  # the words of its lines, in order: one call a block
        # One <eos> per line; it and <unk> are always in the vocabulary.
        words = [
            w for w, n in counts.most_common() if n >= min_freq and w not in (cls.EOS, cls.UNK)
        ]
        if max_vocab:
            words = words[: max(0, max_vocab - 2)]
        return cls([cls.EOS, cls.UNK, *words])

    @property
    def vocab_size(self) -> int:
        return len(self.words) + len(self.specials)

    def encode_lines(
        self, text: str, unknown: str = "replace", unseen: Counter[str] | None = None
    ) -> list[int]:
        """Every line (``\\n``-terminated or not) becomes its words plus ``<eos>``. Words outside
        the vocabulary that ``unknown`` replaces or drops are counted into ``unseen``."""
        _check_policy(unknown)
        lines = text.split("\n")
        if lines and lines[-1] == "":  # a trailing newline ends the last line, not a new one
            lines.pop()
        ids: list[int] = []
        index, unk, eos = self.index, self.index[self.UNK], self.index[self.EOS]
        for line in lines:
            for w in line.split():
                i = index.get(w)
                if i is None:
                    if unknown == "error":
                        raise _unseen("word", (x for x in text.split() if x not in index))
                    if unseen is not None:
                        unseen[w] += 1
                    if unknown == "drop":
                        continue
                    i = unk
                ids.append(i)
            ids.append(eos)
        return ids

    # safe_cut: the default, after a line break (every line, cut or not, gets its <eos>).

    def encode(self, text: str, unknown: str = "replace") -> list[int]:
        """Words of ``text``; ``<eos>`` only where a line actually ends (for prompts)."""
        ids = self.encode_lines(text, unknown)
        if not text.endswith("\n") and ids:
            ids.pop()
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        if token_id >= len(self.words):
            return self._special_bytes(token_id)
        w = self.words[token_id]
        return b"\n" if w == self.EOS else w.encode("utf-8")

    def stream_decoder(self, after: str = "") -> WordStreamDecoder:
        return WordStreamDecoder(self, after)

    @property
    def bos_id(self) -> int:
        return self.index[self.EOS]

    def to_dict(self) -> dict[str, Any]:
        return {"words": self.words, **self._specials_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        _check_keys(data, {"words"}, "word")
        words = _strings(data, "words", "word")
        bad = next((w for w in words if w.split() != [w]), None)
        if bad is not None:  # encoding splits on whitespace: such a word could never be produced
            raise _malformed("word", f"words must be non-empty, without whitespace, got {bad!r}")
        if len(set(words)) != len(words):
            raise _malformed("word", "duplicate words")
        return cls(words)._read_specials(data)  # type: ignore[return-value]


class WordStreamDecoder(StreamDecoder):
    """Words joined by single spaces, ``<eos>`` as a bare line break. Words carry no spaces of
    their own, so the space goes before a word that does not start a line, including the first
    one when ``after`` (the prompt it continues) ends mid-line. No text is ever held back."""

    def __init__(self, tokenizer: WordTokenizer, after: str = ""):
        self._words = tokenizer.words
        self._eos = tokenizer.index[tokenizer.EOS]
        self._line_start = not after or after[-1].isspace()

    def step(self, token_id: int) -> str:
        if token_id >= len(self._words):  # a special token: no text, and no space either
            return ""
        if token_id == self._eos:
            self._line_start = True
            return "\n"
        space = "" if self._line_start else " "
        self._line_start = False
        return space + self._words[token_id]

    def steps(self, token_ids: Sequence[int]) -> str:
        return "".join(map(self.step, token_ids))

    def flush(self) -> str:
        return ""


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte, as Hugging Face's ByteLevel uses: char -> byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[chr(b)] = b
        else:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping


class BPETokenizer(Tokenizer):
    """Byte-level BPE trained with Hugging Face ``tokenizers``: never out of vocabulary."""

    kind = "bpe"

    def __init__(self, hf_json: str):
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self.hf = HFTokenizer.from_str(hf_json)
        except Exception as exc:  # the library raises plain Exceptions on bad JSON
            raise TokenizerError(f"cannot read BPE tokenizer: {exc}") from None
        self.hf_json = hf_json
        alphabet = _byte_level_alphabet()
        vocab = self.hf.get_vocab()
        if sorted(vocab.values()) != list(range(len(vocab))):  # a hand-edited tokenizer.json
            raise TokenizerError("BPE tokenizer ids must be 0..N-1, each used once")
        self._bytes = [b""] * len(vocab)
        for token, i in vocab.items():
            self._bytes[i] = bytes(alphabet[c] for c in token if c in alphabet)

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int = 8000) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator((p for t in texts for p in cls._pieces(t)), trainer=trainer)
        return cls(hf.to_str())

    @property
    def vocab_size(self) -> int:
        return len(self._bytes) + len(self.specials)

    PIECE = 2048  # characters per piece of a long text encoded as a batch

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        _check_policy(unknown)
        if len(text) <= 2 * self.PIECE:
            return self.hf.encode(text).ids
        encodings = self.hf.encode_batch(self._pieces(text))
        return [i for e in encodings for i in e.ids]

    @classmethod
    def _pieces(cls, text: str) -> list[str]:
        """``text`` cut at ``safe_cut`` into pieces of about ``PIECE`` characters. Hugging Face
        slows down on long inputs (encoding: 0.2 MB/s at 300 kB, 1.8 MB/s at 3 kB); pieces
        tokenize and train to the same result, 2.5x faster, in parallel where cores allow."""
        pieces, start = [], 0
        while len(text) - start > cls.PIECE:
            at = cls.safe_cut(text[start : start + cls.PIECE])
            if not at:  # no space in a whole piece: the rest in one
                break
            pieces.append(text[start : start + at])
            start += at
        pieces.append(text[start:])
        return pieces

    def token_bytes(self, token_id: int) -> bytes:
        if token_id >= len(self._bytes):
            return self._special_bytes(token_id)
        return self._bytes[token_id]

    @staticmethod
    def safe_cut(text: str) -> int:
        """Before a space or line break that follows a non-space. Merges never cross the
        ByteLevel pre-tokens (GPT-2's pattern: ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+|
        ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``), and no pre-token runs from a non-space into
        the whitespace after it, so one always starts there. A cut after a line break would
        not do: ``"\\n  x"`` is ``"\\n "``, ``" x"`` whole but ``"\\n"``, ``" "``, ``" x"`` cut.
        Python's ``isspace`` covers every character the pattern's ``\\s`` does."""
        i = len(text)
        while True:
            i = max(text.rfind(" ", 0, i), text.rfind("\n", 0, i))
            if i <= 0:
                return 0
            if not text[i - 1].isspace():
                return i

    def to_dict(self) -> dict[str, Any]:
        return {"hf": json.loads(self.hf_json), **self._specials_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BPETokenizer:
        _check_keys(data, {"hf"}, "bpe")
        if not isinstance(data.get("hf"), dict):
            raise _malformed("bpe", "hf must be a Hugging Face tokenizer (an object)")
        return cls(json.dumps(data["hf"]))._read_specials(data)  # type: ignore[return-value]


TOKENIZER_CLASSES: dict[str, type[Tokenizer]] = {
    c.kind: c for c in (CharTokenizer, ByteTokenizer, WordTokenizer, BPETokenizer)
}


def _malformed(kind: str, detail: str) -> TokenizerError:
    return TokenizerError(f"malformed {kind} tokenizer: {detail}")


def _check_keys(data: dict[str, Any], allowed: set[str], kind: str) -> None:
    unknown = sorted(set(data) - allowed - {"type", "specials"})
    if unknown:
        raise _malformed(kind, f"unknown key(s) {', '.join(unknown)}")


def _check_specials(tokens: Sequence[str]) -> None:
    if len(set(tokens)) != len(tokens):
        raise TokenizerError("duplicate special tokens")
    for t in tokens:
        inner = t[len(SPECIAL_PREFIX) : -len(SPECIAL_SUFFIX)]
        if not (t.startswith(SPECIAL_PREFIX) and t.endswith(SPECIAL_SUFFIX)) or not inner:
            raise TokenizerError(f"special tokens look like <|name|>, got {t!r}")
        if inner.startswith(LABEL_PREFIX):
            check_label_name(inner[len(LABEL_PREFIX) :])


def _strings(data: dict[str, Any], key: str, kind: str) -> list[str]:
    """``data[key]``, which must be a list of strings (a tokenizer.json read back)."""
    values = data.get(key)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        shown = "missing" if values is None else f"a {type(values).__name__}"
        if isinstance(values, list):
            shown = f"holding {next(v for v in values if not isinstance(v, str))!r}"
        raise _malformed(kind, f"{key} must be a list of strings, {shown}")
    return values


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    kind = data.get("type") if isinstance(data, dict) else None
    cls = TOKENIZER_CLASSES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise TokenizerError(f"unknown tokenizer type {kind!r}")
    try:
        return cls.from_dict(data)  # type: ignore[attr-defined]
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenizerError(f"malformed {kind} tokenizer: {exc}") from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    try:
        return tokenizer_from_dict(read_json(path, MAX_TOKENIZER_BYTES))
    except TokenizerError as exc:
        raise TokenizerError(f"{path}: {exc}") from None


def safe_cut_for(kind: str) -> Callable[[str], int]:
    """``safe_cut`` of the tokenizer ``kind`` (line breaks for a kind not known here), for
    reading the text its vocabulary is fitted on before the tokenizer exists."""
    cls = TOKENIZER_CLASSES.get(kind, Tokenizer)
    return cls.safe_cut


def fit_tokenizer(kind: str, texts: Iterable[str], **options: Any) -> Tokenizer:
    """Learn a tokenizer of ``kind`` from text chunks. Options: vocab_size, min_freq, max_vocab."""
    if kind == "char":
        return CharTokenizer.fit(texts)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "word":
        return WordTokenizer.fit(texts, options.get("min_freq", 1), options.get("max_vocab", 0))
    if kind == "bpe":
        return BPETokenizer.fit(texts, options.get("vocab_size", 8000))
    raise TokenizerError(f"unknown tokenizer {kind!r}")


def extend_tokenizer(base: Tokenizer, texts: Iterable[str], **options: Any) -> Tokenizer:
    """``base``'s vocabulary, in its order, plus what ``texts`` has that it lacks (fine-tuning,
    training.finetune). Ids of the base never move, so its embedding rows keep their meaning.

    - byte and BPE: ``base`` itself (``texts`` is not read). Both are byte-level: any text
      encodes (a BPE vocabulary's 256 byte tokens cover what its merges do not), so nothing is
      ever added.
    - char: the unseen characters, sorted, after the base's.
    - word: the unseen words, most frequent first, with ``min_freq``; the whole vocabulary at
      most ``max_vocab`` words (0 = no limit; a base already that large gains none).

    >>> extend_tokenizer(CharTokenizer(["a", "b"]), ["abc"]).chars
    ['a', 'b', 'c']
    """
    if isinstance(base, CharTokenizer):
        seen = CharTokenizer.fit(texts).chars
        new = [c for c in seen if c not in base.index]
        return CharTokenizer(base.chars + new, base.replacement)
    if isinstance(base, WordTokenizer):
        fitted = WordTokenizer.fit(texts, options.get("min_freq", 1))
        new = [w for w in fitted.words if w not in base.index]
        limit = options.get("max_vocab", 0)
        if limit:
            new = new[: max(0, limit - len(base.words))]
        return WordTokenizer(base.words + new)
    return base
