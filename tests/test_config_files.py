"""Hand-edited or damaged run files: config values of the wrong type, weights that do not fit
their config or hold NaN, and what ``lstmgen info`` reports about a run."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY_MODEL, TINY_TRAIN
from lstmgen import CheckpointError, GenerationConfig, LanguageModel, ModelConfig, TrainConfig
from lstmgen.checkpoint import weights_of
from lstmgen.errors import ConfigError
from lstmgen.modeldir import weight_shapes
from lstmgen.reference.checkpoint import read_model_dir
from lstmgen.train import Trainer
from test_cli import assert_one_line_error


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory as ``lstmgen train`` leaves it, stopped by Ctrl-C between two logs."""
    from conftest import make_play

    root = tmp_path_factory.mktemp("files")
    (root / "play.txt").write_text(make_play(), encoding="utf-8")
    cfg = TrainConfig(**{**TINY_TRAIN, "log_every": 5, "eval_every": 100}, max_steps=50)
    trainer = Trainer.create(root / "run", [root / "play.txt"], cfg, ModelConfig(**TINY_MODEL))
    step = trainer.train_step

    def ctrl_c_at_step_7(x, y):
        if trainer.pos.step == 6:
            trainer.request_stop()  # what the SIGINT handler does
        return step(x, y)

    trainer.train_step = ctrl_c_at_step_7
    assert trainer.fit()["step"] == 7
    return root / "run"


