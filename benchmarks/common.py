"""Shared helpers for benchmarks: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict:
    import numpy
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    if not info.get("git_commit") and os.environ.get("LSTMGEN_GIT_COMMIT"):
        info["git_commit"] = os.environ["LSTMGEN_GIT_COMMIT"]  # a copy without .git (gpu_suite)
    return info


def write_result(name: str, payload: dict) -> Path:
    """Write ``<results>/<name>.json``: benchmarks/results, or $LSTMGEN_RESULTS_DIR when set
    (the GPU machine writes to its $OUT)."""
    results = Path(os.environ.get("LSTMGEN_RESULTS_DIR") or RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{name}.json"
    record = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        **payload,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out


def measured(r: dict) -> str:
    """ "measured DATE on MACHINE, torch VERSION: `COMMAND`" for a result record (README tables)."""
    mach = r["machine"]
    cpu = f"{mach.get('cpu_model', mach['processor'])} ({mach['cpu_count']} cores)"
    return (
        f"measured {r['date'][:10]} on {mach.get('cuda') or cpu}, torch {mach['torch']}: "
        f"`{r['command']}`"
    )


def _pinned(fn_name: str, module: str, core: int, kwargs: dict, conn) -> None:
    """A side_by_side child: one thread on one core, then fn(**kwargs) sent back as JSON."""
    import importlib

    os.sched_setaffinity(0, {core})
    import torch

    torch.set_num_threads(1)
    try:
        result = getattr(importlib.import_module(module), fn_name)(**kwargs)
        conn.send(json.dumps({"ok": result}))
    except BaseException as e:  # the parent reports it; a child must not hang the run
        conn.send(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    finally:
        conn.close()


def side_by_side(jobs: list[tuple[object, dict]]) -> list:
    """Run up to ``os.cpu_count()`` jobs at the same time, each pinned to its own core with one
    torch thread, and return their results (JSON-able) in order.

    Why: a comparison "in the same run" (model A against model B, the same wall-clock budget)
    is fairest when both sides see the same machine at the same moments. Run one after the
    other on a shared, noisy 2-core machine, each side meets different neighbours; run side by
    side, any slowdown hits both. It also halves the wall time of a two-sided benchmark. The
    cost: each side has one core, not the machine, so absolute figures are one-core figures
    and the JSON must say so (``side_by_side_note``).

    ``jobs`` are ``(function, kwargs)`` with a module-level function (it is imported by name in
    a spawned process, so no state leaks from the parent) returning a JSON-able value. The
    calling script needs the ``if __name__ == "__main__":`` guard (spawn re-imports it)."""
    import multiprocessing as mp

    cores = sorted(os.sched_getaffinity(0))
    if len(jobs) > len(cores):
        raise SystemExit(f"error: {len(jobs)} side-by-side jobs but only {len(cores)} cores")
    ctx = mp.get_context("spawn")
    procs, pipes = [], []
    for (fn, kwargs), core in zip(jobs, cores, strict=False):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_pinned, args=(fn.__name__, fn.__module__, core, kwargs, send))
        p.start()
        procs.append(p)
        pipes.append(recv)
    results = []
    for p, recv in zip(procs, pipes, strict=True):
        try:
            msg = json.loads(recv.recv())
        except EOFError:  # the child died before sending (killed, out of memory)
            msg = {"error": "the process ended without a result"}
        p.join()
        if "error" in msg:
            raise SystemExit(f"error: side-by-side job failed: {msg['error']}")
        results.append(msg["ok"])
    return results


side_by_side_note = (
    "side by side: the compared runs ran at the same time, each pinned to its own core with one "
    "torch thread (benchmarks/common.py side_by_side), so both met the same machine; absolute "
    "figures are one-core figures"
)
