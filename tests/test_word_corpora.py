"""The word tokenizer reproduces the published PTB and WikiText-2 statistics (slow)."""

import pytest

from conftest import SHARED_DATA
from lstmgen.config import TrainConfig
from lstmgen.corpus import prepare_corpus

CASES = {
    "ptb": ("ptb/ptb.{}.txt", ("train", "valid", "test"), 10_000, (929_589, 73_760, 82_430)),
    "wikitext-2": (
        "wikitext-2/wiki.{}.tokens",
        ("train", "valid", "test"),
        33_278,
        (2_088_628, 217_646, 245_569),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_published_vocab_and_token_counts(name, tmp_path):
    pattern, splits, vocab, counts = CASES[name]
    paths = [SHARED_DATA / pattern.format(s) for s in splits]
    if not all(p.exists() for p in paths):
        pytest.skip(f"{name} not found under {SHARED_DATA}")
    corpus = prepare_corpus(
        tmp_path, TrainConfig(tokenizer="word"), [paths[0]], [paths[1]], [paths[2]]
    )
    assert corpus.tokenizer.vocab_size == vocab
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == counts
    # valid/test have no out-of-vocabulary words: <unk> appears only where the text has it
    unk = corpus.tokenizer.index["<unk>"]
    raw_unk = paths[1].read_text(encoding="utf-8").split().count("<unk>")
    assert int((corpus.valid.tokens == unk).sum()) == raw_unk
