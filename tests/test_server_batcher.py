"""The request batcher: per-row sampling, joining and leaving, and seeded determinism.

None of this needs FastAPI: the decode loop is plain PyTorch and threads.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import torch

from lstmgen import GenerationConfig, LanguageModel
from lstmgen.generate import stream_text
from lstmgen.sampling import next_token
from lstmgen.server.batcher import Batcher, Chunk, SequenceSpec
from lstmgen.server.rows import RowSettings, sample_rows
from lstmgen.server.scoring import score_ids
from server_support import train_server_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return LanguageModel.from_pretrained(train_server_model(tmp_path_factory.mktemp("b") / "run"))


@pytest.fixture
def batcher(model):
    b = Batcher(model, max_batch=16)
    b.start()
    yield b
    b.close()


class Collector:
    """A sink that gathers a job's chunks per choice and signals when every choice finished."""

    def __init__(self, n: int):
        self.n, self.chunks = n, []
        self.text = [""] * n
        self.finish: list[str | None] = [None] * n
        self.generated = [0] * n
        self.tokens: list[list] = [[] for _ in range(n)]
        self.done = threading.Event()

    def __call__(self, chunks: list[Chunk]) -> None:
        for c in chunks:
            self.chunks.append(c)
            if c.error:
                self.error = c.error
                self.done.set()
                return
            self.text[c.index] += c.text
            self.tokens[c.index] += c.tokens
            if c.finish_reason:
                self.finish[c.index] = c.finish_reason
                self.generated[c.index] = c.generated
        if all(self.finish):
            self.done.set()

    def wait(self) -> Collector:
        assert self.done.wait(30), "job did not finish"
        return self


def spec(model, prompt: str, max_new: int = 30, index: int = 0, **kw) -> SequenceSpec:
    settings = {k: kw.pop(k) for k in list(kw) if k in RowSettings.__dataclass_fields__}
    ids = (model.tokenizer.bos_id, *model.tokenizer.encode(prompt))
    return SequenceSpec(ids, max_new, RowSettings(**settings), index=index, **kw)


def reference(model, prompt: str, max_new: int = 30, **kw) -> tuple[str, str]:
    """What the CLI's generator (one sample, one generator) produces for the same request."""
    text, finish = "", None
    for ev in stream_text(model, [prompt], max_new_tokens=max_new, **kw):
        text += ev.text
        finish = ev.finish_reason or finish
    return text, finish


def test_rows_sample_exactly_like_next_token_per_row():
    rng = random.Random(0)
    for _ in range(60):
        B, V = rng.randint(1, 6), rng.choice([5, 40])
        logits = torch.randn(B, V) * 2
        if rng.random() < 0.3:
            logits = logits.round()  # ties
        seen = torch.rand(B, V) < 0.3
        settings = [
            RowSettings(
                rng.choice([0.0, 0.7, 1.3]),
                rng.choice([0, 1, 4, V + 1]),
                rng.choice([1.0, 0.8, 0.1]),
                rng.choice([1.0, 1.5]),
            )
            for _ in range(B)
        ]
        seeds = [rng.randrange(2**32) for _ in range(B)]
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        got = [sample_rows(logits, settings, gens, seen).tolist() for _ in range(3)]
        for b, s in enumerate(settings):
            cfg = GenerationConfig(
                temperature=s.temperature,
                top_k=s.top_k,
                top_p=s.top_p,
                repetition_penalty=s.repetition_penalty,
            )
            g = torch.Generator().manual_seed(seeds[b])
            row_seen = seen[b : b + 1] if s.repetition_penalty != 1.0 else None
            want = [next_token(logits[b : b + 1], cfg, g, row_seen).item() for _ in range(3)]
            assert [step[b] for step in got] == want, (s, b)


CASES = [
    ("ROMEO:", dict(seed=1, temperature=0.9)),
    ("JULIET:", dict(seed=2, temperature=1.2, top_k=5)),
    ("the love", dict(seed=3, temperature=0.7, top_p=0.6)),
    ("床前", dict(seed=4, temperature=1.0, repetition_penalty=1.3)),
    ("NURSE:", dict(temperature=0.0)),
]


def test_seeded_requests_same_alone_batched_and_as_the_cli(model, batcher):
    # Alone: one job at a time.
    alone = []
    for prompt, kw in CASES:
        c = Collector(1)
        batcher.submit([spec(model, prompt, 120, **kw)], c)
        alone.append((c.wait().text[0], c.finish[0]))
    # Batched: three start together, two more join while those are running.
    collectors = [Collector(1) for _ in CASES]
    steps, tokens = batcher.steps, batcher.tokens
    for (prompt, kw), c in zip(CASES[:3], collectors[:3], strict=True):
        batcher.submit([spec(model, prompt, 120, **kw)], c)
    deadline = time.time() + 10
    while not collectors[0].chunks and time.time() < deadline:
        time.sleep(0.001)
    for (prompt, kw), c in zip(CASES[3:], collectors[3:], strict=True):
        batcher.submit([spec(model, prompt, 120, **kw)], c)
    batched = [(c.wait().text[0], c.finish[0]) for c in collectors]
    assert batched == alone
    assert batcher.tokens - tokens >= 2 * (batcher.steps - steps)  # rows shared the steps
    for (prompt, kw), got in zip(CASES, alone, strict=True):
        assert got == reference(model, prompt, 120, **kw)


