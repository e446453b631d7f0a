"""Long context on character-level WikiText-2 (issue #12, "measure it" item 3): bits per
character after a fixed CPU budget, the plain LSTM against the sha-lstm, and how the gain
depends on the attention memory (``--memories``).

The corpus is ``../shared/data/wikitext-2`` read as characters: the raw ``wiki.*.raw`` files
when they are there, else the tokenized ``wiki.*.tokens`` (which is what the shared folder
holds today: words split by spaces, rare ones as ``<unk>``, so figures are not comparable with
published raw-text WikiText-2 or enwik8 bits/char). The whole training split trains; the
validation split's first ``--eval-chars`` characters are scored at every evaluation,
statefully with the memory carried (lstmgen/evaluate.py, the trainer's own pass: 16 contiguous
streams, each warmed up on the 256 characters before it, so a memory of 1,024 fills during its
streams' first 768 scored characters), which picks each side's best checkpoint; after the
budget, that checkpoint scores the test split's prefix of the same length the same way (not
counted in the budget).

Why the test pass keeps validation's warmup of 256 (``--test-warmup``), not the 1,024 that would
fill the longest memory: the score depends on how the state was warmed, much more than one
would think. The cpu-small LSTM after 400 steps (step-budgeted, on this corpus) scored the same
200k validation characters at 3.28 bits/char with warmup 256, 3.89 with warmup 1,024, and as one
cold stream (batch 1, from the zero state) 12.3 on its first 2,000 characters (probably: it
trains on state carried from the start of the epoch and never meets a fresh state again; not
investigated further). Validation and test must then be scored alike to be compared.

Sides: the LSTM at today's CPU default (``cpu-small``: 2x384, batch 16x64, lr 0.011) and the
sha-lstm at its best settings in ``quality_cpu_attention.py``'s sweep (its JSON's best
sha-lstm overrides, or the preset when there is no sweep yet), once per memory length. Every
side gets the same budget of training seconds (evaluations included, as the race: the budget
drives the cosine schedule); sides run side by side, one core and one torch thread each
(``common.side_by_side``), two at a time on a 2-core machine: 4 sides = 2 rounds.

Budget: the default 600 s, not the issue's 15 minutes: with 4 sides on 2 cores that is two
rounds of ~10.5 min (setup, evaluations inside the budget, the test pass after it), about 22
min in all, which fits the ~25 min of quiet machine the run has; 15 minutes would take 32.

    python benchmarks/long_context.py                                        # ~22 min
    python benchmarks/long_context.py --tiny --budget 3 --name long_context_smoke   # seconds
    nice -n 10 python benchmarks/long_context.py --steps 60 --memories 64,1024 --no-lstm \\
        --eval-every 1000000 --name long_context_memcheck_busy_smoke    # step-budgeted cost

``--steps N`` replaces the time budget by N steps (load-independent losses; the tokens/s of a
loaded machine are only indicative). The JSON (``long_context_cpu`` by default) has each side's
settings, parameters, tokens/s (one core), the validation curve against training time
(bits/char), its best, and its test bits/char.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RESULTS, SHARED_DATA, measured, side_by_side, side_by_side_note, write_result
from race import Curve, split_overrides

LN2 = math.log(2)
TINY = {"train": 60_000, "eval": 6_000}  # --tiny: characters of train, of valid/test
# One evaluation of 200k characters took 22-39 s (memory 64) and 38-52 s (memory 1,024) on one
# core of a loaded machine (two runs; long_context_memcheck_busy_smoke.json is the second), less
# on a quiet one; every 1,000 steps (~1M characters) gives each side 2-5 points of the curve in
# 600 s for about 10 % of its budget.
EVAL_EVERY = 1000


def source_files(data: Path) -> dict[str, Path]:
    """The three splits: ``wiki.{split}.raw`` when present, else ``wiki.{split}.tokens``."""
    out = {}
    for split in ("train", "valid", "test"):
        raw, tokens = data / f"wiki.{split}.raw", data / f"wiki.{split}.tokens"
        out[split] = raw if raw.exists() else tokens
        if not out[split].exists():
            raise SystemExit(f"error: no {raw.name} or {tokens.name} in {data}")
    return out


def prefix(src: Path, dest: Path, chars: int) -> int:
    """Write the first ``chars`` characters of ``src`` (0: all) to ``dest`` (not cut at a line
    end: valid and test prefixes stay the same length); return the characters written."""
    with open(src, encoding="utf-8") as f:
        text = f.read(chars) if chars else f.read()
    dest.write_text(text, encoding="utf-8")
    return len(text)


def corpus(data: Path, into: Path, eval_chars: int, tiny: bool) -> dict[str, Any]:
    """train.txt (the whole training split, or its first TINY characters), valid.txt and
    test.txt (the first ``eval_chars`` of each) in ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    files = source_files(data)
    n = TINY["eval"] if tiny else eval_chars
    chars = {}
    for split, src in files.items():
        limit = (TINY["train"] if tiny else 0) if split == "train" else n
        chars[split] = prefix(src, into / f"{split}.txt", limit)
    return {"files": {k: str(v) for k, v in files.items()}, "chars": chars}


