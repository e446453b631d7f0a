import pytest
import torch

from lstmgen import GenerationConfig, LanguageModel, ModelConfig, TokenizerError
from lstmgen.errors import ConfigError
from lstmgen.generate import stream_text
from lstmgen.sampling import (
    apply_repetition_penalty,
    draw,
    filter_top_k,
    filter_top_p,
    next_token,
    uniforms,
)
from lstmgen.textstream import held_back
from lstmgen.tokenizers import CharTokenizer

NEG = float("-inf")


def kept(logits):
    return [i for i, v in enumerate(logits.tolist()) if v != NEG]


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    assert kept(filter_top_k(logits, 2)[0]) == [1, 3]
    assert kept(filter_top_k(logits, 1)[0]) == [1]
    assert kept(filter_top_k(logits, 0)[0]) == [0, 1, 2, 3, 4]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]])
    logits = probs.log()
    assert kept(filter_top_p(logits, 0.5)[0]) == [0]  # 0.5 already reaches 0.5
    assert kept(filter_top_p(logits, 0.6)[0]) == [0, 1]
    assert kept(filter_top_p(logits, 0.86)[0]) == [0, 1, 2, 3]
    assert kept(filter_top_p(logits, 0.01)[0]) == [0]  # the best token always stays
    shuffled = logits[:, [3, 0, 4, 1, 2]]  # order must not matter
    assert kept(filter_top_p(shuffled, 0.6)[0]) == [1, 3]


def test_top_p_batched_rows_independent():
    logits = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]).log()
    out = filter_top_p(logits, 0.8)
    assert kept(out[0]) == [0, 1] and kept(out[1]) == [1, 2]


def test_repetition_penalty():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]


def test_greedy_is_argmax_and_sampling_respects_filters():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    assert next_token(logits, GenerationConfig(temperature=0), None).item() == 1
    g = torch.Generator().manual_seed(0)
    draws = {
        next_token(logits, GenerationConfig(temperature=2.0, top_k=2), g).item() for _ in range(200)
    }
    assert draws == {1, 3}


def test_draw_follows_the_distribution_and_never_picks_zero_mass():
    probs = torch.tensor([[0.0, 0.5, 0.3, 0.0, 0.2, 0.0]]).repeat(40_000, 1)  # (N, V)
    u = uniforms(len(probs), torch.Generator().manual_seed(0), probs.device)
    counts = torch.bincount(draw(probs, u), minlength=6) / len(probs)
    assert counts[[0, 3, 5]].sum() == 0
    torch.testing.assert_close(counts[[1, 2, 4]], torch.tensor([0.5, 0.3, 0.2]), atol=0.01, rtol=0)
    # the extremes of u land on the first and the last token with mass, never past them
    edge = torch.tensor([0.0, 1.0 - 2.0**-53], dtype=torch.float64)
    assert draw(probs[:2] * 3.0, edge).tolist() == [1, 4]  # unnormalised rows work too


def make_model(tokenizer=None, seed=0) -> LanguageModel:
    torch.manual_seed(seed)
    tok = tokenizer or CharTokenizer.fit(["abcdefgh ijk\n🌹"])
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, embedding_size=8, hidden_size=16, num_layers=2, dropout=0.0
    )
    model = LanguageModel(cfg, tok)
    with torch.no_grad():  # sharpen the distribution so samples differ visibly
        model.decoder.weight.mul_(30)
    return model.eval()


def test_seeded_generation_is_reproducible_and_seed_matters():
    model = make_model()
    a = model.complete("abc", n=3, max_new_tokens=40, seed=7, temperature=1.0)
    b = model.complete("abc", n=3, max_new_tokens=40, seed=7, temperature=1.0)
    c = model.complete("abc", n=3, max_new_tokens=40, seed=8, temperature=1.0)
    assert a == b and a != c
    assert len(set(a)) > 1  # the batch's samples are different draws


def test_streaming_chunks_equal_the_batch_result():
    model = make_model()
    streamed = "".join(model.generate("ab", max_new_tokens=30, seed=3))
    assert streamed == model.complete("ab", n=1, max_new_tokens=30, seed=3)[0]


