"""Issue #10, training runs: one writer per run folder, --max-time bounds wall time (evaluations
included, interruptible), warmup fits short runs, the progress bar, out of memory, leftovers."""

import json
import math
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAIN, tiny_train_args
from lstmgen import ModelConfig, TrainConfig, Trainer
from lstmgen.evaluate import evaluate_tokens
from lstmgen.model import load_model


def tiny_run(tmp_path, corpus_file, name="r", callbacks=(), **train):
    cfg = TrainConfig(**{**TINY_TRAIN, **train})
    return Trainer.create(
        tmp_path / name, [corpus_file], cfg, ModelConfig(**TINY_MODEL), callbacks=callbacks
    )


def val_rows(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "val_loss" in r]


# --- 1. the run-folder lock ----------------------------------------------------------------------

HOLD_LOCK = """
import fcntl, os, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
f.seek(0); f.truncate(); f.write(f"{os.getpid()}\\n"); f.flush()
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_a_second_writer_gets_one_error_line_and_readers_are_unaffected(
    tmp_path, corpus_file, run_cli
):
    run = tmp_path / "r"
    tiny_run(tmp_path, corpus_file, max_steps=2).fit()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run / "train.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        expected = f"error: {run} is being trained by another process (pid {holder.pid})\n"
        r = run_cli("train", "--resume", run, "--max-steps", "4")
        assert (r.code, r.err) == (1, expected)
        r = run_cli("train", corpus_file, "-o", run, "-q", *tiny_train_args(max_steps=2))
        assert (r.code, r.err) == (1, expected)
        assert run_cli("info", run).code == 0  # readers never look at the lock
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock, nothing stale stays behind
        holder.wait()
    assert run_cli("train", "--resume", run, "-q", "--max-steps", "4").code == 0
    assert Trainer.resume(run).pos.step == 4


# --- 2. --max-time, evaluation --------------------------------------------------------------------


def test_the_final_evaluation_obeys_eval_tokens(tmp_path, corpus_file):
    tiny_run(tmp_path, corpus_file, max_steps=7, eval_every=5, eval_tokens=100).fit()
    assert [(r["step"], r["val_tokens"]) for r in val_rows(tmp_path / "r")] == [(5, 100), (7, 100)]


def test_evaluation_time_counts_against_max_time(tmp_path, corpus_file, monkeypatch):
    import lstmgen.training.trainer

    def slow_evaluation(*args, **kwargs):
        time.sleep(0.25)
        return evaluate_tokens(*args, **kwargs)

    monkeypatch.setattr(lstmgen.training.trainer, "evaluate_tokens", slow_evaluation)
    # loss.png is drawn after the run is saved, outside the budget (matplotlib's import alone
    # takes a second on a busy machine): this test times the run itself.
    monkeypatch.setattr(Trainer, "plot", lambda self: None)
    trainer = tiny_run(tmp_path, corpus_file, max_time=1.0, eval_every=1, eval_tokens=50)
    began = time.perf_counter()
    summary = trainer.fit()
    wall = time.perf_counter() - began
    assert summary["reason"] == "max_time"
    # Before: 1 s of steps alone, with a 0.25 s evaluation after each one (several seconds).
    assert wall < 1.0 + 0.5, wall
    assert summary["elapsed"] == pytest.approx(wall, abs=0.2)


def test_a_stop_during_an_evaluation_ends_it_and_the_resume_redoes_it(tmp_path, corpus_file):
    trainer = tiny_run(tmp_path, corpus_file, max_steps=10, eval_every=5)
    forward, eval_windows = trainer.model.forward, []

    def forward_then_ctrl_c(x, state=None, *args, **kwargs):  # training asks for the loss too
        if not trainer.model.training:  # an evaluation window
            eval_windows.append(x.shape)
            trainer.request_stop()  # what the SIGINT/SIGTERM handler does
        return forward(x, state, *args, **kwargs)

    trainer.model.forward = forward_then_ctrl_c
    summary = trainer.fit()
    assert summary["reason"] == "interrupted" and summary["step"] == 5
    assert len(eval_windows) == 1  # the pass over the 600-token split stopped at once
    assert val_rows(tmp_path / "r") == []  # a part of the split is never reported as a score
    resumed = Trainer.resume(tmp_path / "r")
    assert resumed.pos.step == 5 and resumed.pos.eval_pending
    resumed.fit()
    assert [r["step"] for r in val_rows(tmp_path / "r")] == [5, 10]


def test_a_new_eval_tokens_budget_rescores_the_best_model(tmp_path, corpus_file):
    tiny_run(tmp_path, corpus_file, max_steps=5, eval_every=5, eval_tokens=50).fit()
    with pytest.warns(UserWarning, match="--eval-tokens changed: the best model .step 5. scored"):
        resumed = Trainer.resume(tmp_path / "r", eval_tokens=0)  # said, not done silently
    full = evaluate_tokens(load_model(tmp_path / "r"), resumed.corpus.valid, seq_len=16)
    assert resumed.pos.best_val == pytest.approx(full.loss, rel=1e-6)  # not the 50-token score
    assert resumed.pos.best_tokens == len(resumed.corpus.valid) == full.tokens
    assert Trainer.resume(tmp_path / "r", eval_tokens=50).pos.best_tokens == 50


# --- 3. warmup ------------------------------------------------------------------------------------


def test_warmup_fits_short_runs_and_time_budgets(tmp_path, corpus_file):
    trainer = tiny_run(tmp_path, corpus_file, max_steps=60, warmup_steps=100, lr=1.0)
    peak = 0.0
    for step in range(60):
        trainer.pos.step = step
        peak = max(peak, trainer.lr_at())
    assert peak > 0.95  # a fixed 100-step warmup peaked at 0.6 * cosine
    trainer.pos.step = 60
    trainer.save_state()
    assert Trainer.resume(tmp_path / "r", max_steps=6000).warmup_steps() == 6  # fixed at start
    timed = tiny_run(tmp_path, corpus_file, "t", max_time=100.0, warmup_steps=100, lr=1.0)
    timed.pos.step, timed.pos.elapsed = 5, 10.0  # 10 % of the time budget
    assert timed.lr_at() == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(0.1 * math.pi)))


# --- 4. the progress bar --------------------------------------------------------------------------


def bar_states(err):
    """Every state the bar was drawn in (tqdm redraws with a carriage return)."""
    return [s.strip() for line in err.splitlines() for s in line.split("\r") if "|" in s]


def test_the_progress_bar_ends_at_the_true_step_count_once(tmp_path, corpus_file, run_cli):
    args = tiny_train_args(max_steps=12, log_every=1000, eval_every=1000)
    r = run_cli("train", corpus_file, "-o", tmp_path / "r", *args)
    assert r.code == 0, r.err
    states = bar_states(r.err)
    assert states[0].startswith("0%") and "0/12" in states[0]
    assert states[-1].startswith("100%") and "12/12" in states[-1]
    assert sum("12/12" in s for s in states) == 1  # the final state is drawn once


def test_the_progress_bar_counts_the_time_budget(tmp_path, corpus_file, run_cli):
    args = tiny_train_args(max_time=1.5, eval_every=1000)
    r = run_cli("train", corpus_file, "-o", tmp_path / "r", *args)
    assert r.code == 0, r.err
    states = bar_states(r.err)
    assert "0/2s" in states[0] and "step=0" in states[0]
    assert states[-1].startswith("100%") and "2/2s" in states[-1]
    assert sum("100%" in s for s in states) == 1


# --- 5. out of memory -----------------------------------------------------------------------------

CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
    "tried to allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)"
)


@pytest.mark.parametrize(
    "error", [RuntimeError(CPU_OOM), torch.OutOfMemoryError("CUDA out of memory. Tried to ...")]
)
def test_out_of_memory_is_one_line_naming_the_settings(
    tmp_path, corpus_file, run_cli, monkeypatch, error
):
    def allocate(*args):
        raise error

    monkeypatch.setattr(Trainer, "train_step", allocate)
    r = run_cli("train", corpus_file, "-o", tmp_path / "r", "-q", *tiny_train_args(max_steps=3))
    assert r.code == 1 and "Traceback" not in r.err
    assert r.err.splitlines(keepends=True)[-1] == (
        "error: out of memory on cpu (batch 4x16, hidden size 8): lower --batch-size, --seq-len "
        "or --hidden-size\n"
    )


# --- 6. leftovers of a crash ----------------------------------------------------------------------


def test_stale_temp_files_are_removed_when_a_run_resumes(tmp_path, corpus_file):
    run = tmp_path / "r"
    tiny_run(tmp_path, corpus_file, max_steps=2).fit()
    leftovers = [
        run / ".model.safetensors.k2j4h1x.tmp",
        run / ".config.json.a8b7c6.tmp",
        run / "trainer" / ".state.safetensors.q9w8e7.tmp",
        run / "data" / "train.tmp",
        run / "metrics.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"\0" * 100)
    Trainer.resume(run)
    assert [p for p in leftovers if p.exists()] == []
    assert (run / "model.safetensors").exists() and (run / "data" / "train.bin").exists()


def test_the_final_evaluation_is_reserved_before_the_first_log_step(tmp_path, corpus_file):
    # Slow steps with a short budget can end a run before its first log step; the guess of the
    # final evaluation's time used to start there, so such a run reserved nothing and overran
    # (seen: --max-time 20 on a busy machine, 4 steps, then a 30 s final evaluation).
    class Reserve:
        seen: list[float] = []

        def on_step(self, trainer):
            self.seen.append(trainer.eval_reserve)

        def on_start(self, *a): ...
        def on_log(self, *a): ...
        def on_eval(self, *a): ...
        def on_end(self, *a): ...

    cb = Reserve()
    tiny_run(tmp_path, corpus_file, callbacks=[cb], max_steps=3, log_every=1000).fit()
    assert len(cb.seen) == 3 and all(r > 0 for r in cb.seen), cb.seen


def test_resuming_a_folder_that_does_not_exist_says_so(tmp_path, run_cli):
    r = run_cli("train", "--resume", tmp_path / "nope")
    assert r.code == 1 and r.err.strip() == f"error: no such run directory: {tmp_path / 'nope'}"