def test_stop_strings_finish_like_stream_text(model, batcher):
    for stop in (["e"], ["th", "o"], ["\n\n"], ["明月"]):
        c = Collector(1)
        batcher.submit([spec(model, "ROMEO:", 60, seed=5, temperature=1.0, stop=tuple(stop))], c)
        c.wait()
        assert (c.text[0], c.finish[0]) == reference(
            model, "ROMEO:", 60, seed=5, temperature=1.0, stop=stop
        )
        if c.finish[0] == "stop":
            assert not any(s in c.text[0] for s in stop)


def test_rows_join_and_leave_between_steps(model, batcher):
    lengths = [1, 5, 17, 40]
    collectors = []
    for i, n in enumerate(lengths):
        c = Collector(2)
        specs = [spec(model, "FRIAR:", n, index=j, seed=10 * i + j) for j in range(2)]
        batcher.submit(specs, c)
        collectors.append(c)
    for n, c in zip(lengths, collectors, strict=True):
        c.wait()
        assert c.finish == ["length", "length"] and c.generated == [n, n]
        assert c.text[0] != c.text[1] or n < 3  # different seeds, different text
    deadline = time.time() + 5
    while batcher.active and time.time() < deadline:
        time.sleep(0.01)
    assert batcher.active == 0


def test_zero_max_tokens_finishes_at_once(model, batcher):
    c = Collector(1)
    batcher.submit([spec(model, "ROMEO:", 0)], c)
    assert c.wait().finish == ["length"] and c.text == [""] and c.generated == [0]


def test_cancel_frees_the_rows(model, batcher):
    c = Collector(1)
    job = batcher.submit([spec(model, "ROMEO:", 2000, seed=1)], c)
    deadline = time.time() + 10
    while not c.chunks and time.time() < deadline:
        time.sleep(0.005)
    job.cancel()
    while batcher.active and time.time() < deadline:
        time.sleep(0.005)
    assert batcher.active == 0 and c.finish == [None]
    other = Collector(1)  # the loop keeps serving
    batcher.submit([spec(model, "JULIET:", 5)], other)
    assert other.wait().finish == ["length"]


def test_logprobs_are_the_models_log_probabilities(model, batcher):
    c = Collector(1)
    batcher.submit([spec(model, "ROMEO:", 25, seed=9, temperature=1.0, logprobs=3)], c)
    tokens = c.wait().tokens[0]
    assert len(tokens) == 25 and "".join(t.token for t in tokens) == c.text[0]
    assert [t.offset for t in tokens] == list(range(25))  # char tokenizer: one char each
    tok = model.tokenizer
    prompt = tok.encode("ROMEO:")
    ids = prompt + tok.encode(c.text[0])
    scored = score_ids(model, ids).token_logprobs[len(prompt) :]
    assert [t.logprob for t in tokens] == pytest.approx(scored, abs=1e-4)
    for t in tokens:
        assert len(t.top) == 3 and max(t.top.values()) >= t.logprob - 1e-6


def test_a_failing_step_fails_its_jobs_and_the_loop_goes_on(model, batcher, monkeypatch):
    from lstmgen.models.recurrent_steppers import NumpyStepper, TorchStepper

    calls = {"n": 0}

    def flaky(real):  # the third model call (prime, step, step) fails, on either step path
        def call(self, ids, state=None):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("boom")
            return real(self, ids, state)

        return call

    monkeypatch.setattr(type(model), "forward", flaky(type(model).forward))
    for cls in (TorchStepper, NumpyStepper):
        monkeypatch.setattr(cls, "__call__", flaky(cls.__call__))
    c = Collector(1)
    batcher.submit([spec(model, "ROMEO:", 20)], c)
    c.wait()
    assert getattr(c, "error", None) == "internal error while generating"
    assert batcher.active == 0
    ok = Collector(1)
    batcher.submit([spec(model, "ROMEO:", 5)], ok)
    assert ok.wait().finish == ["length"]


def test_jobs_wait_when_the_batch_is_full(model):
    b = Batcher(model, max_batch=2)
    b.start()
    try:
        collectors = [Collector(2) for _ in range(3)]
        for i, c in enumerate(collectors):
            b.submit([spec(model, "ROMEO:", 10, index=j, seed=i) for j in range(2)], c)
        for c in collectors:
            assert c.wait().generated == [10, 10]
        with pytest.raises(ValueError):
            b.submit([spec(model, "a", 1, index=j) for j in range(3)], Collector(3))
    finally:
        b.close()


