"""The word-level benchmark's pieces (issue #16) at tiny sizes: the baseline recipe's loop and
the stateful test pass both sides are scored with, the recipe's published settings, the preset
sweep's candidates, the README tables, and (under -m slow) word_quality.py and word_sweep.py
end to end on a PTB-shaped toy corpus, side by side."""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import benchmark_module, benchmark_result
from lstmgen import ModelConfig, TrainConfig
from lstmgen.config import PRESETS
from lstmgen.models.adaptive import auto_cutoffs


def test_stateful_perplexity_at_batch_1_scores_every_token_as_one_pass():
    wb = benchmark_module("word_baseline")
    torch.manual_seed(0)
    model = wb.BaselineLSTM(30).eval()
    tokens = np.random.default_rng(0).integers(0, 30, 200)  # 200 > 5 windows of 35
    ppl, scored = wb.stateful_perplexity(model, tokens, torch.device("cpu"), batch=1)
    assert scored == 199  # every token but the first
    ids = torch.from_numpy(tokens).view(1, -1)
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])  # the whole sequence in one forward
    want = F.cross_entropy(logits.reshape(-1, 30), ids[0, 1:])
    assert math.isclose(ppl, math.exp(float(want)), rel_tol=1e-5)


def test_baseline_recipe_trains_within_its_budget_and_anneals():
    wb = benchmark_module("word_baseline")
    pattern = np.tile(np.arange(10), 200)  # learnable: 0 1 2 ... 9 0 1 ...
    noise = np.random.default_rng(0).integers(0, 12, 400)  # validation the pattern does not fit
    cpu = torch.device("cpu")
    result = wb.train(pattern, noise, 12, budget=2.5, device=cpu, log=lambda s: None)
    assert result.steps > 0 and result.seconds < 2.5 + 2.0  # an evaluation's slack
    lrs = [p["lr"] for p in result.curve]  # the first evaluation is the best so far: lr 20
    assert lrs[0] == 20.0 and all(b in (a, a / 4) for a, b in zip(lrs, lrs[1:], strict=False))
    # learning the pattern makes the noise less likely: validation stalls, lr / 4
    assert len(lrs) >= 2 and lrs[-1] < 20.0
    ppl, _ = wb.stateful_perplexity(result.model, noise, cpu)  # the model kept: the best one
    assert round(ppl, 2) == min(p["val_ppl"] for p in result.curve)


def test_baseline_recipe_is_the_published_one():
    """word_language_model's defaults: 2x200, dropout 0.2, untied, SGD lr 20, clip 0.25,
    batch 20, BPTT 35, evaluation batch 10."""
    wb = benchmark_module("word_baseline")
    assert (wb.EMBED, wb.HIDDEN, wb.LAYERS, wb.DROPOUT) == (200, 200, 2, 0.2)
    assert (wb.LR, wb.CLIP, wb.BATCH, wb.BPTT, wb.EVAL_BATCH) == (20.0, 0.25, 20, 35, 10)
    model = wb.BaselineLSTM(50)
    assert model.decoder.weight.data_ptr() != model.embedding.weight.data_ptr()  # untied
    assert model.rnn.dropout == 0.2 and float(model.decoder.bias.detach().abs().max()) == 0.0


def test_sweep_candidates_are_valid_word_cpu_variants():
    sweep = benchmark_module("word_sweep")
    # the preset is the PTB winner with its cutoffs as a rule and precision auto (bf16 on AMX
    # or AVX512-BF16)
    won = sweep.candidate_preset("word-cpu-as-ptb-bf16")
    preset = PRESETS["word-cpu"]
    assert {**preset["model"], "adaptive_cutoffs": auto_cutoffs(10000)} == won["model"]
    assert {**preset["train"], "precision": "bf16"} == won["train"]
    assert {**preset["model"], "adaptive_cutoffs": auto_cutoffs(33278)} == {
        **sweep.candidate_preset("word-cpu-as")["model"]
    }
    # "word-cpu" names the preset the sweep started from; every candidate states its precision
    assert sweep.candidate_preset("word-cpu")["train"]["lr"] == 3e-3
    assert sweep.candidate_preset("word-cpu")["model"]["tie_weights"]
    assert sweep.candidate_preset("word-cpu")["train"]["precision"] == "fp32"
    seen = []
    for name in sweep.CANDIDATES:
        p = sweep.candidate_preset(name)
        ModelConfig.from_dict(p["model"]).validate()
        TrainConfig.from_dict(p["train"])
        assert p not in seen, f"{name} repeats another candidate"
        seen.append(p)
    # the GPU candidates vary --preset word-gpu as it stands
    ntasgd = sweep.candidate_preset("word-gpu-ntasgd")
    assert ntasgd["model"] == PRESETS["word-gpu"]["model"]
    assert ntasgd["train"] == {
        **PRESETS["word-gpu"]["train"],
        "optimizer": "nt-asgd",
        "lr": 30.0,
        "weight_decay": 1.2e-6,
    }
    for name in sweep.GPU_CANDIDATES:
        p = sweep.candidate_preset(name)
        ModelConfig.from_dict(p["model"]).validate()
        TrainConfig.from_dict(p["train"]).validate()
        assert name not in sweep.CANDIDATES


