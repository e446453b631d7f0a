"""benchmarks/long_context.py (issue #12, long context on character-level WikiText-2): the
corpus prefixes, the sha-lstm's settings, one side trained and scored in process, the README
table; the script end to end at tiny sizes (slow: two spawned sides)."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from conftest import benchmark_module, benchmark_result, make_play


def _wikitext(tmp_path, raw_train: bool = False):
    data = tmp_path / "wikitext-2"
    data.mkdir()
    for i, split in enumerate(("train", "valid", "test")):
        text = make_play(300 if split == "train" else 60, seed=i)
        (data / f"wiki.{split}.tokens").write_text(text, encoding="utf-8")
    if raw_train:
        (data / "wiki.train.raw").write_text("RAW " + make_play(300, seed=9), encoding="utf-8")
    return data


def _args(**kw) -> argparse.Namespace:
    base = {
        "tiny": True, "steps": 6, "budget": 0.0, "eval_every": 3, "seed": 1, "sha": None,
        "sweep_result": None, "no_lstm": False, "lstm": "", "memories": [16],
    }  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_corpus_prefers_raw_files_and_cuts_equal_eval_prefixes(tmp_path):
    lc = benchmark_module("long_context")
    info = lc.corpus(_wikitext(tmp_path, raw_train=True), tmp_path / "c", 500, tiny=False)
    assert info["files"]["train"].endswith("wiki.train.raw")  # the raw variant wins
    assert info["files"]["valid"].endswith("wiki.valid.tokens")  # else the tokens file
    assert info["chars"]["valid"] == info["chars"]["test"] == 500
    assert (tmp_path / "c" / "train.txt").read_text(encoding="utf-8").startswith("RAW ")
    assert len((tmp_path / "c" / "test.txt").read_text(encoding="utf-8")) == 500
    with pytest.raises(SystemExit, match="no wiki.train.raw or wiki.train.tokens"):
        lc.corpus(tmp_path, tmp_path / "d", 500, tiny=False)


def test_sha_settings_take_the_sweeps_best_but_not_its_memory(tmp_path, monkeypatch):
    lc = benchmark_module("long_context")
    monkeypatch.setenv("LSTMGEN_RESULTS_DIR", str(tmp_path))
    assert lc.sha_settings(_args())[0] == []  # no sweep: the defaults
    best = {"sha-lstm": {"overrides": ["attention_layer=1", "memory=128"]}}
    (tmp_path / "quality_cpu_attention_sweep.json").write_text(json.dumps({"best": best}))
    sha, source = lc.sha_settings(_args())
    assert sha == ["attention_layer=1"] and "sweep" in source  # memory is what varies
    assert lc.sha_settings(_args(sha="lr=0.005"))[0] == ["lr=0.005"]
    sides = lc.sides(_args(memories=[64, 1024]), sha)
    assert list(sides) == ["lstm", "sha-lstm m64", "sha-lstm m1024"]
    assert sides["sha-lstm m1024"] == ["arch=sha-lstm", "attention_layer=1", "memory=1024"]


def test_a_side_trains_then_scores_its_best_checkpoint_on_test(tmp_path):
    lc = benchmark_module("long_context")
    src = tmp_path / "c"
    lc.corpus(_wikitext(tmp_path), src, 2000, tiny=True)
    lc.prepare(tmp_path / "run", src, _args(), ["arch=sha-lstm", "memory=16"])
    r = lc.train_side(str(tmp_path / "run"), test_warmup=32)
    assert r["steps"] == 6 and r["tokens"] == 6 * 8 * 32  # tiny preset: batch 8x32
    assert r["model_config"]["arch"] == "sha-lstm" and r["model_config"]["memory"] == 16
    assert [p["step"] for p in r["curve"]] == [3, 6]
    assert r["best_val_bits_per_char"] == min(p["val_bits_per_char"] for p in r["curve"])
    assert math.isfinite(r["test_bits_per_char"]) and r["test_tokens"] > 0
    assert r["tokens_per_s_training"] >= r["tokens_per_s"] > 0  # evaluations left out

    record = {
        "runs": {"lstm": {**r, "model_config": {**r["model_config"], "arch": "recurrent"}},
                 "sha-lstm m16": r},
        "gain_bits_per_char_vs_lstm": lc.summarise({"lstm": r, "sha-lstm m16": r}),
        "corpus": {"files": {"train": "x/wiki.train.tokens"},
                   "chars": {"train": 9, "valid": 2000, "test": 2000}},
        "budget_s": None, "steps_budget": 6, "sha_settings_from": "defaults",
        "date": "2026-12-01T00:00:00Z", "command": "python long_context.py",
        "machine": {"processor": "x86_64", "cpu_count": 2, "torch": "2"},
    }  # fmt: skip
    assert record["gain_bits_per_char_vs_lstm"]["sha-lstm m16"]["test"] == 0.0
    table = lc.markdown(record)
    assert "| lstm 1x32 |" in table and "sha-lstm 1x32, memory 16" in table
    assert "6 steps of training each" in table and "+0.0000" in table


@pytest.mark.slow
def test_tiny_run_end_to_end_side_by_side(tmp_path):
    data = _wikitext(tmp_path)
    r = benchmark_result(
        tmp_path, "long_context.py", "--tiny", "--steps", "4", "--eval-every", "2",
        "--memories", "16", "--data", str(data), "--name", "lc",
    )  # fmt: skip
    assert r["rounds"] == [["lstm", "sha-lstm m16"]] and "side by side" in r["notes"]
    for run in r["runs"].values():
        assert run["steps"] == 4 and math.isfinite(run["test_bits_per_char"])
    assert set(r["gain_bits_per_char_vs_lstm"]) == {"sha-lstm m16"}
