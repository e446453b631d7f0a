"""Corpora as people have them: moved after training, folders with a few binary files, Latin-1
and other encodings, Windows line endings, held-out text with unseen words, a full disk."""

import json
import shutil
import warnings

import numpy as np
import pytest

import lstmgen.data as data
from conftest import tiny_train_args
from lstmgen.config import TrainConfig
from lstmgen.data import iter_text, resolve_sources, tokenize_to_file
from lstmgen.errors import ConfigError, DataError
from lstmgen.tokenizers import CharTokenizer, WordTokenizer

TEXT = "the cat sat on the mat\nthe dog sat on the log\n" * 12  # 552 characters


def one_line_error(r, needle):
    assert r.code == 1 and r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    assert r.err.startswith("error: ") and needle in r.err, r.err


# --- 1. a run whose corpus moved ---------------------------------------------------------------


def test_resume_and_eval_split_after_the_corpus_moved(tmp_path, run_cli):
    src, run = tmp_path / "corpus" / "t.txt", tmp_path / "run"
    src.parent.mkdir()
    src.write_text(TEXT)
    r = run_cli("train", src, "-o", run, "-q", *tiny_train_args(max_steps=2, batch_size=2))
    assert r.code == 0, r.err
    before = run_cli("eval", run, "--split", "valid", "--json")
    shutil.move(src.parent, tmp_path / "elsewhere")
    after = run_cli("eval", run, "--split", "valid", "--json")
    assert after.code == 0, after.err
    assert json.loads(after.out) == json.loads(before.out)  # the same tokens, from the cache
    assert after.err.count("warning: the corpus is gone") == 1 and "t.txt" in after.err
    r = run_cli("train", "--resume", run, "--max-steps", "4", "-q")
    assert r.code == 0 and "no longer exists" in r.err, r.err
    assert "step 4" in r.err
    # Without the cache there is nothing left to read: one line saying so.
    (run / "data" / "train.bin").unlink()
    one_line_error(run_cli("eval", run, "--split", "valid"), "cannot use the token cache")


# --- 2. folders with binary files ---------------------------------------------------------------


def test_folders_and_globs_skip_binary_files_with_one_warning(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("hello\n")
    for name in ("b.png", "c.zip", "d.jpg", "e.gz", "f.pdf"):
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.warns(UserWarning) as caught:
        assert resolve_sources([folder]) == [folder / "a.txt"]
    assert [str(w.message) for w in caught] == [
        f"skipped 5 binary files: {folder / 'b.png'}, {folder / 'c.zip'}, {folder / 'd.jpg'}"
        " and 2 more"
    ]
    with pytest.warns(UserWarning, match=r"skipped 1 binary file: .*c\.zip$"):
        assert resolve_sources([str(folder / "[ac].*")]) == [folder / "a.txt"]
    # Named on its own, a binary file is still an error; so is a folder with nothing else.
    assert resolve_sources([folder / "b.png"]) == [folder / "b.png"]
    with pytest.raises(DataError, match="b.png looks like a binary file"):
        list(iter_text(folder / "b.png"))
    (folder / "a.txt").unlink()
    with pytest.raises(DataError, match=r"every file found is binary \(.*b.png, .* and 2 more\)"):
        resolve_sources([folder])


def test_a_folder_with_binary_files_trains(tmp_path, run_cli):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "t.txt").write_text(TEXT)
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(300))
    run = tmp_path / "run"
    r = run_cli("train", folder, "-o", run, "-q", *tiny_train_args(max_steps=1, batch_size=2))
    assert r.code == 0, r.err
    assert f"warning: skipped 1 binary file: {folder / 'photo.jpg'}" in r.err
    sources = json.loads((run / "train_config.json").read_text())["sources"]["train"]
    assert [s.rsplit("/", 1)[1] for s in sources] == ["t.txt"]


# --- 3. encodings -----------------------------------------------------------------------------


