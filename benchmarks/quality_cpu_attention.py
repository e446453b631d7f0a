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


if __name__ == "__main__":
    main()
