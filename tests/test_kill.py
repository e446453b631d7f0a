"""SIGKILL a training process at random moments, many of them during writes (an evaluation and
a checkpoint every step), then check what issue #10 asks: the folder always loads, ``--resume``
always works, no temporary file outlives the resume, and the finished run has bit-identical
weights to one that was never interrupted."""

import json
import os
import random
import subprocess
import sys
import time

import pytest
import torch

from conftest import tiny_train_args
from lstmgen.checkpoint import load_tensors
from lstmgen.model import load_model
from lstmgen.train import STATE_FILE

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same single thread as the in-process runs


def flags(steps):
    # fp32 as the in-process reference (conftest): auto is bf16 on a CPU with bf16 instructions
    return [
        "-q",
        *tiny_train_args(max_steps=steps, eval_every=1, log_every=1),
        "--precision",
        "fp32",
    ]


def spawn(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "lstmgen", "train", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def wait_for(predicate, proc, timeout=120.0):
    deadline = time.time() + timeout
    while not predicate() and proc.poll() is None:
        assert time.time() < deadline, "the training process made no progress"
        time.sleep(0.01)


def logged_steps(run):
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def kill_at_random(proc, run, rng):
    """SIGKILL ``proc`` at a random moment: during its start, or after it trained a little."""
    luck = rng.random()
    if luck < 1 / 3:
        time.sleep(rng.uniform(0.0, 3.0))  # anywhere from start-up to training
    elif luck < 2 / 3:
        kill_during_a_write(proc, run)
        return True
    else:
        seen = logged_steps(run)
        wait_for(lambda: logged_steps(run) > seen, proc)
        time.sleep(rng.uniform(0.0, 0.3))
    if proc.poll() is not None:  # it finished first; it must have finished cleanly
        assert proc.returncode == 0, proc.stderr.read()
        return False
    proc.kill()
    proc.wait()
    proc.stderr.close()
    return True


def temp_files(run):
    return [p for d in (run, run / "trainer") if d.is_dir() for p in d.glob("*.tmp")]


def kill_during_a_write(proc, run):
    """SIGKILL ``proc`` the moment one of its atomic writes is seen half done (a ``*.tmp``)."""
    wait_for(lambda: bool(temp_files(run)), proc)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.kill()
    proc.wait()
    proc.stderr.close()


def check_loadable(run):
    """What a killed run must always be: a loadable model and a loadable trainer state."""
    model = load_model(run)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    load_tensors(run / STATE_FILE)


def weights(run):
    best = load_model(run).state_dict()
    latest = {k: v for k, v in load_tensors(run / STATE_FILE).items() if k.startswith("model.")}
    return best, latest


def assert_same_run(run, ref, steps):
    (best, latest), (ref_best, ref_latest) = weights(run), weights(ref)
    assert all(torch.equal(best[k], ref_best[k]) for k in ref_best)
    assert all(torch.equal(latest[k], ref_latest[k]) for k in ref_latest)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train_loss" in r] == list(range(1, steps + 1))
    assert list(run.rglob("*.tmp")) == []


def kill_and_resume(tmp_path, corpus_file, run_cli, steps, kills, seed):
    rng = random.Random(seed)
    run, ref = tmp_path / "run", tmp_path / "ref"
    assert run_cli("train", corpus_file, "-o", ref, *flags(steps)).code == 0
    proc = spawn(corpus_file, "-o", run, *flags(steps))
    wait_for(lambda: (run / STATE_FILE).exists(), proc)  # the run exists: now kill it anywhere
    resumes, killed, leftovers = 0, 0, 0
    while killed < kills:
        assert kill_at_random(proc, run, rng), f"the run finished after {killed} kills"
        killed += 1
        leftovers += bool(list(run.rglob("*.tmp")))
        check_loadable(run)
        proc = spawn("--resume", run, "-q")
        resumes += 1
    proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr.read()
    proc.stderr.close()
    r = run_cli("train", "--resume", run, "-q")  # the folder resumes in this process too
    assert r.code == 0 and "nothing to do" in r.err, r.err
    assert_same_run(run, ref, steps)
    print(f"{killed} kills, {leftovers} left temporary files behind; {resumes} resumes")


def test_a_kill_during_a_write_resumes_bit_identical_and_clean(tmp_path, corpus_file, run_cli):
    run, ref = tmp_path / "run", tmp_path / "ref"
    proc = spawn(corpus_file, "-o", run, *flags(12))
    wait_for(lambda: (run / STATE_FILE).exists(), proc)
    kill_during_a_write(proc, run)
    check_loadable(run)
    assert run_cli("train", "--resume", run).code == 0
    assert run_cli("train", corpus_file, "-o", ref, *flags(12)).code == 0
    assert_same_run(run, ref, 12)


@pytest.mark.slow
def test_twenty_kills_leave_a_loadable_resumable_bit_identical_run(tmp_path, corpus_file, run_cli):
    kill_and_resume(tmp_path, corpus_file, run_cli, steps=400, kills=20, seed=10)
