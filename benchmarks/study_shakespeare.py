"""RNN vs GRU vs LSTM on real text: tiny-shakespeare, same parameter count, same wall-clock.

Each cell is trained with lstmgen's own Trainer (defaults: AdamW lr 8e-3, batch 16 x 64, clip
1.0, cosine schedule) for the same number of seconds, then the best checkpoint is analysed:

* validation loss against training time (the Trainer's periodic evaluations);
* loss against the context the model is given: each of ``--positions`` validation characters is
  predicted after reading only the n characters before it (from a zero state), for n = 1 ... 256,
  and after a full stateful pass over everything before it. Where a curve stops falling, more
  context no longer helps that cell;
* loss on speaker names (the characters of "NAME:" headers after their first letter), grouped by
  how far back the same name last appeared: a dependency n characters long that only memory can
  bridge. (tiny-shakespeare has no brackets or double quotes to close; names are its clearest
  long-range structure.)

    python benchmarks/study_shakespeare.py                    # 3 x 90 s of training + analysis
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import ROOT, SHARED_DATA, write_result

from lstmgen import LanguageModel, ModelConfig, TrainConfig, Trainer
from lstmgen.rundir import read_metrics

CELLS = ("rnn", "gru", "lstm")
COLORS = {"rnn": "tab:red", "gru": "tab:green", "lstm": "tab:blue"}
CONTEXTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
NAME_BUCKETS = ((0, 300), (300, 1000), (1000, 3000), (3000, 10**9))


def model_config(cell: str, hidden: int, vocab: int, embedding: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab, cell=cell, embedding_size=embedding, hidden_size=hidden, num_layers=1
    )


def equal_budget_sizes(lstm_hidden: int, vocab: int, embedding: int) -> dict[str, int]:
    def count(cell: str, h: int) -> int:
        return LanguageModel(model_config(cell, h, vocab, embedding)).num_parameters()

    target = count("lstm", lstm_hidden)
    sizes = {}
    for cell in CELLS:
        lo, hi = 1, 8 * lstm_hidden  # parameter count grows with h: bisect
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if count(cell, mid) < target else (lo, mid)
        sizes[cell] = min((lo - 1, lo), key=lambda h, c=cell: abs(count(c, h) - target))
    return sizes


@torch.no_grad()
def full_context_nll(
    model: LanguageModel, ids: np.ndarray, pieces: int = 16, warmup: int = 1024
) -> np.ndarray:
    """Per-token loss (N,) of ``ids`` after a stateful pass; the first token is predicted from
    bos. Pieces run in parallel, each after reading the ``warmup`` tokens before it."""
    n = len(ids)
    inputs = np.concatenate([[model.tokenizer.bos_id], ids[:-1]])
    size = -(-n // pieces)
    nll = np.zeros(n)
    starts = list(range(0, n, size))
    width = max(min(n, s + size) - max(0, s - warmup) for s in starts)
    x = np.zeros((len(starts), width), np.int64)
    for b, s in enumerate(starts):
        read = max(0, s - warmup)
        x[b, : min(n, s + size) - read] = inputs[read : min(n, s + size)]
    out = []
    state = None
    for t in range(0, width, 256):
        logits, state = model(torch.from_numpy(x[:, t : t + 256]), state)
        out.append(torch.log_softmax(logits.float(), -1))
    logp = torch.cat(out, dim=1)  # (pieces, width, V)
    for b, s in enumerate(starts):
        read, end = max(0, s - warmup), min(n, s + size)
        cols = torch.arange(s - read, end - read)
        nll[s:end] = -logp[b, cols, torch.from_numpy(ids[s:end])].numpy()
    return nll


@torch.no_grad()
def truncated_context_nll(
    model: LanguageModel, ids: np.ndarray, positions: np.ndarray, n: int
) -> np.ndarray:
    """Loss of ``ids[p]`` for each p given only bos and the n tokens before it (zero state)."""
    bos = model.tokenizer.bos_id
    x = np.stack([np.concatenate([[bos], ids[p - n : p]]) for p in positions])  # (M, n + 1)
    losses = []
    for chunk in range(0, len(x), 500):
        logits, _ = model(torch.from_numpy(x[chunk : chunk + 500]))
        losses.append(
            F.cross_entropy(
                logits[:, -1].float(),
                torch.from_numpy(ids[positions[chunk : chunk + 500]]),
                reduction="none",
            ).numpy()
        )
    return np.concatenate(losses)


def speaker_name_positions(text: str) -> list[tuple[list[int], float]]:
    """(character positions of a speaker header after its first letter, distance back to the
    previous header of the same name) for every header but each name's first."""
    last: dict[str, int] = {}
    found = []
    for m in re.finditer(r"(?m)^([A-Z][A-Za-z' ]*[A-Za-z]):$", text):
        name, start = m.group(1), m.start()
        if name in last:
            found.append((list(range(start + 1, m.end())), start - last[name]))
        last[name] = start
    return found