def test_latin1_and_other_encodings(tmp_path, monkeypatch):
    latin = tmp_path / "l.txt"
    latin.write_bytes("café déjà vu\nnaïve\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"l.txt is not valid UTF-8 \(byte offset 3\).*--encoding"):
        list(iter_text(latin))
    assert "".join(iter_text(latin, encoding="latin-1")) == "café déjà vu\nnaïve\n"
    # UTF-16 has NUL bytes in every ASCII character: not a sign of a binary file there.
    wide = tmp_path / "w.txt"
    wide.write_bytes("明月 moon\n".encode("utf-16"))
    assert "".join(iter_text(wide, encoding="utf-16")) == "明月 moon\n"
    assert resolve_sources([tmp_path], encoding="utf-16")[-1] == wide
    # Offsets in decode errors count the file's bytes in any encoding, across read blocks.
    monkeypatch.setattr(data, "READ_BLOCK", 4)
    cp = tmp_path / "cp.txt"
    cp.write_bytes(b"ab\r\ncd\x81e")  # 0x81 has no character in cp1252
    with pytest.raises(DataError, match=r"cp.txt is not valid cp1252 \(byte offset 6\)"):
        list(iter_text(cp, encoding="cp1252"))
    with pytest.raises(DataError, match="unknown text encoding 'klingon'"):
        list(iter_text(latin, encoding="klingon"))
    with pytest.raises(ConfigError, match="unknown text encoding 'base64'"):
        TrainConfig(encoding="base64").validate()


def test_encoding_is_saved_with_the_run_and_used_by_eval(tmp_path, run_cli):
    src = tmp_path / "l.txt"
    src.write_bytes(("café au lait\n" * 40).encode("latin-1"))
    run = tmp_path / "run"
    args = [src, "-o", run, "-q", *tiny_train_args(max_steps=1, batch_size=2)]
    one_line_error(run_cli("train", *args, "--encoding", "klingon"), "unknown text encoding")
    assert not run.exists()
    r = run_cli("train", *args, "--encoding", "latin-1")
    assert r.code == 0, r.err
    assert json.loads((run / "train_config.json").read_text())["encoding"] == "latin-1"
    assert "é" in json.loads((run / "tokenizer.json").read_text())["chars"]
    assert run_cli("eval", run, "--split", "valid").code == 0
    assert run_cli("eval", run, src).code == 0  # the run's encoding by default
    utf8 = tmp_path / "u.txt"
    utf8.write_text("café au lait\n" * 4, encoding="utf-8")
    assert run_cli("eval", run, utf8, "--encoding", "utf-8").code == 0
    one_line_error(run_cli("eval", run, utf8, "--encoding", "nope"), "unknown text encoding")


# --- 4. unseen words --------------------------------------------------------------------------


def test_word_models_score_unseen_words_as_unk(tmp_path, run_cli):
    src, held, run = tmp_path / "t.txt", tmp_path / "held.txt", tmp_path / "run"
    src.write_text(TEXT)
    held.write_text("the cat sat on the zebra\nthe yak sat\n")
    train = ["train", src, "-o", run, "-q", "--tokenizer", "word"]
    assert run_cli(*train, *tiny_train_args(max_steps=1, batch_size=2)).code == 0
    r = run_cli("eval", run, held, "--json")
    assert r.code == 0, r.err
    assert (
        "warning: " + f"{held}: 2 of 9 words were not in the vocabulary and were scored as <unk>:"
        " 'zebra', 'yak'" in r.err.splitlines()
    )
    assert json.loads(r.out)["tokens"] == 11  # 9 words and 2 <eos>
    # Asked for explicitly, the old refusal is still there; it speaks of words.
    one_line_error(run_cli("eval", run, held, "--unknown", "error"), "2 words the model never saw")
    r = run_cli("generate", run, "--prompt", "the zebra", "--max-new-tokens", "3", "--seed", "1")
    assert r.code == 0, r.err
    assert r.out.startswith("the <unk>")  # echoed as the model saw it (#10)
    assert "warning: prompt: 1 of 2 words was not in the vocabulary and was scored as <unk>: " in (
        r.err
    )
    assert "Characters (words, for word models)" in run_cli("generate", "--help").out


def test_char_models_still_refuse_unseen_characters_by_default(tmp_path):
    from lstmgen.tokenizers import unknown_policy

    char, word = CharTokenizer.fit(["abc"]), WordTokenizer.fit(["a b c\n"])
    assert unknown_policy(char, None, ["xyz"]) == "error"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert unknown_policy(word, None, ["a b c"]) == "replace"  # nothing unseen: no warning
        assert unknown_policy(word, "error", ["zzz"]) == "error"


# --- 5. line endings --------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 2, 3, 1 << 20])
def test_crlf_and_cr_become_newlines_across_read_blocks(tmp_path, monkeypatch, block):
    monkeypatch.setattr(data, "READ_BLOCK", block)
    f = tmp_path / "win.txt"
    f.write_bytes(b"ab\r\ncd\re\r\n\r\nf\r")
    assert "".join(iter_text(f)) == "ab\ncd\ne\n\nf\n"
    assert "".join(iter_text(f, keep_line_endings=True)) == "ab\r\ncd\re\r\n\r\nf\r"
    # Chunks still end at line breaks, and error offsets still count the file's bytes.
    assert all(c.endswith("\n") for c in list(iter_text(f))[:-1])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a\r\nb\r\n\xff")
    with pytest.raises(DataError, match=r"byte offset 6\)"):
        list(iter_text(bad))


def test_line_endings_option_is_part_of_the_cache_fingerprint(tmp_path):
    f = tmp_path / "win.txt"
    f.write_bytes(b"ab\r\n" * 20)
    tok = CharTokenizer.fit(["ab\r\n"])
    out = tmp_path / "c" / "train.bin"
    assert tok.decode(tokenize_to_file([f], tok, out).tokens.tolist()) == "ab\n" * 20
    with pytest.warns(UserWarning, match="tokenized again"):  # other options, other tokens
        kept = tokenize_to_file([f], tok, out, keep_line_endings=True)
    assert tok.decode(kept.tokens.tolist()) == "ab\r\n" * 20
    latin = tokenize_to_file([f], tok, out, keep_line_endings=True, encoding="latin-1")
    assert json.loads(out.with_suffix(".json").read_text())["fingerprint"] != (
        data._fingerprint([f], tok, "strict", "replace", "utf-8", True)
    )
    assert len(latin) == 80


def test_train_normalises_crlf_unless_asked_to_keep(tmp_path, run_cli):
    src = tmp_path / "win.txt"
    src.write_bytes(TEXT.replace("\n", "\r\n").encode())
    for flags, has_cr in (((), False), (("--keep-line-endings",), True)):
        run = tmp_path / f"run{has_cr}"
        r = run_cli("train", src, "-o", run, "-q", *flags, *tiny_train_args(max_steps=1))
        assert r.code == 0, r.err
        assert ("\r" in json.loads((run / "tokenizer.json").read_text())["chars"]) == has_cr
        assert json.loads((run / "train_config.json").read_text())["keep_line_endings"] == has_cr
        r = run_cli("train", "--resume", run, "--max-steps", "2", "-q", *flags)
        assert r.code == 0, r.err


def test_runs_from_before_normalisation_keep_their_line_endings(tmp_path):
    from lstmgen.corpus import read_run_config

    saved = {k: v for k, v in TrainConfig().to_dict().items() if k != "keep_line_endings"}
    (tmp_path / "train_config.json").write_text(json.dumps({**saved, "sources": {}}))
    assert read_run_config(tmp_path)[0].keep_line_endings  # resumed, it reads what it read


# --- 6. a full disk ---------------------------------------------------------------------------


def test_a_full_disk_while_tokenizing_names_the_file_and_the_cause(tmp_path, monkeypatch):
    src = tmp_path / "t.txt"
    src.write_text(TEXT)
    tok = CharTokenizer.fit([TEXT])
    real_asarray = np.asarray

    class ShortWrite(np.ndarray):  # what NumPy's tofile raises when the disk fills up
        def tofile(self, *args, **kwargs):
            raise OSError("1003836 requested and 524288 written")

    monkeypatch.setattr(
        np, "asarray", lambda a, dtype=None: real_asarray(a, dtype=dtype).view(ShortWrite)
    )
    out = tmp_path / "c" / "train.bin"
    with pytest.raises(DataError) as err:
        tokenize_to_file([src], tok, out)
    assert str(err.value) == (
        f"cannot write the token cache {out}: no space left on device"
        " (1003836 requested and 524288 written)"
    )
    assert list(out.parent.iterdir()) == []  # no half-written file is left behind