def _record(**payload):
    machine = {"processor": "x86_64", "cpu_count": 2, "torch": "2.13", "cpu_model": "Xeon"}
    return {"date": "2026-11-30T00:00:00Z", "command": "python x.py", "machine": machine,
            **payload}  # fmt: skip


def test_word_tables_render_from_results():
    quality = benchmark_module("word_quality").markdown(_record(results=[{
        "corpus": "ptb", "budget_s": 1200.0, "mode": "side-by-side",
        "lstmgen": {"preset": "word-cpu", "test_ppl": 120.5, "epochs": 2.1, "tokens_per_s": 1500},
        "baseline": {"test_ppl": 170.0, "tokens_per_s": 2500, "curve": [{"epoch": 3.2}]},
        "ratio_lstmgen_to_baseline": 0.709, "floor": "lstmgen / baseline <= 0.75",
        "meets_floor": True,
    }]))  # fmt: skip
    assert "| ptb | **120.5** (`--preset word-cpu`) | 170.0 | 0.709 |" in quality
    assert "met |" in quality and "1200 s of training each (side-by-side)" in quality
    sweep = benchmark_module("word_sweep").markdown(_record(
        budget_s=270.0, winner="b",
        results={
            "a": {"why": "A", "valid_ppl": 200.0, "epochs": 0.5, "tokens_per_s": 900},
            "b": {"why": "B", "valid_ppl": 180.0, "epochs": 0.6, "tokens_per_s": 1100},
        },
    ))  # fmt: skip
    lines = sweep.splitlines()
    assert lines[2] == "| `b` | B | **180.0** | 0.6 | 1100 |"  # best first
    assert lines[3].startswith("| `a` | A | 200.0 |")


def test_curve_table_merges_both_sides_by_time():
    table = benchmark_module("word_quality").curve_markdown(_record(results=[{
        "corpus": "ptb",
        "lstmgen": {"curve": [{"elapsed_s": 100.2, "val_ppl": 250.0, "epoch": 0.5},
                              {"elapsed_s": 400.0, "val_ppl": 150.0, "epoch": 2.0}]},
        "baseline": {"curve": [{"elapsed_s": 300.4, "val_ppl": 220.0, "epoch": 1.0}]},
    }]))  # fmt: skip
    lines = table.splitlines()
    assert lines[0] == "| ptb: training s | lstmgen valid ppl | baseline valid ppl |"
    assert lines[2:5] == [  # in time order, each side's cell empty where it did not evaluate
        "| 100 | 250.0 (epoch 0.5) |  |",
        "| 300 |  | 220.0 (epoch 1.0) |",
        "| 400 | 150.0 (epoch 2.0) |  |",
    ]
    only = benchmark_module("word_quality").curve_markdown(_record(results=[{
        "corpus": "ptb", "lstmgen": {"curve": [{"elapsed_s": 5, "val_ppl": 9.0, "epoch": 1}]},
    }]))  # fmt: skip
    assert only.splitlines()[:3] == ["| ptb: training s | lstmgen valid ppl |", "|---|---|",
                                     "| 5 | 9.0 (epoch 1.0) |"]  # fmt: skip


