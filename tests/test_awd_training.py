"""AWD-LSTM's training options (issue #16): AR/TAR, variable BPTT, NT-ASGD, presets, errors."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_MODEL, TINY_TRAIN, StopAt, tiny_train_args
from lstmgen import ConfigError, ModelConfig, TrainConfig, Trainer
from lstmgen.training.bptt import window_cuts

AWD_MODEL = {**TINY_MODEL, "weight_drop": 0.3, "dropout_input": 0.2, "dropout_hidden": 0.2,
             "dropout_output": 0.2, "dropout_embedding": 0.1}  # fmt: skip


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_ar_tar_add_the_paper_terms_to_the_loss(tmp_path, corpus_file):
    cfg = TrainConfig(**TINY_TRAIN, max_steps=1, ar=2.0, tar=3.0)
    trainer = Trainer.create(tmp_path / "r", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    model = trainer.model.train()
    x, y = trainer.windows(0)
    loss, ce, _ = trainer.training_loss(trainer.model, x, y, trainer.hidden)
    # by hand: the stack's last-layer output h (B, T, H); no dropout, so dropped == raw
    h, _ = model.rnn(model.embedding(x))
    logits = model.decoder(h)
    want_ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    ar = (h**2).mean()
    tar = ((h[:, 1:] - h[:, :-1]) ** 2).mean()
    torch.testing.assert_close(ce, want_ce)
    torch.testing.assert_close(loss, want_ce + 2.0 * ar + 3.0 * tar)
    assert float((loss - ce).detach()) > 0


def test_ar_uses_the_dropped_output_tar_the_undropped(tmp_path, corpus_file):
    cfg = TrainConfig(**TINY_TRAIN, max_steps=1, ar=1.0)
    model_cfg = ModelConfig(**{**TINY_MODEL, "dropout_output": 0.5})
    trainer = Trainer.create(tmp_path / "r", [corpus_file], cfg, model_cfg)
    x, y = trainer.windows(0)
    trainer.model.train()
    torch.manual_seed(5)
    loss, ce, _ = trainer.training_loss(trainer.model, x, y, trainer.hidden)
    torch.manual_seed(5)
    acts = []
    trainer.model(x, None, acts)
    raw, dropped = acts
    torch.testing.assert_close(loss - ce, (dropped**2).mean())
    assert not torch.allclose((raw**2).mean(), (dropped**2).mean())


def test_window_cuts_follow_the_seed_and_cover_the_epoch():
    a = window_cuts(1, 0, 10_000, 70, 143)
    assert np.array_equal(a, window_cuts(1, 0, 10_000, 70, 143))
    assert not np.array_equal(a, window_cuts(2, 0, 10_000, 70, 143))  # another seed
    assert not np.array_equal(a, window_cuts(1, 1, 10_000, 70, 143))  # another epoch
    lengths = np.diff(a)
    assert a[0] == 0 and a[-1] == 10_000 and (lengths >= 1).all()
    assert len(set(lengths.tolist())) > 10  # drawn, not fixed
    assert (lengths < 50).sum() >= 1  # some of the seq_len / 2 draws (p 0.05 of 143)
    assert abs(lengths.mean() - 70) < 2
    tiny = window_cuts(0, 0, 7, 70, 7)  # as many windows as tokens: one token each
    assert np.array_equal(tiny, np.arange(8))


def test_variable_bptt_scales_lr_and_resumes_exactly(tmp_path, corpus_file):
    cfg = TrainConfig(**{**TINY_TRAIN, "log_every": 1, "eval_every": 7}, max_steps=21,
                      variable_seq_len=True, ar=1.0, tar=1.0)  # fmt: skip
    model_cfg = ModelConfig(**AWD_MODEL)
    full = Trainer.create(tmp_path / "full", [corpus_file], cfg, model_cfg)
    x, _, scale = full.window(0)
    assert scale == x.shape[1] / cfg.seq_len
    lengths = {full.window(k)[0].shape[1] for k in range(full.windows_per_epoch)}
    assert len(lengths) > 3
    full.fit()
    part = Trainer.create(tmp_path / "part", [corpus_file], cfg, model_cfg, callbacks=[StopAt(9)])
    part.fit()
    resumed = Trainer.resume(tmp_path / "part")
    assert resumed.pos.step == 9
    resumed.fit()
    a, b = weights(full.model), weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nt_asgd_averages_after_a_stall_and_resumes_exactly(tmp_path, corpus_file, monkeypatch):
    from lstmgen.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "NONMONO", 0)  # trigger at the first non-improvement
    cfg = TrainConfig(**{**TINY_TRAIN, "eval_every": 3, "eval_tokens": 64}, max_steps=30,
                      optimizer="nt-asgd", lr=40.0, weight_decay=0.0)  # fmt: skip
    full = Trainer.create(tmp_path / "full", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    assert isinstance(full.optimizer, torch.optim.SGD)
    full.fit()
    assert full.averager.on and full.averager.count > 1
    # the saved best model was scored with averaged weights: the live ones differ
    assert not torch.equal(full.averager.avg["decoder.bias"], full.model.decoder.bias)
    part = Trainer.create(tmp_path / "part", [corpus_file], cfg, ModelConfig(**TINY_MODEL),
                          callbacks=[StopAt(25)])  # fmt: skip
    part.fit()
    assert part.averager.on
    resumed = Trainer.resume(tmp_path / "part")
    assert resumed.averager.on and resumed.averager.count == part.averager.count
    resumed.fit()
    a, b = weights(full.model), weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.pos.best_val == resumed.pos.best_val


def test_averaged_weights_of_another_model_are_refused(tmp_path, corpus_file):
    from lstmgen import CheckpointError

    trainer = Trainer.create(
        tmp_path / "r", [corpus_file], TrainConfig(**TINY_TRAIN, max_steps=1),
        ModelConfig(**TINY_MODEL),
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="averaged weights"):
        trainer.averager.load({"avg.count": torch.tensor(1)}, tmp_path / "state")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ar": -1.0}, "ar must be >= 0"),
        ({"tar": float("inf")}, "tar must be a finite number"),
        ({"optimizer": "sgd"}, "optimizer must be one of adamw, nt-asgd"),
        ({"variable_seq_len": 1}, "variable_seq_len must be true or false"),
        ({"optimizer": "nt-asgd", "lr": 30.0}, "weight_decay is SGD's L2 penalty"),
    ],
)
def test_bad_training_options_are_one_error(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(options)


def test_ar_with_an_architecture_without_activations_is_refused(tmp_path, corpus_file):
    trainer = Trainer.create(
        tmp_path / "r", [corpus_file], TrainConfig(**TINY_TRAIN, max_steps=1),
        ModelConfig(**TINY_MODEL),
    )  # fmt: skip
    trainer.model.arch = type("NoActivations", (), {})()  # an architecture without the seam
    trainer.model.config = trainer.model.config.replace(arch="other")
    with pytest.raises(ConfigError, match="arch 'other' does not expose"):
        Trainer(trainer.model, trainer.config.replace(ar=1.0), trainer.corpus, tmp_path / "x")


def test_cli_flags_and_word_preset_warning(tmp_path, corpus_file, run_cli):
    out = tmp_path / "run"
    args = tiny_train_args(max_steps=4, weight_drop=0.3, dropout_input=0.1, ar=1, tar=1,
                           optimizer="nt-asgd", lr=1)  # fmt: skip
    r = run_cli("train", corpus_file, "-o", out, "-q", "--variable-seq-len", *args)
    assert r.code == 0, r.err
    saved = (out / "config.json").read_text()
    assert '"weight_drop": 0.3' in saved
    assert '"optimizer": "nt-asgd"' in (out / "train_config.json").read_text()
    r = run_cli("train", corpus_file, "-o", tmp_path / "bad", "--dropout-hidden", "1.5")
    assert r.code != 0 and "dropout_hidden must be in [0, 1)" in r.err and "Traceback" not in r.err
    r = run_cli("train", corpus_file, "-o", tmp_path / "np", "--backend", "numpy",
                "--weight-drop", "0.2", "--max-steps", "1")  # fmt: skip
    assert r.code == 2 and "--weight-drop applies to --backend torch only" in r.err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run_cli("train", corpus_file, "-o", tmp_path / "w", "-q", "--preset", "word-cpu",
                    "--tokenizer", "char", *tiny_train_args(max_steps=1))  # fmt: skip
    assert r.code == 0, r.err
    text = " ".join(str(w.message) for w in caught) + r.err
    assert "--preset word-cpu is tuned for word-level models" in text


def test_numpy_reference_refuses_the_awd_options(tmp_path, corpus_file):
    from lstmgen.reference.train import Trainer as NumpyTrainer

    with pytest.raises(ConfigError, match="weight_drop, ar: not supported by the NumPy"):
        NumpyTrainer.create(
            tmp_path / "r", [corpus_file], TrainConfig(**TINY_TRAIN, max_steps=1, ar=1.0),
            ModelConfig(**{**TINY_MODEL, "weight_drop": 0.2}),
        )  # fmt: skip
