"""The generation benchmark and the README renderer, at tiny sizes (the speed itself is
measured by running the benchmarks, never asserted in tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_generation_benchmark_tiny_and_its_readme_table(tmp_path):
    env = {**os.environ, "LSTMGEN_RESULTS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "generation.py"), "--tiny", "--batches", "1,3"]
        + ["--repeats", "2", "--name", "gen"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "gen.json").read_text())
    assert r["device"] == "cpu" and r["greedy_text_identical"] is True
    assert [row["batch"] for row in r["rows"]] == [1, 3]
    for row in r["rows"]:
        assert len(row["eager_runs"]) == len(row["lstmgen_runs"]) == 2
        ratio = row["lstmgen_tokens_per_s"] / row["eager_tokens_per_s"]
        assert abs(row["speedup"] - ratio) < 0.011

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from render_readme import generation
    finally:
        sys.path.remove(str(BENCHMARKS))
    table = generation(r)
    assert table.splitlines()[2].startswith("| 1 | ") and "greedy text identical" in table
