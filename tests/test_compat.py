"""Folders written by lstmgen 0.1 (tests/fixtures/v0_1, never regenerated) keep working: they
load on both backends, give the text they gave then, show in ``info`` and resume (issue #11)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lstmgen import LanguageModel, Trainer
from lstmgen.reference import LanguageModel as NumpyModel

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0_1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
FOLDERS = sorted(EXPECTED)  # run_char (a run directory), model_word_gru (a model directory)


def copy_run(tmp_path: Path, corpus: bool) -> Path:
    """The fixture run in ``tmp_path``, its recorded corpus path pointed at a copy of the corpus
    (``corpus``) or at a file that does not exist (the run's cached tokens are used then)."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run_char", run)
    source = tmp_path / "corpus_char.txt"
    if corpus:
        shutil.copy(FIXTURES / "corpus_char.txt", source)
    path = run / "train_config.json"
    saved = json.loads(path.read_text(encoding="utf-8"))
    saved["sources"]["train"] = [str(source)]
    path.write_text(json.dumps(saved, indent=2), encoding="utf-8")
    return run


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


@pytest.mark.parametrize("name", FOLDERS)
def test_old_folders_give_the_recorded_text_on_both_backends(name):
    case, path = EXPECTED[name], FIXTURES / name
    model = LanguageModel.from_pretrained(path)
    greedy = model.complete(case["prompt"], temperature=0, max_new_tokens=case["max_new_tokens"])
    assert greedy == [case["greedy"]]
    sampled = model.complete(
        case["prompt"],
        temperature=case["sample_temperature"],
        seed=case["sample_seed"],
        max_new_tokens=case["max_new_tokens"],
    )
    assert sampled == [case["sampled_torch_cpu"]]
    reference = NumpyModel.from_pretrained(path)
    text = "".join(
        reference.generate(case["prompt"], temperature=0, max_new_tokens=case["max_new_tokens"])
    )
    assert text == case["greedy"]


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("name", FOLDERS)
def test_old_folders_generate_from_the_cli(run_cli, name, backend):
    case = EXPECTED[name]
    r = run_cli(
        "generate", FIXTURES / name, "-p", case["prompt"], "-t", "0", "--no-prompt",
        "--max-new-tokens", case["max_new_tokens"], "--backend", backend, "--device", "cpu",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert r.out == case["greedy"] + "\n"


def test_info_reads_old_folders(run_cli):
    r = run_cli("info", FIXTURES / "run_char", "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["model"]["cell"] == "lstm" and info["parameters"] == 5140
    assert info["tokenizer"] == {"type": "char", "vocab_size": 52}
    assert info["history"]["steps"] == 300 and info["history"]["evaluations"] == 3
    assert info["history"]["best_val_loss"] == pytest.approx(2.7782848349639346)
    assert info["training"]["seq_len"] == 16 and info["training"]["seed"] == 7
    r = run_cli("info", FIXTURES / "model_word_gru", "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["model"]["cell"] == "gru" and info["tokenizer"]["type"] == "word"
    assert run_cli("info", FIXTURES / "run_char").code == 0  # the human-readable form too


def test_old_trainer_state_and_metrics_read_back(tmp_path):
    rows = read_metrics(FIXTURES / "run_char")
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [100, 200, 300]
    with pytest.warns(UserWarning, match="corpus is gone"):
        trainer = Trainer.resume(copy_run(tmp_path, corpus=False))
    try:
        pos = trainer.pos
        assert (pos.step, pos.epoch, pos.window, pos.best_step) == (300, 7, 34, 300)
        assert pos.best_val == evals[-1]["val_loss"] == evals[-1]["best_val_loss"]
        assert trainer.config.max_steps == 300 and trainer.config.lr == 0.03
        assert len(trainer.corpus.train) + len(trainer.corpus.valid) == 2403 + 126
        # The latest weights (the trainer state) are the best model's: step 300 was the best.
        best = LanguageModel.from_pretrained(FIXTURES / "run_char").state_dict()
        for k, v in trainer.model.state_dict().items():
            assert torch.equal(v, best[k]), k
    finally:
        trainer.lock.release()


@pytest.mark.parametrize("corpus", [False, True], ids=["corpus-gone", "corpus-present"])
def test_old_runs_resume(tmp_path, corpus):
    run = copy_run(tmp_path, corpus)
    with pytest.warns() if not corpus else _no_warning():
        trainer = Trainer.resume(run, max_steps=306, eval_every=3)
    summary = trainer.fit()
    assert summary["step"] == 306 and trainer.pos.step == 306
    rows = read_metrics(run)
    assert [r["step"] for r in rows if "val_loss" in r] == [100, 200, 300, 303, 306]
    model = LanguageModel.from_pretrained(run)
    assert len(model.complete("First", temperature=0, max_new_tokens=5)[0]) == 5


def test_old_runs_resume_the_same_with_or_without_their_corpus(tmp_path):
    weights = []
    for corpus in (False, True):
        run = copy_run(tmp_path / str(corpus), corpus)
        with pytest.warns() if not corpus else _no_warning():
            trainer = Trainer.resume(run, max_steps=304)
        trainer.fit()
        weights.append(trainer.model.state_dict())
    for k, v in weights[0].items():
        assert torch.equal(v, weights[1][k]), k


def test_old_runs_resume_from_the_cli(tmp_path, run_cli):
    run = copy_run(tmp_path, corpus=False)
    r = run_cli("train", "--resume", run, "--max-steps", "305", "-q")
    assert r.code == 0, r.err
    assert "corpus is gone" in r.err
    rows = read_metrics(run)
    assert rows[-1]["step"] == 305 and "val_loss" in rows[-1]


class _no_warning:
    """``pytest.warns`` for no warning at all: any warning raised inside fails the test."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)
