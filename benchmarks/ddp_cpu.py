"""Multi-process training (torchrun + DDP): tokens/s of a plain run against torchrun runs.

CPU (the default): a plain ``lstmgen train`` with one thread and with two,
``torchrun --nproc-per-node 1`` (DDP around the model, world of one) and ``--nproc-per-node 2``
(gloo), every torchrun process with one thread (OMP_NUM_THREADS=1) and ``--batch-size`` rows,
so two processes train on twice the rows per step. On a 2-core machine the figure to read is
ddp2 against plain_2threads (both use both cores): what two processes and an all-reduce of
every gradient cost against intra-op threads, not a speed-up from more hardware.

CUDA (``--device cuda``, gpu_suite.sh): the plain run against ``torchrun --nproc-per-node 1``
on one GPU with the gpu-fast preset. Floor: DDP at >= 0.95x the plain run (the wrapper's
all-reduce of a world of one costs almost nothing).

Every run is a real ``lstmgen train`` process (the startup is not timed): tokens/s is the
median of the ``tokens_per_s`` the run logs (every process's tokens, between log steps, the
first one left out: warm-up), with no evaluation before the last step.

    python benchmarks/ddp_cpu.py                  # CPU: plain (1 and 2 threads), ddp1, ddp2
    python benchmarks/ddp_cpu.py --tiny           # seconds: a smoke run of the same code
    python benchmarks/ddp_cpu.py --device cuda    # GPU: plain vs ddp1, gpu-fast
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, SHARED_DATA, write_result

MODES = {"plain": 0, "plain_2threads": 0, "ddp1": 1, "ddp2": 2}  # torchrun processes (0: none)
NOTES_CPU = (
    "Each process has one thread and --batch-size rows, so ddp2 trains twice "
    "the rows per step on two processes and two cores; plain_2threads is one process using both "
    "cores (intra-op threads), the fair baseline for ddp2: their ratio is what the all-reduce "
    "and two processes cost, or gain, against threading on this 2-core machine. With other "
    "jobs on the cores (load_average_1m above 2), plain_2threads collapses: OpenMP's two "
    "threads wait for each other whenever one is descheduled."
)


def command(mode: str, corpus: Path, out: Path, args: argparse.Namespace) -> list[str]:
    flags = ["train", str(corpus), "-o", str(out), "-q", "--device", args.device]
    flags += ["--max-steps", str(args.steps), "--eval-every", str(args.steps + 1)]
    flags += ["--log-every", str(args.log_every), "--sample-tokens", "0", "--eval-tokens", "256"]
    flags += args.flags
    nproc = MODES[mode]
    if nproc == 0:
        return [sys.executable, "-m", "lstmgen", *flags]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*torchrun, f"--nproc-per-node={nproc}", "-m", "lstmgen", *flags]


def run_mode(mode: str, corpus: Path, scratch: Path, args: argparse.Namespace) -> dict:
    out = scratch / mode
    threads = "2" if mode == "plain_2threads" else "1"
    env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(ROOT / "src")}
    began = time.perf_counter()
    proc = subprocess.run(
        command(mode, corpus, out, args), capture_output=True, text=True, env=env, timeout=600
    )
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
    return {
        "mode": mode,
        "processes": max(MODES[mode], 1),
        "threads_per_process": int(threads),
        "tokens_per_s": statistics.median(rates) if rates else None,
        "log_points": len(rates),
        "wall_s": round(wall, 1),
        "load_average_1m": os.getloadavg()[0],  # other work on the machine: noise
    }


def summary(args: argparse.Namespace, results: list[dict], cuda: bool) -> dict:
    plain = results[0]["tokens_per_s"]
    ratios = {
        r["mode"]: r["tokens_per_s"] / plain for r in results[1:] if plain and r["tokens_per_s"]
    }
    payload = {
        "device": args.device,
        "steps": args.steps,
        "flags": args.flags,
        "runs": results,
        "ratio_to_plain": ratios,
        "notes": NOTES_CPU if not cuda else "one GPU; floor: ddp1 >= 0.95x plain",
    }
    if cuda and "ddp1" in ratios:
        payload["floor_ok"] = ratios["ddp1"] >= 0.95
    return payload


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu (plain, ddp1, ddp2) or cuda")
    ap.add_argument("--steps", type=int, help="steps per run [cpu 60, cuda 160, tiny 12]")
    ap.add_argument("--log-every", type=int, help="steps between logged rates")
    ap.add_argument("--tiny", action="store_true", help="tiny model: a smoke run of seconds")
    ap.add_argument("--name", help="result name [ddp_cpu, ddp_cuda, ddp_tiny]")
    ap.add_argument("--data", type=Path, help="corpora root [$LSTMGEN_DATA_DIR, ../shared/data]")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.tiny:
        args.flags = ["--preset", "tiny", "--hidden-size", "32", "--batch-size", "8"]
        steps, log_every = 12, 3
    elif cuda:
        args.flags = ["--preset", "gpu-fast"]
        steps, log_every = 160, 20
    else:  # the CPU default model (2x384), one thread per process
        args.flags = ["--batch-size", "16", "--seq-len", "64"]
        steps, log_every = 60, 10
    args.steps, args.log_every = args.steps or steps, args.log_every or log_every
    data = args.data or Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA)
    corpus = data / "tiny-shakespeare" / "train.txt"
    modes = ["plain", "ddp1"] if cuda else ["plain", "plain_2threads", "ddp1", "ddp2"]
    if args.tiny:  # threads do nothing for a tiny model (and crawl on a loaded machine)
        modes.remove("plain_2threads")
    results: list[dict] = []
    name = args.name or ("ddp_tiny" if args.tiny else "ddp_cuda" if cuda else "ddp_cpu")
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:  # the first 40k characters are enough for a smoke run
            small = Path(tmp) / "small.txt"
            small.write_text(corpus.read_text(encoding="utf-8")[:40_000], encoding="utf-8")
            corpus = small
        for mode in modes:  # the JSON is rewritten after each run: a killed step keeps those
            results.append(run_mode(mode, corpus, Path(tmp), args))
            print(json.dumps(results[-1]), flush=True)
            payload = summary(args, results, cuda)
            path = write_result(name, payload)
    print(path)
    return payload


if __name__ == "__main__":
    main()
