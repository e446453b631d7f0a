import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmgen.errors import TokenizerError
from lstmgen.tokenizers import (
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    WordTokenizer,
    load_tokenizer,
)

SAMPLES = {
    "ascii": "To be, or not to be: that is the question.\n",
    "chinese": "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n",
    "emoji": "I ❤️ 🦀 and 👩‍👩‍👧 families 🎉\n",
    "mixed": "ROMEO: 你好 🌹 naïve café — “quotes” \t tabs\n",
}
ALL_TEXT = "".join(SAMPLES.values())


@pytest.mark.parametrize("name", SAMPLES)
def test_char_round_trip(name, tmp_path):
    tok = CharTokenizer.fit([ALL_TEXT])
    text = SAMPLES[name]
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one token per code point: CJK and emoji are single tokens
    assert tok.decode(ids) == text
    tok.save(tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    assert again.encode(text) == ids and again.decode(ids) == text


def test_char_chinese_is_one_token_per_character():
    tok = CharTokenizer.fit(["明月光"])
    assert tok.vocab_size == 3
    assert tok.encode("月") == [tok.index["月"]]


@pytest.mark.parametrize("name", SAMPLES)
def test_byte_round_trip(name, tmp_path):
    tok = ByteTokenizer()
    text = SAMPLES[name]
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    tok.save(tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json").decode(ids) == text


@pytest.mark.parametrize("name", SAMPLES)
def test_bpe_round_trip(name, tmp_path):
    tok = BPETokenizer.fit([ALL_TEXT * 20], vocab_size=300)
    text = SAMPLES[name]
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode("utf-8"))  # merges learned: fewer tokens than bytes
    tok.save(tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    assert again.encode(text) == ids and again.decode(ids) == text
    assert json.loads((tmp_path / "t.json").read_text())["type"] == "bpe"


def test_bpe_never_out_of_vocabulary():
    tok = BPETokenizer.fit(["only ascii here " * 50], vocab_size=280)
    text = "完全没见过的字 🐉"
    assert tok.decode(tok.encode(text)) == text


def test_word_round_trip_and_saved_form(tmp_path):
    text = "the cat sat\non the mat\n"
    tok = WordTokenizer.fit([text])
    ids = tok.encode_lines(text)
    assert [tok.words[i] for i in ids] == [
        "the",
        "cat",
        "sat",
        "<eos>",
        "on",
        "the",
        "mat",
        "<eos>",
    ]
    assert tok.decode(ids) == "the cat sat\non the mat\n"  # single spaces, none at line ends
    assert tok.decode(ids).split() == text.split()
    tok.save(tmp_path / "w.json")
    assert load_tokenizer(tmp_path / "w.json").words == tok.words


def test_word_min_freq_and_max_vocab():
    text = "a a a b b c\n"
    tok = WordTokenizer.fit([text], min_freq=2)
    assert set(tok.words) == {"<eos>", "<unk>", "a", "b"}
    assert tok.encode_lines("c a\n") == [tok.index["<unk>"], tok.index["a"], tok.index["<eos>"]]
    assert WordTokenizer.fit([text], max_vocab=3).words == ["<eos>", "<unk>", "a"]


def test_word_prompt_has_no_trailing_eos():
    tok = WordTokenizer.fit(["hello world\n"])
    assert tok.encode("hello world") == [tok.index["hello"], tok.index["world"]]
    assert tok.encode("hello\n")[-1] == tok.index["<eos>"]


def test_char_unknown_characters_error_names_them():
    tok = CharTokenizer.fit(["abc "])
    with pytest.raises(TokenizerError, match=r"'x'.*'z'"):
        tok.encode("a x z")
    assert tok.encode("axb", unknown="drop") == [tok.index["a"], tok.index["b"]]
    assert tok.decode(tok.encode("axb", unknown="replace")) == "a b"


def test_stream_decoder_never_splits_a_character():
    tok = ByteTokenizer()
    text = "a🦀b明"
    stream = tok.stream_decoder()
    pieces = [stream.step(i) for i in tok.encode(text)]
    assert "".join(pieces) + stream.flush() == text
    assert all("\ufffd" not in p for p in pieces)
    assert pieces[1:4] == ["", "", ""] and pieces[4] == "🦀"


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=60))
def test_byte_and_char_round_trip_any_text(text):
    assert ByteTokenizer().decode(ByteTokenizer().encode(text)) == text
    if text:
        tok = CharTokenizer.fit([text])
        assert tok.decode(tok.encode(text)) == text


