"""A labelled corpus trains each document from a fresh state, as generation starts one (#13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lstmgen import ModelConfig, TrainConfig, Trainer
from lstmgen.state import State
from lstmgen.textstream import prompt_ids
from lstmgen.training.label_rows import IGNORE, document_starts, layout


def test_layout_starts_each_document_at_a_window_with_bos_and_its_label():
    tokens = np.array([9, 1, 2, 3, 8, 4, 5, 9, 6], dtype=np.uint8)  # labels 8, 9; bos 0
    starts = document_starts(tokens, [8, 9])
    assert starts.tolist() == [0, 4, 7]
    x, y, resets = layout(tokens, starts, rows=2, seq_len=3, bos=0)
    assert x.tolist() == [[0, 9, 1, 2, 0, 0], [0, 8, 4, 0, 9, 0]]
    # the label is an input, never a target; padding is not scored
    assert y.tolist() == [[IGNORE, 1, 2, 3, IGNORE, IGNORE], [IGNORE, 4, 5, IGNORE, 6, IGNORE]]
    assert resets.tolist() == [[True, False], [True, True]]


def test_state_where_takes_the_marked_rows_from_the_other_state():
    a, b = State((torch.ones(2, 3, 4),)), State((torch.zeros(2, 3, 4),))
    got = a.where(torch.tensor([False, True, False]), b)[0]
    assert got[:, 1].eq(0).all() and got[:, [0, 2]].eq(1).all()


@pytest.fixture
def trainer(tmp_path):
    root = tmp_path / "c"
    for label, text in (("comedy", "ha ha ha he he\n"), ("tragedy", "woe woe is me, alas\n")):
        (root / label).mkdir(parents=True)
        for i in range(5):
            (root / label / f"{i}.txt").write_text(text * (i + 1), encoding="utf-8")
    cfg = TrainConfig(labels_from="folders", batch_size=3, seq_len=16, max_steps=1)
    model = ModelConfig(embedding_size=8, hidden_size=8, num_layers=1)
    t = Trainer.create(tmp_path / "run", [root], cfg, model, valid=[root])
    yield t
    t.lock.release()


def test_training_windows_start_documents_as_generation_does(trainer):
    tok = trainer.model.tokenizer
    labels = [tok.label_id(n) for n in tok.labels]
    heads = {tuple(prompt_ids(tok, [""], "error", n)[0]) for n in tok.labels}  # bos, label
    seen_starts = 0
    for k in range(trainer.windows_per_epoch):
        trainer.hidden = State((torch.ones(1, 3, 8), torch.ones(1, 3, 8)))  # a carried state
        x, y, _ = trainer.window(k)
        starts = [tuple(r[:2]) in heads for r in x.tolist()]
        seen_starts += sum(starts)
        h = trainer.hidden[0][0]  # (B, H)
        for b, start in enumerate(starts):  # a document's row starts afresh, the others carry on
            assert h[b].eq(0 if start else 1).all(), (k, b)
        assert not np.isin(y.numpy(), labels).any()  # labels are never targets
    assert seen_starts == 10  # every training document once per epoch


def test_variable_bptt_is_refused_for_a_labelled_corpus(tmp_path):
    (tmp_path / "c" / "a").mkdir(parents=True)
    (tmp_path / "c" / "a" / "0.txt").write_text("abc " * 50, encoding="utf-8")
    cfg = TrainConfig(labels_from="folders", variable_seq_len=True, batch_size=2, seq_len=8)
    with pytest.raises(Exception, match="variable-seq-len does not apply to a labelled corpus"):
        Trainer.create(tmp_path / "run", [tmp_path / "c"], cfg, ModelConfig(hidden_size=8))


def test_validation_scores_documents_as_they_train(trainer):
    tok = trainer.model.tokenizer
    labels = [tok.label_id(n) for n in tok.labels]
    valid = trainer.corpus.valid.tokens
    got = trainer.evaluate()
    assert got["val_tokens"] == int((~np.isin(valid, labels)).sum())  # the labels not scored
    # each document alone from a fresh state, after bos and its label
    starts = np.flatnonzero(np.isin(valid, labels)).tolist() + [len(valid)]
    total = 0.0
    with torch.inference_mode():
        for s, e in zip(starts[:-1], starts[1:], strict=True):
            ids = torch.tensor([[tok.bos_id, *valid[s:e].tolist()]])
            logits, _ = trainer.model(ids[:, :-1])
            total += F.cross_entropy(logits[0, 1:], ids[0, 2:], reduction="sum").item()
    assert got["val_loss"] == pytest.approx(total / got["val_tokens"], rel=1e-4)


def test_a_resumed_labelled_run_continues_exactly(tmp_path, trainer):
    from conftest import StopAt

    root = tmp_path / "c"  # the trainer fixture's corpus: windows start documents mid-epoch
    cfg = TrainConfig(labels_from="folders", batch_size=3, seq_len=16, max_steps=6, log_every=1)
    model = ModelConfig(embedding_size=8, hidden_size=8, num_layers=1)
    full = Trainer.create(tmp_path / "full", [root], cfg, model, valid=[root])
    full.fit()
    stop = [StopAt(3)]
    part = Trainer.create(tmp_path / "part", [root], cfg, model, valid=[root], callbacks=stop)
    assert part.fit()["step"] == 3
    resumed = Trainer.resume(tmp_path / "part")
    resumed.fit()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