def test_weight_drop_speed_table_says_whether_each_pair_meets_the_floor():
    pair = {"pair": "P", "precision": "bf16", "tokens_per_s_weight_drop": 4336,
            "tokens_per_s_no_weight_drop": 4347, "ratio_median_of_rounds": 0.983,
            "cpu_time_ratio_median": 0.982, "floor": 0.9, "batch": 32, "seq_len": 35}  # fmt: skip
    slow = {**pair, "pair": "Q", "ratio_median_of_rounds": 0.85}
    table = benchmark_module("weight_drop_speed").markdown(
        _record(trainer=[pair, slow], steps_per_chunk=5)
    )
    assert "| P | bf16 | 4,336 | 4,347 | **0.983** | 0.982 | met |" in table
    assert "| Q | bf16 | 4,336 | 4,347 | **0.85** | 0.982 | not met |" in table
    assert "32x35 windows of PTB, chunks of 5 steps" in table


def test_throughput_table_renders_from_results():
    row = {"why": "W", "ratio_to_word_cpu": 3.1, "ratio_fastest_step": 3.0, "parameters": 1234}
    table = benchmark_module("word_sweep").markdown(
        _record(vocab=33278, candidates={"word-cpu-as": row}, baseline={**row, "why": "B"})
    )
    assert "| `word-cpu-as` | W | 3.1 | 3.0 | 1,234 |" in table
    assert "| `baseline` | B |" in table and "V = 33,278" in table


def _toy_ptb(root):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    (root / "ptb").mkdir(parents=True)
    for split, lines in (("train", 300), ("valid", 60), ("test", 60)):
        text = "".join(" " + " ".join(rng.choices(words, k=12)) + " \n" for _ in range(lines))
        (root / "ptb" / f"ptb.{split}.txt").write_text(text, encoding="utf-8")
    return root


@pytest.mark.slow
def test_word_quality_and_sweep_run_side_by_side(tmp_path):
    data = str(_toy_ptb(tmp_path / "data"))
    r = benchmark_result(
        tmp_path, "word_quality.py", "--corpora", "ptb", "--budget", "3", "--eval-every", "5",
        "--data-root", data, "--name", "wq",
    )  # fmt: skip
    (c,) = r["results"]
    assert c["mode"] == "side-by-side" and "side by side" in r["notes"]
    for side in ("lstmgen", "baseline"):
        assert math.isfinite(c[side]["test_ppl"]) and c[side]["test_tokens_scored"] > 0
        assert c[side]["curve"]
    assert c["ratio_lstmgen_to_baseline"] == pytest.approx(
        c["lstmgen"]["test_ppl"] / c["baseline"]["test_ppl"], abs=1e-3
    )
    s = benchmark_result(
        tmp_path, "word_sweep.py", "--only", "word-cpu", "e256-h256", "--tokens", "2000",
        "--eval-every", "5", "--data-root", data, "--name", "ws",
    )  # fmt: skip
    assert set(s["results"]) == {"word-cpu", "e256-h256"}
    assert s["winner_preset"] == benchmark_module("word_sweep").candidate_preset(s["winner"])
    assert all(math.isfinite(r["valid_ppl"]) for r in s["results"].values())
    assert s["tokens_per_candidate"] == 2000 and s["budget_s"] is None


def test_word_quality_measures_a_sweep_candidate_in_place_of_the_preset():
    import argparse

    wq = benchmark_module("word_quality")
    args = argparse.Namespace(preset="word-cpu", candidate="word-cpu-as")
    settings = wq.side_settings(args)
    assert settings["model"]["adaptive_cutoffs"] == [2000, 10000]
    assert settings["model"]["tie_weights"] is False
    assert settings["train"]["max_time"] == PRESETS["word-cpu"]["train"]["max_time"]
    ModelConfig.from_dict(settings["model"])  # a valid model config
    preset = wq.side_settings(argparse.Namespace(preset="word-cpu", candidate=None))
    assert preset is PRESETS["word-cpu"]
    with pytest.raises(SystemExit, match="unknown candidate"):
        wq.side_settings(argparse.Namespace(preset="word-cpu", candidate="nope"))
    gpu = wq.side_settings(argparse.Namespace(preset="word-gpu", candidate="word-gpu-ntasgd"))
    assert gpu["train"]["optimizer"] == "nt-asgd" and gpu["model"]["hidden_size"] == 1150
    table = wq.markdown(_record(results=[{
        "corpus": "wikitext-2", "budget_s": 1200.0, "mode": "side-by-side",
        "lstmgen": {"preset": "word-cpu", "candidate": "word-cpu-as", "test_ppl": 200.0},
    }]))  # fmt: skip
    assert "**200.0** (candidate `word-cpu-as` of word_sweep.py)" in table
