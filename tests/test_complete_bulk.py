"""``LanguageModel.complete`` decodes text in bulk (generate.complete_texts): the same texts as
``stream_text``'s events, with the per-sample text work done once per sample instead of once per
sample per block (the GPU run's batch-1024 finding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lstmgen import LanguageModel, ModelConfig
from lstmgen.generate import complete_texts, stream_text
from lstmgen.textstream import TextStreams, whole_texts
from lstmgen.tokenizers import ByteTokenizer, CharTokenizer, StreamDecoder, WordTokenizer

SAMPLERS = [
    {"temperature": 0},
    {"temperature": 1.0, "seed": 3},
    {"temperature": 0.8, "top_k": 5, "top_p": 0.9, "repetition_penalty": 1.3, "seed": 1},
]


def make_model(tok) -> LanguageModel:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, embedding_size=8, hidden_size=8, num_layers=1)
    model = LanguageModel(cfg, tok).eval()
    with torch.no_grad():  # sharpen the distribution so that samples differ visibly
        model.decoder.weight.mul_(10)
    return model


def streamed(model, prompts, **kw) -> list[str]:
    out = [""] * len(prompts)
    for ev in stream_text(model, prompts, **kw):
        out[ev.index] += ev.text
    return out


@pytest.mark.parametrize("options", SAMPLERS)
@pytest.mark.parametrize("batch", [1, 130])  # 130: CPU blocks of 8 (decode.LARGE_BATCH)
def test_complete_is_the_streamed_text_bytes_split_across_blocks(options, batch):
    # A byte model's samples split multi-byte characters (and leave invalid ones) across blocks.
    model = make_model(ByteTokenizer())
    kw = {"max_new_tokens": 21, **options}
    prompts = ["h\u00e9"] * batch
    texts = model.complete("h\u00e9", n=batch, **kw)
    assert texts == streamed(model, prompts, **kw)
    assert any(ord(c) > 127 for t in texts for c in t)  # multi-byte text was decoded


def test_complete_is_the_streamed_text_for_words_and_stop_strings():
    tok = WordTokenizer.fit(["the cat sat on the mat\nthe dog ran\n"])
    model = make_model(tok)
    kw = {"max_new_tokens": 30, "temperature": 1.0, "seed": 2}
    prompts = ["the cat", "the cat\n"]  # mid-line and line start: the first word's space
    assert complete_texts(model, prompts, **kw) == streamed(model, prompts, **kw)
    full = complete_texts(model, prompts, **kw)
    stop = full[0].split()[3]
    cut = complete_texts(model, prompts, stop=[stop], **kw)
    assert cut == streamed(model, prompts, stop=[stop], **kw)
    assert cut[0] == full[0][: full[0].index(stop)]
    assert model.complete("the", n=2, max_new_tokens=0) == ["", ""]


def test_complete_decodes_all_samples_at_once_without_stop_strings(monkeypatch):
    model = make_model(ByteTokenizer())
    shapes, steps = [], []
    decode_rows, original = ByteTokenizer.decode_rows, StreamDecoder.steps
    monkeypatch.setattr(
        ByteTokenizer,
        "decode_rows",
        lambda self, rows: shapes.append(rows.shape) or decode_rows(self, rows),
    )
    monkeypatch.setattr(
        StreamDecoder, "steps", lambda self, ids: steps.append(len(ids)) or original(self, ids)
    )
    model.complete("a", n=130, max_new_tokens=20, temperature=1.0, seed=0)
    assert shapes == [(130, 20)] and steps == []  # was a call per sample per block of 8
    model.complete("a", n=130, max_new_tokens=20, temperature=1.0, seed=0, stop=["zz"])
    assert len(steps) == 130 * 3  # a stop string may end a sample at any block


@pytest.mark.parametrize(
    "tok",
    [
        ByteTokenizer(),
        CharTokenizer.fit(["ab\u00e9\u4e16\n"]).add_specials(["<|label:x|>"]),
        CharTokenizer.fit(["abc \n"]),
        WordTokenizer.fit(["the cat sat\non the mat\n"]).add_specials(["<|label:x|>"]),
    ],
    ids=["byte", "char-multibyte-special", "char-ascii", "word"],
)
def test_whole_texts_are_the_text_streamed_block_by_block(tok):
    rows = np.random.default_rng(0).integers(0, tok.vocab_size, size=(40, 30))
    after = ["x", "x\n"] * 20
    streams = TextStreams(tok, 40, (), after)
    for k in range(0, 30, 7):  # blocks of 7: a character's bytes are split across blocks
        list(streams.push_block(rows[:, k : k + 7].tolist(), last=k + 7 >= 30))
    assert whole_texts(tok, rows, after) == streams.texts
    assert tok.decode_rows(rows) == (None if isinstance(tok, WordTokenizer) else streams.texts)


def test_token_bytes_are_looked_up_in_a_table(monkeypatch):
    tok = ByteTokenizer()
    assert tok.bytes_table()[200] == tok.token_bytes(200)
    monkeypatch.setattr(ByteTokenizer, "token_bytes", lambda self, i: pytest.fail("per token"))
    assert tok.stream_decoder().steps([104, 195, 169]) == "h\u00e9"


def test_a_stream_closed_early_gives_the_training_mode_back():
    model = make_model(ByteTokenizer()).train()
    events = stream_text(model, ["a"], max_new_tokens=50, temperature=1.0, seed=0)
    next(events)
    assert not model.training and not torch.is_inference_mode_enabled()
    events.close()
    assert model.training
