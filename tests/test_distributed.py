"""Multi-process training through torchrun (training/distributed.py), on CPU with gloo.

Each torchrun launch starts three Python processes that import torch, so the launches are
shared: one uninterrupted 2-process run (module fixture) is what the equivalence, the resume
and the world-size tests compare against."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_play
from lstmgen import CheckpointError, ConfigError, ModelConfig, TrainConfig, Trainer, TrainingError
from lstmgen.model import load_model
from lstmgen.rundir import RunDir
from lstmgen.training.distributed import Dist

TOLERANCE = 1e-5  # float32 (the model directory stores float32 weights; no float64 runs)
TINY = {
    "hidden-size": 8,
    "embedding-size": 8,
    "num-layers": 1,
    "dropout": 0.0,
    "seq-len": 16,
    "warmup-steps": 2,
    "eval-every": 10,
    "log-every": 5,
    "sample-tokens": 0,
    "device": "cpu",
    # auto is bf16 on a CPU with bf16 instructions; the torchrun processes do not see
    # conftest's patch
    "precision": "fp32",
}


def flags(**extra: object) -> list[str]:
    args: list[str] = ["-q"]
    for k, v in {**TINY, **extra}.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def torchrun(*args: object, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m lstmgen ARGS``
    (--standalone: a free port, so parallel test runs never meet)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={nproc}", "-m", "lstmgen", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parent.parent / "src")
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{src}:{path}" if path else src, "OMP_NUM_THREADS": "1"}


def state(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "trainer" / "state.safetensors"))


def weights(run: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state(run).items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "play.txt"
    path.write_text(make_play(60), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """20 steps on 2 processes with batch 2 each."""
    run = tmp_path_factory.mktemp("ddp") / "two"
    proc = torchrun("train", corpus, "-o", run, *flags(batch_size=2, max_steps=20))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_two_processes_equal_one_process_with_twice_the_batch(two_ranks, corpus, run_cli, tmp_path):
    one = tmp_path / "one"
    assert run_cli("train", corpus, "-o", one, *flags(batch_size=4, max_steps=20)).code == 0
    a, b = state(one), state(two_ranks)
    for k in weights(one):
        assert (a[k] - b[k]).abs().max() <= TOLERANCE, k
    # the carried state of every row, gathered from both processes in the 1-process layout
    for k in ("hidden.0", "hidden.1"):
        assert a[k].shape == b[k].shape == (1, 4, 8)
        assert (a[k] - b[k]).abs().max() <= 100 * TOLERANCE, k
    assert b["dist.rng.cpu"].shape[0] == 2
    assert not torch.equal(b["dist.rng.cpu"][0], b["dist.rng.cpu"][1])  # own dropout masks
    assert load_model(two_ranks).config.hidden_size == 8  # rank 0 wrote a model directory


@pytest.mark.slow
def test_two_processes_with_grad_accum_equal_one_process_with_the_whole_batch(
    corpus, run_cli, tmp_path
):
    """W=2, K=2, B=1: DDP's all-reduce on the last micro-step only (no_sync), batch 4."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli("train", corpus, "-o", one, *flags(batch_size=4, max_steps=20)).code == 0
    proc = torchrun("train", corpus, "-o", two, *flags(batch_size=1, grad_accum=2, max_steps=20))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = state(one), state(two)
    for k in weights(one):
        assert (a[k] - b[k]).abs().max() <= TOLERANCE, k
    assert (a["hidden.1"] - b["hidden.1"]).abs().max() <= 100 * TOLERANCE


