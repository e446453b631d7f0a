"""Fine-tuning (issue #13): --init-from, vocabulary growth, ULMFiT's tools, provenance."""

import json

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAIN, StopAt
from lstmgen import (
    CheckpointError,
    ConfigError,
    LanguageModel,
    ModelConfig,
    TrainConfig,
    Trainer,
)
from lstmgen.provenance import sha256_of
from lstmgen.rundir import RunDir
from lstmgen.tokenizers import CharTokenizer, WordTokenizer, extend_tokenizer
from lstmgen.training import finetune

STEPS = 12


def make_base(tmp_path, corpus_file, tokenizer="char", tie=False, name="base", **train):
    cfg = TrainConfig(**{**TINY_TRAIN, **train}, tokenizer=tokenizer, max_steps=STEPS)
    model_cfg = ModelConfig(**{**TINY_MODEL, "tie_weights": tie})
    Trainer.create(tmp_path / name, [corpus_file], cfg, model_cfg).fit()
    return tmp_path / name


@pytest.fixture
def new_text(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text("Zebras quietly jump! " * 30 + "\nKings of Qatar.\n" * 20, encoding="utf-8")
    return path


def test_extend_tokenizer_keeps_the_base_order_and_appends():
    base = CharTokenizer(["b", "a", " "])
    grown = extend_tokenizer(base, ["a cab", "d"])
    assert grown.chars == ["b", "a", " ", "c", "d"]
    words = WordTokenizer(["<eos>", "<unk>", "the"])
    grown = extend_tokenizer(words, ["the cat cat dog\n"], max_vocab=4)
    assert grown.words == ["<eos>", "<unk>", "the", "cat"]  # cat: the more frequent one
    assert WordTokenizer.from_dict(grown.to_dict()).words == grown.words  # strict round trip


@pytest.mark.parametrize("tie", [False, True])
def test_char_model_grows_rows_at_the_base_mean(tmp_path, corpus_file, new_text, tie):
    base_dir = make_base(tmp_path, corpus_file, tie=tie)
    base = LanguageModel.from_pretrained(base_dir)
    cfg = TrainConfig(**TINY_TRAIN, max_steps=1, lr=1e-9)
    trainer = Trainer.create(tmp_path / "ft", [new_text], cfg, init_from=base_dir)
    model, V = trainer.model, base.config.vocab_size
    new_chars = sorted(set(new_text.read_text()) - set(base.tokenizer.chars))
    assert trainer.added_tokens == len(new_chars) > 0
    assert model.tokenizer.chars == base.tokenizer.chars + new_chars
    assert model.config.hidden_size == base.config.hidden_size
    emb, base_emb = model.embedding.weight.detach(), base.embedding.weight.detach()
    assert torch.equal(emb[:V], base_emb)
    assert torch.allclose(emb[V:], base_emb.mean(0).expand(len(new_chars), -1))
    bias = model.decoder.bias.detach()
    assert torch.allclose(bias[V:], base.decoder.bias.detach().mean().expand(len(new_chars)))
    assert (model.decoder.weight is model.embedding.weight) == tie
    for name, p in base.rnn.named_parameters():
        assert torch.equal(getattr(model.rnn, name).detach(), p.detach())


def test_byte_base_keeps_its_vocabulary_and_records_provenance(tmp_path, corpus_file, new_text):
    base_dir = make_base(tmp_path, corpus_file, tokenizer="byte")
    cfg = TrainConfig(**TINY_TRAIN, max_steps=4)  # tokenizer "char": the base's kind wins
    trainer = Trainer.create(tmp_path / "ft", [new_text], cfg, init_from=base_dir)
    assert trainer.added_tokens == 0 and trainer.model.tokenizer.kind == "byte"
    trainer.fit()
    record = RunDir(tmp_path / "ft").read_base()
    assert record == {
        "path": str(base_dir.resolve()),
        "sha256": sha256_of(base_dir / "model.safetensors"),
    }
    # a chain: fine-tune the fine-tuned model; the resume keeps the record
    Trainer.create(tmp_path / "ft2", [new_text], cfg, init_from=tmp_path / "ft").fit()
    Trainer.resume(tmp_path / "ft2", max_steps=6).fit()
    again = RunDir(tmp_path / "ft2").read_base()
    assert again["path"] == str((tmp_path / "ft").resolve()) and again["base"] == record
    saved, _ = RunDir(tmp_path / "ft2").read_config()
    assert saved.tokenizer == "byte"


def test_word_base_adds_up_to_max_vocab(tmp_path, corpus_file, new_text):
    base_dir = make_base(tmp_path, corpus_file, tokenizer="word")
    V = LanguageModel.from_pretrained(base_dir).config.vocab_size
    cfg = TrainConfig(**TINY_TRAIN, max_steps=1, tokenizer="word", max_vocab=V + 2)
    trainer = Trainer.create(tmp_path / "ft", [new_text], cfg, init_from=base_dir)
    assert trainer.added_tokens == 2 and trainer.model.config.vocab_size == V + 2


def test_layer_groups_by_name_top_first():
    model = LanguageModel(ModelConfig(**{**TINY_MODEL, "num_layers": 3, "vocab_size": 5}))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [[names[id(p)] for p in g] for g in finetune.layer_groups(model)]
    assert groups[0] == [
        "decoder.weight",
        "decoder.bias",
        *(f"rnn.{w}_l2" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
    ]
    assert all(n.endswith("_l1") for n in groups[1]) and all(n.endswith("_l0") for n in groups[2])
    assert groups[3] == ["embedding.weight"]


def test_lr_layer_decay_and_gradual_unfreezing(tmp_path, corpus_file):
    cfg = TrainConfig(
        **{**TINY_TRAIN, "warmup_steps": 0}, max_steps=9, lr_layer_decay=2.0, unfreeze_every=3
    )
    trainer = Trainer.create(tmp_path / "run", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    lr = trainer.lr_at()
    finetune.set_group_lrs(trainer.optimizer, lr, cfg, 0)
    lrs = {g["layer_group"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs == {0: lr, 1: 0.0, 2: 0.0}  # two layers: top (+decoder), layer 0, embedding
    finetune.set_group_lrs(trainer.optimizer, lr, cfg, 3)
    lrs = {g["layer_group"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs == {0: lr, 1: lr / 2, 2: 0.0}

    class Check(StopAt):
        def on_step(self, t):  # after step 3 (steps 0..2 done): only the top group moved
            if t.pos.step == 3:
                now = dict(t.model.named_parameters())
                assert torch.equal(now["embedding.weight"], start["embedding.weight"])
                assert torch.equal(now["rnn.weight_ih_l0"], start["rnn.weight_ih_l0"])
                assert not torch.equal(now["rnn.weight_ih_l1"], start["rnn.weight_ih_l1"])

    trainer.callbacks.append(Check(10**9))
    trainer.fit()
    assert not torch.equal(trainer.model.embedding.weight, start["embedding.weight"])


def test_freeze_embeddings_resumes_bit_exact(tmp_path, corpus_file):
    cfg = TrainConfig(
        **{**TINY_TRAIN, "log_every": 1},
        max_steps=10,
        freeze_embeddings=True,
        unfreeze_every=4,
        lr_layer_decay=2.6,
    )
    full = Trainer.create(tmp_path / "full", [corpus_file], cfg, ModelConfig(**TINY_MODEL))
    start = full.model.embedding.weight.detach().clone()
    full.fit()
    assert torch.equal(full.model.embedding.weight.detach(), start)
    part = Trainer.create(
        tmp_path / "part", [corpus_file], cfg, ModelConfig(**TINY_MODEL), callbacks=[StopAt(5)]
    )
    part.fit()
    resumed = Trainer.resume(tmp_path / "part")
    resumed.fit()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_bases_are_one_clear_error(tmp_path, corpus_file, new_text):
    cfg = TrainConfig(**TINY_TRAIN, max_steps=1)
    with pytest.raises(CheckpointError, match="no such model directory"):
        Trainer.create(tmp_path / "a", [new_text], cfg, init_from=tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointError, match="not an lstmgen model directory"):
        Trainer.create(tmp_path / "b", [new_text], cfg, init_from=tmp_path / "plain")
    base_dir = make_base(tmp_path, corpus_file)
    with pytest.raises(ConfigError, match="hidden_size 16 \\(base: 8\\)"):
        Trainer.create(
            tmp_path / "c",
            [new_text],
            cfg,
            ModelConfig(**{**TINY_MODEL, "hidden_size": 16}),
            init_from=base_dir,
        )
    weights = base_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="base model.*corrupt"):
        Trainer.create(tmp_path / "d", [new_text], cfg, init_from=base_dir)
    assert not (tmp_path / "d").exists()


def tiny_flags(**extra):
    flags = {**{k: v for k, v in TINY_TRAIN.items() if k != "warmup_steps"}, **extra}
    return [a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def test_cli_init_from_reports_added_tokens_and_info_shows_the_chain(
    tmp_path, corpus_file, new_text, run_cli
):
    base_dir = make_base(tmp_path, corpus_file)
    out = tmp_path / "ft"
    r = run_cli(
        "train",
        new_text,
        "-o",
        out,
        "--init-from",
        base_dir,
        "--max-steps",
        "3",
        "--dropout",
        "0.1",
        "-q",
        *tiny_flags(),
    )
    assert r.code == 0, r.err
    added = len(set(new_text.read_text()) - set(corpus_file.read_text()))
    assert f"added {added} tokens" in r.err
    saved, _ = RunDir(out).read_config()
    assert (saved.lr_layer_decay, saved.warmup_steps, saved.lr) == (2.6, 20, 3e-3)  # defaults
    assert LanguageModel.from_pretrained(out).config.dropout == 0.1  # dropout may change
    r = run_cli("info", out)
    assert r.code == 0 and f"base:       {base_dir.resolve()}" in r.out
    r = run_cli("info", out, "--json")
    assert [b["path"] for b in json.loads(r.out)["base_chain"]] == [str(base_dir.resolve())]
    (base_dir / "model.safetensors").write_bytes(b"changed")
    r = run_cli("info", out)
    assert r.code == 0 and "warning:" in r.err and "has changed since" in r.err


def test_fine_tuned_runs_may_set_the_regularisers(tmp_path, corpus_file, new_text, run_cli):
    """Dropout and AWD's regularisers act in training only: a run from a base may set them
    (a little text overfits without them); the sizes still come from the base."""
    base_dir = make_base(tmp_path, corpus_file)
    flags = ("--dropout", "0.2", "--dropout-output", "0.3", "--weight-drop", "0.25")
    r = run_cli(
        "train",
        new_text,
        "-o",
        tmp_path / "ft",
        "--init-from",
        base_dir,
        "-q",
        "--max-steps",
        "2",
        *flags,
        *tiny_flags(),
    )
    assert r.code == 0, r.err
    cfg = LanguageModel.from_pretrained(tmp_path / "ft").config
    assert (cfg.dropout, cfg.dropout_output, cfg.weight_drop) == (0.2, 0.3, 0.25)
    assert (cfg.hidden_size, cfg.num_layers) == (8, 2)  # the base's
    asked = ModelConfig(**TINY_MODEL, dropout_input=0.1)  # the Python API's way
    Trainer.create(
        tmp_path / "api",
        [new_text],
        TrainConfig(**TINY_TRAIN, max_steps=1),
        asked,
        init_from=base_dir,
    ).fit()
    assert LanguageModel.from_pretrained(tmp_path / "api").config.dropout_input == 0.1


def test_a_regulariser_among_the_finetune_defaults_reaches_the_model(
    tmp_path, corpus_file, new_text, run_cli, monkeypatch
):
    """FINETUNE_DEFAULTS may hold model regularisers (dropout), not only training settings; a
    flag given still wins."""
    from lstmgen.cli import train as train_cli

    base_dir = make_base(tmp_path, corpus_file)
    monkeypatch.setattr(train_cli, "FINETUNE_DEFAULTS", {"dropout": 0.3, "warmup_steps": 2})
    common = ("train", new_text, "--init-from", base_dir, "-q", "--max-steps", "1", *tiny_flags())
    assert run_cli(*common, "-o", tmp_path / "a").code == 0
    assert LanguageModel.from_pretrained(tmp_path / "a").config.dropout == 0.3
    assert run_cli(*common, "-o", tmp_path / "b", "--dropout", "0.1").code == 0
    assert LanguageModel.from_pretrained(tmp_path / "b").config.dropout == 0.1


def test_cli_bad_init_from_is_one_line(tmp_path, corpus_file, new_text, run_cli, monkeypatch):
    base_dir = make_base(tmp_path, corpus_file)
    common = ("train", new_text, "--max-steps", "1", "-q")
    cases = [
        (("--init-from", base_dir, "--hidden-size", "16"), 2, "--hidden-size 16 (the base has 8)"),
        (
            ("--init-from", base_dir, "--tokenizer", "byte"),
            2,
            "--tokenizer byte (the base has char)",
        ),
        (("--init-from", tmp_path / "nope"), 1, "no such model directory"),
        (("--init-from", new_text), 1, "is not a model directory"),
        (("--resume", base_dir, "--init-from", base_dir), 2, "--init-from starts a new run"),
        (("--init-from", base_dir, "--backend", "numpy"), 2, "--init-from needs --backend torch"),
        (("--backend", "numpy", "--unfreeze-every", "3"), 2, "need --backend torch"),
    ]
    for args, code, message in cases:
        r = run_cli(*common, "-o", tmp_path / "x", *args)
        assert r.code == code and message in r.err, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    r = run_cli(*common, "-o", tmp_path / "x", "--init-from", base_dir, "--hidden-size", "8")
    assert r.code == 0, r.err  # repeating the base's size is fine
    monkeypatch.chdir(tmp_path)
    r = run_cli(*common, "-o", tmp_path / "y", "--init-from", "base")
    assert r.code == 0, r.err  # ./base exists here
    monkeypatch.chdir(tmp_path / "x")
    r = run_cli(*common, "-o", tmp_path / "z", "--init-from", "base")
    assert r.code == 1 and "runs/base does not exist (make base" in r.err


def test_byte_level_vocabularies_cover_any_new_text():
    from lstmgen.tokenizers import BPETokenizer, ByteTokenizer

    bpe = BPETokenizer.fit(["the cat sat on the mat. " * 50], vocab_size=300)
    text = "Ünïcode 世界 🙂 qxz"
    for tok in (bpe, ByteTokenizer()):
        assert extend_tokenizer(tok, [text]) is tok  # nothing added
        assert tok.covers(text) and tok.decode(tok.encode(text)) == text


def test_fine_tuning_pays_on_a_little_text(tmp_path, corpus_file):
    """Steps, not seconds, so a loaded machine cannot change the outcome."""
    from conftest import make_play

    small = tmp_path / "small.txt"
    small.write_text(make_play(40, seed=7), encoding="utf-8")
    valid = tmp_path / "valid.txt"
    valid.write_text(make_play(40, seed=8), encoding="utf-8")
    model_cfg = ModelConfig(embedding_size=16, hidden_size=16, num_layers=1)
    cfg = TrainConfig(**{**TINY_TRAIN, "eval_every": 1000}, max_steps=80, lr=2e-2)
    Trainer.create(tmp_path / "base", [corpus_file], cfg, model_cfg).fit()
    few = cfg.replace(max_steps=15)
    scratch = Trainer.create(tmp_path / "scratch", [small], few, model_cfg, [valid]).fit()
    tuned = Trainer.create(
        tmp_path / "tuned", [small], few, None, [valid], init_from=tmp_path / "base"
    ).fit()
    assert tuned["best_val_loss"] < scratch["best_val_loss"] - 0.5
