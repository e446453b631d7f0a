"""Command-line polish (#10): no torch for --help, defaults in the help, sample separators,
the prompt echoed as the model saw it, and the backends' random streams documented."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_train_args
from lstmgen.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["--help"],
        ["train", "--help"],
        ["generate", "--help"],
        ["serve", "--help"],
        ["eval", "--help"],
        ["info", "--help"],
    ],
)
def test_help_and_version_do_not_import_torch(args):
    # torch takes ~1.6 s to import: `lstmgen --help` should answer at once.
    code = (
        "import sys; from lstmgen.cli import main; "
        f"assert main({args!r}) == 0; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip(), "no help or version printed"


def test_public_api_still_imports_torch_lazily():
    code = "import sys, lstmgen; assert 'torch' not in sys.modules; lstmgen.LanguageModel"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]


def _help(run_cli, *command):
    r = run_cli(*command, "--help")
    assert r.code == 0, r.err
    # click wraps lines, also after a hyphen: compare with single spaces and whole words
    return re.sub(r"-\s+", "-", " ".join(r.out.split()))


def test_train_help_shows_defaults(run_cli):
    text = _help(run_cli, "train")
    preset = "--preset [cpu-small|gpu-fast|tiny|word-cpu|word-gpu] Named settings."
    assert preset + " [default: cpu-small]" in text
    batch = "(16); gpu-fast 128, tiny 8, word-cpu 32, word-gpu 80]"
    assert "[default: from --preset cpu-small " + batch in text
    hidden = "(384); gpu-fast 1024, tiny 32, word-cpu 400, word-gpu 1150]"
    assert "[default: from --preset cpu-small " + hidden in text
    assert "[default: from --preset cpu-small (char); word-cpu word, word-gpu word]" in text
    assert "[default: from --preset cpu-small (1337)]" in text  # seed
    assert "BPE vocabulary size. [default: from --preset cpu-small (8000)]" in text
    assert "[default: 10 when neither --max-steps nor --max-time is given]" in text
    assert "[default: runs/NAME, NAME from the first source; runs/shakespeare]" in text


def test_generate_help_says_where_defaults_come_from(run_cli):
    text = _help(run_cli, "generate")
    assert "generation_config.json" in text and "built-in" in text


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    from conftest import make_play

    tmp = tmp_path_factory.mktemp("polish")
    (tmp / "play.txt").write_text(make_play(60), encoding="utf-8")
    run = tmp / "run"
    args = ["train", str(tmp / "play.txt"), "-o", str(run), "-q", *tiny_train_args(max_steps=3)]
    assert main(args) == 0
    return run


@pytest.mark.parametrize("stream", [False, True])
def test_custom_separator_goes_on_its_own_line(char_run, run_cli, stream):
    args = ["generate", char_run, "-p", "ROMEO:", "-n", "3", "--max-new-tokens", "12"]
    args += ["--seed", "2", "--stop", "\n", *(["--stream"] if stream else [])]  # one-line samples
    r = run_cli(*args, "--separator", "***")
    assert r.code == 0, r.err
    lines = r.out.split("\n")
    assert lines[1::2] == ["***", "***", ""], r.out  # sample, ***, sample, ***, sample, end
    assert all(line.startswith("ROMEO:") for line in lines[0::2][:3])
    # A separator that brings its own line breaks is printed as it is.
    r2 = run_cli(*args, "--separator", "\n--\n")
    assert r2.out == r.out.replace("\n***\n", "\n--\n")


@pytest.mark.parametrize("unknown, echo", [("drop", "ROMEO:"), ("replace", "ROMEO: ")])
@pytest.mark.parametrize("stream", [False, True])
def test_prompt_is_echoed_as_the_model_saw_it(char_run, run_cli, unknown, echo, stream):
    args = ["generate", char_run, "-p", "ROMEO:✨", "--unknown", unknown, "--seed", "3"]
    args += ["--max-new-tokens", "10", *(["--stream"] if stream else [])]
    r = run_cli(*args)
    assert r.code == 0, r.err
    assert r.out.startswith(echo) and "✨" not in r.out, r.out
    # The same text as the clean prompt gives: the model saw exactly that.
    clean = run_cli(*args[:3], echo, *args[6:])
    assert r.out == clean.out


def test_backends_documented_to_sample_differently(run_cli):
    # numpy draws from numpy's generator, torch from torch's: the same seed gives different
    # samples, greedy decoding the same text (test_reference.test_cli_numpy_backend checks
    # that). The help and the README say so.
    text = _help(run_cli, "generate")
    assert "different random number generators" in text and "-t 0" in text
    readme = " ".join(README.read_text(encoding="utf-8").split())
    assert "--backend numpy" in readme and "different random number generators" in readme