def test_bad_tokenizer_files(tmp_path):
    (tmp_path / "a.json").write_text('{"type": "sentencepiece"}')
    with pytest.raises(TokenizerError, match="unknown tokenizer type"):
        load_tokenizer(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"type": "char"}')
    with pytest.raises(TokenizerError, match="malformed"):
        load_tokenizer(tmp_path / "b.json")


def test_unseen_characters_are_counted_once_each():
    tok = CharTokenizer.fit(["abc "])
    with pytest.raises(TokenizerError) as err:
        tok.encode("aKbKcK")
    assert str(err.value) == (
        "text has 1 character the model never saw: 'K' (3 times);"
        " use --unknown drop or --unknown replace"
    )
    with pytest.raises(TokenizerError) as err:
        tok.encode("K Z K")
    assert str(err.value).startswith(
        "text has 2 characters the model never saw: 'K' (2 times), 'Z';"
    )


def test_unseen_words_get_the_same_hint():
    tok = WordTokenizer.fit(["the cat sat\n"])
    with pytest.raises(TokenizerError) as err:
        tok.encode("the beleaguered cat", unknown="error")
    assert str(err.value) == (
        "text has 1 word the model never saw: 'beleaguered';"
        " use --unknown drop or --unknown replace"
    )
    # The server words the same advice for its request field.
    assert err.value.advise('"unknown": "drop"').endswith('\'beleaguered\'; use "unknown": "drop"')


def test_word_stream_spaces_words_from_the_prompt_they_continue():
    tok = WordTokenizer.fit(["the cat sat\non the mat\n"])
    ids = tok.encode_lines("cat sat\non the\n")

    def stream(after):
        dec = tok.stream_decoder(after)
        return "".join(dec.step(i) for i in ids) + dec.flush()

    assert stream("the") == " cat sat\non the\n"  # mid-line: the first word gets its space
    for after in ("", "the ", "the\n", "the\t"):
        assert stream(after) == "cat sat\non the\n"
    assert tok.decode(ids) == stream("")
    assert tok.token_bytes(tok.index["cat"]) == b"cat"  # logprobs show the word itself


def test_word_text_streams_match_in_blocks_and_with_stops():
    from conftest import stream_in_blocks

    tok = WordTokenizer.fit(["a bb a\nbb c\n"])
    vocab = list(range(tok.vocab_size))

    def run(ids, stops, block, prompt):
        return stream_in_blocks(tok, ids, stops, block, prompt)

    @settings(max_examples=100, deadline=None)
    @given(
        st.lists(st.sampled_from(vocab), max_size=30),
        st.lists(st.sampled_from(["a b", "\nbb", " c", "b\n"]), max_size=2),
        st.integers(2, 5),
        st.sampled_from(["", "a", "a ", "c\n"]),
    )
    def check(ids, stops, block, prompt):
        text, finish = run(ids, stops, 1, prompt)
        assert run(ids, stops, block, prompt) == (text, finish)
        if finish == "length":  # no stop: the whole decoded text, spaced from the prompt
            whole = tok.stream_decoder(prompt)
            assert text == "".join(map(whole.step, ids))
            assert "  " not in text and " \n" not in text and "\n " not in text
            assert not text.endswith(" ")

    check()

    assert run([tok.index["bb"], tok.index["c"]], [], 1, "a") == (" bb c", "length")
