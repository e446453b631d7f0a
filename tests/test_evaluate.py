import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lstmgen import LanguageModel, ModelConfig
from lstmgen.data import TokenFile
from lstmgen.evaluate import _layout, evaluate_tokens
from lstmgen.tokenizers import CharTokenizer


def make(seed=0):
    torch.manual_seed(seed)
    tok = CharTokenizer.fit(["abcdefgh \n"])
    model = (
        LanguageModel(
            ModelConfig(
                vocab_size=tok.vocab_size,
                embedding_size=8,
                hidden_size=8,
                num_layers=2,
                dropout=0.0,
            ),
            tok,
        )
        .double()
        .eval()
    )
    with torch.no_grad():
        model.decoder.weight.mul_(20)
    return model, tok


def reference_loss(model, tokens):
    """One stateful pass, batch 1: the definition of the evaluation."""
    ids = torch.tensor([[model.tokenizer.bos_id, *tokens[:-1]]])
    logits, _ = model(ids)
    return F.cross_entropy(logits[0], torch.tensor(tokens)).item()


@pytest.mark.parametrize("n,B,warmup", [(1000, 1, 0), (1000, 4, 50), (997, 7, 20), (30, 16, 8)])
def test_layout_scores_every_token_exactly_once(n, B, warmup):
    counts = np.zeros(n, dtype=int)
    for read, score, end in _layout(n, B, warmup):
        assert read <= score < end
        counts[score:end] += 1
    assert (counts == 1).all()


def test_batch_1_equals_the_single_stateful_pass():
    model, tok = make()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, tok.vocab_size, 600).tolist()
    tf = TokenFile(np.array(tokens), len(tokens), len(tokens))
    result = evaluate_tokens(model, tf, batch_size=1, seq_len=64)
    assert result.tokens == 600
    assert result.loss == pytest.approx(reference_loss(model, tokens), rel=1e-9)
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    assert result.bits_per_char == pytest.approx(result.loss / math.log(2))


def test_batched_evaluation_with_warmup_is_close_to_the_single_pass():
    model, tok = make()
    text = "abc defg hab\n" * 300
    tokens = tok.encode(text)
    tf = TokenFile(np.array(tokens), len(text), len(text))
    single = reference_loss(model, tokens)
    batched = evaluate_tokens(model, tf, batch_size=8, seq_len=50, warmup=100)
    assert batched.tokens == len(tokens)
    assert batched.loss == pytest.approx(single, rel=1e-3)


def test_bits_per_char_uses_characters_not_tokens():
    model, tok = make()
    tokens = tok.encode("abcabcabc\n" * 10)
    tf = TokenFile(np.array(tokens), chars=50, nbytes=100)  # e.g. a tokenizer with 2 chars/token
    r = evaluate_tokens(model, tf, batch_size=1)
    assert r.bits_per_char == pytest.approx(r.loss * len(tokens) / math.log(2) / 50)
    assert r.bits_per_byte == pytest.approx(r.bits_per_char / 2)
