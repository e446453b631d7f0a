import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAIN, StopAt
from lstmgen import ConfigError, ModelConfig, TrainConfig, Trainer
from lstmgen.train import clip_gradients


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_tiny_model_overfits_tiny_text(tmp_path):
    text = "hello world, hello lstm.\n" * 40
    (tmp_path / "t.txt").write_text(text)
    cfg = TrainConfig(**{**TINY_TRAIN, "eval_every": 100}, max_steps=300, lr=1e-2, val_fraction=0.1)
    model_cfg = ModelConfig(embedding_size=16, hidden_size=32, num_layers=1, dropout=0.0)
    trainer = Trainer.create(tmp_path / "run", [tmp_path / "t.txt"], cfg, model_cfg)
    summary = trainer.fit()
    assert summary["best_val_loss"] < 0.15  # from ln(12) ~ 2.5: it memorised the pattern
    sample = trainer.model.complete("hello world, hello", max_new_tokens=23, temperature=0)[0]
    assert sample == " lstm.\nhello world, hel"


def test_resume_is_bit_exact(tmp_path, corpus_file):
    cfg = TrainConfig(**{**TINY_TRAIN, "log_every": 1, "eval_every": 7}, max_steps=25)
    model_cfg = ModelConfig(**{**TINY_MODEL, "dropout": 0.3})  # dropout: RNG must be restored
    full = Trainer.create(tmp_path / "full", [corpus_file], cfg, model_cfg)
    full.fit()
    part = Trainer.create(tmp_path / "part", [corpus_file], cfg, model_cfg, callbacks=[StopAt(11)])
    summary = part.fit()
    assert summary["reason"] == "interrupted" and summary["step"] == 11
    resumed = Trainer.resume(tmp_path / "part")
    assert resumed.pos.step == 11
    resumed.fit()
    a, b = weights(full.model), weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.pos.best_val == resumed.pos.best_val


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])  # clipped, and left alone
def test_clip_gradients_equals_clip_grad_norm(max_norm):
    torch.manual_seed(0)
    a = torch.nn.LSTM(8, 16, 2)
    b = torch.nn.LSTM(8, 16, 2)
    b.load_state_dict(a.state_dict())
    pairs = list(zip(a.parameters(), b.parameters(), strict=True))
    for p, q in pairs:
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    before = [p.grad.clone() for p, _ in pairs]
    clip_gradients(a, max_norm)
    torch.nn.utils.clip_grad_norm_(b.parameters(), max_norm)
    assert all(torch.equal(p.grad, q.grad) for p, q in pairs)
    changed = not all(torch.equal(p.grad, g) for (p, _), g in zip(pairs, before, strict=True))
    assert changed == (max_norm < 1)


def test_adamw_is_fused_on_cpu(tmp_path, corpus_file):
    cfg = TrainConfig(**TINY_TRAIN, max_steps=2)
    trainer = Trainer.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    assert trainer.optimizer.defaults["fused"] is True
    trainer.fit()
    assert all(p.grad is not None for p in trainer.model.parameters())


def test_a_plot_that_cannot_be_drawn_does_not_fail_the_run(tmp_path, corpus_file, monkeypatch):
    def no_matplotlib(*args):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr("lstmgen.rundir.plot_metrics", no_matplotlib)
    cfg = TrainConfig(**TINY_TRAIN, max_steps=3)
    trainer = Trainer.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    with pytest.warns(UserWarning, match="loss.png not written: No module named 'matplotlib'"):
        summary = trainer.fit()
    assert summary["step"] == 3
    assert (tmp_path / "r" / "model.safetensors").exists()
    assert not (tmp_path / "r" / "loss.png").exists()


def test_resume_refuses_changes_that_break_the_run(tmp_path, corpus_file):
    cfg = TrainConfig(**TINY_TRAIN, max_steps=3)
    Trainer.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL)).fit()
    with pytest.raises(ConfigError, match="batch_size"):
        Trainer.resume(tmp_path / "r", batch_size=64)
    more = Trainer.resume(tmp_path / "r", max_steps=6)
    assert more.fit()["step"] == 6
    assert Trainer.resume(tmp_path / "r").config.max_steps == 6  # the raised limit was saved
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer.create(tmp_path / "r", [corpus_file], cfg)


def test_best_checkpoint_metrics_plot_and_early_stop(tmp_path, corpus_file):
    cfg = TrainConfig(**{**TINY_TRAIN, "eval_every": 5}, max_steps=400, lr=0.3, patience=2)
    trainer = Trainer.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    summary = trainer.fit()
    rows = [
        json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    ]
    evals = [r for r in rows if "val_loss" in r]
    assert summary["reason"] == "early_stop" and summary["step"] < 400
    assert min(r["val_loss"] for r in evals) == summary["best_val_loss"]
    assert (tmp_path / "r" / "loss.png").stat().st_size > 1000
    assert any("train_loss" in r and "tokens_per_s" in r for r in rows)


def test_learning_rate_schedule(tmp_path, corpus_file):
    cfg = TrainConfig(**{**TINY_TRAIN, "warmup_steps": 10}, max_steps=100, lr=1.0, min_lr_ratio=0.1)
    trainer = Trainer.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    lrs = []
    for step in (0, 9, 50, 100):
        trainer.pos.step = step
        lrs.append(trainer.lr_at())
    assert lrs[0] == pytest.approx(0.1 * (0.1 + 0.9 * 1.0))
    assert lrs[1] == pytest.approx(1.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.09))))
    assert lrs[2] == pytest.approx(0.55) and lrs[3] == pytest.approx(0.1)


def test_tokenizers_train_end_to_end(tmp_path, corpus_file):
    for kind in ("byte", "word", "bpe"):
        cfg = TrainConfig(**TINY_TRAIN, max_steps=3, tokenizer=kind, vocab_size=300)
        trainer = Trainer.create(tmp_path / kind, [corpus_file], cfg, ModelConfig(**TINY_MODEL))
        trainer.fit()
        assert trainer.model.config.vocab_size == trainer.corpus.tokenizer.vocab_size
        assert isinstance(trainer.model.complete("ROMEO:", max_new_tokens=5)[0], str)


def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path, corpus_file):
    run = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "lstmgen",
        "train",
        str(corpus_file),
        "-o",
        str(run),
        "-q",
        "--max-steps",
        "100000",
        "--hidden-size",
        "8",
        "--embedding-size",
        "8",
        "--num-layers",
        "1",
        "--batch-size",
        "4",
        "--seq-len",
        "16",
        "--eval-every",
        "1000000",
        "--log-every",
        "5",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 60
    metrics = run / "metrics.jsonl"
    while time.time() < deadline and not (
        metrics.exists() and metrics.read_text().count("\n") >= 2
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "interrupted" in err and "Traceback" not in err
    stopped = Trainer.resume(run)
    assert stopped.pos.step >= 10
    done = Trainer.resume(run, max_steps=stopped.pos.step + 5).fit()
    assert done["step"] == stopped.pos.step + 5
