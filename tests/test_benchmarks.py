"""The generation benchmark and the README renderer, at tiny sizes (the speed itself is
measured by running the benchmarks, never asserted in tests)."""

from __future__ import annotations

import math

import pytest

from conftest import benchmark_module, benchmark_result


def test_generation_benchmark_tiny_and_its_readme_table(tmp_path):
    r = benchmark_result(
        tmp_path, "generation.py", "--tiny", "--batches", "1,3", "--repeats", "2", "--name", "gen"
    )
    assert r["device"] == "cpu" and r["greedy_text_identical"] is True
    assert [row["batch"] for row in r["rows"]] == [1, 3]
    for row in r["rows"]:
        assert len(row["eager_runs"]) == len(row["lstmgen_runs"]) == len(row["streamed_runs"]) == 2
        o, e = row["lstmgen_tokens_per_s"], row["eager_tokens_per_s"]  # each rounded to 0.1
        assert (o - 0.05) / (e + 0.05) - 0.006 <= row["speedup"] <= (o + 0.05) / (e - 0.05) + 0.006

    table = benchmark_module("render_readme").generation(r)
    assert table.splitlines()[2].startswith("| 1 | ") and "greedy text identical" in table
    assert "streamed (`stream_text`)" in table.splitlines()[0]


def test_race_tiny_writes_its_curve_and_table(tmp_path):
    from conftest import make_play

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text(make_play(400, seed=0), encoding="utf-8")
    (data / "val.txt").write_text(make_play(60, seed=1), encoding="utf-8")
    r = benchmark_result(
        tmp_path, "race.py", "--tiny", "--device", "cpu", "--budget", "2", "--name", "race",
        "--data", str(data),
    )  # fmt: skip
    assert "partial" not in r  # the final result replaced the partial ones
    assert r["evaluations"] == len(r["curve"]) >= 2  # periodic evaluations and the last one
    assert r["val_loss_nats_per_char"] == min(p["val_loss"] for p in r["curve"])
    vocab = r["model_config"]["vocab_size"]
    assert r["val_loss_nats_per_char"] < math.log(vocab) - 0.5  # well below uniform: it learned
    table = benchmark_module("race").markdown(r)
    assert f"**{r['val_loss_nats_per_char']:.4f}**" in table


def test_killed_runs_still_render():
    """A benchmark killed on the GPU machine leaves a partial race result, and a throughput
    config that failed (say, out of memory) leaves an error row; both still render."""
    machine = {"cuda": "H200", "torch": "2.11", "processor": "x86_64", "cpu_count": 16}
    common = {"date": "2026-11-29T00:00:00Z", "command": "python race.py", "machine": machine}
    partial = {
        **common,
        "partial": True,
        "preset": "gpu-fast",
        "budget_s": 120.0,
        "val_loss_nats_per_char": 1.4411,
        "best_elapsed_s": 61.3,
        "curve": [{"step": 300, "elapsed_s": 61.3, "wall_s": 64.0, "val_loss": 1.4411}],
        "model_config": {"num_layers": 3, "hidden_size": 1024, "cell": "lstm"},
        "train_config": {},
    }
    text = benchmark_module("race").markdown(partial)
    assert text.startswith("_Incomplete run") and "1.4411 after 61 s" in text
    failed = {
        **common,
        "repeats": 2,
        "steps": 30,
        "warmup": 10,
        "peak_tflops": {},
        "rows": [{"config": "word 2x4096 (PTB)", "error": "CUDA out of memory"}],
    }
    table = benchmark_module("train_throughput").markdown(failed)
    assert "| word 2x4096 (PTB) | | failed: CUDA out of memory |" in table


