"""The tiny-shakespeare race on CPU: the sha-lstm against the default LSTM (issue #12, "time to
quality"), each side with its best settings from a small sweep, side by side.

quality_cpu.py's race (the cpu-small preset, a budget of training seconds that also drives the
cosine schedule, one stateful pass over val.txt at the end, nats/char), run for the LSTM and
the sha-lstm at the same time, each pinned to its own core with one torch thread
(``common.side_by_side``): both sides meet the same machine, so a wall-clock budget is fair
even on a busy one, and absolute figures are one-core figures. Three modes:

- ``--mode sweep``: pairs (LSTM setting i, sha-lstm setting i) side by side, one pair after
  the other, all at ``--budget``; one JSON (``quality_cpu_attention_sweep``) with every run and
  each side's best. The settings are ``--lstm-sweep`` / ``--sha-sweep``: settings separated by
  ';', each a ','-separated list of key=value overrides ('' = the preset as it is).
- ``--mode best`` (the default): one pair, each side's best setting read from the sweep's
  JSON (``--sweep-result``; a side the sweep lacks runs its preset), or the overrides given
  (``--lstm``, the positional ones for the sha-lstm). With ``--eval-every`` the curves show
  when each side reaches what, and ``--budget 600`` (name ``quality_cpu_attention_600``) shows
  whether attention wins given more time.
- ``--tiny``: the tiny preset on a truncated corpus, seconds per run (a smoke test).

    python benchmarks/quality_cpu_attention.py --mode sweep                 # 4 x ~205 s
    python benchmarks/quality_cpu_attention.py                              # ~205 s
    python benchmarks/quality_cpu_attention.py --budget 600 --eval-every 1000 \\
        --name quality_cpu_attention_600                                    # ~620 s
    python benchmarks/quality_cpu_attention.py --mode sweep --tiny --budget 2 --pairs 2 \\
        --name quality_cpu_attention_sweep_smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from common import RESULTS, side_by_side, side_by_side_note, write_result
from quality_cpu import CPU_DEFAULTS
from race import parser, race

from lstmgen import LstmgenError

# The sweep, chosen by reasoning (a setting per line, paired by position). One core trains
# about half the tokens of the 2-thread runs of quality_cpu_trials.json (2x384 ~1.2M in
# 190 s), where 2x320 and 2x384 at lr 0.008-0.011 were within 0.01 of each other and 2x448 /
# 2x512 too slow; so the LSTM tries width 320-448 and lr around the default. The sha-lstm
# costs ~30 % of the LSTM's tokens/s at memory 512 (attention over 512 + 64 keys per
# token); a shorter memory is cheaper, a narrower stack buys back tokens, and the head at
# the top (attention_layer 1 of 2) leaves the lower layer undisturbed.
LSTM_SWEEP = ["", "hidden_size=320", "lr=0.015", "hidden_size=448,lr=0.009"]
SHA_SWEEP = ["", "attention_layer=1", "lr=0.006", "memory=128,attention_layer=1"]


def split(settings: str) -> list[list[str]]:
    """'a=1,b=2;c=3;' -> [['a=1', 'b=2'], ['c=3'], []] (an empty setting is the preset)."""
    return [[o for o in s.split(",") if o] for s in settings.split(";")]


def run_side(overrides: list[str], name: str, options: dict[str, Any]) -> dict[str, Any]:
    """One race (in a pinned child of side_by_side); its partial curve goes to ``name``."""
    args = parser({**CPU_DEFAULTS}).parse_args([])
    for key, value in options.items():
        setattr(args, key, value)
    args.data = Path(args.data)
    args.overrides, args.name = overrides, name
    try:
        result = race(args)
    except LstmgenError as exc:
        raise RuntimeError(f"{' '.join(overrides) or 'preset'}: {exc}") from None
    result["overrides"] = overrides
    return result


def race_pair(
    lstm: list[str], sha: list[str], name: str, options: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The LSTM with ``lstm`` and the sha-lstm with ``sha``, side by side."""
    jobs = [
        (run_side, {"overrides": lstm, "name": f"{name}_lstm", "options": options}),
        (
            run_side,
            {"overrides": ["arch=sha-lstm", *sha], "name": f"{name}_sha-lstm", "options": options},
        ),
    ]
    runs = dict(zip(("lstm", "sha-lstm"), side_by_side(jobs), strict=True))
    for label, r in runs.items():
        r["overrides"] = [o for o in r["overrides"] if o != "arch=sha-lstm"]
        print(
            f"{label} {','.join(r['overrides']) or '(preset)'}: best val loss "
            f"{r['val_loss_nats_per_char']} nats/char after {r['train_seconds']}s "
            f"({r['steps']} steps, {r['tokens_per_s']:,} tokens/s on one core)",
            flush=True,
        )
    results = Path(os.environ.get("LSTMGEN_RESULTS_DIR") or RESULTS)
    for label in runs:  # the partial curves: the JSON written by the caller holds them all
        (results / f"{name}_{label}.json").unlink(missing_ok=True)
    return runs


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if math.isfinite(r["val_loss_nats_per_char"])]
    return min(ok, key=lambda r: r["val_loss_nats_per_char"]) if ok else runs[0]


