"""The 190-s tiny-shakespeare race on CPU: the sha-lstm against the default LSTM, in one run.

Issue #12, "time to quality": quality_cpu.py's race (the cpu-small preset, 190 s of training,
one stateful pass over val.txt at the end, nats/char) run twice in one process on the same
machine, first the LSTM, then the same preset with ``arch=sha-lstm`` plus the overrides given
(the attention model's settings; ``--lstm`` takes the LSTM's). One JSON with both runs and the
difference; each run's partial curve goes to ``<name>_<label>.json`` while it trains.

    python benchmarks/quality_cpu_attention.py                              # 2 x 190 s
    python benchmarks/quality_cpu_attention.py memory=256 boom_size=768 --name trial
    python benchmarks/quality_cpu_attention.py --tiny --budget 2            # a smoke run
"""

from __future__ import annotations

import copy
import math
import os

from common import write_result
from quality_cpu import CPU_DEFAULTS
from race import parser, race

from lstmgen import LstmgenError


def main() -> None:
    ap = parser({**CPU_DEFAULTS, "name": "quality_cpu_attention"}, __doc__)
    ap.add_argument("--lstm", default="", help="the LSTM's overrides: key=value,key=value")
    args = ap.parse_args()
    if args.out_dir:
        os.environ["LSTMGEN_RESULTS_DIR"] = args.out_dir
    entrants = {
        "lstm": [o for o in args.lstm.split(",") if o],
        "sha-lstm": ["arch=sha-lstm", *args.overrides],
    }
    runs = {}
    for label, overrides in entrants.items():
        one = copy.copy(args)
        one.overrides, one.name = overrides, f"{args.name}_{label}"
        try:
            runs[label] = race(one)
        except LstmgenError as exc:
            raise SystemExit(f"error ({label}): {exc}") from None
        r = runs[label]
        print(
            f"{label}: best val loss {r['val_loss_nats_per_char']} nats/char after "
            f"{r['train_seconds']}s ({r['steps']} steps, {r['tokens_per_s']:,} tokens/s, "
            f"{r['parameters']:,} parameters)",
            flush=True,
        )
    lstm, att = (runs[k]["val_loss_nats_per_char"] for k in ("lstm", "sha-lstm"))
    out = write_result(
        args.name,
        {
            "budget_s": args.budget,
            "runs": runs,
            "sha_lstm_minus_lstm": round(att - lstm, 4) if math.isfinite(att + lstm) else None,
            "notes": "one process, one after the other, on the same machine",
        },
    )
    print(f"sha-lstm - lstm: {att - lstm:+.4f} nats/char -> {out}")


def markdown(r: dict) -> str:
    """The README's table of this result (benchmarks/render_readme.py)."""
    lines = [
        "| model | val loss (nats/char) | steps | tokens/s | parameters |",
        "|---|---|---|---|---|",
    ]
    for label, run in r["runs"].items():
        mc = run["model_config"]
        what = f"{label} {mc['num_layers']}x{mc['hidden_size']}"
        if mc.get("arch") == "sha-lstm":
            what += f", memory {mc['memory']}, boom {mc['boom_size']}"
        lines.append(
            f"| {what} | **{run['val_loss_nats_per_char']:.4f}** | {run['steps']:,} | "
            f"{run['tokens_per_s']:,} | {run['parameters']:,} |"
        )
    m = r["machine"]
    lines += [
        "",
        f"{r['budget_s']:.0f} s of training each, one after the other in one process; "
        f"{m.get('cpu_model', m.get('processor'))} ({m.get('cpu_count')} cores), "
        f"{r['date'][:10]}: `{r['command']}`.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
