"""Shared fixtures: a small seeded corpus, tiny configs, and a CLI runner."""

from __future__ import annotations

import importlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstmgen import Callback, runtime
from lstmgen.cli import main

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

TINY_MODEL = {"embedding_size": 8, "hidden_size": 8, "num_layers": 2, "dropout": 0.0}
TINY_TRAIN = {
    "batch_size": 4,
    "seq_len": 16,
    "warmup_steps": 5,
    "eval_every": 10,
    "sample_tokens": 0,
    "device": "cpu",
    "log_every": 5,
}


class StopAt(Callback):
    """Asks the trainer to stop (as Ctrl-C does) once ``step`` steps are logged."""

    def __init__(self, step):
        self.step = step

    def on_log(self, trainer, metrics):
        if metrics["step"] >= self.step:
            trainer.request_stop()


def make_play(n_lines: int = 400, seed: int = 0) -> str:
    """A small play-like text with a fixed vocabulary of names and words."""
    rng = random.Random(seed)
    names = ["ROMEO", "JULIET", "NURSE", "FRIAR"]
    words = "the love of my heart is a rose and night shall fall on thee".split()
    lines = []
    for _ in range(n_lines):
        lines.append(f"{rng.choice(names)}:")
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + ".")
        lines.append("")
    return "\n".join(lines)


@pytest.fixture(autouse=True)
def _seed_and_threads(monkeypatch):
    torch.manual_seed(0)
    torch.set_num_threads(1)  # small models: threads only add noise and overhead
    # precision auto is bf16 on a CPU with bf16 instructions (runtime.py): the suite runs as on
    # a processor without them; the tests of that choice say so themselves (the cpu_bf16
    # fixture) and so do subprocesses, which this patch does not reach (--precision fp32)
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    yield


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "play.txt"
    path.write_text(make_play(), encoding="utf-8")
    return path


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def run_cli(capsys):
    """Call the real entry point in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def tiny_train_args(**extra) -> list[str]:
    """CLI flags for a tiny, fast model."""
    flags = {**{k: v for k, v in TINY_MODEL.items()}, **TINY_TRAIN, **extra}
    args: list[str] = []
    for k, v in flags.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def stream_in_blocks(tok, ids, stops, block, prompt=""):
    """One sample's ids pushed through ``TextStreams`` ``block`` at a time -> (text, finish)."""
    from lstmgen.textstream import TextStreams

    streams, out, finish = TextStreams(tok, 1, stops, [prompt]), "", None
    chunks = [ids[i : i + block] for i in range(0, len(ids), block)] or [[]]
    for i, chunk in enumerate(chunks):
        for ev in streams.push_block([chunk], last=i == len(chunks) - 1):
            out, finish = out + ev.text, ev.finish_reason or finish
        if streams.all_done:
            break
    return out, finish


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def benchmark_module(name: str):
    """Import a benchmarks/ script as a module (they import their sibling common.py)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def run_benchmark_script(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run benchmarks/SCRIPT with its results going to ``tmp_path``; it must succeed."""
    env = {**os.environ, "LSTMGEN_RESULTS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def benchmark_result(tmp_path: Path, script: str, *args: str) -> dict:
    """Run a benchmark whose ``args`` end in ``--name NAME``; its JSON result."""
    run_benchmark_script(script, tmp_path, *args)
    name = args[args.index("--name") + 1]
    return json.loads((tmp_path / f"{name}.json").read_text())
