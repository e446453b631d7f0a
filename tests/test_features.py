"""Conditioning on feature vectors (issue #13): the vector becomes the initial state."""

from __future__ import annotations

import json

import pytest
import torch

from lstmgen import LanguageModel
from lstmgen.config import ModelConfig, TrainConfig
from lstmgen.errors import ConfigError, DataError
from lstmgen.tokenizers import CharTokenizer
from lstmgen.training.features import FeatureTrainer

WORDS = ["aaaa", "bbbb", "cccc"]


def _corpus(path, n=60, words=WORDS):
    with open(path, "w") as f:
        for i in range(n):
            k = i % len(words)
            vec = [float(j == k) for j in range(len(words))]
            f.write(json.dumps({"text": words[k], "features": vec}) + "\n")
    return path


def _train(tmp_path, steps, words=WORDS, lr=5e-2):
    cfg = TrainConfig(
        features_from="jsonl", max_steps=steps, batch_size=12, seq_len=16, lr=lr,
        warmup_steps=5, eval_every=steps, sample_tokens=0, log_every=10, device="cpu",
    )  # fmt: skip
    model_cfg = ModelConfig(embedding_size=8, hidden_size=16, num_layers=1)
    src = _corpus(tmp_path / "f.jsonl", words=words)
    FeatureTrainer.create(tmp_path / "run", [src], cfg, model_cfg).fit()
    return LanguageModel.from_pretrained(tmp_path / "run")


def _greedy(model, k, n=3, tokens=8):
    vec = [float(j == k) for j in range(n)]
    return "".join(model.generate("", features=vec, temperature=0, max_new_tokens=tokens))


def test_generation_follows_the_feature_vector(tmp_path):
    model = _train(tmp_path, 40)
    assert model.config.feature_size == 3
    assert [_greedy(model, k)[:4] for k in range(3)] == WORDS


@pytest.mark.slow
def test_generation_follows_the_feature_vector_with_words(tmp_path):
    words = ["apple apple", "berry berry", "cherry cherry"]
    model = _train(tmp_path, 300, words=words, lr=2e-2)
    assert [_greedy(model, k, tokens=len(w))[: len(w)] for k, w in enumerate(words)] == words


def test_feature_state_shapes_and_gradient():
    cfg = ModelConfig(vocab_size=5, embedding_size=4, hidden_size=6, num_layers=2, feature_size=3)
    model = LanguageModel(cfg, CharTokenizer(list("abcde")))
    assert model.state_dict()["features.weight"].shape == (2 * 2 * 6, 3)
    state = model.feature_state(torch.randn(5, 3))
    assert [tuple(t.shape) for t in state] == [(2, 5, 6), (2, 5, 6)]
    logits, _ = model(torch.zeros(5, 2, dtype=torch.long), state)
    logits.sum().backward()
    assert model.features.weight.grad.abs().sum() > 0  # the map learns through the state
    gru = LanguageModel(cfg.replace(cell="gru"), CharTokenizer(list("abcde")))
    assert len(gru.feature_state([0.0, 1.0, 2.0])) == 1


@pytest.mark.parametrize(
    ("features", "message"),
    [([1.0, 2.0], "has 2 numbers; the model takes 3"), ([1.0, float("nan"), 0.0], "NaN")],
)
def test_bad_feature_vectors_are_one_line(tmp_path, run_cli, features, message):
    cfg = ModelConfig(vocab_size=5, embedding_size=4, hidden_size=6, num_layers=1, feature_size=3)
    LanguageModel(cfg, CharTokenizer(list("abcde"))).save_pretrained(tmp_path / "m")
    path = tmp_path / "f.json"
    path.write_text(json.dumps(features).replace("NaN", "NaN"))
    res = run_cli("generate", tmp_path / "m", "--features", path, "--max-new-tokens", "3")
    assert res.code != 0 and message in res.err and res.err.count("\n") == 1
    with pytest.raises(DataError, match=message):
        LanguageModel.from_pretrained(tmp_path / "m").complete("", features=features)


def test_features_without_a_feature_model_or_trainer_are_refused(tmp_path):
    model = LanguageModel(ModelConfig(vocab_size=5), CharTokenizer(list("abcde")))
    with pytest.raises(DataError, match="takes no feature vectors"):
        model.complete("", features=[1.0])
    src = _corpus(tmp_path / "f.jsonl")
    from lstmgen.train import Trainer

    with pytest.raises(ConfigError, match="FeatureTrainer"):
        Trainer.create(tmp_path / "run", [src], TrainConfig(features_from="jsonl"))


def test_feature_lengths_must_agree(tmp_path, run_cli):
    rows = [{"text": "a", "features": [1.0, 2.0]}, {"text": "b", "features": [1.0]}]
    (tmp_path / "f.jsonl").write_text("\n".join(map(json.dumps, rows)))
    res = run_cli("train", tmp_path / "f.jsonl", "--features-from", "jsonl", "-o", tmp_path / "r")
    assert res.code != 0 and "f.jsonl:2: 1 features where" in res.err


def test_feature_runs_resume_and_refuse_the_plain_trainer(tmp_path, run_cli):
    src = _corpus(tmp_path / "f.jsonl", n=24)
    flags = ["--embedding-size", "8", "--hidden-size", "8", "--num-layers", "1", "--batch-size",
             "6", "--eval-every", "4", "--sample-tokens", "0", "-q"]  # fmt: skip
    res = run_cli("train", src, "--features-from", "jsonl", "-o", tmp_path / "r",
                  "--max-steps", "4", *flags)  # fmt: skip
    assert res.code == 0, res.err
    assert run_cli("train", "--resume", tmp_path / "r", "--max-steps", "8", "-q").code == 0
    from lstmgen.train import Trainer

    with pytest.raises(ConfigError, match="FeatureTrainer"):
        Trainer.resume(tmp_path / "r", max_steps=12)
    ev = run_cli("eval", tmp_path / "r", "--split", "valid")
    assert ev.code != 0 and "conditioned on feature vectors" in ev.err


def test_options_its_own_step_lacks_are_one_error_not_ignored(tmp_path, run_cli):
    """FeatureTrainer has its own single-window step: gradient accumulation or AWD's AR would
    be silently skipped there, so asking for them is one line."""
    src = _corpus(tmp_path / "f.jsonl", n=12)
    flags = ["--embedding-size", "8", "--hidden-size", "8", "--num-layers", "1", "--max-steps",
             "2", "-q", "--features-from", "jsonl"]  # fmt: skip
    for extra, name in ((["--grad-accum", "2"], "--grad-accum"), (["--ar", "1"], "--ar")):
        res = run_cli("train", src, "-o", tmp_path / name, *flags, *extra)
        assert res.code != 0 and "Traceback" not in res.err
        assert res.err.strip().splitlines()[-1] == f"error: FeatureTrainer does not support {name}"
        assert not (tmp_path / name).exists()


def test_an_architecture_without_feature_state_refuses_feature_size(monkeypatch):
    from lstmgen.models import registry
    from lstmgen.models.recurrent import Recurrent

    class Plain:  # an architecture that never learned feature vectors
        def __getattr__(self, name):
            if name == "feature_state":
                raise AttributeError(name)
            return getattr(Recurrent(), name)

    monkeypatch.setitem(registry.ARCHITECTURES, "plain", Plain())
    cfg = ModelConfig(vocab_size=5, arch="plain", feature_size=3)
    with pytest.raises(ConfigError, match="arch 'plain' takes no feature vectors"):
        LanguageModel(cfg, CharTokenizer(list("abcde")))
    assert LanguageModel(cfg.replace(feature_size=0), CharTokenizer(list("abcde")))
