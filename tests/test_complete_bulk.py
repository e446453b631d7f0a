"""``LanguageModel.complete`` decodes text in bulk (generate.complete_texts): the same texts as
``stream_text``'s events, with the per-sample text work done once per sample instead of once per
sample per block (the GPU run's batch-1024 finding)."""

from __future__ import annotations

import pytest
import torch

from lstmgen import LanguageModel, ModelConfig
from lstmgen.generate import complete_texts, stream_text
from lstmgen.tokenizers import ByteTokenizer, StreamDecoder, WordTokenizer

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


def test_complete_decodes_each_sample_once_without_stop_strings(monkeypatch):
    model = make_model(ByteTokenizer())
    calls = []
    original = StreamDecoder.steps
    monkeypatch.setattr(
        StreamDecoder, "steps", lambda self, ids: calls.append(len(ids)) or original(self, ids)
    )
    model.complete("a", n=130, max_new_tokens=20, temperature=1.0, seed=0)
    assert calls == [20] * 130  # was one call per sample per block: 3 blocks of 8 each
    calls.clear()
    model.complete("a", n=130, max_new_tokens=20, temperature=1.0, seed=0, stop=["zz"])
    assert len(calls) == 130 * 3  # a stop string may end a sample at any block


def test_token_bytes_are_looked_up_in_a_table(monkeypatch):
    tok = ByteTokenizer()
    assert tok.bytes_table()[200] == tok.token_bytes(200)
    monkeypatch.setattr(ByteTokenizer, "token_bytes", lambda self, i: pytest.fail("per token"))
    assert tok.stream_decoder().steps([104, 195, 169]) == "h\u00e9"
