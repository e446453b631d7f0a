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


def _tiny_model():
    import torch

    from lstmgen import LanguageModel, ModelConfig
    from lstmgen.tokenizers import CharTokenizer

    torch.manual_seed(0)
    tok = CharTokenizer.fit(["abcdefgh \n"])
    cfg = ModelConfig(vocab_size=tok.vocab_size, embedding_size=8, hidden_size=8, num_layers=1)
    return LanguageModel(cfg, tok).double().eval(), tok


def _whole_array_loss(model, tokens, batch_size, seq_len, warmup):
    """The evaluation as it was: every piece laid out in full (B, W) arrays first."""
    import torch
    import torch.nn.functional as F

    from lstmgen.evaluate import _layout

    tokens = np.asarray(tokens, dtype=np.int64)
    inputs = np.concatenate([[model.tokenizer.bos_id], tokens[:-1]])
    pieces = _layout(len(tokens), batch_size, warmup)
    width = max(end - read for read, _, end in pieces)
    x = np.zeros((len(pieces), width), dtype=np.int64)
    y, scored = np.zeros_like(x), np.zeros(x.shape, dtype=bool)
    for b, (read, score, end) in enumerate(pieces):
        x[b, : end - read], y[b, : end - read] = inputs[read:end], tokens[read:end]
        scored[b, score - read : end - read] = True
    total, state = 0.0, None
    with torch.no_grad():
        for t in range(0, width, seq_len):
            logits, state = model(torch.from_numpy(x[:, t : t + seq_len]), state)
            nll = F.cross_entropy(
                logits.transpose(1, 2), torch.from_numpy(y[:, t : t + seq_len]), reduction="none"
            )
            total += (nll * torch.from_numpy(scored[:, t : t + seq_len])).sum().item()
    return total / len(tokens)


@pytest.mark.parametrize("n,B,T,warmup", [(997, 7, 50, 20), (600, 1, 64, 0), (300, 16, 37, 8)])
def test_evaluation_read_window_by_window_scores_as_the_whole_arrays(n, B, T, warmup):
    from lstmgen.data import TokenFile
    from lstmgen.evaluate import evaluate_tokens

    model, tok = _tiny_model()
    tokens = np.random.default_rng(n).integers(0, tok.vocab_size, n).astype(np.uint16)
    result = evaluate_tokens(model, TokenFile(tokens, n, n), batch_size=B, seq_len=T, warmup=warmup)
    assert result.loss == pytest.approx(_whole_array_loss(model, tokens, B, T, warmup), rel=1e-12)


