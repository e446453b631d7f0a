"""The GPU suites' shell scripts, checked here so that a typo surfaces on CPU, not in a GPU
session's few minutes: gpu_suite.sh's time limits fit the device call and every GPU step has
a --tiny twin; gpu_suite_tune.sh's candidates are valid settings (running them is a --tiny
smoke run, too slow for the default suite)."""

from __future__ import annotations

import re
import subprocess

from conftest import BENCHMARKS, benchmark_module
from lstmgen import ModelConfig, TrainConfig
from lstmgen.config import PRESETS


def steps(script: str) -> tuple[dict[str, int], dict[str, int]]:
    """``step NAME LIMIT ...`` lines of gpu_suite.sh: (the --tiny branch's, the GPU branch's)."""
    tiny, gpu = script.rsplit("if [ $TINY = 1 ]; then\n", 1)[1].split("\nelse\n", 1)
    gpu = gpu.split("\nfi\n", 1)[0]

    def parse(text: str) -> dict[str, int]:
        return {m[1]: int(m[2]) for m in re.finditer(r"^\s*step (\w+) (\d+) ", text, re.M)}

    return parse(tiny), parse(gpu)


def test_gpu_suite_fits_its_device_call_and_every_step_has_a_tiny_twin():
    tiny, gpu = steps((BENCHMARKS / "gpu_suite.sh").read_text())
    assert sum(gpu.values()) <= 510  # inside timeout_s=560 of one device call
    assert set(tiny) == set(gpu)
    assert {"race_sha_lstm", "attention_cost"} <= set(gpu)  # issue 12's attention rows


def test_tune_candidates_are_valid_settings():
    script = (BENCHMARKS / "gpu_suite_tune.sh").read_text()
    candidates = dict(re.findall(r'^\s*\[(\w+)\]="([^"]*)"', script, re.M))
    groups = dict(re.findall(r'\[([ab])\]="([^"]*)"', script))
    order = re.search(r'^ORDER="([^"]*)"', script, re.M)[1].split()
    assert sorted(order) == sorted(set(candidates) - set(groups))
    assert sorted(" ".join(groups.values()).split()) == sorted(order)  # each once in a group
    race = benchmark_module("race")
    for name in order:
        model, train = race.split_overrides(candidates[name].split())
        ModelConfig.from_dict({**PRESETS["gpu-fast"]["model"], **model})
        TrainConfig.from_dict({**PRESETS["gpu-fast"]["train"], **train})
    # three 120-s races (plus ~13 s each of setup and evaluations) fit one 9-minute call
    assert all(len(g.split()) * 150 <= 540 for g in groups.values())


def test_tune_refuses_an_unknown_candidate():
    out = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_suite_tune.sh"), "nope"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "usage:" in out.stderr and "control" in out.stderr
