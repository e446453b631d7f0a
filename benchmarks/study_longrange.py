"""RNN vs GRU vs LSTM vs SHA-LSTM on a synthetic long-range task: recall a key seen k steps
earlier.

Each sequence is ``key, d_1 ... d_k, ?``: the key is one of 8 symbols, the k distractors are
drawn uniformly from 8 other symbols, and at the query ``?`` the model must name the key (chance:
1/8). The loss is the cross-entropy of that one prediction. The models are lstmgen's own
PyTorch ``LanguageModel`` (1 layer, embedding 16), sized to the same parameter count: the three
cells, and ``sha-lstm`` (issue #12: the LSTM with one attention head after its layer).

Each sequence is fed as lstmgen's trainer feeds text: in TBPTT windows of ``--window`` tokens
from its start, the state (h, c, and the sha-lstm's attention memory) carried from window to
window and detached at each boundary. The loss sits on the last token, so only the last window
gets a gradient (the earlier ones run without autograd: they would get none through the
detached state anyway). At gap k > window the key is several windows back: the recurrent cells
must carry it in their state, learnt through truncated gradients; sha-lstm can find the key's
layer output in its memory (``--memory``; by default k + 1 in the exact protocol and the
largest k + 1 in the mixed one, so the key is still in it at the query). ``--window 0`` feeds
each sequence as one window (the earlier study: the head then sees the whole sequence and its
memory is never used).

Two protocols, same optimiser (Adam, lr 5e-3, batch 64, gradient clipping 1.0):

* ``exact``: for each k, a fresh model trained only on gap k for at most ``--steps`` steps
  (stopping early once held-out accuracy reaches 99 %). Can the cell *learn* a dependency of
  length k from scratch? This is where vanishing gradients bite.
* ``mixed``: one model per cell trained on gaps drawn log-uniformly from 1..max k (so short,
  easy examples are common), then tested at every k. Can the cell *hold* the key once the
  mechanism has been learned on short gaps?

    # windows of 50, gaps up to 1,000 (docs/study.md's committed run, ~25 min on a quiet CPU)
    python benchmarks/study_longrange.py --cells lstm,sha-lstm --steps 600 --mixed-steps 1500 \
        --test-sequences 300
    # the earlier one-window study of the three cells (~7 min)
    python benchmarks/study_longrange.py --window 0 --ks 5,10,20,50,100,200 \
        --cells rnn,gru,lstm --name study_longrange --plot docs/study_longrange.png
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


def make_batch(n: int, gap: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences ``key, k distractors, query`` (n, gap + 2) and their keys (n,)."""
    keys = torch.randint(0, KEYS, (n,), generator=g)
    x = torch.randint(KEYS, KEYS + DISTRACTORS, (n, gap + 2), generator=g)
    x[:, 0], x[:, -1] = keys, QUERY
    return x, keys