def long_prompts(count: int, chars: int) -> list[str]:
    """``count`` different play excerpts of ``chars`` characters: several priming pieces each."""
    from conftest import make_play

    play = make_play(400, seed=3)
    return [play[i * 97 : i * 97 + chars] for i in range(count)]


def test_chunked_priming_gives_the_tokens_of_unchunked_priming(model, monkeypatch):
    # The batcher primes prompts in pieces between decode steps (and stream_text primes the same
    # pieces); the tokens must be those of one model call over the whole prompt.
    import lstmgen.decode

    prompts = long_prompts(3, 300)

    def run(batcher):
        batcher.start()
        try:
            first = Collector(1)  # a row already decoding while the long prompts are primed
            batcher.submit([spec(model, "ROMEO:", 120, seed=1, temperature=1.0)], first)
            c = Collector(len(prompts))
            specs = [
                spec(model, p, 40, index=i, seed=i, temperature=1.0) for i, p in enumerate(prompts)
            ]
            batcher.submit(specs, c)
            return first.wait().text, c.wait().text
        finally:
            batcher.close()

    monkeypatch.setattr(lstmgen.decode, "PRIME_CHUNK", 10**9)
    whole = run(Batcher(model, max_batch=8, prefill_tokens=None))
    monkeypatch.setattr(lstmgen.decode, "PRIME_CHUNK", 16)
    chunked = run(Batcher(model, max_batch=8, prefill_tokens=16))
    assert chunked == whole
    monkeypatch.undo()
    want = [reference(model, p, 40, seed=i, temperature=1.0)[0] for i, p in enumerate(prompts)]
    assert chunked[1] == want


def test_a_long_prompt_does_not_stall_the_other_rows(model, batcher):
    # Issue #10: 16 long prompts were primed on the decode thread in one piece, and every other
    # stream stopped meanwhile. Now the active rows step once per piece of priming.
    from lstmgen.decode import PRIME_CHUNK

    active = Collector(1)
    batcher.submit([spec(model, "ROMEO:", 3000, seed=1)], active)
    deadline = time.time() + 10
    while not active.chunks and time.time() < deadline:
        time.sleep(0.001)
    prompts = long_prompts(4, 5 * PRIME_CHUNK)
    first_step: dict[int, int] = {}  # choice -> the decode step that brought its first text

    def sink(chunks):
        for ch in chunks:
            first_step.setdefault(ch.index, batcher.steps)
        waiting(chunks)

    waiting = Collector(len(prompts))
    steps = batcher.steps
    batcher.submit([spec(model, p, 5, index=i) for i, p in enumerate(prompts)], sink)
    short_first: list[int] = []
    short = Collector(1)

    def short_sink(chunks):
        short_first.append(batcher.steps)
        short(chunks)

    batcher.submit([spec(model, "NURSE:", 3)], short_sink)  # goes before the long prompts
    waiting.wait()
    short.wait()
    assert short_first[0] < min(first_step.values())
    # 4 prompts of 6 pieces each, primed one piece per step of the active row, which kept
    # decoding (before: all 24 pieces ran at once, between two of its steps).
    assert max(first_step.values()) - steps >= 4 * 6 - 2
    assert not active.done.is_set()


def test_a_job_cancelled_while_its_prompt_is_primed_never_joins(model, batcher):
    from lstmgen.decode import PRIME_CHUNK

    c = Collector(1)
    job = batcher.submit([spec(model, long_prompts(1, 40 * PRIME_CHUNK)[0], 50)], c)
    job.cancel()
    deadline = time.time() + 10
    while batcher.active and time.time() < deadline:
        time.sleep(0.005)
    assert batcher.active == 0 and not c.chunks
    other = Collector(1)
    batcher.submit([spec(model, "JULIET:", 5)], other)
    assert other.wait().finish == ["length"]


def test_requests_with_stop_strings_over_the_limit_are_rejected():
    # The limit bounds the hold-back of every row (issue #10: 900k-character stop strings).
    from lstmgen.server.protocol import APIError, Limits, parse_completion

    def parse(stop):
        return parse_completion({"prompt": "a", "stop": stop}, "m", GenerationConfig(), Limits())

    assert parse(["x" * 256] * 4).stop == ("x" * 256,) * 4
    with pytest.raises(APIError, match="at most 256 characters, got 257") as err:
        parse(["a", "x" * 257])
    assert err.value.status == 400 and err.value.param == "stop"
    with pytest.raises(APIError, match="at most 4 strings"):
        parse(["a"] * 5)


def test_prompts_still_primed_when_the_decoding_rows_all_finish(model, batcher):
    # Each prompt's row finishes before the next prompt is primed: the batch empties in between.
    from lstmgen.decode import PRIME_CHUNK

    prompts = long_prompts(3, 2 * PRIME_CHUNK)
    c = Collector(len(prompts))
    batcher.submit([spec(model, p, 1, index=i) for i, p in enumerate(prompts)], c)
    assert c.wait().generated == [1, 1, 1]
