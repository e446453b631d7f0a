"""Request batching: one decode loop steps every active sequence of every request together.

An LSTM's state per sequence is a fixed-size vector, so a batch can change between steps at
the cost of a concatenation: a new sequence is primed on its prompt and its state is appended
along the batch dimension; a finished or cancelled one is sliced out. Each step then runs the
model once on the newest token of all B active sequences::

    rows      [r0 r1 r2 ...]          one per sequence (a request with n=3 brings 3)
    state     a State of B sequences (state.py)  row b <-> rows[b]
    logits    (B, V)     next-token logits      row b <-> rows[b]
    seen      (B, V)     tokens seen, for the repetition penalty

Every sequence keeps its own sampling settings and its own seeded ``torch.Generator``
(``rows.sample_rows``), and its text goes through the same incremental decoding and stop-string
hold-back as ``generate.stream_text`` (``textstream.TextStream``), so a seeded request gives the
same text alone or batched.

Prompts are primed in pieces (chunked prefill, as LLM servers do): each iteration of the loop
primes at most ``prefill_tokens`` prompt tokens of the waiting sequences, then runs one decode
step of the active rows; a sequence joins the batch once its whole prompt is primed. So a
request of 16 x 4,096-token prompts delays the other streams by one piece per step instead of
stalling them for seconds (issue #10: a stream's p99 gap between events 4.6 s -> 0.06 s,
benchmarks/server_fairness.py). The pieces are ``decode.Primer``'s, so priming gives the same
state as ``decode.prime``, bit for bit. Each loop iteration is a block of one token: the rows
sample (each with its own settings), the finished rows leave, and ``decode.Step`` steps the
rest.

The loop runs on one background thread. Callers ``submit`` a ``Job`` (a list of
``SequenceSpec``) with a ``sink``: a function the loop calls, on its own thread, with the new
``Chunk``s of that job after each step. The HTTP layer's sink hands them to its event loop.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..decode import PRIME_CHUNK, Primer, Step, mark_seen, seen_mask
from ..models.base import Model
from ..state import State
from ..textstream import TextStream
from .rows import RowSettings, sample_rows

log = logging.getLogger("lstmgen.server")


@dataclass(frozen=True)
class SequenceSpec:
    """One sequence to generate: ``prompt_ids`` start with the tokenizer's ``bos_id``."""

    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    settings: RowSettings = RowSettings()
    stop: tuple[str, ...] = ()
    seed: int | None = None  # None: a fresh random seed
    logprobs: int | None = None  # None: off; k >= 0: chosen token plus the k most likely
    index: int = 0  # the choice index in the response
    after: str = ""  # the text it continues (a word model spaces its first word from it)
    features: tuple[float, ...] | None = None  # the feature vector it starts from (issue #13)


@dataclass
class TokenInfo:
    """A generated token for ``logprobs``: its text, log-probability under the model
    (temperature 1, no filtering) and where its text starts in the generated text."""

    token: str
    logprob: float
    offset: int
    top: dict[str, float] | None = None


@dataclass
class Chunk:
    """New text of choice ``index``. The last chunk of a choice has ``finish_reason`` ("stop" or
    "length") and ``generated`` (tokens sampled); ``error`` is set when the loop failed."""

    index: int
    text: str
    finish_reason: str | None = None
    tokens: list[TokenInfo] = field(default_factory=list)
    generated: int = 0
    error: str | None = None


Sink = Callable[[list[Chunk]], None]

# Prompt tokens primed per loop iteration (a piece is decode.PRIME_CHUNK tokens; at least one
# piece runs). Between two decode steps of the active rows there is then at most one piece of
# priming: ~7-15 ms for a 2x256 LSTM on one CPU core. Priming in pieces costs ~10 % of its
# throughput, but ~2x when NumPy's OpenBLAS has more threads than torch: its threads, left
# spinning after each NumPy decode step, take the core from the piece that follows
# (benchmarks/server_fairness.py runs the server with OPENBLAS_NUM_THREADS = --threads).
PREFILL_TOKENS = PRIME_CHUNK