def sha_settings(args: argparse.Namespace) -> tuple[list[str], str]:
    """The sha-lstm's overrides (its memory aside): ``--sha``, or the best of the race's
    sweep (``--sweep-result``, default results/quality_cpu_attention_sweep.json), or none."""
    if args.sha is not None:
        return [o for o in args.sha.split(",") if o], "given on the command line (--sha)"
    results = Path(os.environ.get("LSTMGEN_RESULTS_DIR") or RESULTS)
    path = Path(args.sweep_result or results / "quality_cpu_attention_sweep.json")
    if not path.exists():
        if args.sweep_result:
            raise SystemExit(f"error: no sweep result at {path}")
        return [], "the sha-lstm's defaults (no quality_cpu_attention sweep yet)"
    best = json.loads(path.read_text())["best"]["sha-lstm"]["overrides"]
    return [o for o in best if not o.startswith("memory=")], f"best sha-lstm of {path.name}"


def configs(args: argparse.Namespace, overrides: list[str]):
    """(ModelConfig, TrainConfig) of a side: cpu-small (tiny with --tiny) plus ``overrides``."""
    from lstmgen import ModelConfig, TrainConfig
    from lstmgen.config import PRESETS

    model = {**PRESETS["cpu-small"]["model"]}
    train = {**PRESETS["cpu-small"]["train"]}
    if args.tiny:
        model.update(PRESETS["tiny"]["model"])
        train.update(PRESETS["tiny"]["train"], log_every=5)
    model_over, train_over = split_overrides(overrides)
    model.update(model_over)
    train.update(
        max_time=0.0 if args.steps else args.budget,
        max_steps=args.steps,
        eval_every=args.eval_every or (50 if args.tiny else EVAL_EVERY),
        eval_tokens=0,  # the whole valid.txt, which is already the prefix
        sample_tokens=0,
        device="cpu",
        seed=args.seed,
    )
    train.update(train_over)
    return ModelConfig.from_dict(model), TrainConfig.from_dict(train)


def prepare(run: Path, src: Path, args: argparse.Namespace, overrides: list[str]) -> None:
    """Create the run in the parent (tokenize, build the model) so that the side-by-side
    children start training at once; each child resumes it (``train_side``)."""
    from lstmgen import Trainer

    model_cfg, train_cfg = configs(args, overrides)
    trainer = Trainer.create(
        run,
        [src / "train.txt"],
        train_cfg,
        model_cfg,
        valid=[src / "valid.txt"],
        test=[src / "test.txt"],
    )
    trainer.lock.release()


