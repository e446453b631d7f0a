"""Corpora read in blocks: the tokens and the vocabulary never depend on the block size.

Every test reads the same file with ``READ_BLOCK`` shrunk to a few bytes (so blocks split
UTF-8 and UTF-16 characters, CRLF pairs, words and BPE pre-tokens) and compares it with the
whole text read at once."""

import numpy as np
import pytest

import lstmgen.data as data
from lstmgen.data import iter_corpus, iter_text, tokenize_to_file
from lstmgen.tokenizers import fit_tokenizer, safe_cut_for

# Line breaks of every kind, indentation after a line break ("\n  x": one BPE pre-token "\n "),
# trailing spaces before a line break, runs of spaces and tabs, contractions, digits, blank
# lines, multi-byte characters (2, 3 and 4 bytes in UTF-8; a surrogate pair in UTF-16).
TEXT = (
    "First Citizen:\r\nBefore we proceed any further, hear me speak.  \r\n"
    "\r\n  All:\tSpeak, speak.\n\n\n    it's 1234 o'clock \r"
    "Ünïcödé wörds — 世界 你好 😀🎉 end.\r\r\n"
    "   \n  x  y   z\nlast line without a break"
)
LATIN = "Café crème, naïve façade.\r\n  Über straße \n\n ß ø å « no »\r\nend"
KINDS = ["char", "byte", "word", "bpe"]


def _write(tmp_path, text, encoding):
    path = tmp_path / f"corpus.{encoding}.txt"
    path.write_bytes(text.encode(encoding))
    return path


def _normalised(text):
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _fit(kind, path, encoding):
    chunks = iter_corpus([path], encoding=encoding, cut=safe_cut_for(kind))
    return fit_tokenizer(kind, chunks, vocab_size=300, min_freq=1)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-bom", "utf-16", "latin-1"])
def test_text_read_in_tiny_blocks_is_the_whole_text(tmp_path, monkeypatch, encoding):
    text = LATIN if encoding == "latin-1" else TEXT
    if encoding == "utf-8-bom":
        path = tmp_path / "bom.txt"
        path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # a 1-byte block splits it
        encoding = "utf-8"
    else:
        path = _write(tmp_path, text, encoding)
    for block in (1, 2, 3, 5):
        monkeypatch.setattr(data, "READ_BLOCK", block)
        for kind in KINDS:
            chunks = list(iter_text(path, encoding=encoding, cut=safe_cut_for(kind)))
            assert "".join(chunks) == _normalised(text), (block, kind)
        assert all(c.endswith("\n") for c in list(iter_text(path, encoding=encoding))[:-1])


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "latin-1"])
@pytest.mark.parametrize("kind", KINDS)
def test_tiny_blocks_give_the_whole_texts_tokens_and_vocabulary(
    tmp_path, monkeypatch, kind, encoding
):
    text = LATIN if encoding == "latin-1" else TEXT
    path = _write(tmp_path, text, encoding)
    monkeypatch.setattr(data, "READ_BLOCK", 1 << 20)  # the whole file in one block
    whole_tok = _fit(kind, path, encoding)
    whole = tokenize_to_file([path], whole_tok, tmp_path / "whole.bin", encoding=encoding)
    expected = (
        whole_tok.encode_lines(_normalised(text))
        if kind == "word"
        else whole_tok.encode(_normalised(text))
    )
    assert list(whole.tokens) == expected
    for block in (1, 2, 3, 7):
        monkeypatch.setattr(data, "READ_BLOCK", block)
        tok = _fit(kind, path, encoding)
        assert tok.to_dict() == whole_tok.to_dict(), (block, "vocabulary")
        out = tmp_path / f"b{block}.bin"
        tf = tokenize_to_file([path], tok, out, encoding=encoding)
        assert np.array_equal(np.asarray(tf.tokens), np.asarray(whole.tokens)), block
        assert (tf.chars, tf.nbytes) == (whole.chars, whole.nbytes)
        assert out.read_bytes() == (tmp_path / "whole.bin").read_bytes()


def test_bpe_cut_is_never_after_a_line_break_before_spaces():
    cut = safe_cut_for("bpe")
    assert cut("ab\n  x") == 2  # before "\n", not after it
    assert cut("a  \n") == 1  # the whitespace run stays whole
    assert cut("   ") == 0  # no cut: the text waits for the next block
    assert cut("x y") == 1


def test_a_long_line_is_read_in_blocks_for_char_and_byte(tmp_path, monkeypatch):
    """Without line breaks, char and byte text is still cut at every block (bounded memory);
    word text is not (a line is its unit)."""
    path = tmp_path / "one-line.txt"
    path.write_text("abcdefghij" * 20)
    monkeypatch.setattr(data, "READ_BLOCK", 16)
    for kind in ("char", "byte"):
        chunks = list(iter_text(path, cut=safe_cut_for(kind)))
        assert max(map(len, chunks)) <= 16 and len(chunks) > 10
    assert len(list(iter_text(path, cut=safe_cut_for("word")))) == 1
