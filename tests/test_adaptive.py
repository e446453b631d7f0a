"""Adaptive softmax for word models (issue #16, models/adaptive.py): the training loss, the
full log-probabilities every other consumer reads, files, the CLI flag and the refusals."""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_TRAIN, tiny_train_args
from lstmgen import ConfigError, LanguageModel, ModelConfig, TrainConfig, Trainer
from lstmgen.data import eval_window
from lstmgen.evaluate import _layout, evaluate_tokens

ADAPTIVE = {"embedding_size": 8, "hidden_size": 16, "num_layers": 2, "adaptive_cutoffs": [4, 12]}


def word_run(tmp_path, corpus_file, steps=3, name="run", **model):
    cfg = TrainConfig(**TINY_TRAIN, tokenizer="word", max_steps=steps)
    trainer = Trainer.create(tmp_path / name, [corpus_file], cfg, ModelConfig(**ADAPTIVE, **model))
    if steps:
        trainer.fit()
    return trainer


def test_log_probs_are_normalised_and_the_steppers_match_forward():
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=40, **ADAPTIVE)).eval()
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
        ({"tie_weights": True}, "does not tie weights: pass --no-tie-weights"),
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


def test_init_from_grows_the_last_cluster_at_its_mean(tmp_path, corpus_file):
    word_run(tmp_path, corpus_file, steps=2, name="base")
    base = LanguageModel.from_pretrained(tmp_path / "base")
    new = tmp_path / "new.txt"
    new.write_text("zebras jump over kings\nthe love of my heart\n" * 20, encoding="utf-8")
    cfg = TrainConfig(**TINY_TRAIN, tokenizer="word", max_steps=1)
    trainer = Trainer.create(tmp_path / "ft", [new], cfg, init_from=tmp_path / "base")
    assert trainer.added_tokens == 4
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