def train_side(run: str, test_warmup: int) -> dict[str, Any]:
    """Train a prepared run for its budget, then score its best checkpoint on test.txt
    (a side_by_side job: runs pinned to one core, returns JSON)."""
    import resource

    import torch

    from lstmgen import LanguageModel, Trainer
    from lstmgen.evaluate import evaluate_tokens
    from lstmgen.runtime import flush_denormals

    class Timed(Curve):
        """The curve, plus the seconds spent evaluating (read after each evaluation ends)."""

        def __init__(self) -> None:
            super().__init__()
            self.eval_s, self.pending = 0.0, False

        def on_eval(self, trainer, metrics, sample) -> None:
            super().on_eval(trainer, metrics, sample)
            self.pending = True

        def on_step(self, trainer) -> None:
            if self.pending and trainer.eval_seconds is not None:
                self.eval_s, self.pending = self.eval_s + trainer.eval_seconds, False

    curve = Timed()
    trainer = Trainer.resume(run, callbacks=[curve])
    summary = trainer.fit()  # releases the run's lock
    if curve.pending and trainer.eval_seconds is not None:
        curve.eval_s += trainer.eval_seconds
    cpu = torch.device("cpu")
    best = LanguageModel.from_pretrained(run, device=cpu).eval()
    t0 = time.perf_counter()
    with flush_denormals(cpu):
        test = evaluate_tokens(
            best, trainer.corpus.test, seq_len=trainer.config.seq_len, warmup=test_warmup
        )
    test_s = time.perf_counter() - t0
    elapsed = max(summary["elapsed"], 1e-9)
    tokens = trainer.tokens_seen()
    train_s = max(elapsed - curve.eval_s, 1e-9)
    return {
        "train_seconds": round(summary["elapsed"], 1),
        "eval_seconds": round(curve.eval_s, 1),
        "steps": summary["step"],
        "epochs": round(summary["epoch"], 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / elapsed),  # evaluations included, as race.py
        "tokens_per_s_training": round(tokens / train_s),  # the step loop alone
        "best_val_bits_per_char": round(summary["best_val_loss"] / LN2, 4),
        "best_step": summary["best_step"],
        "curve": [
            {k: p[k] for k in ("step", "elapsed_s", "wall_s")}
            | {"val_bits_per_char": round(p["val_loss"] / LN2, 4)}
            for p in curve.points
        ],
        "test_bits_per_char": round(test.bits_per_char, 4),
        "test_tokens": test.tokens,
        "test_pass_s": round(test_s, 1),
        "parameters": trainer.model.num_parameters(),
        # the side's peak resident memory (Linux: KiB): a long memory must not run out of it
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "model_config": trainer.model.config.to_dict(),
        "train_config": trainer.config.to_dict(),
    }


def sides(args: argparse.Namespace, sha: list[str]) -> dict[str, list[str]]:
    """label -> overrides, in the order they run (paired by position into rounds)."""
    out = {} if args.no_lstm else {"lstm": [o for o in args.lstm.split(",") if o]}
    for m in args.memories:
        out[f"sha-lstm m{m}"] = ["arch=sha-lstm", *sha, f"memory={m}"]
    return out


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each sha-lstm side's gain over the LSTM (bits/char, positive: attention better)."""
    if "lstm" not in runs:
        return {}
    base = runs["lstm"]
    return {
        label: {
            "test": round(base["test_bits_per_char"] - r["test_bits_per_char"], 4),
            "best_val": round(base["best_val_bits_per_char"] - r["best_val_bits_per_char"], 4),
        }
        for label, r in runs.items()
        if label != "lstm"
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    data_root = Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA)
    ap.add_argument("--data", type=Path, default=data_root / "wikitext-2")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds of training a side")
    ap.add_argument("--steps", type=int, default=0, help="N steps a side instead of --budget")
    ap.add_argument(
        "--memories",
        type=lambda s: [int(m) for m in s.split(",") if m],
        default=[64, 256, 1024],
        help="sha-lstm memory lengths, one side each [64,256,1024]",
    )
    ap.add_argument("--no-lstm", action="store_true", help="leave the LSTM side out")
    ap.add_argument("--lstm", default="", help="the LSTM's overrides: key=value,... [none]")
    ap.add_argument("--sha", help="the sha-lstm's overrides: key=value,... [the sweep's best]")
    ap.add_argument("--sweep-result", help="[results/quality_cpu_attention_sweep.json]")
    ap.add_argument("--eval-chars", type=int, default=200_000, help="valid/test prefix [200000]")
    ap.add_argument(
        "--test-warmup", type=int, default=256, help="test pass warmup [256, validation's]"
    )
    ap.add_argument("--eval-every", type=int, help=f"steps between evaluations [{EVAL_EVERY}]")
    ap.add_argument("--parallel", type=int, default=2, help="sides at once, one core each [2]")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--tiny", action="store_true", help="tiny model and corpus prefix: seconds")
    ap.add_argument("--name", help="result name [long_context_cpu; long_context_tiny]")
    ap.add_argument("--out-dir", help="where the JSON goes [$LSTMGEN_RESULTS_DIR or results/]")
    args = ap.parse_args()
    if args.out_dir:
        os.environ["LSTMGEN_RESULTS_DIR"] = args.out_dir
    name = args.name or ("long_context_tiny" if args.tiny else "long_context_cpu")
    if any(m < 1 for m in args.memories):
        raise SystemExit("error: --memories must be positive token counts")
    parallel = max(1, min(args.parallel, len(os.sched_getaffinity(0))))
    sha, source = sha_settings(args)
    labels = sides(args, sha)
    if not labels:
        raise SystemExit("error: no sides (--no-lstm and no --memories)")

    from lstmgen import LstmgenError

    t_all = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        info = corpus(args.data, Path(tmp) / "corpus", args.eval_chars, args.tiny)
        order = list(labels)
        rounds = [order[i : i + parallel] for i in range(0, len(order), parallel)]
        for k, group in enumerate(rounds):
            t0 = time.perf_counter()
            jobs = []
            for label in group:
                run = Path(tmp) / f"run{order.index(label)}"
                try:
                    prepare(run, Path(tmp) / "corpus", args, labels[label])
                except LstmgenError as exc:
                    raise SystemExit(f"error: {label}: {exc}") from None
                jobs.append((train_side, {"run": str(run), "test_warmup": args.test_warmup}))
            setup = time.perf_counter() - t0
            for label, r in zip(group, side_by_side(jobs), strict=True):
                r.update(round=k, setup_seconds=round(setup, 1), overrides=labels[label])
                runs[label] = r
                print(
                    f"{label}: best val {r['best_val_bits_per_char']} bits/char, test "
                    f"{r['test_bits_per_char']} after {r['train_seconds']} s ({r['steps']} "
                    f"steps, {r['tokens_per_s_training']:,} tokens/s training on one core)",
                    flush=True,
                )
    gains = summarise(runs)
    out = write_result(
        name,
        {
            "corpus": {
                "name": "WikiText-2, character level",
                **info,
                "tiny": args.tiny,
                "vocab_size": next(iter(runs.values()))["model_config"]["vocab_size"],
            },
            "budget_s": None if args.steps else args.budget,
            "steps_budget": args.steps or None,
            "eval_chars": args.eval_chars,
            "test_warmup": args.test_warmup,
            "memories": args.memories,
            "sha_settings_from": source,
            "rounds": rounds,
            "runs": runs,
            "gain_bits_per_char_vs_lstm": gains,
            "wall_seconds": round(time.perf_counter() - t_all, 1),
            "notes": (
                "validation: the first eval_chars characters of the valid split, every "
                "evaluation (inside the budget: it picks the best checkpoint); test: the same "
                "length of the test split, one pass of each side's best checkpoint after the "
                "budget (test_pass_s, not counted); bits/char = nats/char / ln 2; sides in "
                f"the same round ran at the same time; {side_by_side_note}"
            ),
        },
    )
    for label, g in gains.items():
        print(f"{label} - lstm: {g['test']:+.4f} bits/char on test (positive: attention better)")
    print(f"-> {out}")


