"""What the NumPy reference costs: its speed against the PyTorch CPU backend on the same model.

For each cell, one model with the default size (2 layers x 256, embedding 64, character
vocabulary of tiny-shakespeare) is built in PyTorch and copied into the NumPy reference, then
both time, in this one run, alternately:

* a training step: forward and backward over a batch of 16 x 64 tokens (what ``lstmgen train``
  does per step, optimiser excluded);
* a whole ``lstmgen train`` step of each backend's trainer (data, forward, backward,
  clipping, AdamW) on tiny-shakespeare, evaluation excluded;
* generation: one token at a time for a single sequence, state carried (what ``lstmgen
  generate`` does per token), PyTorch also with oneDNN switched off.

Both use float32 and one thread (BLAS and PyTorch), so the ratio compares the implementations,
not the thread pools. Figures are medians of ``--repeats`` timings, the contenders interleaved.
A "slowdown" is NumPy's time over PyTorch's: below 1 means NumPy was faster.

    python benchmarks/study_speed.py
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy/torch are imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import SHARED_DATA, write_result  # noqa: E402

from lstmgen import LanguageModel, ModelConfig  # noqa: E402
from lstmgen.checkpoint import weights_of  # noqa: E402
from lstmgen.reference import LanguageModel as NumpyModel  # noqa: E402
from lstmgen.reference import cross_entropy  # noqa: E402

V, B, T = 65, 16, 64


def timed(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, the functions interleaved within every repeat so that
    load from other processes hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def measure(cell: str, x: np.ndarray, y: np.ndarray, repeats: int, gen_tokens: int) -> dict:
    cfg = ModelConfig(vocab_size=V, cell=cell, hidden_size=256)  # 2 x 256, embedding 64
    torch.manual_seed(0)
    tm = LanguageModel(cfg)
    nm = NumpyModel(cfg, {k: v.detach().numpy().copy() for k, v in weights_of(tm).items()})
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step():
        logits, _ = tm(xt)
        loss = F.cross_entropy(logits.reshape(-1, V), yt.reshape(-1))
        tm.zero_grad(set_to_none=True)
        loss.backward()

    def numpy_step():
        logits, _, cache = nm.forward(x)
        _, dlogits = cross_entropy(logits, y)
        nm.backward(cache, dlogits)

    @torch.no_grad()
    def torch_generate():
        state, tok = None, torch.zeros(1, 1, dtype=torch.long)
        for _ in range(gen_tokens):
            logits, state = tm(tok, state)
            tok = logits[:, -1].argmax(-1, keepdim=True)

    def torch_generate_no_onednn():
        # PyTorch's CPU LSTM goes through oneDNN, whose per-call cost dominates at T = 1.
        with torch.backends.mkldnn.flags(enabled=False):
            torch_generate()

    def numpy_generate():
        state, tok = None, np.zeros((1, 1), dtype=np.int64)
        for _ in range(gen_tokens):
            logits, state = nm(tok, state)
            tok = logits[:, -1].argmax(-1)[:, None]

    torch_step(), numpy_step()  # warm up
    step = timed({"torch": torch_step, "numpy": numpy_step}, repeats)
    gen = timed(
        {
            "torch": torch_generate,
            "torch_onednn_off": torch_generate_no_onednn,
            "numpy": numpy_generate,
        },
        repeats,
    )
    return {
        "parameters": tm.num_parameters(),
        "train_step_tokens_per_s": {k: round(B * T / v) for k, v in step.items()},
        "train_step_slowdown": round(step["numpy"] / step["torch"], 2),
        "generate_tokens_per_s": {k: round(gen_tokens / v) for k, v in gen.items()},
        "generate_slowdown": round(gen["numpy"] / gen["torch"], 2),
        "generate_slowdown_vs_onednn_off": round(gen["numpy"] / gen["torch_onednn_off"], 2),
    }


def trainer_speed(cell: str, data: Path, steps: int) -> dict:
    """Seconds per optimiser step of the two trainers (data, forward, backward, clipping, AdamW),
    evaluation excluded, on tiny-shakespeare with the default settings."""
    from lstmgen import TrainConfig, Trainer
    from lstmgen.reference.train import Trainer as NumpyTrainer

    out = {}
    for name, trainer_class in (("torch", Trainer), ("numpy", NumpyTrainer)):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(max_steps=steps, eval_every=10**6, sample_tokens=0, device="cpu")
            trainer = trainer_class.create(
                tmp,
                [data / "train.txt"],
                cfg,
                ModelConfig(cell=cell, hidden_size=256),
                valid=[data / "val.txt"],
            )
            trainer.evaluate = lambda max_tokens=0: {"val_loss": 0.0}  # not timed: skip it
            summary = trainer.fit()
        out[name] = summary["elapsed"] / summary["step"]
    return {
        "seconds_per_step": {k: round(v, 4) for k, v in out.items()},
        "slowdown": round(out["numpy"] / out["torch"], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gen-tokens", type=int, default=200)
    ap.add_argument("--trainer-steps", type=int, default=20)
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "tiny-shakespeare")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B, T))
    y = rng.integers(0, V, (B, T))
    rows = {}
    for cell in ("lstm", "gru", "rnn"):
        r = rows[cell] = measure(cell, x, y, args.repeats, args.gen_tokens)
        step, gen = r["train_step_tokens_per_s"], r["generate_tokens_per_s"]
        print(
            f"{cell}: train step torch {step['torch']:,} vs numpy {step['numpy']:,} tokens/s (time "
            f"ratio {r['train_step_slowdown']}); generate {gen['torch']:,} vs "
            f"{gen['numpy']:,} tokens/s ({r['generate_slowdown']}x; torch without oneDNN "
            f"{gen['torch_onednn_off']:,})",
            flush=True,
        )
        r["trainer"] = trainer_speed(cell, args.data, args.trainer_steps)
        print(f"  trainer: {r['trainer']}", flush=True)
    out = write_result(
        "study_speed",
        {
            "model": "ModelConfig defaults: 2 layers x 256, embedding 64, vocabulary 65",
            "train_step": f"forward + backward, batch {B} x {T}, float32, optimiser excluded",
            "generate": f"batch 1, {args.gen_tokens} tokens one at a time, greedy, float32",
            "trainer": f"lstmgen train defaults, {args.trainer_steps} steps, eval excluded",
            "threads": 1,
            "repeats": args.repeats,
            "cells": rows,
        },
    )
    print(f"-> {out}")


if __name__ == "__main__":
    main()
