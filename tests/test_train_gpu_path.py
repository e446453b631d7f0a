"""The trainer's GPU-path pieces that run on CPU: device-resident window slicing, precision
settings, the gpu-fast preset, and the GPU benchmarks' --tiny runs (same code as on CUDA)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (
    TINY_MODEL,
    TINY_TRAIN,
    benchmark_module,
    benchmark_result,
    run_benchmark_script,
    tiny_train_args,
)
from lstmgen import Callback, ConfigError, ModelConfig, TrainConfig, Trainer, runtime
from lstmgen.config import PRESETS
from lstmgen.data import batchify, get_window, num_windows
from lstmgen.model import LanguageModel
from lstmgen.train import Windows, resolve_precision, tf32, window_tensors

SHAKESPEARE = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.mark.parametrize("n_tokens, batch, seq_len", [(1000, 4, 16), (997, 3, 7), (50, 5, 64)])
def test_window_slicing_on_a_tensor_equals_get_window(n_tokens, batch, seq_len):
    tokens = np.random.default_rng(0).integers(0, 60000, n_tokens).astype(np.uint16)
    streams = batchify(tokens, batch)  # (B, n)
    on_device = torch.from_numpy(streams.astype(np.int32))
    resident = Windows(streams, seq_len, torch.device("cpu"), resident=True)
    for k in range(num_windows(streams, seq_len)):  # the last window may be short
        x, y = get_window(streams, k, seq_len)
        for xt, yt in (window_tensors(on_device, k, seq_len), resident(k)):
            assert xt.dtype == yt.dtype == torch.int64
            assert np.array_equal(xt.numpy(), x) and np.array_equal(yt.numpy(), y)
    assert Windows(streams, seq_len, torch.device("cpu")).on_device is None  # CPU: memmap


def test_training_on_resident_windows_is_bit_identical(tmp_path, corpus_file):
    cfg = TrainConfig(
        **{**TINY_TRAIN, "eval_every": 1000, "batch_size": 32, "seq_len": 32}, max_steps=30
    )
    model_cfg = ModelConfig(**{**TINY_MODEL, "dropout": 0.2})
    runs = []
    for name in ("memmap", "resident"):
        trainer = Trainer.create(tmp_path / name, [corpus_file], cfg, model_cfg)
        if name == "resident":  # the CUDA path's window source, forced on CPU
            trainer.windows = Windows(trainer.streams, cfg.seq_len, trainer.device, True)
        trainer.fit()  # 30 steps cross an epoch boundary of this corpus
        assert trainer.pos.epoch >= 1
        runs.append(trainer.model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


NO_BF16_CPU = "bf16 on CPU needs a processor with bf16 instructions"


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set whether this processor counts as having bf16 instructions (runtime.py)."""

    def set_native(native: bool) -> None:
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)

    return set_native


def test_precision_settings(cpu_bf16):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    cpu_bf16(False)
    with pytest.raises(ConfigError, match=NO_BF16_CPU):
        resolve_precision("bf16", cpu)
    cpu_bf16(True)
    assert resolve_precision("bf16", cpu) == "bf16"
    # AMX or AVX512-BF16: measured faster at the same loss (cpu_bf16.json, cpu_bf16_epyc.json)
    assert resolve_precision("auto", cpu) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ConfigError, match="bf16 needs a CUDA device or a CPU"):
        resolve_precision("bf16", torch.device("mps"))
    with pytest.raises(ConfigError, match="precision must be one of auto, bf16, fp32"):
        TrainConfig(precision="fp16").validate()
    assert TrainConfig.from_dict({}).precision == "auto"  # older train_config.json files load


def test_tf32_flags_are_set_inside_and_restored_after():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    try:
        matmul.allow_tf32, cudnn.allow_tf32 = False, False
        with tf32(True):
            assert matmul.allow_tf32 and cudnn.allow_tf32
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
        with tf32(False):
            assert not matmul.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