def analyse(model: LanguageModel, val_text: str, positions: np.ndarray) -> dict:
    ids = np.array(model.tokenizer.encode(val_text), dtype=np.int64)
    full = full_context_nll(model, ids)
    context = {
        str(n): float(truncated_context_nll(model, ids, positions, n).mean()) for n in CONTEXTS
    }
    context["full"] = float(full[positions].mean())
    names = speaker_name_positions(val_text)
    buckets = []
    for lo, hi in NAME_BUCKETS:
        chars = [p for pos, d in names if lo <= d < hi for p in pos]
        buckets.append(
            {
                "distance": [lo, hi],
                "headers": sum(lo <= d < hi for _, d in names),
                "chars": len(chars),
                "loss": float(full[chars].mean()) if chars else None,
            }
        )
    return {
        "val_loss_full": float(full.mean()),
        "loss_by_context": context,
        "speaker_names": buckets,
    }


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for cell in CELLS:
        r = results["cells"][cell]
        label = f"{cell.upper()} (H={r['hidden']})"
        curve = r["curve"]
        axes[0].plot(
            [c["elapsed"] for c in curve],
            [c["val_loss"] for c in curve],
            "-",
            color=COLORS[cell],
            label=label,
        )
        ctx = r["analysis"]["loss_by_context"]
        axes[1].plot(
            CONTEXTS, [ctx[str(n)] for n in CONTEXTS], "o-", color=COLORS[cell], label=label
        )
        axes[1].axhline(ctx["full"], color=COLORS[cell], ls="--", lw=1)
    axes[0].set_xlabel("training time (s)")
    axes[0].set_ylabel("validation loss (nats/char)")
    axes[0].set_title("validation loss, same wall-clock", fontsize=10)
    axes[0].set_ylim(top=min(3.0, axes[0].get_ylim()[1]))
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("characters of context given (dashed: the whole text before)")
    axes[1].set_ylabel("loss (nats/char)")
    axes[1].set_title("loss against context length", fontsize=10)
    width = 0.27
    labels = [f"{lo}-{hi}" if hi < 10**9 else f">{lo}" for lo, hi in NAME_BUCKETS]
    for i, cell in enumerate(CELLS):
        buckets = results["cells"][cell]["analysis"]["speaker_names"]
        axes[2].bar(
            np.arange(len(buckets)) + (i - 1) * width,
            [b["loss"] or 0 for b in buckets],
            width,
            color=COLORS[cell],
            label=cell.upper(),
        )
    buckets = results["cells"]["lstm"]["analysis"]["speaker_names"]
    axes[2].set_xticks(
        range(len(buckets)),
        [f"{lab}\n({b['headers']} names)" for lab, b in zip(labels, buckets, strict=True)],
    )
    axes[2].set_xlabel("characters since the same speaker's name last appeared")
    axes[2].set_ylabel("loss on the name (nats/char)")
    axes[2].set_title("speaker names: a long-range dependency", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"tiny-shakespeare, {results['parameters']['lstm']:,} parameters per model, "
        f"{results['settings']['seconds_per_cell']:.0f} s of training each"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=90.0, help="training time per cell")
    ap.add_argument("--lstm-hidden", type=int, default=256)
    ap.add_argument("--embedding", type=int, default=64)
    ap.add_argument("--positions", type=int, default=1000, help="positions scored per context")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "tiny-shakespeare")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "study_shakespeare.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    val_text = (args.data / "val.txt").read_text(encoding="utf-8")
    vocab = len(set((args.data / "train.txt").read_text(encoding="utf-8")))
    hidden = equal_budget_sizes(args.lstm_hidden, vocab, args.embedding)
    rng = np.random.default_rng(0)
    positions = np.sort(
        rng.choice(np.arange(max(CONTEXTS) + 1, len(val_text)), args.positions, replace=False)
    )
    results: dict = {"hidden": hidden, "parameters": {}, "cells": {}}
    for cell in CELLS:
        with tempfile.TemporaryDirectory() as tmp:
            train_cfg = TrainConfig(
                max_time=args.seconds,
                eval_every=100,
                eval_tokens=20_000,
                sample_tokens=0,
                device="cpu",
                log_every=50,
            )
            trainer = Trainer.create(
                tmp,
                [args.data / "train.txt"],
                train_cfg,
                ModelConfig(
                    cell=cell, embedding_size=args.embedding, hidden_size=hidden[cell], num_layers=1
                ),
                valid=[args.data / "val.txt"],
            )
            summary = trainer.fit()
            rows = read_metrics(Path(tmp) / "metrics.jsonl")
            best = LanguageModel.from_pretrained(tmp)
        t0 = time.perf_counter()
        analysis = analyse(best, val_text, positions)
        results["parameters"][cell] = best.num_parameters()
        results["cells"][cell] = {
            "hidden": hidden[cell],
            "steps": summary["step"],
            "train_seconds": round(summary["elapsed"], 1),
            "tokens_per_second": round(summary["step"] * 16 * 64 / summary["elapsed"]),
            "curve": [
                {"step": r["step"], "elapsed": r["elapsed"], "val_loss": r["val_loss"]}
                for r in rows
                if "val_loss" in r and r.get("val_tokens") == 20_000
            ],
            "analysis": analysis,
            "analysis_seconds": round(time.perf_counter() - t0, 1),
        }
        print(
            f"{cell}: H={hidden[cell]}, {summary['step']} steps, full val loss "
            f"{analysis['val_loss_full']:.4f}; context "
            + ", ".join(f"{k}:{v:.3f}" for k, v in analysis["loss_by_context"].items()),
            flush=True,
        )
    results["settings"] = {
        "corpus": "tiny-shakespeare train.txt / val.txt (char level)",
        "seconds_per_cell": args.seconds,
        "layers": 1,
        "embedding": args.embedding,
        "train_config": "TrainConfig defaults (AdamW lr 8e-3, batch 16x64, clip 1.0, cosine)",
        "eval_every": 100,
        "eval_tokens": 20_000,
        "positions_per_context": args.positions,
        "torch_threads": args.threads,
    }
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(results, args.plot)
    out = write_result("study_shakespeare", results)
    print(f"-> {out}, {args.plot}")


if __name__ == "__main__":
    main()