def markdown(r: dict) -> str:
    """The README's table of this result (benchmarks/render_readme.py)."""
    gains = r.get("gain_bits_per_char_vs_lstm", {})
    lines = [
        "| model | parameters | tokens/s (one core) | steps | best val bits/char "
        "| test bits/char | LSTM minus it (test) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, run in r["runs"].items():
        mc = run["model_config"]
        arch = "sha-lstm" if mc.get("arch") == "sha-lstm" else mc["cell"]
        what = f"{arch} {mc['num_layers']}x{mc['hidden_size']}"
        if mc.get("arch") == "sha-lstm":
            what += f", memory {mc['memory']:,}"
            what += f", boom {mc['boom_size']}" * bool(mc["boom_size"])
        gain = gains.get(label, {}).get("test")
        lines.append(
            f"| {what} | {run['parameters']:,} | {run['tokens_per_s_training']:,} | "
            f"{run['steps']:,} | {run['best_val_bits_per_char']:.4f} | "
            f"**{run['test_bits_per_char']:.4f}** | "
            f"{'' if gain is None else f'{gain:+.4f}'} |"
        )
    lines += ["", "Validation bits/char against seconds of training:", ""]
    for label, run in r["runs"].items():
        points = ", ".join(
            f"{p['elapsed_s']:.{0 if p['elapsed_s'] >= 10 else 1}f} s: {p['val_bits_per_char']:.3f}"
            for p in run["curve"]
        )
        lines.append(f"- {label}: {points}")
    c = r["corpus"]
    budget = f"{r['budget_s']:.0f} s" if r.get("budget_s") else f"{r['steps_budget']:,} steps"
    lines += [
        "",
        f"{budget} of training each (evaluations included), side by side, each on its own core "
        f"with one thread; train {c['chars']['train']:,} characters "
        f"({Path(c['files']['train']).name}), validation and test the first "
        f"{c['chars']['valid']:,} / {c['chars']['test']:,} characters of their splits (16 "
        f"streams scored statefully, each warmed up on {r.get('test_warmup', 256)} before it); "
        f"sha-lstm settings: {r['sha_settings_from']}; {measured(r)}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
