"""Training throughput: lstmgen's Trainer against a raw PyTorch loop, same config, same process.

The raw loop is the minimal thing a person writes: embedding + ``nn.LSTM`` + linear + cross
entropy + AdamW over pre-made TBPTT windows held in memory, hidden state carried and detached.
lstmgen's number is its whole step loop (memmapped data, schedule, clipping, logging), timed
between its progress callbacks after a warm-up. Repeats are interleaved so machine noise hits
both alike; the figure is the ratio of medians.

    python benchmarks/train_throughput.py [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import SHARED_DATA, write_result

from lstmgen import Callback, ModelConfig, TrainConfig, Trainer
from lstmgen.data import batchify, get_window

CONFIGS = [  # (name, model overrides, batch, seq_len)
    ("char 2x256 (CPU default)", {"hidden_size": 256, "embedding_size": 64}, 16, 64),
    ("char 2x512", {"hidden_size": 512, "embedding_size": 128}, 32, 128),
]


class Clock(Callback):
    def __init__(self, skip: int):
        self.skip, self.marks = skip, []

    def on_log(self, trainer, metrics):
        if metrics["step"] >= self.skip:
            self.marks.append((metrics["step"], time.perf_counter()))


def lstmgen_rate(corpus: Path, model_over: dict, B: int, T: int, steps: int, warm: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            batch_size=B,
            seq_len=T,
            max_steps=warm + steps,
            eval_every=10**9,
            sample_tokens=0,
            device="cpu",
            log_every=5,
        )
        clock = Clock(warm)
        trainer = Trainer.create(
            tmp,
            [corpus],
            cfg,
            ModelConfig(dropout=0.0, **model_over),
            valid=[corpus],
            callbacks=[clock],
        )
        trainer.evaluate = lambda max_tokens=0: {  # the final evaluation is not training
            "val_loss": 0.0,
            "val_perplexity": 1.0,
            "val_bits_per_char": 0.0,
            "val_tokens": 0,
        }
        trainer.fit()
    (s0, t0), (s1, t1) = clock.marks[0], clock.marks[-1]
    return (s1 - s0) * B * T / (t1 - t0)


def raw_rate(
    tokens: np.ndarray, vocab: int, model_over: dict, B: int, T: int, steps: int, warm: int
) -> float:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab, dropout=0.0, **model_over)
    emb = torch.nn.Embedding(vocab, cfg.embedding_size)
    rnn = torch.nn.LSTM(cfg.embedding_size, cfg.hidden_size, cfg.num_layers, batch_first=True)
    head = torch.nn.Linear(cfg.hidden_size, vocab)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    streams = batchify(tokens, B)
    windows = [tuple(map(torch.from_numpy, get_window(streams, k, T))) for k in range(warm + steps)]
    state = None
    for i, (x, y) in enumerate(windows):
        if i == warm:
            t0 = time.perf_counter()
        out, state = rnn(emb(x), state)
        loss = F.cross_entropy(head(out).reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state = tuple(s.detach() for s in state)
    return steps * B * T / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="train_throughput_cpu")
    args = ap.parse_args()
    corpus = SHARED_DATA / "tiny-shakespeare" / "train.txt"
    text = corpus.read_text(encoding="utf-8")
    chars = sorted(set(text))
    tokens = np.array([chars.index(c) for c in text[:400_000]], dtype=np.int64)
    rows = []
    for name, over, B, T in CONFIGS:
        raw, ours = [], []
        for _ in range(args.repeats):
            raw.append(raw_rate(tokens, len(chars), over, B, T, args.steps, args.warmup))
            ours.append(lstmgen_rate(corpus, over, B, T, args.steps, args.warmup))
        r, o = statistics.median(raw), statistics.median(ours)
        rows.append(
            {
                "config": name,
                "batch": B,
                "seq_len": T,
                "raw_tokens_per_s": round(r),
                "lstmgen_tokens_per_s": round(o),
                "ratio": round(o / r, 3),
                "raw_runs": [round(v) for v in raw],
                "lstmgen_runs": [round(v) for v in ours],
            }
        )
        print(f"{name}: raw {r:,.0f} tok/s, lstmgen {o:,.0f} tok/s ({o / r:.3f}x)")
    out = write_result(
        args.name,
        {"device": "cpu", "threads": torch.get_num_threads(), "steps": args.steps, "rows": rows},
    )
    print(out)


if __name__ == "__main__":
    main()
