"""Adaptive softmax for word models (issue #16, models/adaptive.py): the training loss, the
full log-probabilities every other consumer reads, files, the CLI flag and the refusals."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import TINY_TRAIN, tiny_train_args
from lstmgen import ConfigError, LanguageModel, ModelConfig, TrainConfig, Trainer
from lstmgen.config import PRESETS
from lstmgen.data import eval_window
from lstmgen.evaluate import _layout, evaluate_tokens
from lstmgen.models.adaptive import auto_cutoffs

ADAPTIVE = {"embedding_size": 8, "hidden_size": 16, "num_layers": 2, "adaptive_cutoffs": [4, 12]}


def word_run(tmp_path, corpus_file, steps=3, name="run", **model):
    cfg = TrainConfig(**TINY_TRAIN, tokenizer="word", max_steps=steps)
    trainer = Trainer.create(tmp_path / name, [corpus_file], cfg, ModelConfig(**ADAPTIVE, **model))
    if steps:
        trainer.fit()
    return trainer


# tied to the embedding (models/adaptive_heads.py): E = H, and E < H through the projection
TIED = [{"tie_weights": True}, {"tie_weights": True, "embedding_size": 16}]


@pytest.mark.parametrize("tied", [{}, *TIED])
def test_log_probs_are_normalised_and_the_steppers_match_forward(tied):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=40, **{**ADAPTIVE, **tied})).eval()
    ids = torch.randint(0, 40, (3, 5))  # (B, T)
    with torch.no_grad():
        logp, _ = model(ids)  # (B, T, V)
        torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, 5))
        torch.testing.assert_close(logp.log_softmax(-1), logp)  # what sampling/eval compute
        for B in (1, 3, 500):  # NumPy stepper, Torch stepper (via any_stepper), forward
            step = model.stepper(B)
            ids1 = torch.randint(0, 40, (B,))
            state = model.init_state(B)
            got, s1 = step(ids1, state)
            want, s2 = model(ids1[:, None], state)
            torch.testing.assert_close(got, want[:, 0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(s1[0], s2[0])


def test_training_loss_is_the_log_prob_routes_cross_entropy(tmp_path, corpus_file):
    trainer = word_run(tmp_path, corpus_file, steps=0)
    model = trainer.model.eval()  # no dropout: the two routes see the same network
    x, y = trainer.windows(0)
    loss, ce, _ = trainer.training_loss(model, x, y, None)
    logp, _ = model(x)  # (B, T, V)
    want = F.cross_entropy(logp.reshape(-1, logp.shape[-1]), y.reshape(-1))
    torch.testing.assert_close(ce, want)
    torch.testing.assert_close(loss, want)
    # targets -100 are not scored, as F.cross_entropy's ignore_index (labelled corpora)
    y2 = y.clone()
    y2[:, ::2] = -100
    got, _ = model(x, None, targets=y2)
    torch.testing.assert_close(got, F.cross_entropy(logp.transpose(1, 2), y2))
    # and it trains: gradients reach the head's tails
    model.train()
    got.backward()
    assert model.decoder.tail[0][1].weight.grad.abs().sum() > 0


def test_save_load_generate_and_eval_perplexity_by_both_routes(tmp_path, corpus_file):
    trainer = word_run(tmp_path, corpus_file, steps=6)
    model = LanguageModel.from_pretrained(tmp_path / "run")
    assert model.config.adaptive_cutoffs == [4, 12]
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    assert "decoder.tail.1.1.weight" in model.state_dict()
    text = "".join(model.generate("ROMEO:", max_new_tokens=12, seed=3))
    assert text.split()
    # the stateful evaluation (log-probs through F.cross_entropy) against the loss route
    valid = trainer.corpus.valid
    res = evaluate_tokens(model, valid, batch_size=1, seq_len=16, warmup=0)
    tokens = valid.tokens
    pieces = _layout(len(tokens), 1, 0)
    total, state = 0.0, None
    with torch.no_grad():
        for t in range(0, len(tokens), 16):
            x, y, scored = eval_window(tokens, pieces, model.tokenizer.bos_id, t, 16)
            n = int(scored.sum())
            x, y = torch.from_numpy(x)[:, :n], torch.from_numpy(y)[:, :n]
            ce, state = model(x, state, targets=y)
            total += float(ce) * n
    assert res.loss == pytest.approx(total / len(tokens), rel=1e-5)


def test_config_json_names_the_cutoffs_only_for_adaptive_models(tmp_path, corpus_file):
    word_run(tmp_path, corpus_file, steps=1)
    data = json.loads((tmp_path / "run" / "config.json").read_text())
    assert data["adaptive_cutoffs"] == [4, 12]
    assert "adaptive_cutoffs" not in ModelConfig(vocab_size=20).to_dict()
    # lstmgen before adaptive softmax: ModelConfig's unknown-key rule refuses it in one line
    del data["adaptive_cutoffs"]
    data["unknown_option"] = [4]
    with pytest.raises(ConfigError, match="unknown key"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"adaptive_cutoffs": [12, 4]}, "increasing positive ids"),
        ({"adaptive_cutoffs": [0, 4]}, "increasing positive ids"),
        ({"adaptive_cutoffs": [4, 40]}, "below the vocabulary size 40"),
        ({"adaptive_cutoffs": [4, "x"]}, "a list of integers"),
        ({"arch": "sha-lstm"}, "option of the recurrent architecture"),
    ],
)
def test_bad_configs_are_one_clear_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        LanguageModel(ModelConfig.from_dict({"vocab_size": 40, **ADAPTIVE, **changes}))


def test_a_tail_narrower_than_one_unit_is_refused():
    with pytest.raises(ConfigError, match="needs hidden_size >= 16"):
        LanguageModel(ModelConfig(vocab_size=40, **{**ADAPTIVE, "hidden_size": 8}))


def test_tools_that_need_the_plain_decoder_refuse(tmp_path, corpus_file, run_cli):
    word_run(tmp_path, corpus_file, steps=1)
    run = tmp_path / "run"
    for args in (
        ["quantize", run, "-o", tmp_path / "q"],
        ["export", run, "-o", tmp_path / "o"],
        ["generate", run, "--backend", "numpy", "--max-new-tokens", "2"],
    ):
        r = run_cli(*args)
        assert r.code == 1, (args, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and "does not support adaptive-softmax models" in lines[0], r.err


def grown_from_base(tmp_path, corpus_file, **model):
    """A base trained on ``corpus_file``, and a run started from it on text with 4 new words."""
    word_run(tmp_path, corpus_file, steps=2, name="base", **model)
    base = LanguageModel.from_pretrained(tmp_path / "base")
    new = tmp_path / "new.txt"
    new.write_text("zebras jump over kings\nthe love of my heart\n" * 20, encoding="utf-8")
    cfg = TrainConfig(**TINY_TRAIN, tokenizer="word", max_steps=1)
    trainer = Trainer.create(tmp_path / "ft", [new], cfg, init_from=tmp_path / "base")
    assert trainer.added_tokens == 4
    return base, trainer


def test_init_from_grows_the_last_cluster_at_its_mean(tmp_path, corpus_file):
    base, trainer = grown_from_base(tmp_path, corpus_file)
    old = base.decoder.tail[1][1].weight  # (V_1, H_1)
    grown = trainer.model.decoder.tail[1][1].weight
    assert grown.shape[0] == old.shape[0] + 4
    torch.testing.assert_close(grown[: old.shape[0]], old)
    torch.testing.assert_close(grown[-1], old.mean(0))


def test_cli_flag_trains_and_info_shows_it(tmp_path, corpus_file, run_cli):
    out = tmp_path / "cli"
    flags = tiny_train_args(max_steps=2, tokenizer="word", hidden_size=16)
    r = run_cli("train", corpus_file, "-o", out, *flags, "--adaptive-softmax", "4,12", "-q")
    assert r.code == 0, r.err
    assert LanguageModel.from_pretrained(out).config.adaptive_cutoffs == [4, 12]
    r = run_cli("info", out)
    assert "adaptive softmax, cutoffs 4, 12" in r.out
    r = run_cli("train", corpus_file, "-o", tmp_path / "x", "--adaptive-softmax", "4,a")
    assert r.code == 2 and "comma-separated token ids" in r.err
    r = run_cli("train", "--help")
    assert "--adaptive-softmax" in r.out


def test_the_head_runs_in_its_own_dtype_under_autocast():
    # bf16 autocast (the trainer's on CUDA): the head stays float32, as its weights
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=40, **ADAPTIVE))
    ids = torch.randint(0, 40, (2, 6))
    want, _ = model(ids, None, targets=ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = model(ids, None, targets=ids)
        logp, _ = model(ids)
    assert got.dtype == logp.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=0.02)


def test_numpy_backend_refuses_the_flag_as_usage(tmp_path, corpus_file, run_cli):
    flags = tiny_train_args(max_steps=1, tokenizer="word", hidden_size=16)
    r = run_cli("train", corpus_file, "-o", tmp_path / "np", *flags, "--backend", "numpy",
                "--adaptive-softmax", "4,12")  # fmt: skip
    assert r.code == 2 and "--adaptive-softmax applies to --backend torch only" in r.err


def test_eval_and_batched_completion_run_on_an_adaptive_model(tmp_path, corpus_file, run_cli):
    word_run(tmp_path, corpus_file, steps=2)
    model = LanguageModel.from_pretrained(tmp_path / "run")
    texts = model.complete("ROMEO:", n=3, max_new_tokens=5, seed=1)
    assert len(texts) == 3
    r = run_cli("eval", tmp_path / "run", corpus_file)
    assert r.code == 0, r.err


# --- tied to the embedding (models/adaptive_heads.py) --------------------------------------------


@pytest.mark.parametrize("tied", TIED)
def test_tied_head_loss_is_the_log_prob_routes_and_trains_the_embedding(tied):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=40, **{**ADAPTIVE, **tied})).eval()
    assert model.decoder.weight is model.embedding.weight
    ids = torch.randint(0, 12, (3, 7))  # (B, T)
    y = torch.arange(21).view(3, 7) * 2 % 40  # targets in the shortlist and both clusters
    y[0, ::3] = -100  # not scored
    logp, _ = model(ids)  # (B, T, V)
    got, _ = model(ids, None, targets=y)
    torch.testing.assert_close(got, F.cross_entropy(logp.transpose(1, 2), y))
    got.backward()
    grad = model.embedding.weight.grad  # (V, E): input and output vectors, one matrix
    # every shortlist row gets the head softmax's gradient, and every row of a cluster some
    # target fell in (ids 12-39 are never an input here: only the decoder reaches them)
    assert (grad[:4].abs().sum(1) > 0).all() and (grad[12:].abs().sum(1) > 0).all()
    assert model.decoder.cluster.weight.grad.abs().sum() > 0


def test_tied_head_is_stored_once_and_round_trips(tmp_path, corpus_file):
    trainer = word_run(tmp_path, corpus_file, steps=3, tie_weights=True)
    names = set(load_file(tmp_path / "run" / "model.safetensors"))
    assert {"decoder.bias", "decoder.cluster.weight", "decoder.cluster.bias"} <= names
    assert "decoder.weight" not in names  # the embedding's, stored once
    model = LanguageModel.from_pretrained(tmp_path / "run")
    assert model.decoder.weight is model.embedding.weight
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids)[0], trainer.model.eval()(ids)[0])
    assert "".join(model.generate("ROMEO:", max_new_tokens=8, seed=3)).split()


def test_tied_init_from_grows_the_embedding_and_the_bias_at_their_mean(tmp_path, corpus_file):
    base, trainer = grown_from_base(tmp_path, corpus_file, tie_weights=True)
    model = trainer.model
    assert model.decoder.weight is model.embedding.weight  # still tied
    V = base.config.vocab_size
    assert model.decoder.bias.shape[0] == V + 4
    torch.testing.assert_close(model.decoder.bias[-1], base.decoder.bias.mean())
    logp, _ = model.eval()(torch.tensor([[V + 1]]))  # the new words join the last cluster
    torch.testing.assert_close(logp.exp().sum(), torch.tensor(1.0))


def test_cli_ties_the_adaptive_head_with_the_word_preset(tmp_path, corpus_file, run_cli):
    out = tmp_path / "cli"
    flags = tiny_train_args(max_steps=2, tokenizer="word", hidden_size=16)
    r = run_cli("train", corpus_file, "-o", out, *flags, "--preset", "word-cpu", "--embedding-size",
                "16", "--tie-weights", "--adaptive-softmax", "4,12", "-q")  # fmt: skip
    assert r.code == 0, r.err
    config = LanguageModel.from_pretrained(out).config
    assert config.tie_weights and config.adaptive_cutoffs == [4, 12]
    r = run_cli("info", out)
    assert "adaptive softmax, cutoffs 4, 12" in r.out and "tied" in r.out


# --- "auto": the cutoffs chosen from the vocabulary (--preset word-cpu) --------------------------


def test_auto_cutoffs_are_the_measured_winners_and_none_for_small_vocabularies():
    assert auto_cutoffs(10000) == [2000, 5000]  # PTB: word-cpu-as-ptb
    assert auto_cutoffs(33278) == [2000, 10000]  # WikiText-2: word-cpu-as
    assert auto_cutoffs(4000) == [] and auto_cutoffs(65) == []
    for V in (4001, 5000, 6001, 20000, 10**6):  # always a valid config
        ModelConfig(vocab_size=V, adaptive_cutoffs=auto_cutoffs(V)).validate()


def big_vocab_corpus(tmp_path, words=4600):
    rng = random.Random(0)
    zipf = [f"w{i}" for i in range(words)]
    lines = [" ".join(rng.choice(zipf) for _ in range(12)) for _ in range(2000)]
    lines += [" ".join(zipf[i : i + 12]) for i in range(0, words, 12)]  # every word seen
    path = tmp_path / "big.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_auto_is_resolved_when_the_run_is_created(tmp_path, corpus_file, run_cli):
    corpus = big_vocab_corpus(tmp_path)
    out = tmp_path / "auto"
    flags = tiny_train_args(max_steps=1, tokenizer="word", hidden_size=16)
    r = run_cli("train", corpus, "-o", out, *flags, "--adaptive-softmax", "auto", "-q")
    assert r.code == 0, r.err
    config = json.loads((out / "config.json").read_text())
    V = config["vocab_size"]
    assert V > 4600 and config["adaptive_cutoffs"] == [2000, 3000] == auto_cutoffs(V)
    assert LanguageModel.from_pretrained(out).config.adaptive_cutoffs == [2000, 3000]
    # a small vocabulary keeps the plain decoder; and the preset says auto
    small = tmp_path / "small"
    r = run_cli("train", corpus_file, "-o", small, *flags, "--preset",
                "word-cpu", "--hidden-size", "16", "--embedding-size", "16", "-q")  # fmt: skip
    assert r.code == 0, r.err
    assert "adaptive_cutoffs" not in json.loads((small / "config.json").read_text())
    assert PRESETS["word-cpu"]["model"]["adaptive_cutoffs"] == "auto"


@pytest.mark.parametrize(
    "value, message",
    [("x", 'a list of ids or "auto"'), (3, "a list of integers or a string")],
)
def test_bad_cutoff_rules_are_one_clear_error(value, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict({"adaptive_cutoffs": value})
    with pytest.raises(ConfigError, match="chosen when a run is created"):
        LanguageModel(ModelConfig.from_dict({"vocab_size": 40, "adaptive_cutoffs": "auto"}))
