"""How a run ends when something is off: divergence, a resume with nothing left to do, a stop
before the first evaluation, flags a resume cannot honour."""

import json

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAIN, StopAt, tiny_train_args
from lstmgen import ConfigError, ModelConfig, TrainConfig, Trainer, TrainingError
from lstmgen.model import load_model


def test_a_diverging_run_stops_with_one_error_and_keeps_its_best_model(tmp_path, corpus_file):
    cfg = TrainConfig(**{**TINY_TRAIN, "eval_every": 5, "log_every": 1}, max_steps=60)
    cfg = cfg.replace(lr=1e30, grad_clip=0.0, warmup_steps=0)
    trainer = Trainer.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    with pytest.raises(TrainingError, match=r"training diverged: the training loss became nan"):
        trainer.fit()
    for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))
    model = load_model(tmp_path / "r")  # the initial (or best finite) weights, still usable
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resuming_a_finished_run_does_nothing(tmp_path, corpus_file):
    cfg = TrainConfig(**TINY_TRAIN, max_steps=12)
    Trainer.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL)).fit()
    metrics = (tmp_path / "r" / "metrics.jsonl").read_text()
    summary = Trainer.resume(tmp_path / "r").fit()
    assert summary["new_steps"] == 0 and summary["step"] == 12
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == metrics  # no repeated evaluation


def test_a_stop_before_the_first_evaluation_keeps_the_latest_weights(tmp_path, corpus_file):
    cfg = TrainConfig(**{**TINY_TRAIN, "eval_every": 1000, "log_every": 1}, max_steps=500)
    trainer = Trainer.create(
        tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL), callbacks=[StopAt(7)]
    )
    initial = load_model(tmp_path / "r").state_dict()
    summary = trainer.fit()
    assert summary["reason"] == "interrupted" and summary["best_step"] == -1
    saved = load_model(tmp_path / "r").state_dict()
    latest = trainer.model.state_dict()
    assert all(torch.equal(saved[k], latest[k]) for k in saved)
    assert not all(torch.equal(saved[k], initial[k]) for k in saved)


def test_resume_refuses_model_options(tmp_path, corpus_file, run_cli):
    run = tmp_path / "r"
    assert run_cli("train", corpus_file, "-o", run, "-q", *tiny_train_args(max_steps=3)).code == 0
    for flags, named in [
        (["--hidden-size", "64"], "--hidden-size"),
        (["--cell", "gru", "--dropout", "0.1"], "--cell, --dropout"),
        (["--preset", "tiny"], "--preset"),
    ]:
        r = run_cli("train", "--resume", run, *flags)
        lines = [line for line in r.err.splitlines() if line.strip()]
        assert r.code == 2 and len(lines) == 1 and "Traceback" not in r.err, r.err
        assert lines[0].startswith(f"error: --resume keeps the run's model and settings: {named}")
    with pytest.raises(ConfigError, match="hidden_size when resuming: not a training option"):
        Trainer.resume(run, hidden_size=64)
    r = run_cli("train", "--resume", run, "--hidden-size", str(TINY_MODEL["hidden_size"]))
    assert r.code == 0 and "nothing to do: the run already stopped at step 3" in r.err  # same


def test_a_run_that_cannot_start_leaves_no_directory(tmp_path, corpus_file, run_cli):
    (tmp_path / "empty.txt").write_text("")
    for flags in (["--device", "tpu"], ["--valid", tmp_path / "empty.txt"]):
        run = tmp_path / "r"
        r = run_cli("train", corpus_file, "-o", run, "-q", *tiny_train_args(max_steps=3), *flags)
        assert r.code != 0 and r.err.startswith("error: ") and "Traceback" not in r.err, r.err
        assert not run.exists()


def test_gpu_preset_on_cpu_warns(tmp_path, corpus_file, run_cli):
    run = tmp_path / "r"
    r = run_cli(
        "train", corpus_file, "-o", run, "-q", "--preset", "gpu-fast", "--device", "cpu",
        "--hidden-size", "8", "--num-layers", "1", "--embedding-size", "8", "--batch-size", "2",
        "--seq-len", "8", "--max-steps", "1", "--eval-every", "1", "--sample-tokens", "0",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "warning: --preset gpu-fast is sized for a large GPU; on cpu" in r.err


def test_resume_after_a_crash_logs_each_step_once(tmp_path, corpus_file):
    cfg = TrainConfig(**{**TINY_TRAIN, "log_every": 1, "eval_every": 5}, max_steps=10)
    Trainer.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL)).fit()
    metrics = tmp_path / "r" / "metrics.jsonl"
    with open(metrics, "a") as f:  # what a crash after the last checkpoint leaves behind
        f.write('{"step": 11, "train_loss": 2.0}\n{"step": 12, "train_lo')
    Trainer.resume(tmp_path / "r", max_steps=14).fit()
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    train_steps = [r["step"] for r in rows if "train_loss" in r]
    assert train_steps == list(range(1, 15))
    assert [r["step"] for r in rows if "val_loss" in r] == [5, 10, 14]


def test_windows_longer_than_the_streams_are_reported(tmp_path, corpus_file):
    n = len(corpus_file.read_text())  # a character corpus: one token per character
    cfg = TrainConfig(**{**TINY_TRAIN, "batch_size": 4, "seq_len": n}, max_steps=1)
    with pytest.warns(UserWarning, match=r"makes 4 streams of [\d,]+ tokens, shorter than seq_len"):
        Trainer.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
