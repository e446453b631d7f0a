"""Conditioning on labels (issue #13): special tokens, labelled corpora, --label."""

from __future__ import annotations

import json

import pytest

from lstmgen.errors import TokenizerError
from lstmgen.tokenizers import fit_tokenizer, label_token, tokenizer_from_dict

KINDS = ["char", "byte", "word", "bpe"]
TEXT = "the cat sat\non the mat <|label:a|>\n"


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_follow_the_vocabulary_and_round_trip(kind):
    tok = fit_tokenizer(kind, [TEXT], vocab_size=300)
    plain = json.dumps(tok.to_dict())
    n = tok.vocab_size
    assert "specials" not in tok.to_dict()  # old model directories write back unchanged
    tok.add_specials([label_token("a"), label_token("b")])
    assert tok.vocab_size == n + 2 and tok.labels == ["a", "b"]
    back = tokenizer_from_dict(json.loads(json.dumps({"type": kind, **tok.to_dict()})))
    assert back.to_dict() == tok.to_dict() and back.vocab_size == n + 2
    assert back.label_id("a") == n and back.label_id("b") == n + 1
    # no text encodes to a special id, even the token's own spelling; decoding shows nothing
    ids = back.encode("the mat <|label:a|>\n")
    assert max(ids) < n
    assert back.decode([n, *ids, n + 1]) == back.decode(ids)
    assert json.dumps(fit_tokenizer(kind, [TEXT], vocab_size=300).to_dict()) == plain


def test_unknown_label_lists_the_known_ones():
    tok = fit_tokenizer("char", [TEXT]).add_specials([label_token("comedy"), label_token("x")])
    with pytest.raises(TokenizerError, match="unknown label 'drama': known labels are comedy, x"):
        tok.label_id("drama")


@pytest.mark.parametrize(
    "specials", [["<|label:a|>", "<|label:a|>"], ["label:a"], ["<|label:a b|>"], []]
)
def test_malformed_specials_are_refused(specials):
    data = {"type": "char", "chars": ["a", "b"], "replacement": "a", "specials": specials}
    with pytest.raises(TokenizerError, match="malformed char tokenizer"):
        tokenizer_from_dict(data)
