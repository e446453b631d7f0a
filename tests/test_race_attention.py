"""benchmarks/quality_cpu_attention.py (issue #12's time-to-quality race): the sweep's settings,
the best-settings mode reading the sweep's JSON, the tables; end to end at tiny sizes (slow)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from conftest import BENCHMARKS, benchmark_module, make_play


def _run(tmp_path, *args: str) -> dict:
    """The script with its results in ``tmp_path`` (four spawned runs a call: a long timeout,
    which a busy machine needs); its JSON."""
    env = {**os.environ, "LSTMGEN_RESULTS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    script = str(BENCHMARKS / "quality_cpu_attention.py")
    proc = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / f"{args[args.index('--name') + 1]}.json").read_text())


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"lstm": "", "overrides": [], "sweep_result": None, **kw})


def test_sweep_settings_split_into_override_lists():
    q = benchmark_module("quality_cpu_attention")
    assert q.split("a=1,b=2;;c=3") == [["a=1", "b=2"], [], ["c=3"]]
    assert len(q.split(";".join(q.LSTM_SWEEP))) == len(q.LSTM_SWEEP)


def test_best_mode_reads_each_sides_best_from_the_sweep(tmp_path, monkeypatch):
    q = benchmark_module("quality_cpu_attention")
    monkeypatch.setenv("LSTMGEN_RESULTS_DIR", str(tmp_path))
    assert q.best_settings(_args()) == ([], [], "the preset (no sweep)")
    best = {"lstm": {"overrides": ["lr=0.015"]}, "sha-lstm": {"overrides": ["memory=128"]}}
    (tmp_path / "quality_cpu_attention_sweep.json").write_text(json.dumps({"best": best}))
    lstm, sha, source = q.best_settings(_args())
    assert (lstm, sha) == (["lr=0.015"], ["memory=128"]) and "sweep" in source
    given = q.best_settings(_args(lstm="hidden_size=320", overrides=["memory=64"]))
    assert given[:2] == (["hidden_size=320"], ["memory=64"])  # given settings win
    with pytest.raises(SystemExit, match="no sweep result"):
        q.best_settings(_args(sweep_result=str(tmp_path / "missing.json")))


def test_best_of_skips_runs_without_a_finite_loss():
    q = benchmark_module("quality_cpu_attention")
    runs = [{"val_loss_nats_per_char": float("inf")}, {"val_loss_nats_per_char": 1.6}]
    assert q.best_of(runs)["val_loss_nats_per_char"] == 1.6


@pytest.mark.slow
def test_tiny_sweep_then_best_race_side_by_side(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text(make_play(200, seed=0), encoding="utf-8")
    (data / "val.txt").write_text(make_play(30, seed=1), encoding="utf-8")
    common = ("--tiny", "--budget", "1", "--data", str(data))
    sweep = _run(
        tmp_path, "--mode", "sweep", "--pairs", "2",
        "--lstm-sweep", ";lr=0.02", "--sha-sweep", ";memory=16", *common, "--name", "sw",
    )  # fmt: skip
    assert [len(sweep["runs"][k]) for k in ("lstm", "sha-lstm")] == [2, 2]
    assert "side by side" in sweep["notes"]
    assert not list(tmp_path.glob("sw_*_*.json"))  # the partial curves are folded in
    race = _run(
        tmp_path, "--sweep-result", str(tmp_path / "sw.json"),
        *common, "--name", "best",
    )  # fmt: skip
    assert race["settings_from"] == "best of sw.json"
    for label in ("lstm", "sha-lstm"):
        assert race["runs"][label]["overrides"] == sweep["best"][label]["overrides"]
    table = benchmark_module("quality_cpu_attention").markdown(sweep)
    assert table.count("| sha-lstm") == 2 and "one core" in table