def sweep(args: argparse.Namespace, options: dict[str, Any]) -> None:
    lstm, sha = split(args.lstm_sweep), split(args.sha_sweep)
    pairs = max(len(lstm), len(sha))
    if args.pairs:
        pairs = min(pairs, args.pairs)
    runs: dict[str, list[dict[str, Any]]] = {"lstm": [], "sha-lstm": []}
    for i in range(pairs):
        one = race_pair(
            lstm[i] if i < len(lstm) else lstm[0],  # a side with fewer settings repeats its first
            sha[i] if i < len(sha) else sha[0],
            f"{args.name}_{i}",
            options,
        )
        for label, r in one.items():
            r["pair"] = i
            runs[label].append(r)
    best = {label: best_of(rs) for label, rs in runs.items()}
    out = write_result(
        args.name,
        {
            "mode": "sweep",
            "budget_s": args.budget,
            "runs": runs,
            "best": {
                label: {
                    "overrides": r["overrides"],
                    "val_loss_nats_per_char": r["val_loss_nats_per_char"],
                }
                for label, r in best.items()
            },
            "notes": f"pairs (LSTM i, sha-lstm i) one after the other; {side_by_side_note}",
        },
    )
    for label, r in best.items():
        print(
            f"best {label}: {','.join(r['overrides']) or '(preset)'} -> "
            f"{r['val_loss_nats_per_char']}"
        )
    print(f"-> {out}")


def best_settings(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    """The two sides' overrides: given, or each side's best in the sweep's JSON."""
    lstm = [o for o in args.lstm.split(",") if o]
    sha = list(args.overrides)
    results = Path(os.environ.get("LSTMGEN_RESULTS_DIR") or RESULTS)
    path = Path(args.sweep_result or results / "quality_cpu_attention_sweep.json")
    if args.sweep_result and not path.exists():
        raise SystemExit(f"error: no sweep result at {path}")
    if lstm or sha or not path.exists():
        return lstm, sha, "given on the command line" if lstm or sha else "the preset (no sweep)"
    best = json.loads(path.read_text())["best"]
    return best["lstm"]["overrides"], best["sha-lstm"]["overrides"], f"best of {path.name}"


def best_race(args: argparse.Namespace, options: dict[str, Any]) -> None:
    lstm, sha, source = best_settings(args)
    runs = race_pair(lstm, sha, args.name, options)
    a, b = (runs[k]["val_loss_nats_per_char"] for k in ("lstm", "sha-lstm"))
    out = write_result(
        args.name,
        {
            "mode": "best",
            "budget_s": args.budget,
            "settings_from": source,
            "runs": runs,
            "sha_lstm_minus_lstm": round(b - a, 4) if math.isfinite(a + b) else None,
            "notes": side_by_side_note,
        },
    )
    print(f"sha-lstm - lstm: {b - a:+.4f} nats/char ({source}) -> {out}")


def main() -> None:
    ap = parser({**CPU_DEFAULTS, "name": None}, __doc__)
    ap.add_argument("--mode", choices=("best", "sweep"), default="best")
    ap.add_argument("--lstm", default="", help="best mode: the LSTM's overrides: key=value,...")
    ap.add_argument("--lstm-sweep", default=";".join(LSTM_SWEEP), help="sweep: ';'-separated")
    ap.add_argument("--sha-sweep", default=";".join(SHA_SWEEP), help="sweep: ';'-separated")
    ap.add_argument("--pairs", type=int, default=0, help="sweep: only the first N pairs")
    ap.add_argument("--sweep-result", help="best mode: the sweep's JSON [results/...sweep.json]")
    args = ap.parse_args()
    if args.out_dir:
        os.environ["LSTMGEN_RESULTS_DIR"] = args.out_dir
    if args.name is None:
        args.name = "quality_cpu_attention" + ("_sweep" if args.mode == "sweep" else "")
    options = {
        k: getattr(args, k) for k in ("preset", "device", "budget", "eval_every", "tiny", "run_dir")
    }
    options["data"] = str(args.data)
    if args.run_dir:
        raise SystemExit("error: --run-dir is not supported here (two runs at once)")
    (sweep if args.mode == "sweep" else best_race)(args, options)


def markdown(r: dict) -> str:
    """The README's table of this result (benchmarks/render_readme.py)."""
    one_core = "side by side" in r.get("notes", "")
    lines = [
        f"| model | val loss (nats/char) | steps | tokens/s{' (one core)' * one_core} "
        "| parameters |",
        "|---|---|---|---|---|",
    ]
    runs = r["runs"]
    items = (
        [(k, x) for k, xs in runs.items() for x in xs]
        if r.get("mode") == "sweep"
        else list(runs.items())
    )
    for label, run in items:
        mc = run["model_config"]
        what = f"{label} {mc['num_layers']}x{mc['hidden_size']}, lr {run['train_config']['lr']}"
        if mc.get("arch") == "sha-lstm":
            what += (
                f", memory {mc['memory']}, boom {mc['boom_size']}, "
                f"layer {mc['attention_layer'] % mc['num_layers']}"
            )
        lines.append(
            f"| {what} | **{run['val_loss_nats_per_char']:.4f}** | {run['steps']:,} | "
            f"{run['tokens_per_s']:,} | {run['parameters']:,} |"
        )
    m = r["machine"]
    how = (
        "side by side, each on its own core with one thread"
        if one_core
        else "one after the other in one process"
    )
    lines += [
        "",
        f"{r['budget_s']:.0f} s of training each, {how}; "
        f"{m.get('cpu_model', m.get('processor'))} ({m.get('cpu_count')} cores), "
        f"{r['date'][:10]}: `{r['command']}`.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
