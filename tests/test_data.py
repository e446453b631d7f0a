import json
import os
import warnings

import numpy as np
import pytest

from lstmgen.data import (
    batchify,
    get_window,
    iter_text,
    num_windows,
    resolve_sources,
    split_tail,
    tokenize_to_file,
)
from lstmgen.errors import DataError, TokenizerError
from lstmgen.tokenizers import CharTokenizer


def test_batchify_layout_is_b_contiguous_streams():
    tokens = np.arange(23)
    streams = batchify(tokens, 4)  # n = 5, the last 3 tokens are dropped
    assert streams.tolist() == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [10, 11, 12, 13, 14],
        [15, 16, 17, 18, 19],
    ]


def test_windows_continue_each_stream_and_cover_it_once():
    streams = batchify(np.arange(40), 2)  # rows 0..19 and 20..39
    seq = 6
    xs, ys = [], []
    for k in range(num_windows(streams, seq)):
        x, y = get_window(streams, k, seq)
        assert (y == x + 1).all()  # targets are the next tokens
        xs.append(x)
        ys.append(y)
    x_all, y_all = np.concatenate(xs, axis=1), np.concatenate(ys, axis=1)
    assert x_all[0].tolist() == list(range(0, 19))  # row 0 read in order, window after window
    assert y_all[1].tolist() == list(range(21, 40))


def test_batchify_too_little_text():
    with pytest.raises(DataError, match="too few"):
        batchify(np.arange(5), 4)


def test_resolve_sources_files_folders_globs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "a" / "sub" / "y.txt").write_text("y")
    (tmp_path / "a" / ".hidden").write_text("h")
    (tmp_path / "z.md").write_text("z")
    # sorted by path, hidden files skipped
    assert [p.name for p in resolve_sources([tmp_path / "a"])] == ["y.txt", "x.txt"]
    assert [p.name for p in resolve_sources([str(tmp_path / "**" / "*.txt")])] == ["y.txt", "x.txt"]
    assert [p.name for p in resolve_sources([tmp_path / "z.md"])] == ["z.md"]
    with pytest.raises(DataError, match="no such file"):
        resolve_sources([tmp_path / "missing.txt"])
    with pytest.raises(DataError, match="no files match"):
        resolve_sources([str(tmp_path / "*.csv")])


def test_invalid_utf8_names_file_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello\nworld \xff\xfe more\n")
    with pytest.raises(DataError, match=r"bad.txt is not valid UTF-8 \(byte offset 12\)"):
        list(iter_text(bad))
    assert "".join(iter_text(bad, errors="replace")) == "hello\nworld \ufffd\ufffd more\n"


def test_invalid_utf8_offset_across_read_blocks(tmp_path, monkeypatch):
    import lstmgen.data as data

    monkeypatch.setattr(data, "READ_BLOCK", 4)
    bad = tmp_path / "bad.txt"
    bad.write_bytes("ab€cd".encode() + b"\xc3(")
    with pytest.raises(DataError, match=r"byte offset 7"):
        list(iter_text(bad))
    ok = tmp_path / "ok.txt"
    ok.write_text("ab€c\n明月🦀\nx", encoding="utf-8")
    assert "".join(iter_text(ok)) == "ab€c\n明月🦀\nx"