STOP_AT = """
import sys
from lstmgen import Callback, ModelConfig, TrainConfig, Trainer

class StopAt(Callback):  # on rank 0 (the only one with callbacks), as Ctrl-C would
    def on_log(self, trainer, metrics):
        if metrics["step"] >= int(sys.argv[3]) > 0:
            trainer.request_stop()

config = TrainConfig(
    batch_size=2, seq_len=16, warmup_steps=2, eval_every=10, log_every=5, sample_tokens=0,
    device="cpu", max_steps=20,
)
# dropout draws from each process's RNG: the resume must restore every process's own
model = ModelConfig(embedding_size=8, hidden_size=8, num_layers=2, dropout=0.3)
summary = Trainer.create(sys.argv[2], [sys.argv[1]], config, model, callbacks=[StopAt()]).fit()
assert summary["step"] == (int(sys.argv[3]) or 20), summary
"""


@pytest.mark.slow
def test_a_stopped_and_resumed_two_process_run_equals_an_uninterrupted_one(corpus, tmp_path):
    """With dropout. Stopped at step 10 (a stop requested on rank 0, agreed by both), then
    resumed to 20 through the CLI; against 20 steps uninterrupted."""
    script = tmp_path / "stop_at.py"
    script.write_text(STOP_AT, encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    runs = {"whole": tmp_path / "whole", "stopped": tmp_path / "stopped"}
    for run, stop in zip(runs.values(), ("0", "10"), strict=True):
        argv = [*cmd, str(script), str(corpus), str(run), stop]
        proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs["stopped"]
    assert json.loads(RunDir(run).load_state()[1]["position"])["step"] == 10
    proc = torchrun("train", "--resume", run, "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = state(run), state(runs["whole"])
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "hidden.", "dist.")))
    logged = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in logged if "train_loss" in r]
    assert steps == [5, 10, 15, 20]  # one writer: rank 0 logged each step once


@pytest.mark.slow
def test_two_processes_refuse_a_one_process_run_without_hanging(corpus, run_cli, tmp_path):
    run = tmp_path / "one"
    assert run_cli("train", corpus, "-o", run, *flags(batch_size=4, max_steps=5)).code == 0
    proc = torchrun("train", "--resume", run, "--max-steps", "10", "-q", timeout=120)
    assert proc.returncode != 0
    assert "error: " + str(run) + " was trained by 1 process and this run has 2" in proc.stderr
    assert "error: process 1: the first process (rank 0) could not start the run" in proc.stderr


def test_resuming_with_another_world_size_is_one_clear_error(two_ranks, tmp_path):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(two_ranks), str(copy)], check=True)
    wanted = r"trained by 2 processes and this run has 1: resume it with 2 \(torchrun"
    with pytest.raises(CheckpointError, match=wanted):
        Trainer.resume(copy, max_steps=30)


def test_grad_accum_k_with_batch_b_equals_batch_k_times_b(tmp_path):
    """The same row layout without torchrun: K micro-steps of B rows are one step of K*B."""
    path = tmp_path / "play.txt"
    path.write_text(make_play(60), encoding="utf-8")
    model = ModelConfig(embedding_size=8, hidden_size=8, num_layers=1, dropout=0.0)
    base = TrainConfig(
        seq_len=16, warmup_steps=2, eval_every=10, sample_tokens=0, device="cpu", max_steps=12
    )
    runs = {}
    for name, cfg in {
        "big": base.replace(batch_size=4),
        "accum": base.replace(batch_size=2, grad_accum=2),
    }.items():
        trainer = Trainer.create(tmp_path / name, [path], cfg, model)
        trainer.fit()
        runs[name] = trainer
    big, accum = runs["big"], runs["accum"]
    for (k, p), q in zip(big.model.named_parameters(), accum.model.parameters(), strict=True):
        assert (p - q).abs().max() <= TOLERANCE, k
    assert accum.hidden.batch_size == 4
    assert (big.hidden[1] - accum.hidden[1]).abs().max() <= 100 * TOLERANCE


