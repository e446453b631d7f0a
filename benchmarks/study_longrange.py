"""RNN vs GRU vs LSTM vs SHA-LSTM on a synthetic long-range task: recall a key seen k steps
earlier.

Each sequence is ``key, d_1 ... d_k, ?``: the key is one of 8 symbols, the k distractors are
drawn uniformly from 8 other symbols, and at the query ``?`` the model must name the key (chance:
1/8). The loss is the cross-entropy of that one prediction. The models are lstmgen's own
PyTorch ``LanguageModel`` (1 layer, embedding 16), sized to the same parameter count: the three
cells, and ``sha-lstm`` (issue #12: the LSTM with one attention head after its layer; each
sequence is one window, so the head sees all of it whatever ``--memory`` is, which only
matters across windows: its memory is "at least the gap" by construction).

Two protocols, same optimiser (Adam, lr 5e-3, batch 64, gradient clipping 1.0):

* ``exact``: for each k, a fresh model trained only on gap k for at most ``--steps`` steps
  (stopping early once held-out accuracy reaches 99 %). Can the cell *learn* a dependency of
  length k from scratch? This is where vanishing gradients bite.
* ``mixed``: one model per cell trained on gaps drawn log-uniformly from 1..max k (so short,
  easy examples are common), then tested at every k. Can the cell *hold* the key once the
  mechanism has been learned on short gaps?

    python benchmarks/study_longrange.py            # gaps up to 1,000: long on a CPU
    python benchmarks/study_longrange.py --ks 5,10,20,50,100,200 --cells rnn,gru,lstm  # ~7 min
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import RESULTS, ROOT, write_result

from lstmgen import LanguageModel, ModelConfig

KEYS, DISTRACTORS = 8, 8
V = KEYS + DISTRACTORS + 1  # + the query symbol
QUERY = V - 1
E = 16
CELLS = ("rnn", "gru", "lstm", "sha-lstm")  # sha-lstm: the architecture, with an LSTM cell
COLORS = {"rnn": "tab:red", "gru": "tab:green", "lstm": "tab:blue", "sha-lstm": "tab:purple"}
STYLES = {  # marker, size, line: overlapping curves still show
    "rnn": ("s", 11, "-"),
    "gru": ("^", 8, "--"),
    "lstm": ("o", 5, "-"),
    "sha-lstm": ("D", 4, ":"),
}
MEMORY = 1  # sha-lstm: each sequence is one window, so the head sees it all anyway


def make_batch(n: int, gap: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences ``key, k distractors, query`` (n, gap + 2) and their keys (n,)."""
    keys = torch.randint(0, KEYS, (n,), generator=g)
    x = torch.randint(KEYS, KEYS + DISTRACTORS, (n, gap + 2), generator=g)
    x[:, 0], x[:, -1] = keys, QUERY
    return x, keys


def config(cell: str, hidden: int) -> ModelConfig:
    if cell == "sha-lstm":
        return ModelConfig(
            vocab_size=V, arch="sha-lstm", embedding_size=E, hidden_size=hidden, num_layers=1,
            memory=MEMORY,
        )  # fmt: skip
    return ModelConfig(vocab_size=V, cell=cell, embedding_size=E, hidden_size=hidden, num_layers=1)


def equal_budget_sizes(lstm_hidden: int, cells=CELLS) -> dict[str, int]:
    """Hidden size per cell whose total parameter count is closest to the LSTM's."""
    target = LanguageModel(config("lstm", lstm_hidden)).num_parameters()
    sizes = {}
    for cell in cells:
        sizes[cell] = min(
            range(4, 8 * lstm_hidden),
            key=lambda h, c=cell: abs(LanguageModel(config(c, h)).num_parameters() - target),
        )
    return sizes


@torch.no_grad()
def accuracy(model: LanguageModel, test: tuple[torch.Tensor, torch.Tensor]) -> float:
    logits, _ = model(test[0])
    return (logits[:, -1].argmax(-1) == test[1]).float().mean().item()