def config(cell: str, hidden: int, memory: int = 1) -> ModelConfig:
    """``memory`` (sha-lstm only) does not change the parameter count."""
    if cell == "sha-lstm":
        return ModelConfig(
            vocab_size=V, arch="sha-lstm", embedding_size=E, hidden_size=hidden, num_layers=1,
            memory=memory,
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


def run_windows(model: LanguageModel, x: torch.Tensor, window: int, memory_only: bool = False):
    """Feed ``x`` (B, N) in windows of ``window`` tokens from its start (0: one window), the
    state carried and detached at every boundary, as lstmgen's trainer does. Only the last
    window is recorded for autograd (the loss is on the last token; the detached state passes
    no gradient back). Returns the last window's logits (B, T_last, V) and the final state.

    ``memory_only`` (sha-lstm, an ablation): h and c are zeroed at every boundary and only the
    attention memory crosses it, so whatever reaches the query from an earlier window came
    through the memory."""
    window = window or x.shape[1]
    state = model.init_state(x.shape[0])
    starts = range(0, x.shape[1], window)
    for i, s in enumerate(starts):
        last = i == len(starts) - 1
        with torch.set_grad_enabled(last and torch.is_grad_enabled()):
            logits, state = model(x[:, s : s + window], state)
        if not last:
            state = state.detach()
            if memory_only:
                h, c, memory, length = state
                state = type(state)((torch.zeros_like(h), torch.zeros_like(c), memory, length))
    return logits, state


@torch.no_grad()
def accuracy(
    model: LanguageModel,
    test: tuple[torch.Tensor, torch.Tensor],
    window: int,
    memory_only: bool = False,
) -> float:
    model.eval()
    logits, _ = run_windows(model, test[0], window, memory_only)
    model.train()
    return (logits[:, -1].argmax(-1) == test[1]).float().mean().item()


def train(
    cell: str,
    hidden: int,
    gaps,
    steps: int,
    seed: int,
    tests: dict,
    stop_at: float | None,
    window: int = 0,
    memory: int = 1,
    batch: int = 64,
    lr: float = 5e-3,
    eval_every: int = 100,
) -> tuple[LanguageModel, dict]:
    """Train one model; ``gaps(rng)`` picks the gap of each batch. Returns the model and a log."""
    torch.manual_seed(seed)
    model = LanguageModel(config(cell, hidden, memory))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    rng = np.random.default_rng(seed)
    t0, solved_at, curve = time.perf_counter(), None, []
    step = 0
    for step in range(1, steps + 1):
        x, y = make_batch(batch, gaps(rng), g)
        logits, _ = run_windows(model, x, window)
        loss = F.cross_entropy(logits[:, -1], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % eval_every == 0 or step == steps:
            accs = {k: accuracy(model, t, window) for k, t in tests.items()}
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


ABLATIONS = (  # results["mixed_ablation"] keys (see ``ablation``), their labels and colours
    ("memory_1", "SHA-LSTM, memory cut to 1 (LSTM state only)", "tab:orange"),
    ("state_zeroed_at_boundaries", "SHA-LSTM, h, c zeroed per window (memory only)", "tab:pink"),
)


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    max_k = results["settings"].get("max_k", 200)
    window = results["settings"].get("window", 0)
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
                label=f"{cell.upper()} (H={results['hidden'][cell]}, "
                f"{results['parameters'][cell]:,} parameters)",
            )
        if protocol == "mixed":  # the trained sha-lstm with one path across windows cut
            for name, label, color in ABLATIONS:
                rows = results.get("mixed_ablation", {}).get(name)
                if rows:
                    ax.plot(
                        [r["k"] for r in rows],
                        [r["accuracy"] for r in rows],
                        marker="x",
                        ls="-.",
                        lw=1,
                        color=color,
                        label=label,
                    )
            ax.legend(fontsize=7)
        ax.axhline(1 / KEYS, color="gray", ls=":", label="chance")
        if window:  # beyond it the key is in an earlier TBPTT window than the query
            ax.axvline(window, color="black", ls="--", lw=0.8, label=f"window ({window} tokens)")
        ax.set_xscale("log")
        ax.set_xlabel("k: distractors between the key and the query")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy")
    axes[0].legend(fontsize=7)
    how = (
        f"TBPTT windows of {window}, sha-lstm memory {results['settings']['memory']:,}"
        if window
        else "each sequence one window"
    )
    fig.suptitle(f"Recall a key seen k steps earlier ({how})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def ablation(model: LanguageModel, tests: dict, window: int) -> dict:
    """Which path carries the key across windows in the trained sha-lstm: accuracy per k with
    the attention memory cut to 1 entry (the LSTM state alone: the head sees at most its own
    window and one entry before it), and with h, c zeroed at every window boundary (the memory
    alone). Same weights, same test sequences."""
    cut = LanguageModel(config("sha-lstm", model.config.hidden_size, memory=1))
    cut.load_state_dict(model.state_dict())
    out = {
        "memory_1": [{"k": k, "accuracy": accuracy(cut, t, window)} for k, t in tests.items()],
        "state_zeroed_at_boundaries": [
            {"k": k, "accuracy": accuracy(model, t, window, memory_only=True)}
            for k, t in tests.items()
        ],
    }
    for name, rows in out.items():
        print(
            f"mixed sha-lstm, {name}: "
            + ", ".join(f"k={r['k']} {r['accuracy']:.2f}" for r in rows),
            flush=True,
        )
    return out


def load(name: str, merge: list[str]) -> dict:
    """Result ``name``, plus what each file in ``merge`` has and it lacks: the rows of a cell
    in a protocol, and ``mixed_ablation``. ``merged_from`` says which file gave what."""
    results = json.loads((RESULTS / f"{name}.json").read_text())
    for other_name in merge:
        other = json.loads((RESULTS / f"{other_name}.json").read_text())
        for protocol in ("exact", "mixed"):
            for cell, rows in other[protocol].items():
                if cell not in results[protocol]:
                    results[protocol][cell] = rows
                    results["hidden"].setdefault(cell, other["hidden"][cell])
                    results["parameters"].setdefault(cell, other["parameters"][cell])
                    results.setdefault("merged_from", {})[f"{protocol}/{cell}"] = other_name
        if "mixed_ablation" in other and "mixed_ablation" not in results:
            results["mixed_ablation"] = other["mixed_ablation"]
            results.setdefault("merged_from", {})["mixed_ablation"] = other_name
    return results


def markdown(results: dict) -> str:
    """docs/study.md's table: held-out accuracy per protocol, cell and k (exact: steps taken)."""
    ks = [r["k"] for r in next(iter(results["mixed"].values() or results["exact"].values()))]
    lines = [
        "| held-out accuracy | " + " | ".join(f"k = {k:,}" for k in ks) + " |",
        "|---" * (len(ks) + 1) + "|",
    ]
    for protocol in ("exact", "mixed"):
        for cell, rows in results[protocol].items():
            cells = []
            for r in rows:
                text = f"{r['accuracy']:.0%}".replace("%", " %")
                if r["accuracy"] >= 0.95:
                    text = f"**{text}**"
                if protocol == "exact":
                    text += f" ({r['steps']})"
                cells.append(text)
            lines.append(f"| {protocol}, {cell} | " + " | ".join(cells) + " |")
    for name, label, _ in ABLATIONS if "mixed_ablation" in results else ():
        rows = results["mixed_ablation"][name]
        cells = [f"{r['accuracy']:.0%}".replace("%", " %") for r in rows]
        lines.append(f"| mixed, {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ks", default="2,5,10,20,50,100,200,500,1000")
    ap.add_argument("--steps", type=int, default=1000, help="max steps, exact protocol")
    ap.add_argument("--mixed-steps", type=int, default=1000)
    ap.add_argument("--lstm-hidden", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--protocols", default="exact,mixed")
    ap.add_argument(
        "--window", type=int, default=50, help="TBPTT window in tokens (0: each sequence whole)"
    )
    ap.add_argument(
        "--memory",
        type=int,
        default=None,
        help="sha-lstm memory in tokens (default: k + 1 in the exact protocol, max k + 1 mixed)",
    )
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--test-sequences", type=int, default=500, help="held-out sequences per k")
    ap.add_argument(
        "--eval-every", type=int, default=100, help="steps between evaluations (exact protocol)"
    )
    ap.add_argument(
        "--mixed-eval-every", type=int, default=250, help="steps between evaluations at every k"
    )
    ap.add_argument("--name", default="study_longrange_windowed", help="result file name")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "study_longrange_windowed.png")
    ap.add_argument("--replot", action="store_true", help="only redraw the plot from the JSON")
    ap.add_argument(
        "--merge",
        help="with --replot / --markdown: result files (comma-separated) whose protocol rows "
        "for cells NAME lacks, and mixed_ablation, are drawn too (runs of one cell or protocol)",
    )
    ap.add_argument(
        "--markdown", action="store_true", help="only print docs/study.md's table from the JSON"
    )
    args = ap.parse_args()
    if args.replot or args.markdown:
        results = load(args.name, args.merge.split(",") if args.merge else [])
        if args.replot:
            plot(results, args.plot)
        if args.markdown:
            print(markdown(results))
        return
    torch.set_num_threads(1)  # tiny models: threads only add overhead (and the machine is shared)
    ks = [int(k) for k in args.ks.split(",")]
    cells = args.cells.split(",")
    protocols = args.protocols.split(",")
    # the key is k + 1 tokens before the query: a memory of k + 1 still holds it there (the
    # exact protocol sizes it per k: attention reads all M slots, valid or not, so it costs M)
    memory = args.memory if args.memory is not None else max(ks) + 1
    hidden = equal_budget_sizes(args.lstm_hidden, sorted(set(cells) | {"lstm"}))
    results: dict = {
        "hidden": hidden,
        "parameters": {c: LanguageModel(config(c, h)).num_parameters() for c, h in hidden.items()},
        "exact": {},
        "mixed": {},
    }
    print(
        "parameters: "
        + ", ".join(f"{c} H={hidden[c]} {n:,}" for c, n in results["parameters"].items()),
        flush=True,
    )
    run = {
        "window": args.window,
        "memory": memory,
        "batch": args.batch,
        "lr": args.lr,
        "eval_every": args.eval_every,
    }
    tests = {
        k: make_batch(args.test_sequences, k, torch.Generator().manual_seed(10_000 + k)) for k in ks
    }
    t0 = time.perf_counter()
    results["settings"] = {
        "task": "key (8 symbols), k distractors (8 other symbols), query -> key",
        "optimizer": f"Adam lr {args.lr:g}, batch {args.batch}, clip 1.0",
        "embedding": E,
        "layers": 1,
        "exact_max_steps": args.steps,
        "exact_stop_accuracy": 0.99,
        "mixed_steps": args.mixed_steps,
        "mixed_gaps": f"log-uniform 1..{max(ks)}",
        "test_sequences_per_k": args.test_sequences,
        "eval_every": args.eval_every,
        "mixed_eval_every": args.mixed_eval_every,
        "seed": args.seed,
        "torch_threads": 1,
        "max_k": max(ks),
        "window": args.window,
        "windows": (
            f"TBPTT windows of {args.window} tokens from each sequence's start, state (h, c, "
            "sha-lstm memory) carried and detached at each boundary; gradient from the last "
            "window only (the loss is on the query)"
            if args.window
            else "each sequence one window (the attention head sees all of it)"
        ),
        "memory": memory,
        "exact_memory": args.memory or "k + 1",
        "sha_lstm": (
            f"attention after the one LSTM layer, no boom; memory {args.memory or 'k + 1'} "
            f"tokens in the exact protocol, {memory} in the mixed one"
        ),
    }

    def save() -> None:  # after every cell: a run stopped part-way keeps what it finished
        results["total_seconds"] = round(time.perf_counter() - t0, 1)
        done = [len(results[p].get(c, ())) == len(ks) for p in protocols for c in cells]
        results["partial"] = not all(done)
        write_result(args.name, results)

    # the mixed protocol first: the floor (>= 95 % at gap 500 with memory >= gap)
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
            **{**run, "eval_every": args.mixed_eval_every},
        )
        results["mixed"][cell] = [
            {"k": k, "accuracy": accuracy(model, tests[k], args.window)} for k in ks
        ]
        if cell == "sha-lstm" and args.window:
            results["mixed_ablation"] = ablation(model, tests, args.window)
        results.setdefault("mixed_training", {})[cell] = {
            "steps": log["steps"],
            "seconds": round(log["seconds"], 1),
            "curve": log["curve"],
        }
        print(
            f"mixed {cell} ({log['seconds']:.0f}s): "
            + ", ".join(f"k={r['k']} {r['accuracy']:.2f}" for r in results["mixed"][cell]),
            flush=True,
        )
        save()
    for cell in cells if "exact" in protocols else ():
        rows = results["exact"][cell] = []  # saved after every k
        for k in ks:
            _, log = train(
                cell,
                hidden[cell],
                lambda rng, k=k: k,
                args.steps,
                args.seed,
                {k: tests[k]},
                stop_at=0.99,
                **{**run, "memory": args.memory or k + 1},
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
            save()
    results.pop("partial", None)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    out = write_result(args.name, results)
    print(f"-> {out}")
    if all(len(results[p]) == len(cells) for p in ("exact", "mixed")):
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(results, args.plot)
        print(f"-> {args.plot}")


if __name__ == "__main__":
    main()