def test_generation_never_reruns_the_prefix():
    model = make_model()
    lengths = []
    handle = model.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    list(model.generate("abcdefg", max_new_tokens=10, seed=0))
    handle.remove()
    # bos + prompt once; then one token per step (through the fused stepper at small batch)
    assert lengths[0] == 8 and all(n == 1 for n in lengths[1:])


def test_small_and_large_batches_decode_alike():
    from lstmgen.models.recurrent_steppers import NUMPY_BELOW

    model = make_model()
    one = model.complete("ab", n=1, max_new_tokens=30, temperature=0)[0]  # fused stepper
    many = model.complete("ab", n=NUMPY_BELOW, max_new_tokens=30, temperature=0)  # nn.LSTM steps
    assert many == [one] * NUMPY_BELOW


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 1.0},
        {"temperature": 0.7, "top_k": 5},
        {"temperature": 1.3, "top_p": 0.8},
        {"temperature": 1.0, "repetition_penalty": 1.5, "top_k": 8, "top_p": 0.9},
    ],
)
def test_fast_steps_sample_exactly_like_eager_nn_lstm_steps(options, monkeypatch):
    model = make_model().double()  # float64: both paths agree far below any sampling boundary
    fast = model.complete("abc", n=4, max_new_tokens=60, seed=11, **options)
    monkeypatch.setattr(LanguageModel, "fast_stepper", lambda self, batch: None)
    eager = model.complete("abc", n=4, max_new_tokens=60, seed=11, **options)
    assert fast == eager and len(set(fast)) > 1


def test_greedy_matches_manual_argmax_loop():
    model = make_model()
    tok = model.tokenizer
    text = model.complete("ab", max_new_tokens=15, temperature=0)[0]
    ids = torch.tensor([[tok.bos_id, *tok.encode("ab")]])
    logits, state = model(ids)
    out = []
    for _ in range(15):
        nxt = logits[:, -1].argmax(-1)
        out.append(nxt.item())
        logits, state = model(nxt[:, None], state)
    assert text == tok.decode(out)


def test_stop_strings_truncate_and_stream_consistently():
    model = make_model()
    full = model.complete("a", max_new_tokens=60, temperature=0)[0]
    stop = full[10:12]
    first = full.find(stop)
    events = list(stream_text(model, ["a"], max_new_tokens=60, temperature=0, stop=[stop]))
    text = "".join(e.text for e in events)
    assert text == full[:first] and stop not in text
    assert events[-1].finish_reason == "stop"
    events = list(stream_text(model, ["a"], max_new_tokens=5, temperature=0))
    assert events[-1].finish_reason == "length"


def test_held_back_suffix():
    assert held_back("hello wor", ["world"]) == 3
    assert held_back("hello", ["xyz"]) == 0


def test_prompt_with_unseen_characters():
    model = make_model()
    with pytest.raises(TokenizerError, match="'Z'"):
        list(model.generate("abZ", max_new_tokens=3))
    assert len(model.complete("abZ", max_new_tokens=3, unknown="drop")) == 1


@pytest.mark.parametrize("block", [3, 16])
@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 1.0, "max_new_tokens": 40},
        {"temperature": 0.9, "top_p": 0.9, "repetition_penalty": 1.3, "max_new_tokens": 41},
        {"temperature": 1.0, "stop": ["a"], "max_new_tokens": 50},
    ],
)
def test_blocks_of_tokens_decode_like_single_steps(block, options, monkeypatch):
    # CUDA decodes blocks of K tokens (one graph replay, one host copy each); on CPU the same
    # loop runs with K = 1. Uniforms drawn K rows at a time are the same stream of numbers, so
    # the text must not depend on K, including a last block cut short and a stop string.
    import lstmgen.decode

    model = make_model().double()
    one = model.complete("abc", n=3, seed=5, **options)
    monkeypatch.setitem(lstmgen.decode.BLOCK, "cpu", block)
    blocked = model.complete("abc", n=3, seed=5, **options)
    assert blocked == one
    if "stop" not in options:
        assert [len(model.tokenizer.encode(t)) for t in one] == [options["max_new_tokens"]] * 3