@pytest.mark.slow
def test_server_fairness_small_runs_both_modes(tmp_path):
    import json

    from conftest import run_benchmark_script

    run_benchmark_script(
        "server_fairness.py", tmp_path, "--seconds", "3", "--prompt-tokens", "512",
        "--choices", "4", "--attack-tokens", "2", "--victim-tokens", "40",
    )  # fmt: skip
    r = json.loads((tmp_path / "server_fairness.json").read_text())
    assert r["total_errors"] == 0 and "cpu_model" in r["machine"]
    for mode in ("all_at_once", "chunked"):
        assert r["modes"][mode]["victim_requests"] >= 1 and r["modes"][mode]["attack_requests"] >= 1
        assert r["victim_gap_p99_s"][mode] == r["modes"][mode]["victim_gap_p99_s"]


def test_attention_cost_tiny_compares_memories_with_the_lstm(tmp_path):
    r = benchmark_result(
        tmp_path, "attention_cost.py", "--tiny", "--memories", "0,64", "--batches", "1,2",
        "--repeats", "1", "--name", "att",
    )  # fmt: skip
    assert [(row["batch"], row["arch"], row["memory"]) for row in r["rows"]] == [
        (1, "recurrent", 0), (1, "sha-lstm", 64), (2, "recurrent", 0), (2, "sha-lstm", 64),
    ]  # fmt: skip
    assert all(row["tokens_per_s"] > 0 and "vs_lstm" in row for row in r["rows"])
    assert r["rows"][0]["vs_lstm"] == 1.0
    table = benchmark_module("attention_cost").markdown(r).splitlines()
    assert table[0] == "| memory (tokens) | batch 1 | batch 2 |" and "(plain LSTM)" in table[2]


@pytest.mark.slow
def test_finetune_benchmark_tiny(tmp_path):
    from conftest import make_play

    data = tmp_path / "data"
    (data / "wikitext-2").mkdir(parents=True)
    (data / "tiny-shakespeare").mkdir()
    for name, seed in (("wiki.train.tokens", 0), ("wiki.valid.tokens", 1)):
        (data / "wikitext-2" / name).write_text(make_play(200, seed), encoding="utf-8")
    (data / "tiny-shakespeare" / "train.txt").write_text(make_play(300, 2), encoding="utf-8")
    (data / "tiny-shakespeare" / "val.txt").write_text(make_play(40, 3), encoding="utf-8")
    r = benchmark_result(
        tmp_path, "finetune.py", "--data", str(data), "--base-time", "3", "--time", "2",
        "--hidden-size", "8", "--embedding-size", "8", "--eval-every", "5", "--eval-tokens",
        "500", "--forget-tokens", "500", "--slice-kb", "5", "--seeds", "2", "--name", "ft",
    )  # fmt: skip
    assert set(r["runs"]) == {
        "base",
        "finetuned_ulmfit",
        "finetuned_plain",
        "scratch",
        "scratch_dropout",
    }
    assert "side by side" in r["notes"] and r["seeds"] == [1337, 1338]
    ulmfit, scratch = r["runs"]["finetuned_ulmfit"], r["runs"]["scratch"]
    assert [s["seed"] for s in ulmfit["seeds"]] == r["seeds"] and ulmfit["n_seeds"] == 2
    assert ulmfit["seeds"][1]["curve"] and scratch["seeds"][0]["added_tokens"] == 0
    assert ulmfit["val_loss_min"] <= ulmfit["val_loss"] <= ulmfit["val_loss_max"]
    assert set(r["base_corpus_val_loss"]) >= {"base", "finetuned_ulmfit", "finetuned_plain"}
    assert len(r["base_corpus_val_loss"]["finetuned_plain_per_seed"]) == 2
    best_scratch = min(r["runs"][k]["val_loss"] for k in ("scratch", "scratch_dropout"))
    assert r["gain_nats_per_char"] == pytest.approx(best_scratch - ulmfit["val_loss"], abs=1e-3)
    assert len(r["gain_per_seed"]) == 2