def test_a_lost_process_is_one_line_not_a_traceback(tmp_path):
    """What a gloo read error from a killed peer becomes (the slow test kills a real one)."""
    d = Dist(rank=0, world=2, active=True)
    with pytest.raises(TrainingError, match=r"process 0 of 2 lost another training process"):
        with d.failures(tmp_path):
            raise RuntimeError("[pair.cc:537] Read error [127.0.0.1]: Connection reset by peer")
    with pytest.raises(ValueError):  # anything else passes through
        with d.failures(tmp_path):
            raise ValueError("not a collective")


def _children(pid: int) -> dict[int, str]:
    """Rank of each child process of ``pid`` (from its RANK environment variable)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            ranks = [e[5:].decode() for e in env if e.startswith(b"RANK=")]
            found[int(entry.name)] = ranks[0] if ranks else "?"
    return found


@pytest.mark.slow
def test_killing_one_process_stops_the_other_with_a_clear_error(corpus, tmp_path):
    run = tmp_path / "k"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd += ["-m", "lstmgen", "train", str(corpus), "-o", str(run)]
    cmd += flags(batch_size=2, max_steps=100000)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "val_loss" not in _read(run / "metrics.jsonl"):
            time.sleep(0.2)
        assert "val_loss" in _read(run / "metrics.jsonl"), "no checkpoint within 120 s"
        rank1 = [pid for pid, rank in _children(proc.pid).items() if rank == "1"]
        assert rank1, _children(proc.pid)
        os.kill(rank1[0], signal.SIGKILL)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=90)
        assert time.monotonic() - killed < 60
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    text = err.decode()
    assert "error: process 0 of 2 lost another training process" in text, text[-3000:]
    assert load_model(run) is not None
    tensors, meta = RunDir(run).load_state()
    assert meta["world_size"] == "2" and "model.decoder.weight" in tensors


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_grad_accum_is_checked_and_torch_only(tmp_path, run_cli):
    path = tmp_path / "play.txt"
    path.write_text(make_play(20), encoding="utf-8")
    r = run_cli("train", path, "-o", tmp_path / "a", "--grad-accum", "0")
    assert r.code == 1 and r.err.strip() == "error: grad_accum must be >= 1"
    r = run_cli("train", path, "-o", tmp_path / "b", "--backend", "numpy", "--grad-accum", "2")
    assert r.code == 2 and "error: --grad-accum applies to --backend torch only" in r.err


@pytest.mark.slow
def test_ddp_benchmark_tiny_writes_its_result(tmp_path):
    from conftest import BENCHMARKS

    script = [sys.executable, str(BENCHMARKS / "ddp_cpu.py"), "--tiny", "--name", "d"]
    env = {**_env(), "LSTMGEN_RESULTS_DIR": str(tmp_path)}
    proc = subprocess.run(script, capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "d.json").read_text())
    assert [run["mode"] for run in r["runs"]] == ["plain", "ddp1", "ddp2"]
    assert all(run["tokens_per_s"] > 0 for run in r["runs"])
    assert set(r["ratio_to_plain"]) == {"ddp1", "ddp2"}


def test_under_torchrun_cuda_means_the_local_rank_gpu(monkeypatch):
    import lstmgen.training.distributed as distributed

    chosen = []
    monkeypatch.setattr(distributed, "resolve_device", lambda name: torch.device(name))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert Dist(rank=3, world=4, local_rank=1, active=True).device("cuda") == torch.device("cuda:1")
    assert Dist(local_rank=1).device("cuda") == torch.device("cuda")  # no torchrun: as asked
    assert Dist(rank=1, world=2, local_rank=1, active=True).device("cuda:0").index == 0
    with pytest.raises(ConfigError, match="local rank 2 has no GPU"):
        Dist(rank=2, world=3, local_rank=2, active=True).device("cuda")
    assert chosen == [torch.device("cuda:1"), torch.device("cuda:0")]


def test_under_torchrun_on_cpu_each_process_has_one_thread(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    try:
        Dist(rank=0, world=2, active=True).device("cpu")
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice stands
        Dist(rank=0, world=2, active=True).device("cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
