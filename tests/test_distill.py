"""`lstmgen distill` (#14): a student trained on a teacher's soft targets."""

import pytest
from safetensors.torch import load_file

from conftest import tiny_train_args

STEPS = ["--max-steps", "6", "--eval-every", "6", "--batch-size", "4", "--seq-len", "16"]
STUDENT = ["--hidden-size", "8", "--num-layers", "1", "--embedding-size", "8", "--device", "cpu"]


@pytest.fixture
def teacher(tmp_path, corpus_file, run_cli):
    out = tmp_path / "teacher"
    r = run_cli("train", corpus_file, "-o", out, "-q", *tiny_train_args(max_steps=10))
    assert r.code == 0, r.err
    return out


def weights(run):
    return load_file(str(run / "model.safetensors"))


def test_distilled_student_is_an_ordinary_run(teacher, corpus_file, tmp_path, run_cli):
    out = tmp_path / "student"
    r = run_cli("distill", teacher, corpus_file, "-o", out, "-q", *STUDENT, *STEPS)
    assert r.code == 0, r.err
    assert (out / "tokenizer.json").read_text() == (teacher / "tokenizer.json").read_text()
    assert weights(out)["rnn.weight_hh_l0"].shape == (32, 8)
    r = run_cli("generate", out, "--max-new-tokens", "5", "--seed", "1")
    assert r.code == 0, r.err


def test_the_teacher_shapes_the_student(teacher, corpus_file, tmp_path, run_cli):
    """alpha 0 is plain training (bit for bit); alpha 1 trains on the teacher alone."""
    common = [corpus_file, "-q", *STUDENT, *STEPS, "--seed", "3", "--sample-tokens", "0"]
    assert run_cli("train", "-o", tmp_path / "plain", *common).code == 0
    for alpha in ("0", "1"):
        r = run_cli("distill", teacher, "-o", tmp_path / alpha, "--kd-alpha", alpha, *common)
        assert r.code == 0, r.err
    plain, a0, a1 = (weights(tmp_path / n) for n in ("plain", "0", "1"))
    assert all((plain[k] == a0[k]).all() for k in plain)
    assert not all((plain[k] == a1[k]).all() for k in plain)


def test_teacher_and_student_tokenizers_must_match(teacher, corpus_file, tmp_path, run_cli):
    r = run_cli("distill", teacher, corpus_file, "-o", tmp_path / "s", "--tokenizer", "byte")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1
    assert "error: the student must use the teacher's tokenizer (char" in r.err
    assert not (tmp_path / "s").exists()