def test_finetune_benchmark_reports_seeds_as_mean_and_spread():
    """--seeds N: each setting's mean and spread, and the gain over the better scratch setting
    by mean, seed by seed too (each seed's pair shares its noise)."""
    ft = benchmark_module("finetune")
    assert ft.spread([2.0]) == {
        "val_loss": 2.0, "val_loss_std": 0.0, "val_loss_min": 2.0, "val_loss_max": 2.0,
        "n_seeds": 1,
    }  # fmt: skip
    s = ft.spread([2.0, 2.2, 2.1])
    assert s["val_loss"] == 2.1 and s["val_loss_std"] == 0.1 and s["val_loss_max"] == 2.2

    def runs(losses):
        return {**ft.spread(losses), "seeds": [{"val_loss": x} for x in losses]}

    g = ft.gains(
        {
            "finetuned_ulmfit": runs([1.9, 2.0]),
            "scratch": runs([2.2, 2.0]),  # mean 2.1: the better scratch setting
            "scratch_dropout": runs([2.1, 2.15]),
        }
    )
    assert g["best_scratch"] == "scratch" and g["gain_nats_per_char"] == pytest.approx(0.15)
    assert g["gain_per_seed"] == [0.3, 0.0] and (g["gain_min"], g["gain_max"]) == (0.0, 0.3)
    assert ft.run_name("scratch", ft.SEED) == "scratch"
    assert ft.run_name("scratch", ft.SEED + 1) == f"scratch.seed{ft.SEED + 1}"


def test_quantize_and_attention_race_tables_come_from_their_results():
    """The README's int8 and attention-race tables are the committed results, rendered."""
    import json

    from conftest import BENCHMARKS

    results, readme = BENCHMARKS / "results", (BENCHMARKS.parent / "README.md").read_text()
    q = json.loads((results / "quantize_cpu.json").read_text())
    table = benchmark_module("quantize").markdown(q)
    one = next(r for r in q["rows"] if r["batch"] == 1)
    assert f"**{one['lstmgen_int8_vs_eager']:.2f}x**" in table
    assert f"**{q['size']['int8_over_float32']:.3f}x**" in table
    assert ("met" if q["floors"]["int8_batch1_ge_8x_eager"] else "**not met**") in table
    race = json.loads((results / "quality_cpu_attention.json").read_text())
    rows = benchmark_module("quality_cpu_attention").markdown(race)
    assert all(f"**{r['val_loss_nats_per_char']:.4f}**" in rows for r in race["runs"].values())
    assert table in readme and rows in readme  # python benchmarks/render_readme.py was run


def test_cuda_generation_table_shows_streamed_and_capture_times():
    """A CUDA generation result from after the host-side fix: the streamed column and the
    capture time (what each ``complete`` call pays before its first token) are rendered."""
    machine = {"cuda": "H200", "torch": "2.11", "processor": "x86_64", "cpu_count": 16}
    row = {
        "eager_tokens_per_s": 2000.0,
        "lstmgen_tokens_per_s": 15000.0,
        "speedup": 7.5,
        "streamed_tokens_per_s": 14000.0,
        "lstmgen_decoding": "cuda graph",
        "graph_loop_cudnn_tokens_per_s": 20000.0,
        "graph_loop_fused_tokens_per_s": 11000.0,
        "graph_loop_cudnn_capture_ms": 12.34,
    }
    r = {
        "date": "2026-12-02T00:00:00Z",
        "command": "python3 benchmarks/generation.py --device cuda",
        "machine": machine,
        "device": "cuda",
        "model": "char LSTM 3x512",
        "greedy_text_identical": True,
        "rows": [{"batch": 1, **row}, {"batch": 64, **row, "graph_loop_cudnn_capture_ms": 20.0}],
    }
    table = benchmark_module("render_readme").generation(r)
    assert "| 1 | 2,000 tok/s | 15,000 tok/s | 7.50x | 14,000 tok/s | 20,000 tok/s |" in table
    assert "took 12.3 / 20.0 ms at batch 1 / 64." in table