def edited(tmp_path, run, file, **values):
    """A copy of ``run`` with ``values`` written into its JSON ``file``."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    data = json.loads((copy / file).read_text())
    (copy / file).write_text(json.dumps({**data, **values}))
    return copy


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (ModelConfig, {"hidden_size": 32.5}, "hidden_size must be an integer, got 32.5"),
        (ModelConfig, {"hidden_size": "32"}, 'hidden_size must be an integer, got "32"'),
        (ModelConfig, {"hidden_size": None}, "hidden_size must be an integer, got null"),
        (ModelConfig, {"num_layers": True}, "num_layers must be an integer, got true"),
        (ModelConfig, {"dropout": "0.1"}, 'dropout must be a finite number, got "0.1"'),
        (ModelConfig, {"tie_weights": 1}, "tie_weights must be true or false, got 1"),
        (ModelConfig, {"cell": 4}, "cell must be a string, got 4"),
        (ModelConfig, {"cell": "lstn"}, "cell must be one of lstm, gru, rnn, got 'lstn'"),
        (TrainConfig, {"lr": "x"}, 'lr must be a finite number, got "x"'),
        (TrainConfig, {"lr": float("nan")}, "lr must be a finite number, got NaN"),
        (TrainConfig, {"batch_size": 8.0}, "batch_size must be an integer, got 8.0"),
        (TrainConfig, {"tokenizer": "bytes"}, "tokenizer must be one of char, byte, word, bpe"),
        (
            TrainConfig,
            {"tokenizer": "bpe", "vocab_size": 5},
            "vocab_size must be >= 256 for bpe (its byte alphabet alone is 256), got 5",
        ),
        (GenerationConfig, {"seed": "1"}, 'seed must be an integer or null, got "1"'),
        (GenerationConfig, {"stop": [1]}, "stop must be a list of strings, got [1]"),
        (GenerationConfig, {"stop": "\n"}, 'stop must be a list of strings, got "\\n"'),
    ],
)
def test_config_values_must_have_their_field_type(cls, values, message):
    with pytest.raises(ConfigError) as err:
        cls.from_dict(values)
    assert str(err.value) == message or str(err.value).startswith(message)


def test_config_types_that_fit():
    assert ModelConfig.from_dict({"dropout": 0}).dropout == 0  # an int is a fine float
    assert TrainConfig.from_dict({"max_time": 600}).max_time == 600
    assert GenerationConfig.from_dict({"seed": None}).seed is None
    assert GenerationConfig.from_dict({"seed": 3, "stop": ["\n"]}).seed == 3
    assert ModelConfig.from_dict({}) == ModelConfig()  # missing keys take the defaults
    with pytest.raises(ConfigError, match="hidden_size must be an integer"):
        ModelConfig().replace(hidden_size=1.5)


@pytest.mark.parametrize("value", [32.5, "32", None])
def test_bad_model_config_value_is_one_line_naming_the_file(tmp_path, tiny_run, run_cli, value):
    run = edited(tmp_path, tiny_run, "config.json", hidden_size=value)
    r = run_cli("generate", run, "--max-new-tokens", "3")
    assert_one_line_error(r, 1, f"{run / 'config.json'}: hidden_size must be an integer, got ")


def test_bad_train_config_value_is_one_line_for_resume_and_info(tmp_path, tiny_run, run_cli):
    run = edited(tmp_path, tiny_run, "train_config.json", lr="x")
    message = f'{run / "train_config.json"}: lr must be a finite number, got "x"'
    assert_one_line_error(run_cli("train", "--resume", run, "--max-steps", "6"), 1, message)
    assert_one_line_error(run_cli("info", run), 1, message)


def test_config_that_does_not_fit_its_weights_fails_before_building(
    tmp_path, tiny_run, monkeypatch
):
    run = edited(tmp_path, tiny_run, "config.json", num_layers=1_000_000_000)

    def never(*args, **kwargs):
        raise AssertionError("the model was built before its weights were checked")

    monkeypatch.setattr(LanguageModel, "__init__", never)
    with pytest.raises(CheckpointError) as err:
        LanguageModel.from_pretrained(run)
    weights = run / "model.safetensors"
    assert str(err.value) == f"{weights} holds 2 recurrent layer(s), config.json says 1000000000"
    with pytest.raises(CheckpointError, match="holds 2 recurrent layer"):
        read_model_dir(run)  # the NumPy backend checks the same header first
    run = edited(tmp_path / "h", tiny_run, "config.json", hidden_size=10**9)
    with pytest.raises(CheckpointError, match=r"rnn.weight_ih_l0 has shape \(32, 8\), config says"):
        LanguageModel.from_pretrained(run)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("tie, E", [(False, 8), (True, 8), (True, 12)])
def test_weight_shapes_are_the_models(cell, tie, E):
    cfg = ModelConfig(
        vocab_size=11, cell=cell, embedding_size=E, hidden_size=12, num_layers=3, tie_weights=tie
    )
    model = LanguageModel(cfg)
    assert weight_shapes(cfg) == {k: tuple(v.shape) for k, v in weights_of(model).items()}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(tmp_path, tiny_run, run_cli, bad):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    weights = load_file(run / "model.safetensors")
    weights["rnn.weight_hh_l1"][3, 2] = bad
    save_file(weights, run / "model.safetensors", metadata={"format": "lstmgen"})
    message = (
        f"{run / 'model.safetensors'}: tensor rnn.weight_hh_l1 has NaN/inf values"
        " (the run diverged?)"
    )
    with pytest.raises(CheckpointError) as err:
        LanguageModel.from_pretrained(run)
    assert str(err.value) == message
    assert_one_line_error(run_cli("generate", run, "--max-new-tokens", "3"), 1, message)
    assert_one_line_error(run_cli("eval", run, "--split", "valid"), 1, message)
    numpy = run_cli("generate", run, "--backend", "numpy", "--max-new-tokens", "3")
    assert_one_line_error(numpy, 1, message)


def test_non_finite_trainer_state_is_refused_on_resume(tmp_path, tiny_run):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    state = run / "trainer" / "state.safetensors"
    from safetensors import safe_open

    with safe_open(str(state), "pt") as f:
        meta = f.metadata()
    tensors = load_file(state)
    tensors["model.embedding.weight"][0, 0] = torch.inf
    save_file(tensors, state, metadata=meta)
    with pytest.raises(CheckpointError, match="tensor model.embedding.weight has NaN/inf values"):
        Trainer.resume(run)


def test_info_reports_the_saved_position_and_current_limits(tmp_path, tiny_run, run_cli):
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5]  # the last log came before Ctrl-C
    run = edited(tmp_path, tiny_run, "train_config.json", max_steps=80)
    info = json.loads(run_cli("info", run, "--json").out)
    assert info["history"]["steps"] == 7
    assert info["history"]["training_seconds"] > rows[-1]["elapsed"]
    assert info["training"]["max_steps"] == 80
    r = run_cli("info", run)
    assert "history:    7 steps, 0 evaluations" in r.out and "max_steps=80" in r.out
