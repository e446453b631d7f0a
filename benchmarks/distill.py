"""Distillation (#14): a 2x256 student trained on a teacher's soft targets against the same
student trained from scratch, with the same wall-clock budget, side by side: both run at the
same time, each pinned to its own core with one thread (common.side_by_side), so any load on
the machine hits both. The teacher's forward passes count against the distilled run's time.

Both students: char tokenizer (the teacher's), tiny-shakespeare's train.txt, the cpu-small
settings but 2x256, ``--max-time SECONDS``; scored with ``lstmgen eval`` on val.txt.
Floor: the distilled student's loss at least 0.05 nats/char below the scratch student's.

The teacher: a char 3x512 tiny-shakespeare model, e.g. (about an hour on 2 cores)::

    lstmgen train ../shared/data/tiny-shakespeare/train.txt -o runs/teacher-3x512 \\
        --hidden-size 512 --num-layers 3 --embedding-size 128 --max-time 3600 --device cpu

or the one benchmarks/quantize.py trains for its loss row, kept with ``--keep-loss-model``.
It must be better than what the student reaches alone in the budget, or there is nothing
to distil.

    python benchmarks/distill.py --teacher runs/teacher-3x512 --seconds 600   # distill_cpu.json
    python benchmarks/distill.py --teacher RUN --tiny --seconds 5 --name distill_smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import SHARED_DATA, side_by_side, side_by_side_note, write_result


def lstmgen(*args: str) -> str:
    # the side_by_side child's core is inherited; one thread like the child itself
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lstmgen", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"lstmgen {args[0]} failed: {r.stderr.strip()[-500:]}")
    return r.stdout


def student(kind: str, out: str, common: list[str], val: str, unknown: list[str],
            teacher: str = "", kd: list[str] | None = None) -> dict:  # fmt: skip
    """One side: train the student (``kind`` scratch or distilled), then its val loss and
    how many optimizer steps the budget bought."""
    if kind == "scratch":
        lstmgen("train", "-o", out, *common)
    else:
        lstmgen("distill", teacher, "-o", out, *common, *(kd or []))
    loss = json.loads(lstmgen("eval", out, val, "--json", *unknown))["loss"]
    steps = 0
    metrics = Path(out) / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            steps = max(steps, int(json.loads(line).get("step", 0)))
    return {"loss": loss, "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--teacher", required=True, help="a trained char model directory")
    ap.add_argument("--seconds", type=int, default=600, help="training budget per student")
    # 1, not the CLI's 2: in a step-budgeted sweep (1x64 student, 150 steps, the 2x384 demo
    # teacher) tau 1 gained 0.03 nats over scratch, tau 2 lost 0.15 and tau 4 lost 1.0: a
    # short budget leaves the student no time for the teacher's softened tail
    ap.add_argument("--kd-temperature", type=float, default=1.0)
    ap.add_argument("--kd-alpha", type=float, default=0.5)
    ap.add_argument("--tiny", action="store_true", help="a small corpus and student (testing)")
    ap.add_argument("--name", default="distill_cpu")
    ap.add_argument("--notes", default="", help="recorded with the result")
    args = ap.parse_args()
    data = Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA) / "tiny-shakespeare"
    train, val = data / "train.txt", data / "val.txt"
    size = (
        ["--hidden-size", "32", "--num-layers", "1"]
        if args.tiny
        else ["--hidden-size", "256", "--num-layers", "2"]
    )
    unknown = ["--unknown", "drop"] if args.tiny else []  # a slice lacks some characters
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.tiny:
            (tmp / "train.txt").write_text(train.read_text()[:20000])
            (tmp / "val.txt").write_text(val.read_text()[:5000])
            train, val = tmp / "train.txt", tmp / "val.txt"
        common = [str(train), *size, "--max-time", str(args.seconds), "--device", "cpu"]
        common += ["-q", "--sample-tokens", "0", "--seed", "1"]
        kd = ["--kd-temperature", str(args.kd_temperature), "--kd-alpha", str(args.kd_alpha)]
        base = {"common": common, "val": str(val), "unknown": unknown}
        scratch, distilled = side_by_side(
            [
                (student, {**base, "kind": "scratch", "out": str(tmp / "scratch")}),
                (
                    student,
                    {**base, "kind": "distilled", "out": str(tmp / "distilled"),
                     "teacher": args.teacher, "kd": kd},
                ),
            ]
        )  # fmt: skip
        teacher = json.loads(lstmgen("eval", args.teacher, str(val), "--json", *unknown))["loss"]
    gain = scratch["loss"] - distilled["loss"]
    out = write_result(
        args.name,
        {
            "teacher": args.teacher,
            "teacher_loss": round(teacher, 4),
            "student": " ".join(size),
            "seconds_each": args.seconds,
            "kd_temperature": args.kd_temperature,
            "kd_alpha": args.kd_alpha,
            "scratch_loss": round(scratch["loss"], 4),
            "distilled_loss": round(distilled["loss"], 4),
            "scratch_steps": scratch["steps"],
            "distilled_steps": distilled["steps"],
            "distilled_gain_nats": round(gain, 4),
            "floor_gain_ge_0.05": gain >= 0.05,
            "notes": "; ".join(n for n in (side_by_side_note, args.notes) if n),
        },
    )
    print(f"scratch {scratch['loss']:.4f}, distilled {distilled['loss']:.4f} ({gain:+.4f})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