def test_empty_binary_and_missing_files(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        list(iter_text(tmp_path / "empty.txt"))
    (tmp_path / "blob.bin").write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(DataError, match="binary"):
        list(iter_text(tmp_path / "blob.bin"))
    with pytest.raises(DataError, match="cannot read"):
        list(iter_text(tmp_path / "nope.txt"))


def test_token_cache_is_memmapped_and_reused(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("hello world\n" * 10)
    tok = CharTokenizer.fit(["hello world\n"])
    tf = tokenize_to_file([src], tok, tmp_path / "c" / "train.bin")
    assert isinstance(tf.tokens, np.memmap) and tf.tokens.dtype == np.uint16
    assert tok.decode(tf.tokens.tolist()) == "hello world\n" * 10
    assert tf.chars == 120 and tf.nbytes == 120
    mtime = (tmp_path / "c" / "train.bin").stat().st_mtime_ns
    tokenize_to_file([src], tok, tmp_path / "c" / "train.bin")
    assert (tmp_path / "c" / "train.bin").stat().st_mtime_ns == mtime  # cache hit


def test_tokenize_unknown_policy_names_file(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("abcz\n")
    tok = CharTokenizer.fit(["abc\n"])
    with pytest.raises(TokenizerError, match=r"t.txt: .*'z'"):
        tokenize_to_file([src], tok, tmp_path / "x.bin", unknown="error")
    assert not (tmp_path / "x.tmp").exists()


def test_split_tail_is_contiguous():
    from lstmgen.data import TokenFile

    tf = TokenFile(np.arange(100), 100, 100)
    train, valid = split_tail(tf, 0.1)
    assert train.tokens.tolist() == list(range(90)) and valid.tokens.tolist() == list(
        range(90, 100)
    )
    assert train.chars + valid.chars == 100


def _cached_corpus(tmp_path):
    """A 120-character corpus, its char tokenizer and its freshly written token cache."""
    src = tmp_path / "t.txt"
    src.write_text("hello world\n" * 10)
    tok = CharTokenizer.fit(["hello world\n"])
    out = tmp_path / "c" / "train.bin"
    tokenize_to_file([src], tok, out)
    return src, tok, out


def test_truncated_token_cache_is_rebuilt_not_trained_on(tmp_path):
    src, tok, out = _cached_corpus(tmp_path)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["tokens"] == 120 and record["dtype"] == "uint16"
    with open(out, "r+b") as f:
        f.truncate(100)  # 50 tokens
    with pytest.warns(UserWarning, match=r"train.bin is damaged \(100 bytes where its record"):
        tf = tokenize_to_file([src], tok, out)
    assert len(tf) == 120 and tok.decode(tf.tokens.tolist()) == "hello world\n" * 10
    # a cache from before token counts were recorded is rebuilt once, silently
    with open(out, "r+b") as f:
        f.truncate(100)
    del record["tokens"], record["dtype"]
    out.with_suffix(".json").write_text(json.dumps(record))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(tokenize_to_file([src], tok, out)) == 120
    # overwritten in place with ids the model has no embedding for (same size)
    out.write_bytes(b"\xff" * 240)
    with pytest.warns(UserWarning, match="holds token ids past the vocabulary of 9"):
        tf = tokenize_to_file([src], tok, out)
    assert tok.decode(tf.tokens.tolist()) == "hello world\n" * 10


def test_changed_corpus_is_retokenized_with_a_warning(tmp_path):
    src, tok, out = _cached_corpus(tmp_path)
    os.utime(src, ns=(0, 0))  # touched, same text: the same tokens, nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(tokenize_to_file([src], tok, out)) == 120
    src.write_text("hello world\n" * 11)
    with pytest.warns(UserWarning, match="the corpus changed since the run started"):
        assert len(tokenize_to_file([src], tok, out)) == 132


def test_validation_characters_outside_the_vocabulary_are_reported(tmp_path):
    src, val = tmp_path / "train.txt", tmp_path / "valid.txt"
    src.write_text("hello world\n" * 10)
    val.write_text("Zorro Zed\n")
    tok = CharTokenizer.fit(["hello world\n"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the training text itself: nothing to say
        tokenize_to_file([src], tok, tmp_path / "c" / "train.bin")
    message = rf"{val}: 2 characters outside the vocabulary are scored as ' ': 'Z' \(2\)"
    with pytest.warns(UserWarning, match=message):
        tf = tokenize_to_file([val], tok, tmp_path / "c" / "valid.bin")
    assert tok.decode(tf.tokens.tolist()) == " orro  ed\n"