class Job:
    """A submitted request: its sequences, where its chunks go, and whether it was cancelled."""

    def __init__(self, specs: Sequence[SequenceSpec], sink: Sink):
        self.specs = list(specs)
        self.sink = sink
        self.cancelled = False

    def cancel(self) -> None:
        """Stop generating for this job; its rows leave the batch before the next step."""
        self.cancelled = True


class _Row:
    """Decoding state of one active sequence (mirrors ``stream_text``'s per-sample state)."""

    def __init__(self, spec: SequenceSpec, job: Job, tokenizer: Any, device: torch.device):
        self.spec, self.job = spec, job
        seed = spec.seed if spec.seed is not None else random.SystemRandom().randrange(2**63)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.stream = TextStream(tokenizer, spec.stop, spec.after)
        self.steps = 0  # tokens sampled
        self.tokens: deque[TokenInfo] = deque()  # not yet sent with a chunk


class _Priming:
    """Sequences waiting for one prompt to be primed (identical prompts are primed once)."""

    def __init__(self, model: Model, rows: list[_Row]):
        self.rows = rows
        spec = rows[0].spec
        start = None if spec.features is None else model.feature_state(list(spec.features))
        self.primer = Primer(model, spec.prompt_ids, start)

    @property
    def cancelled(self) -> bool:
        return all(r.job.cancelled for r in self.rows)


class BatcherClosed(RuntimeError):
    """The decode loop is not running (server shutting down)."""


