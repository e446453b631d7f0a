"""Training on CUDA: bf16 and fp32 (TF32) runs learn, resume, keep the window streams on the
GPU and add no host syncs to a step. Run with ``pytest -m gpu`` on a machine with a GPU."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_TRAIN, StopAt
from lstmgen import Callback, ModelConfig, TrainConfig, Trainer
from lstmgen.data import get_window
from lstmgen.train import Windows, tf32

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

GPU_MODEL = {"embedding_size": 32, "hidden_size": 64, "num_layers": 2, "dropout": 0.0}


def gpu_config(**changes) -> TrainConfig:
    base = {
        **TINY_TRAIN,
        "device": "cuda",
        "batch_size": 16,
        "seq_len": 32,
        "eval_every": 1000,
        "lr": 1e-2,
        "log_every": 5,
    }
    return TrainConfig(**{**base, **changes})


class Flags(Callback):
    """The TF32 flags as the step loop sees them."""

    def __init__(self):
        self.seen = []

    def on_log(self, trainer, metrics):
        self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_gpu_training_lowers_the_loss(tmp_path, corpus_file, precision):
    flags = Flags()
    cfg = gpu_config(max_steps=60, precision=precision)
    model_cfg = ModelConfig(**{**GPU_MODEL, "dropout": 0.1})
    trainer = Trainer.create(tmp_path / "r", [corpus_file], cfg, model_cfg, callbacks=[flags])
    assert trainer.windows.on_device is not None and trainer.windows.on_device.is_cuda
    assert trainer.autocast == (precision == "bf16")
    before = trainer.evaluate()["val_loss"]
    torch.backends.cuda.matmul.allow_tf32 = False
    summary = trainer.fit()
    assert summary["step"] == 60
    assert summary["best_val_loss"] < before - 0.5
    assert trainer.model.rnn.weight_hh_l0.dtype == torch.float32  # weights stay fp32
    assert flags.seen and all(f == (True, True) for f in flags.seen) == (precision == "fp32")
    assert not torch.backends.cuda.matmul.allow_tf32  # restored after fit


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_gpu_resume_continues_the_run(tmp_path, corpus_file, precision):
    cfg = gpu_config(max_steps=30, precision=precision, eval_every=10)
    model_cfg = ModelConfig(**GPU_MODEL)
    full = Trainer.create(tmp_path / "full", [corpus_file], cfg, model_cfg).fit()
    part = Trainer.create(tmp_path / "part", [corpus_file], cfg, model_cfg, callbacks=[StopAt(15)])
    stopped = part.fit()
    assert stopped["reason"] == "interrupted" and stopped["step"] == 15
    resumed = Trainer.resume(tmp_path / "part")
    assert resumed.pos.step == 15 and resumed.hidden[0].is_cuda
    assert all(s["exp_avg"].is_cuda for s in resumed.optimizer.state.values())
    done = resumed.fit()
    assert done["step"] == 30
    # Not bit-exact on a GPU (atomic adds in the embedding backward), but the same run.
    assert done["best_val_loss"] == pytest.approx(full["best_val_loss"], abs=0.03)
    # precision may change on resume: a bf16 run's fp16 cuDNN state becomes fp32 and back
    other = "fp32" if precision == "bf16" else "bf16"
    switched = Trainer.resume(tmp_path / "part", max_steps=35, precision=other)
    assert switched.fit()["step"] == 35


def test_gpu_windows_match_get_window_on_both_paths(tmp_path, corpus_file):
    trainer = Trainer.create(tmp_path / "r", [corpus_file], gpu_config(max_steps=1))
    for resident in (True, False):  # False: pinned memory and non-blocking copies
        windows = Windows(trainer.streams, 32, trainer.device, resident=resident)
        for k in (0, 1, trainer.windows_per_epoch - 1):
            x, y = get_window(trainer.streams, k, 32)
            xb, yb = windows(k)
            assert xb.is_cuda and xb.dtype == torch.int64
            assert np.array_equal(xb.cpu().numpy(), x) and np.array_equal(yb.cpu().numpy(), y)


def _count_syncs(fn, steps: int) -> int:
    """Synchronizing CUDA calls made by ``steps`` calls of ``fn`` (torch's sync debug mode)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for k in range(steps):
                fn(k)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_gpu_step_adds_no_host_sync_to_a_bare_step(tmp_path, corpus_file, precision):
    """lstmgen's step (window slicing, schedule, clipping, loss sum) against the bare
    forward/backward/AdamW of the same model: whatever cuDNN does, lstmgen adds no sync."""
    cfg = gpu_config(max_steps=100, precision=precision)
    model_cfg = ModelConfig(**{**GPU_MODEL, "dropout": 0.1})
    trainer = Trainer.create(tmp_path / "r", [corpus_file], cfg, model_cfg)
    trainer.model.train()
    loss_sum = torch.zeros((), device="cuda")

    def lstmgen_step(k):
        nonlocal loss_sum
        x, y = trainer.windows(k)
        loss_sum += trainer.train_step(x, y)

    x0, y0 = trainer.windows(0)
    state = None

    def bare_step(k):
        nonlocal state
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=trainer.autocast):
            logits, state = trainer.model(x0, state)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y0.reshape(-1))
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        state = tuple(s.detach() for s in state)

    with tf32(trainer._tf32()):
        for k in range(3):  # lazy initialisation (cuDNN handles, dropout state) may sync
            lstmgen_step(k)
            bare_step(k)
        bare = _count_syncs(bare_step, 5)
        ours = _count_syncs(lambda k: lstmgen_step(3 + k), 5)
    assert ours <= bare, f"lstmgen step: {ours} syncs in 5 steps, bare step: {bare}"