def test_bf16_on_cpu_is_a_config_error_and_precision_is_resumable(tmp_path, corpus_file, cpu_bf16):
    cpu_bf16(False)
    cfg = TrainConfig(**TINY_TRAIN, max_steps=4, precision="bf16")
    with pytest.raises(ConfigError, match=NO_BF16_CPU):
        Trainer.create(tmp_path / "bf16", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    run = tmp_path / "r"
    first = Trainer.create(run, [corpus_file], cfg.replace(precision="fp32"), ModelConfig())
    assert first.precision == "fp32" and not first.autocast
    first.fit()
    resumed = Trainer.resume(run, max_steps=8, precision="auto")
    assert resumed.config.precision == "auto" and resumed.precision == "fp32"
    assert resumed.fit()["step"] == 8
    with pytest.raises(ConfigError, match=NO_BF16_CPU):
        Trainer.resume(run, precision="bf16")


def test_bf16_on_a_cpu_with_bf16_instructions_trains_as_fp32_does(tmp_path, corpus_file, cpu_bf16):
    # the same run in fp32 and under CPU bf16 autocast: the same data, a loss within bf16's
    # rounding at the first step, and a resumable run whose state says bf16
    cpu_bf16(True)
    losses: dict[str, list[float]] = {"fp32": [], "bf16": []}

    class Losses(Callback):
        def on_log(self, trainer, metrics):
            losses[trainer.precision].append(metrics["train_loss"])

    for precision in losses:
        cfg = TrainConfig(**{**TINY_TRAIN, "log_every": 1}, max_steps=3, precision=precision)
        model = ModelConfig(**TINY_MODEL)
        trainer = Trainer.create(
            tmp_path / precision, [corpus_file], cfg, model, callbacks=[Losses()]
        )
        assert trainer.autocast == (precision == "bf16")
        trainer.fit()
    assert losses["bf16"][0] == pytest.approx(losses["fp32"][0], rel=0.02)
    assert all(math.isfinite(x) for x in losses["bf16"])
    resumed = Trainer.resume(tmp_path / "bf16", max_steps=4)
    assert resumed.precision == "bf16" and resumed.fit()["step"] == 4


def test_cli_precision_flag(run_cli, corpus_file, tmp_path, cpu_bf16):
    cpu_bf16(False)
    bad = run_cli("train", corpus_file, "-o", tmp_path / "a", "-q", *tiny_train_args(),
                  "--max-steps", "2", "--precision", "bf16")  # fmt: skip
    assert bad.code != 0 and NO_BF16_CPU in bad.err
    assert "Traceback" not in bad.err and len(bad.err.strip().splitlines()) == 1
    ok = run_cli("train", corpus_file, "-o", tmp_path / "b", "-q", *tiny_train_args(),
                 "--max-steps", "2", "--precision", "fp32")  # fmt: skip
    assert ok.code == 0, ok.err
    assert "on cpu (fp32)" in ok.err
    assert json.loads((tmp_path / "b" / "train_config.json").read_text())["precision"] == "fp32"
    choice = run_cli("train", corpus_file, "-o", tmp_path / "c", "--precision", "fp16")
    assert choice.code != 0 and "fp16" in choice.err


def test_gpu_fast_preset_is_valid_and_sized_as_documented():
    model_cfg = ModelConfig.from_dict({**PRESETS["gpu-fast"]["model"], "vocab_size": 65})
    train_cfg = TrainConfig.from_dict(PRESETS["gpu-fast"]["train"])
    assert (model_cfg.num_layers, model_cfg.hidden_size) == (3, 1024)
    assert 0.2 <= model_cfg.dropout <= 0.5
    assert (train_cfg.batch_size, train_cfg.seq_len, train_cfg.precision) == (128, 256, "fp32")
    with torch.device("meta"):  # shapes only: no 21M-parameter allocation
        params = LanguageModel(model_cfg).num_parameters()
    assert 20e6 < params < 23e6


def test_gpu_fast_preset_from_the_cli(run_cli, corpus_file, tmp_path):
    # The preset with its sizes shrunk by explicit flags (explicit flags win): it runs on CPU.
    r = run_cli("train", corpus_file, "-o", tmp_path / "g", "-q", "--preset", "gpu-fast",
                "--hidden-size", "8", "--embedding-size", "8", "--batch-size", "4",
                "--seq-len", "16", "--max-steps", "3", "--device", "cpu")  # fmt: skip
    assert r.code == 0, r.err
    cfg = Trainer.resume(tmp_path / "g").config
    assert cfg.precision == "fp32" and cfg.lr == PRESETS["gpu-fast"]["train"]["lr"]


def test_max_time_counts_wall_clock_including_evaluation(tmp_path, corpus_file):
    slow_eval = []

    class Slow(Callback):
        def on_eval(self, trainer, metrics, sample):
            import time

            time.sleep(0.3)  # evaluation time counts against --max-time too (issue #10)
            slow_eval.append(metrics["elapsed"])

    cfg = TrainConfig(**{**TINY_TRAIN, "eval_every": 20}, max_time=0.6)
    trainer = Trainer.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    trainer.callbacks.append(Slow())
    summary = trainer.fit()
    assert summary["reason"] == "max_time"
    assert summary["elapsed"] < 0.6 + 0.35  # with its 0.3 s evaluations, not on top of them
    assert len(slow_eval) >= 1
    assert trainer.tokens_seen() == pytest.approx(
        summary["step"] * cfg.batch_size * cfg.seq_len, rel=0.1
    )


needs_data = pytest.mark.skipif(
    not (SHAKESPEARE / "tiny-shakespeare" / "train.txt").exists()
    or not (SHAKESPEARE / "ptb" / "ptb.train.txt").exists(),
    reason="needs ../shared/data",
)


@needs_data
def test_train_throughput_tiny_runs_the_gpu_code_path(tmp_path):
    run_benchmark_script("train_throughput.py", tmp_path, "--tiny")
    r = json.loads((tmp_path / "train_throughput_tiny.json").read_text())
    assert r["device"] == "cpu" and r["machine"]["torch"] == torch.__version__
    assert [row["corpus"] for row in r["rows"]] == ["shakespeare", "ptb"]
    for row in r["rows"]:
        assert row["raw_tokens_per_s"] > 0 and row["lstmgen_tokens_per_s"] > 0
        assert row["ratio_of_medians"] == pytest.approx(
            row["lstmgen_tokens_per_s"] / row["raw_tokens_per_s"], abs=2e-3
        )
        pairs = sorted(o / r for r, o in zip(row["raw_runs"], row["lstmgen_runs"], strict=True))
        assert pairs[0] - 2e-3 <= row["ratio"] <= pairs[-1] + 2e-3
        assert row["precision"] == "fp32"  # bf16 rows fall back to fp32 off CUDA
        assert 0 < row["lstmgen_mfu"] < 1 and row["peak_tflops"] >= 0
        assert len(row["raw_runs"]) == len(row["lstmgen_runs"]) == r["repeats"]
    markdown = benchmark_module("train_throughput").markdown
    table = markdown(r)
    assert table.count("\n| char 2x32") == 1 and "MFU" in table


def test_train_flops_per_token_formula():
    train_flops_per_token = benchmark_module("train_throughput").train_flops_per_token
    cfg = ModelConfig(vocab_size=10, embedding_size=3, hidden_size=5, num_layers=2)
    forward_macs = 4 * 5 * (3 + 5) + 4 * 5 * (5 + 5) + 5 * 10
    assert train_flops_per_token(cfg) == 6 * forward_macs
    # issue 5: 2x4096 (E 4096, PTB V 10k) at 304k tok/s is ~565 TFLOP/s
    big = ModelConfig(vocab_size=10_000, embedding_size=4096, hidden_size=4096, num_layers=2)
    assert train_flops_per_token(big) * 304e3 / 1e12 == pytest.approx(565, rel=0.02)


@needs_data
def test_race_tiny_records_the_curve_and_settings(tmp_path):
    proc = run_benchmark_script("race.py", tmp_path, "--tiny", "--device", "cpu", "--budget", "1",
                          "lr=0.01", "--name", "r")  # fmt: skip
    r = json.loads((tmp_path / "r.json").read_text())
    assert "best val loss" in proc.stdout
    assert r["preset"] == "gpu-fast" and r["device"] == "cpu" and r["train_config"]["lr"] == 0.01
    assert r["train_config"]["max_time"] == 1.0 and r["budget_s"] == 1.0
    assert r["train_seconds"] >= 1.0 and r["wall_seconds_incl_eval"] >= r["train_seconds"]
    curve = r["curve"]
    assert len(curve) == r["evaluations"] >= 2
    assert [p["step"] for p in curve] == sorted(p["step"] for p in curve)
    assert min(p["val_loss"] for p in curve) == r["val_loss_nats_per_char"]
    best = min(curve, key=lambda p: p["val_loss"])
    assert (r["best_elapsed_s"], r["best_wall_s"]) == (best["elapsed_s"], best["wall_s"])
    assert r["val_loss_nats_per_char"] < math.log(65)
    assert r["tokens_per_s"] > 0 and r["steps"] > 0 and r["parameters"] > 0
    assert set(r["reference"]) == {"nanoGPT CPU recipe", "plain 2x256 LSTM"}
    markdown = benchmark_module("race").markdown
    table = markdown(r)
    assert f"**{r['val_loss_nats_per_char']:.4f}**" in table and "nanoGPT CPU recipe" in table


@needs_data
def test_quality_cpu_is_race_with_cpu_defaults(tmp_path):
    # the tiny flag keeps it quick; the defaults (preset, device, name, eval) are quality_cpu's
    run_benchmark_script("quality_cpu.py", tmp_path, "--tiny", "--budget", "0.5")
    r = json.loads((tmp_path / "quality_cpu.json").read_text())
    assert r["preset"] == "cpu-small" and r["device"] == "cpu"
    assert r["evaluations"] == 1  # no periodic evaluation: only the final full pass
    quality_cpu = benchmark_module("render_readme").quality_cpu
    assert f"{r['val_loss_nats_per_char']:.4f}" in quality_cpu(r)


@needs_data
@pytest.mark.skipif(not runtime.cpu_has_native_bf16(), reason="needs a CPU with bf16 instructions")
def test_cpu_bf16_benchmark_measures_both_precisions(tmp_path):
    # a subprocess: the real processor decides, as for a user (conftest's patch is not there)
    data = benchmark_result(tmp_path, "cpu_bf16.py", "--tiny", "--rounds", "1", "--name", "b")
    assert set(data["results"]) == {
        "char-default-1-thread", "char-default-2-threads", "word-cpu-ptb-1-thread"
    }  # fmt: skip
    for r in data["results"].values():
        assert r["speedup_bf16"] > 0 and len(r["runs"]["fp32"]) == len(r["runs"]["bf16"]) == 1
        # the same seed, data and steps: bf16 rounding moves the loss, not the learning
        assert r["val_loss_bf16"] == pytest.approx(r["val_loss_fp32"], rel=0.02)
