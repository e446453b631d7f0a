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