def test_evaluation_memory_does_not_grow_with_the_split(tmp_path):
    """A full validation pass over a memmapped split allocates one window, not the split:
    100,000 tokens made 3 MB of int64 arrays before."""
    import tracemalloc

    from lstmgen.data import TokenFile
    from lstmgen.evaluate import evaluate_tokens

    model, tok = _tiny_model()
    path = tmp_path / "valid.bin"
    rng = np.random.default_rng(0)
    rng.integers(0, tok.vocab_size, 100_000).astype(np.uint16).tofile(path)
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    tracemalloc.start()
    try:
        evaluate_tokens(model, TokenFile(tokens, len(tokens), len(tokens)), 16, 256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak


def test_streams_reach_the_device_in_pieces(monkeypatch):
    """The GPU-resident copy of the training streams is made a block of columns at a time
    (here on CPU, the path's slicing): the same windows, never a whole host copy."""
    import torch

    import lstmgen.training.windows as windows
    from lstmgen.data import batchify, get_window

    tokens = np.arange(1000, dtype=np.uint16)
    streams = batchify(tokens, 4)  # (4, 250)
    monkeypatch.setattr(windows, "COPY_BYTES", 4 * 4 * 7)  # 7 columns a piece
    w = windows.Windows(streams, 16, torch.device("cpu"), resident=True)
    assert torch.equal(w.on_device, torch.from_numpy(streams.astype(np.int32)))
    for k in (0, 3, 15):
        x, y = w(k)
        ex, ey = get_window(streams, k, 16)
        assert np.array_equal(x.numpy(), ex) and np.array_equal(y.numpy(), ey)


def test_damaged_cache_check_reads_in_pieces(tmp_path):
    from lstmgen.data import _max_token

    path = tmp_path / "t.bin"
    ids = np.zeros((1 << 23) + 5, dtype=np.uint16)  # more than one 16 MB piece
    ids[-1] = 70
    ids.tofile(path)
    assert _max_token(path, np.dtype(np.uint16)) == 70


def test_char_table_lookup_is_encode():
    from lstmgen.tokenizers import CharTokenizer

    tok = CharTokenizer.fit([TEXT])
    text = _normalised(TEXT)
    assert tok.encode_array(text).tolist() == tok.encode(text)
    assert tok.encode_array(text + "Q") is None  # unseen: encode's policy decides
    assert tok.encode_array(text + "\U0010ffff") is None  # past the table


def _big_corpus_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "big_corpus.py"
    spec = importlib.util.spec_from_file_location("big_corpus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_big_corpus_is_shuffled_whole_lines_of_the_sources(tmp_path):
    bench = _big_corpus_module()
    for i, name in enumerate(bench.SOURCES):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("".join(f"line {i}.{k}\n" for k in range(50)))
    out = tmp_path / "big.txt"
    size = bench.make_corpus(out, 0.02, data=tmp_path)
    lines = out.read_text().splitlines()
    assert size >= 0.02 * (1 << 20) and size == out.stat().st_size
    assert set(lines) == {f"line {i}.{k}" for i in range(3) for k in range(50)}
    assert lines[:150] != sorted(lines[:150])  # shuffled


@pytest.mark.slow
def test_big_corpus_benchmark_end_to_end(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "big_corpus.py"
    env = {**os.environ, "LSTMGEN_RESULTS_DIR": str(tmp_path)}
    cmd = [sys.executable, str(script), "--size-mb", "0.5", "--hidden", "8", "--steps", "2"]
    cmd += ["--bpe-vocab", "300", "--tmp", str(tmp_path), "--name", "big"]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    r = json.loads((tmp_path / "big.json").read_text())
    assert set(r["tokenize"]) == {"char", "byte", "word", "bpe"}
    assert r["train"]["steps"] == 2 and r["under_floor"]
    assert [p.name for p in tmp_path.iterdir()] == ["big.json"]  # the corpus is gone


def test_long_bpe_text_encoded_in_pieces_is_the_whole_encoding(monkeypatch):
    from lstmgen.tokenizers import BPETokenizer

    text = _normalised(TEXT) * 40 + "没有空格的一长段中文" * 30 + _normalised(TEXT)
    tok = BPETokenizer.fit([text], vocab_size=300)
    assert len(text) > 2 * tok.PIECE
    assert tok.encode(text) == tok.hf.encode(text).ids
    monkeypatch.setattr(BPETokenizer, "PIECE", 7)  # pieces of a few characters, and no cut
    assert tok.encode(text) == tok.hf.encode(text).ids


def test_numpy_reference_evaluation_reads_windows_and_matches_pytorch():
    from lstmgen.data import TokenFile
    from lstmgen.evaluate import evaluate_tokens
    from lstmgen.reference.model import LanguageModel as NumpyModel
    from lstmgen.reference.train import evaluate

    model, tok = _tiny_model()
    params = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    ref = NumpyModel(model.config, params, tok)
    tokens = np.random.default_rng(5).integers(0, tok.vocab_size, 997).astype(np.uint16)
    tf = TokenFile(tokens, 997, 997)
    expected = evaluate_tokens(model, tf, batch_size=7, seq_len=50, warmup=20).loss
    assert evaluate(ref, tf, batch_size=7, seq_len=50, warmup=20)["val_loss"] == pytest.approx(
        expected, rel=1e-9
    )