def train(
    cell: str, hidden: int, gaps, steps: int, seed: int, tests: dict, stop_at: float | None
) -> tuple[LanguageModel, dict]:
    """Train one model; ``gaps(rng)`` picks the gap of each batch. Returns the model and a log."""
    torch.manual_seed(seed)
    model = LanguageModel(config(cell, hidden))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(seed + 1)
    rng = np.random.default_rng(seed)
    t0, solved_at, curve = time.perf_counter(), None, []
    step = 0
    for step in range(1, steps + 1):
        x, y = make_batch(64, gaps(rng), g)
        logits, _ = model(x)
        loss = F.cross_entropy(logits[:, -1], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            accs = {k: accuracy(model, t) for k, t in tests.items()}
            curve.append({"step": step, "loss": round(loss.item(), 4), "accuracy": accs})
            if stop_at is not None and min(accs.values()) >= stop_at:
                solved_at = step
                break
    return model, {
        "steps": step,
        "solved_at": solved_at,
        "seconds": time.perf_counter() - t0,
        "curve": curve,
    }


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    max_k = results["settings"].get("max_k", 200)
    for ax, protocol, title in (
        (axes[0], "exact", "trained on gap k only (fresh model per k)"),
        (axes[1], "mixed", f"trained on gaps 1..{max_k}, tested at k"),
    ):
        for cell in results[protocol]:
            rows = results[protocol][cell]
            ks = [r["k"] for r in rows]
            marker, size, line = STYLES[cell]
            ax.plot(
                ks,
                [r["accuracy"] for r in rows],
                marker=marker,
                markersize=size,
                ls=line,
                color=COLORS[cell],
                label=f"{cell.upper()} (H={results['hidden'][cell]})",
            )
        ax.axhline(1 / KEYS, color="gray", ls=":", label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("k: distractors between the key and the query")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy")
    axes[0].legend()
    fig.suptitle(
        f"Recall a key seen k steps earlier, {results['parameters']['lstm']:,} parameters per model"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ks", default="5,10,20,50,100,200,500,1000")
    ap.add_argument("--steps", type=int, default=1000, help="max steps, exact protocol")
    ap.add_argument("--mixed-steps", type=int, default=1000)
    ap.add_argument("--lstm-hidden", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--protocols", default="exact,mixed")
    ap.add_argument("--name", default="study_longrange", help="result file name")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "study_longrange.png")
    ap.add_argument("--replot", action="store_true", help="only redraw the plot from the JSON")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads((RESULTS / f"{args.name}.json").read_text()), args.plot)
        return
    torch.set_num_threads(1)  # tiny models: threads only add overhead (and the machine is shared)
    ks = [int(k) for k in args.ks.split(",")]
    cells = args.cells.split(",")
    protocols = args.protocols.split(",")
    hidden = equal_budget_sizes(args.lstm_hidden, sorted(set(cells) | {"lstm"}))
    results: dict = {
        "hidden": hidden,
        "parameters": {c: LanguageModel(config(c, h)).num_parameters() for c, h in hidden.items()},
        "exact": {},
        "mixed": {},
    }
    tests = {k: make_batch(500, k, torch.Generator().manual_seed(10_000 + k)) for k in ks}
    t0 = time.perf_counter()
    for cell in cells if "exact" in protocols else ():
        rows = []
        for k in ks:
            _, log = train(
                cell,
                hidden[cell],
                lambda rng, k=k: k,
                args.steps,
                args.seed,
                {k: tests[k]},
                stop_at=0.99,
            )
            acc = log["curve"][-1]["accuracy"][k]
            rows.append(
                {
                    "k": k,
                    "accuracy": acc,
                    **{n: log[n] for n in ("steps", "solved_at")},
                    "seconds": round(log["seconds"], 1),
                }
            )
            print(
                f"exact {cell} k={k}: accuracy {acc:.3f} after {log['steps']} steps "
                f"({log['seconds']:.0f}s)",
                flush=True,
            )
        results["exact"][cell] = rows
    log_max = math.log(max(ks))
    for cell in cells if "mixed" in protocols else ():
        model, log = train(
            cell,
            hidden[cell],
            lambda rng: int(math.exp(rng.uniform(0, log_max))),
            args.mixed_steps,
            args.seed,
            tests,
            stop_at=None,
        )
        results["mixed"][cell] = [{"k": k, "accuracy": accuracy(model, tests[k])} for k in ks]
        results.setdefault("mixed_training", {})[cell] = {
            "steps": log["steps"],
            "seconds": round(log["seconds"], 1),
            "curve": log["curve"],
        }
        print(
            f"mixed {cell}: "
            + ", ".join(f"k={r['k']} {r['accuracy']:.2f}" for r in results["mixed"][cell]),
            flush=True,
        )
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    results["settings"] = {
        "task": "key (8 symbols), k distractors (8 other symbols), query -> key",
        "optimizer": "Adam lr 5e-3, batch 64, clip 1.0",
        "embedding": E,
        "layers": 1,
        "exact_max_steps": args.steps,
        "exact_stop_accuracy": 0.99,
        "mixed_steps": args.mixed_steps,
        "mixed_gaps": f"log-uniform 1..{max(ks)}",
        "test_sequences_per_k": 500,
        "seed": args.seed,
        "torch_threads": 1,
        "max_k": max(ks),
        "sha_lstm": f"attention after the one LSTM layer, memory {MEMORY} (one window)",
    }
    out = write_result(args.name, results)
    print(f"-> {out}")
    if all(len(results[p]) == len(cells) for p in ("exact", "mixed")):
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(results, args.plot)
        print(f"-> {args.plot}")


if __name__ == "__main__":
    main()