def test_text_pushed_in_blocks_equals_text_pushed_token_by_token():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from conftest import stream_in_blocks
    from lstmgen.tokenizers import ByteTokenizer

    tok = ByteTokenizer()
    word = "aé🌹b".encode()  # multi-byte characters split across blocks

    def run(ids, stops, block):
        return stream_in_blocks(tok, ids, stops, block)

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(st.sampled_from([tok.encode(chr(b))[0] for b in b"ab"] + list(word)), max_size=40),
        st.lists(st.sampled_from(["a", "ba", "é🌹", "bb"]), max_size=2),
        st.integers(2, 7),
    )
    def check(ids, stops, block):
        assert run(ids, stops, block) == run(ids, stops, 1)

    check()


def test_a_model_whose_outputs_overflow_is_one_error_not_a_crash(tmp_path):
    from lstmgen import NumericalError
    from lstmgen.evaluate import evaluate_tokens

    probs = torch.tensor([[0.2, float("nan"), 0.3], [0.1, 0.2, 0.7]])
    assert draw(probs, torch.tensor([0.5, 0.99], dtype=torch.float64)).tolist()[1] == 2
    assert 0 <= draw(probs, torch.tensor([0.5, 0.5], dtype=torch.float64))[0] < 3  # in range

    model = make_model()
    with torch.no_grad():  # finite weights whose products overflow float32 (a diverged run)
        model.decoder.weight.fill_(3e38)
        model.decoder.bias.fill_(3e38)  # finite weights; the logits they sum to are not
    for batch in (1, 200):  # the NumPy stepper, and torch steps in blocks
        with pytest.raises(NumericalError, match="outputs are not finite numbers"):
            model.complete("abc", n=batch, max_new_tokens=20, seed=1)
    tok = model.tokenizer
    model.save_pretrained(tmp_path / "m")
    from lstmgen.data import tokenize_to_file

    (tmp_path / "t.txt").write_text("abc abc\n" * 20)
    data = tokenize_to_file([tmp_path / "t.txt"], tok, tmp_path / "t.bin", "strict")
    with pytest.raises(NumericalError, match=r"the loss is (nan|inf): the model's outputs"):
        evaluate_tokens(model, data)


@pytest.mark.parametrize(
    "settings",
    [{"temperature": 1e-40}, {"temperature": 1e-300}, {"temperature": 1.0, "top_p": 1e-50}],
)
def test_tiny_temperature_and_top_p_are_greedy_not_garbage(settings):
    # Issue #10: these underflowed float32 (logits / 1e-40 = inf; top_p 1e-50 = 0 dropped every
    # token) and the draw fell to the last token: "zzzz".
    model = make_model()
    greedy = model.complete("ab", n=2, max_new_tokens=20, temperature=0)
    assert model.complete("ab", n=2, max_new_tokens=20, seed=1, **settings) == greedy


def test_a_vanishing_repetition_penalty_is_refused():
    with pytest.raises(ConfigError, match="repetition_penalty must be >= 0.001"):
        GenerationConfig().replace(repetition_penalty=1e-300)
    GenerationConfig().replace(repetition_penalty=1e-3)  # the documented floor itself is fine
    model = make_model()
    with pytest.raises(ConfigError, match="repetition_penalty"):  # the library and the CLI
        model.complete("ab", max_new_tokens=5, repetition_penalty=1e-300)


def reference_stream(pieces, stops):
    """The hold-back rule written plainly (the pre-#10 code): after each piece, stop at the
    earliest stop string in the unsent text, else send all but the longest suffix that is a
    proper prefix of a stop string. -> (the texts sent, finish_reason)."""
    text, sent, out = "", 0, []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        text += piece
        hits = [h for h in (text.find(s, sent) for s in stops) if h != -1]
        if hits:
            return out + [text[sent : min(hits)]], "stop"
        held = max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        upto = len(text) if last else len(text) - held
        if upto > sent or last:
            out.append(text[sent:upto])
            sent = upto
    return out, "length"


def stream(pieces, stops, alphabet="abc"):
    """``pieces`` of text pushed through ``TextStreams`` with a character tokenizer."""
    from lstmgen.textstream import TextStreams

    tok = CharTokenizer.fit([alphabet])
    streams, out, finish = TextStreams(tok, 1, stops), [], "length"
    for i, piece in enumerate(pieces):
        for ev in streams.push_block([tok.encode(piece)], last=i == len(pieces) - 1):
            out.append(ev.text)
            finish = ev.finish_reason
        if streams.all_done:
            break
    return out, finish


