"""Distillation (#14): a 2x256 student trained on a teacher's soft targets against the same
student trained from scratch, with the same wall-clock budget on the same machine (the
teacher's forward passes count against the distilled run's time).

Both students: char tokenizer (the teacher's), tiny-shakespeare's train.txt, the cpu-small
settings but 2x256, ``--max-time SECONDS``; scored with ``lstmgen eval`` on val.txt.
Floor: the distilled student's loss at least 0.05 nats/char below the scratch student's.

    python benchmarks/distill.py --teacher runs/demo --seconds 600   # result distill_cpu.json
    python benchmarks/distill.py --teacher RUN --tiny --name t       # seconds, for testing
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import SHARED_DATA, write_result


def lstmgen(*args: str) -> str:
    cmd = [sys.executable, "-m", "lstmgen", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--teacher", required=True, help="a trained char model directory")
    ap.add_argument("--seconds", type=int, default=600, help="training budget per student")
    ap.add_argument("--kd-temperature", type=float, default=2.0)
    ap.add_argument("--kd-alpha", type=float, default=0.5)
    ap.add_argument("--tiny", action="store_true", help="a small corpus and student (testing)")
    ap.add_argument("--name", default="distill_cpu")
    args = ap.parse_args()
    data = Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA) / "tiny-shakespeare"
    train, val = data / "train.txt", data / "val.txt"
    size = (
        ["--hidden-size", "32", "--num-layers", "1"]
        if args.tiny
        else ["--hidden-size", "256", "--num-layers", "2"]
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.tiny:
            (tmp / "train.txt").write_text(train.read_text()[:20000])
            (tmp / "val.txt").write_text(val.read_text()[:5000])
            train, val = tmp / "train.txt", tmp / "val.txt"
        common = [
            str(train),
            *size,
            "--max-time",
            str(args.seconds),
            "--device",
            "cpu",
            "-q",
            "--sample-tokens",
            "0",
            "--seed",
            "1",
        ]
        lstmgen("train", "-o", str(tmp / "scratch"), *common)
        lstmgen(
            "distill",
            args.teacher,
            "-o",
            str(tmp / "distilled"),
            *common,
            "--kd-temperature",
            str(args.kd_temperature),
            "--kd-alpha",
            str(args.kd_alpha),
        )
        unknown = ["--unknown", "drop"] if args.tiny else []  # a slice lacks some characters

        def score(model: str) -> float:
            return json.loads(lstmgen("eval", model, str(val), "--json", *unknown))["loss"]

        loss = {name: score(str(tmp / name)) for name in ("scratch", "distilled")}
        teacher = score(args.teacher)
    gain = loss["scratch"] - loss["distilled"]
    out = write_result(
        args.name,
        {
            "teacher": args.teacher,
            "teacher_loss": round(teacher, 4),
            "student": " ".join(size),
            "seconds_each": args.seconds,
            "kd_temperature": args.kd_temperature,
            "kd_alpha": args.kd_alpha,
            "scratch_loss": round(loss["scratch"], 4),
            "distilled_loss": round(loss["distilled"], 4),
            "distilled_gain_nats": round(gain, 4),
            "floor_gain_ge_0.05": gain >= 0.05,
            "notes": "CPU shared with other jobs: noisy; the same budget for both students",
        },
    )
    print(f"scratch {loss['scratch']:.4f}, distilled {loss['distilled']:.4f} ({gain:+.4f})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
