"""The seams of issue #11 that the trainer split made: the runtime without the trainer, the run
directory as the one writer, and the optimizer's parameter groups behind one method."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import torch

from conftest import TINY_MODEL, TINY_TRAIN
from lstmgen import LanguageModel, ModelConfig, TrainConfig, Trainer
from lstmgen.rundir import LOCK_FILE, METRICS, PLOT, RUN_CONFIG, STATE_FILE, RunDir
from lstmgen.tokenizers import CharTokenizer

SRC = Path(__file__).resolve().parent.parent / "src" / "lstmgen"


def tiny_model() -> LanguageModel:
    tok = CharTokenizer.fit(["abcdefgh \n"])
    config = ModelConfig(vocab_size=tok.vocab_size, **TINY_MODEL)
    return LanguageModel(config, tok)


def test_generating_and_serving_load_no_training_code(tmp_path):
    tiny_model().save_pretrained(tmp_path / "m")
    code = f"""
import sys
from lstmgen import LanguageModel
import lstmgen.cli.generate, lstmgen.cli.serve, lstmgen.server.app
from lstmgen.cli.common import load_run
model = load_run({str(tmp_path / "m")!r}, "cpu")
model.complete("ab", max_new_tokens=5, temperature=0)
LanguageModel.from_pretrained({str(tmp_path / "m")!r}).complete("ab", max_new_tokens=5)
loaded = [m for m in ("lstmgen.train", "lstmgen.training.trainer") if m in sys.modules]
assert not loaded, loaded
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_reader_only_run_dir_writes_nothing(tmp_path, corpus_file):
    model = tiny_model()
    config = TrainConfig(**TINY_TRAIN, max_steps=1)
    tensors, meta = {"x": torch.zeros(2)}, {"position": "{}"}

    def write_everything(run: RunDir) -> None:
        run.lock().release()
        run.write_config(config, {"train": [str(corpus_file)]})
        run.save_model(model)
        run.save_state(tensors, meta)
        run.append_metrics({"step": 1, "train_loss": 2.0})
        run.append_metrics({"step": 2, "train_loss": 1.0})
        run.forget_metrics_after(1)
        run.plot()
        (run.path / "x.tmp").touch(exist_ok=True)
        run.remove_stale_temp_files()

    writer = RunDir(tmp_path / "w")
    write_everything(writer)
    names = {p.relative_to(writer.path).as_posix() for p in writer.path.rglob("*")}
    assert {RUN_CONFIG, STATE_FILE.as_posix(), METRICS, PLOT, LOCK_FILE, "config.json"} <= names
    assert len(writer.read_metrics()) == 1 and "x.tmp" not in names

    reader = RunDir(tmp_path / "r", writer=False)
    reader.path.mkdir()
    (reader.path / "x.tmp").touch()
    write_everything(reader)
    reader.clear_metrics()
    reader.discard()
    assert sorted(p.name for p in reader.path.iterdir()) == ["x.tmp"]


def test_run_file_names_are_spelled_only_in_rundir():
    names = {RUN_CONFIG, METRICS, PLOT, LOCK_FILE, "state.safetensors"}
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "rundir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}")
    assert not found


class FrozenEmbedding(Trainer):
    """A fine-tuning run: the embedding stays as it is, the rest learns at the run's rate."""

    def param_groups(self):
        learn = [p for n, p in self.model.named_parameters() if not n.startswith("embedding.")]
        return [{"params": learn, "weight_decay": 0.0}]


def test_a_subclass_chooses_the_parameter_groups(tmp_path, corpus_file):
    cfg = TrainConfig(**TINY_TRAIN, max_steps=3)
    trainer = FrozenEmbedding.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    before = trainer.model.embedding.weight.detach().clone()
    rnn_before = trainer.model.rnn.weight_hh_l0.detach().clone()
    trainer.fit()
    groups = trainer.optimizer.param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0
    assert torch.equal(trainer.model.embedding.weight, before)
    assert not torch.equal(trainer.model.rnn.weight_hh_l0, rnn_before)
    resumed = FrozenEmbedding.resume(tmp_path / "r", max_steps=4)  # the same groups come back
    resumed.fit()
    assert torch.equal(resumed.model.embedding.weight, before)


def test_training_flushes_subnormals_on_cpu_and_restores_after():
    """Subnormal floats slow CPU arithmetic several times (a sha-lstm fell from ~8,000 to
    ~2,400 tokens/s): fit and evaluate run with them flushed to zero, nested, then switch back."""
    import torch

    from lstmgen.runtime import flush_denormals

    tiny = torch.tensor([1e-40])  # a float32 subnormal
    cpu = torch.device("cpu")
    assert (tiny * 1.0).item() != 0.0
    with flush_denormals(cpu):
        with flush_denormals(cpu):  # an evaluation inside fit
            assert (tiny * 1.0).item() == 0.0
        assert (tiny * 1.0).item() == 0.0  # still on after the inner block
    assert (tiny * 1.0).item() != 0.0