class Batcher:
    """The decode loop. ``start()`` it, ``submit`` jobs, ``close()`` it.

    >>> batcher = Batcher(model, max_batch=64); batcher.start()  # doctest: +SKIP
    >>> job = batcher.submit([SequenceSpec((bos, *ids), 50, seed=1)], print)  # doctest: +SKIP

    ``prefill_tokens``: prompt tokens primed between two decode steps (None: every waiting
    prompt at once, the behaviour before issue #10, kept for benchmarks/server_fairness.py).
    """

    def __init__(
        self, model: Model, max_batch: int = 64, prefill_tokens: int | None = PREFILL_TOKENS
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if prefill_tokens is not None and prefill_tokens < 1:
            raise ValueError("prefill_tokens must be >= 1 (None: no limit)")
        self.model = model
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._closed = True
        self._thread: threading.Thread | None = None
        tok = model.tokenizer
        self._token_text = [token_text(tok.token_bytes(i)) for i in range(tok.vocab_size)]
        # Small CPU batches step faster through the architecture's fused stepper, large ones and
        # GPUs through model.forward; Step picks per call, as the batch changes.
        self._step_fn = Step(model, 1)
        # Decode-loop state: touched only by the loop thread.
        self._rows: list[_Row] = []
        self._priming: list[_Priming] = []  # admitted, prompt not fully primed yet
        self._state: State | None = None
        self._logits: torch.Tensor | None = None  # (B, V)
        self._seen: torch.Tensor | None = None  # (B, V) bool
        self.steps = 0  # batched model steps run so far
        self.tokens = 0  # tokens sampled so far

    # --- the caller's side --------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._closed = False
            self._thread = threading.Thread(target=self._run, name="lstmgen-decode", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop; unfinished jobs get an error chunk."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, specs: Sequence[SequenceSpec], sink: Sink) -> Job:
        if not specs:
            raise ValueError("a job needs at least one sequence")
        if len(specs) > self.max_batch:
            raise ValueError(f"a job may have at most {self.max_batch} sequences")
        job = Job(specs, sink)
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            self._pending.append(job)
            self._cond.notify_all()
        return job

    @property
    def active(self) -> int:
        """Sequences admitted: decoding, or waiting for their prompt to be primed."""
        return len(self._rows) + sum(len(p.rows) for p in list(self._priming))

    @property
    def queued(self) -> int:
        return len(self._pending)

    # --- the decode loop ----------------------------------------------------------------------

    def _run(self) -> None:
        self.model.eval()
        with torch.inference_mode():
            while True:
                with self._cond:
                    while (
                        not self._closed and not self._pending and not self._rows
                        and not self._priming
                    ):  # fmt: skip
                        self._cond.wait()
                    if self._closed:
                        break
                    admitted = self._admit()
                try:
                    self._queue(admitted)
                    self._prime()
                    self._step()
                except Exception:  # a bug: fail the jobs in flight, keep serving
                    log.exception("decode loop failed")
                    jobs = self._jobs_in_flight()
                    jobs.update({id(j): j for j in admitted})
                    self._reset()
                    for job in jobs.values():
                        _deliver(job, [Chunk(0, "", error="internal error while generating")])
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
        for job in left + list(self._jobs_in_flight().values()):
            _deliver(job, [Chunk(0, "", error="the server is shutting down")])
        self._reset()

    def _jobs_in_flight(self) -> dict[int, Job]:
        rows = self._rows + [r for p in self._priming for r in p.rows]
        return {id(r.job): r.job for r in rows}

    def _reset(self) -> None:
        """Drop every sequence: the decode batch and the prompts being primed."""
        self._clear_batch()
        self._priming = []

    def _clear_batch(self) -> None:
        self._rows, self._state, self._logits, self._seen = [], None, None, None

    def _admit(self) -> list[Job]:
        """Take pending jobs (whole) while the batch has room. Call with the lock held."""
        admitted, room = [], self.max_batch - self.active
        while self._pending and (self._pending[0].cancelled or len(self._pending[0].specs) <= room):
            job = self._pending.popleft()
            if not job.cancelled:
                admitted.append(job)
                room -= len(job.specs)
        return admitted

    def _queue(self, jobs: list[Job]) -> None:
        """Queue the new sequences for priming; identical prompts are primed once."""
        model, tok = self.model, self.model.tokenizer
        by_prompt: dict[tuple, list[_Row]] = {}  # (prompt ids, features) -> its rows
        for job in jobs:
            finished = []
            for spec in job.specs:
                if spec.max_new_tokens <= 0:  # nothing to generate (stream_text does the same)
                    finished.append(Chunk(spec.index, "", "length"))
                else:
                    row = _Row(spec, job, tok, model.device)
                    by_prompt.setdefault((spec.prompt_ids, spec.features), []).append(row)
            if finished:
                _deliver(job, finished)
        self._priming += [_Priming(model, rows) for rows in by_prompt.values()]

    def _prime(self) -> None:
        """Prime up to ``prefill_tokens`` prompt tokens (at least one piece); sequences whose
        prompt is done join the batch.

        The prompt with the fewest tokens left goes first: a short prompt arriving behind
        sixteen long ones starts decoding at the next step instead of seconds later, and the
        long ones finish one after another rather than all at the end. A long prompt waits only
        while shorter ones keep arriving faster than the batch frees room for them."""
        budget = self.prefill_tokens
        self._priming = [p for p in self._priming if not p.cancelled]
        ready: list[_Priming] = []
        ran = 0
        while self._priming:
            head = min(self._priming, key=lambda p: p.primer.remaining)
            if budget is not None and ran and ran + head.primer.next_piece > budget:
                break
            ran += head.primer.step()
            if head.primer.done:
                self._priming.remove(head)
                ready.append(head)
        if ready:
            self._join(ready)

    def _join(self, ready: list[_Priming]) -> None:
        """Append the rows of primed prompts to the batch."""
        model = self.model
        logits, states, new = [], [], []
        for p in ready:
            k = len(p.rows)
            copies = torch.zeros(k, dtype=torch.long, device=model.device)  # (k,)
            logits.append(p.primer.logits[copies])  # (k, V)
            states.append(p.primer.state.select(copies))  # k sequences
            new += p.rows
        seen = seen_mask(
            [r.spec.prompt_ids for r in new],
            model.config.vocab_size,
            model.device,
            [r.spec.settings.repetition_penalty != 1.0 for r in new],
        )  # (k, V)
        if self._rows:
            self._state = State.cat([self._state, *states])
            logits = [self._logits, *logits]
            self._seen = torch.cat([self._seen, seen])
        else:
            self._state = State.cat(states)
            self._seen = seen
        self._logits = torch.cat(logits)  # (B, V)
        self._rows += new

    def _step(self) -> None:
        """Sample one token for every row, send the new text, drop finished rows, run the model."""
        rows = self._rows
        if not rows:
            return
        cancelled = [r.job.cancelled for r in rows]
        if any(cancelled):
            self._keep([b for b, c in enumerate(cancelled) if not c])
            rows = self._rows
            if not rows:
                return
        logits, seen = self._logits, self._seen
        assert logits is not None and seen is not None
        B = len(rows)
        use_seen = any(r.spec.settings.repetition_penalty != 1.0 for r in rows)
        nxt = sample_rows(
            logits, [r.spec.settings for r in rows], [r.generator for r in rows], seen
        )  # (B,)
        mark_seen(seen if use_seen else None, nxt)
        chosen_lp, top = self._logprobs(logits, nxt, rows)
        out: dict[int, tuple[Job, list[Chunk]]] = {}
        ids = nxt.tolist()
        for b, r in enumerate(rows):
            chunk = self._advance(r, ids[b], chosen_lp[b] if chosen_lp else 0.0, top.get(b))
            if chunk is not None:
                out.setdefault(id(r.job), (r.job, []))[1].append(chunk)
        self.steps += 1
        self.tokens += B
        for job, chunks in out.values():
            _deliver(job, chunks)
        keep = [b for b, r in enumerate(rows) if not r.stream.done]
        if len(keep) < B:
            self._keep(keep)
            if not keep:
                return
            nxt = nxt[torch.tensor(keep, device=nxt.device)]
        self._logits, self._state = self._step_fn(nxt, self._state)  # (B', V)

    def _keep(self, keep: list[int]) -> None:
        """Slice the batch down to rows ``keep``."""
        if not keep:  # the prompts being primed stay
            self._clear_batch()
            return
        idx = torch.tensor(keep, device=self.model.device)
        self._rows = [self._rows[b] for b in keep]
        self._state = self._state.select(idx)
        assert self._logits is not None and self._seen is not None
        self._logits, self._seen = self._logits[idx], self._seen[idx]

    def _logprobs(
        self, logits: torch.Tensor, nxt: torch.Tensor, rows: list[_Row]
    ) -> tuple[list[float], dict[int, dict[str, float]]]:
        """Log-probabilities of the chosen tokens (and the top k where asked) under the model."""
        want = [r.spec.logprobs for r in rows]
        if all(w is None for w in want):
            return [], {}
        lp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
        chosen = lp.gather(-1, nxt[:, None])[:, 0].tolist()
        top: dict[int, dict[str, float]] = {}
        k_max = max(w or 0 for w in want)
        if k_max > 0:
            values, indices = lp.topk(min(k_max, lp.shape[-1]), dim=-1)  # (B, k)
            for b, w in enumerate(want):
                if w:
                    vs, js = values[b, :w].tolist(), indices[b, :w].tolist()
                    top[b] = {self._token_text[j]: v for v, j in zip(vs, js, strict=True)}
        return chosen, top

    def _advance(
        self, r: _Row, token: int, logprob: float, top: dict[str, float] | None
    ) -> Chunk | None:
        """Add one token to row ``r``; return the chunk to send, if any (as ``stream_text``)."""
        spec = r.spec
        r.steps += 1
        last = r.steps == spec.max_new_tokens
        if spec.logprobs is not None:
            offset = len(r.stream.text)
            r.tokens.append(TokenInfo(self._token_text[token], logprob, offset, top))
        out = r.stream.push((token,), last)
        return None if out is None else self._chunk(r, *out)

    def _chunk(self, r: _Row, text: str, finish: str | None) -> Chunk:
        """The chunk of ``text`` just released by ``r.stream``, with the tokens it holds."""
        upto = r.stream.emitted
        tokens = []
        while r.tokens and (r.tokens[0].offset < upto or finish == "length"):
            tokens.append(r.tokens.popleft())
        chunk = Chunk(r.spec.index, text, finish, tokens)
        if finish:
            chunk.generated = r.steps
        return chunk


def _deliver(job: Job, chunks: list[Chunk]) -> None:
    try:
        job.sink(chunks)
    except Exception:  # the receiver is gone (closed event loop): stop generating for it
        log.debug("dropping a job whose receiver failed", exc_info=True)
        job.cancel()


def token_text(data: bytes) -> str:
    """A token's text for ``logprobs``; bytes that are not whole UTF-8 characters are written
    ``bytes:\\xe4\\xb8`` (OpenAI's convention)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in data)