@pytest.mark.parametrize(
    "pieces, stops, want",
    [
        (["a", "a", "a", "b", "c"], ["aab"], (["a", ""], "stop")),  # "aab" over "aaab"
        (["aa", "ab", "c"], ["aab"], (["a"], "stop")),
        (["xab", "a", "ac"], ["aab", "aac"], (["xab", ""], "stop")),  # split across pieces
        (["ab", "ca", "b"], ["abcx", "cab"], (["ab", ""], "stop")),  # held for the longer
        (["abca", "bc", "x"], ["cabx", "bcx"], (["ab", "ca", ""], "stop")),
        (["abcd"], ["c", "abcd"], ([""], "stop")),  # the earliest start wins, not the first end
        (["aaa", "aab", "aa"], ["aaaa"], ([""], "stop")),
        (["ab", "ab", "c"], ["abac"], (["ab", "abc"], "length")),  # never completed
    ],
)
def test_hold_back_on_overlapping_stop_strings(pieces, stops, want):
    assert reference_stream(pieces, stops) == want
    assert stream(pieces, stops, "abcdx") == want


def test_hold_back_equals_a_simple_reference():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from lstmgen.textstream import held_back

    text = st.text(alphabet="abc", max_size=8)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(text, min_size=1, max_size=8), st.lists(text.filter(bool), max_size=4))
    def check(pieces, stops):
        assert stream(pieces, stops) == reference_stream(pieces, stops)
        whole = "".join(pieces)
        naive = max(
            (n for s in stops for n in range(1, len(s)) if whole.endswith(s[:n])), default=0
        )
        assert held_back(whole, stops) == naive

    check()


def test_hold_back_work_does_not_grow_with_the_text_or_the_stop_length():
    # Issue #10: each token re-checked every suffix of the text against every prefix of each
    # stop string (O(len(stop)^2) per token). Count the Python lines textstream runs per token
    # (no timing): with a 100,000-character stop string it must stay a small constant.
    import sys

    import lstmgen.textstream as ts

    tok = CharTokenizer.fit(["ab"])
    streams = ts.TextStreams(tok, 1, ["a" * 100_000])  # its table is made once, here
    tokens = 1000
    budget = 100 * tokens  # measured: ~30 per token; before the fix ~1,000 here
    lines = [0]

    def local(frame, event, arg):
        lines[0] += event == "line"
        return local if lines[0] <= budget else None

    def tracer(frame, event, arg):
        if frame.f_code.co_filename == ts.__file__ and lines[0] <= budget:
            return local
        return None

    sys.settrace(tracer)
    try:
        for i in range(tokens):
            list(streams.push(tok.encode("ab"[i % 2]), last=False))
    finally:
        sys.settrace(None)
    assert lines[0] <= budget, f"{lines[0]} lines for {tokens} tokens"
    assert streams.texts[0] == "ab" * (tokens // 2)


def test_stop_strings_are_limited_in_length():
    from lstmgen import ConfigError
    from lstmgen.config import MAX_STOP_CHARS

    GenerationConfig().replace(stop=["x" * MAX_STOP_CHARS])  # as the CLI's --stop goes in
    with pytest.raises(ConfigError, match="at most 256 characters"):
        GenerationConfig().replace(stop=["x" * (MAX_STOP_CHARS + 1)])


def test_filters_take_one_setting_per_row_exactly_as_row_by_row():
    # The server's batcher gives each row its own settings (server/rows.py); the filters take a
    # value per row, and row b must come out as the filter with row b's value alone.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 9, generator=g).round(decimals=1)  # ties too
    seen = torch.rand(5, 9, generator=g) < 0.4
    ks, ps, pens = [0, 1, 3, 9, 4], [1.0, 0.5, 0.9, 1e-50, 0.2], [1.0, 1.5, 0.5, 2.0, 1.0]
    by_row = [
        (filter_top_k(logits, ks), filter_top_k, ks),
        (filter_top_p(logits, ps), filter_top_p, ps),
    ]
    for together, one, values in by_row:
        for b, v in enumerate(values):
            assert torch.equal(together[b : b + 1], one(logits[b : b + 1], v)), (one, b)
    together = apply_repetition_penalty(logits, seen, pens)
    for b, pen in enumerate(pens):
        want = apply_repetition_penalty(logits[b : b + 1], seen[b : b + 1], pen)
        assert torch.equal(together[b : b + 1], want)
