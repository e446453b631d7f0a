"""benchmarks/distill.py end to end (#14): scratch and distilled students side by side."""

import os
from pathlib import Path

import pytest

from conftest import SHARED_DATA, benchmark_result


@pytest.mark.slow
def test_distill_benchmark_runs_both_students_side_by_side(tmp_path, run_cli):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("side by side needs two cores")
    data = os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA
    train = Path(data) / "tiny-shakespeare" / "train.txt"
    small = tmp_path / "small.txt"
    small.write_text(train.read_text()[:20000])
    teacher = tmp_path / "teacher"
    r = run_cli("train", small, "-o", teacher, "--hidden-size", "32", "--num-layers", "1",
                "--max-steps", "20", "-q", "--sample-tokens", "0", "--device", "cpu")  # fmt: skip
    assert r.code == 0, r.err
    args = ["--teacher", str(teacher), "--tiny", "--seconds", "3", "--name", "d"]
    res = benchmark_result(tmp_path, "distill.py", *args)
    assert res["scratch_steps"] > 0 and res["distilled_steps"] > 0
    assert "side by side" in res["notes"] and res["machine"]["cpu_model"]
