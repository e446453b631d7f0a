"""What each endpoint does: check the request, hand the work to the batcher or the scorer,
shape the answer (openai.py). ``Handlers`` holds what the app serves; ``app.py`` routes to its
methods and turns the ``APIError`` they raise into OpenAI's error shape.

Generation runs in the ``Batcher``'s decode loop; a handler only submits a request's sequences
and relays their chunks (mailbox.py), and cancels them when the client leaves.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import LstmgenError
from ..models.base import Model
from ..tokenizers import UnknownTextError, unknown_policy
from .batcher import Batcher, BatcherClosed, SequenceSpec, TokenInfo, token_text
from .mailbox import Mailbox, unless_disconnected
from .openai import DONE, Completion, Head, error_event, score_object, usage_object
from .protocol import APIError, CompletionRequest, Limits, parse_completion, parse_score
from .rows import RowSettings
from .scoring import score_ids


def client_message(exc: LstmgenError) -> str:
    """The error for an HTTP client: advice names the request field, not the CLI flag."""
    if isinstance(exc, UnknownTextError):
        return exc.advise('"unknown": "drop" or "replace" in the request')
    return str(exc)


def _check_length(ids: list[int], limit: int, param: str) -> None:
    """Refuse ``ids`` (the request's ``param``) when longer than the server's ``limit``."""
    if len(ids) > limit:
        raise APIError(
            400,
            f"{param} has {len(ids)} tokens, more than the server's limit of {limit}",
            param,
            "context_length_exceeded",
        )


@dataclass
class Handlers:
    """The endpoints of one served model. ``stream_interval`` is the shortest time between two
    events of one stream; ``read_timeout`` the longest wait for a request's body."""

    model: Model
    model_name: str
    batcher: Batcher
    limits: Limits
    max_batch: int
    created: int
    api_key: str | None = None
    stream_interval: float = 0.05
    read_timeout: float = 30.0
    _row_bytes: int | None = None  # one sequence's state, in bytes (_state_bytes)

    # --- request checks -----------------------------------------------------------------------

    async def authorize(self, request: Request) -> None:  # async: no thread pool hop
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            raise APIError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )

    async def read_json(self, request: Request) -> Any:
        # A JSON content type is what makes a cross-site <form> or no-cors fetch impossible
        # without a CORS preflight (issue #10); the playground and every client send it.
        limit = self.limits.max_body_bytes
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            raise APIError(415, "send the body as JSON, with 'Content-Type: application/json'")
        too_big = f"request body is larger than {limit} bytes"
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(413, too_big)

        async def body() -> bytearray:
            data = bytearray()
            async for part in request.stream():
                data += part
                if len(data) > limit:
                    raise APIError(413, too_big)
            return data

        try:  # a body that never comes ends the wait (asyncio.timeout needs Python 3.11)
            data = await asyncio.wait_for(body(), self.read_timeout)
        except asyncio.TimeoutError:
            raise APIError(
                408, f"the request body took longer than {self.read_timeout:g} s"
            ) from None
        try:
            return json.loads(data)
        except RecursionError:  # "[[[[..." thousands deep
            raise APIError(400, "the request body's JSON is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, bad UTF-8, an int of > 4300 digits
            if "integer string conversion" in str(exc):  # Python's words, not the client's
                raise APIError(400, "a number in the request body has too many digits") from None
            raise APIError(400, f"malformed JSON in the request body: {exc}") from None

    def encode_prompt(self, prompt: str | list[int], unknown: str | None) -> list[int]:
        tok = self.model.tokenizer
        if isinstance(prompt, list):
            bad = [t for t in prompt if not 0 <= t < tok.vocab_size]
            if bad:
                raise APIError(
                    400, f"token id {bad[0]} is out of range [0, {tok.vocab_size})", "prompt"
                )
            ids = prompt
        else:
            ids = self._encode(prompt, unknown, "prompt")
        _check_length(ids, self.limits.max_prompt_tokens, "prompt")
        return ids

    def _encode(self, text: str, unknown: str | None, param: str) -> list[int]:
        """``text`` as token ids under the request's ``unknown`` policy; a refusal is a 400
        naming ``param``."""
        tok = self.model.tokenizer
        try:
            return tok.encode(text, unknown=unknown_policy(tok, unknown))
        except LstmgenError as exc:
            raise APIError(400, client_message(exc), param, "unencodable_prompt") from None

    def prompt_tokens_info(self, ids: list[int], k: int) -> list[TokenInfo]:
        """Log-probabilities of the prompt's own tokens (for ``echo`` with ``logprobs``)."""
        if not ids:
            return []
        tok = self.model.tokenizer
        scored = score_ids(self.model, ids, top_k=k)
        out, offset, dec = [], 0, tok.stream_decoder()
        for i, t in enumerate(ids):
            top = None
            if scored.top is not None:
                top = {token_text(tok.token_bytes(j)): v for j, v in scored.top[i].items()}
            text = token_text(tok.token_bytes(t))
            out.append(TokenInfo(text, scored.token_logprobs[i], offset, top))
            offset += len(dec.step(t))
        return out

    # --- endpoints ----------------------------------------------------------------------------

    async def health(self, request: Request) -> dict[str, Any]:
        # Public, for load balancers and probes; the load is for those with the key.
        try:
            await self.authorize(request)
        except APIError:
            return {"status": "ok"}
        return {
            "status": "ok",
            "model": self.model_name,
            "active_sequences": self.batcher.active,
            "queued_requests": self.batcher.queued,
            "steps": self.batcher.steps,
            "tokens_generated": self.batcher.tokens,
        }

    def model_card(self) -> dict[str, Any]:
        model, tok = self.model, self.model.tokenizer
        return {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "lstmgen",
            "config": model.config.to_dict(),
            "parameters": model.num_parameters(),
            "tokenizer": {"type": tok.kind, "vocab_size": tok.vocab_size},
            "labels": tok.labels,  # for the request's "label" field (issue #13)
            "feature_size": model.config.feature_size,  # the "features" field's length, 0: none
            "generation_config": model.generation_config.to_dict(),
            "limits": {
                **asdict(self.limits),
                "max_batch": self.max_batch,
                "auth": self.api_key is not None,
            },
        }

    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.model_card()]}

    async def get_model(self, model_id: str) -> dict[str, Any]:
        if model_id != self.model_name:
            raise APIError(404, f"model {model_id!r} does not exist", "model", "model_not_found")
        return self.model_card()

    async def score(self, request: Request) -> dict[str, Any]:
        req = parse_score(await self.read_json(request), self.model_name)
        tok = self.model.tokenizer
        ids = self._encode(req.text, req.unknown, "text")
        if not ids:
            raise APIError(400, "text has no tokens to score", "text")
        _check_length(ids, self.limits.max_score_tokens, "text")
        info = await run_in_threadpool(self.prompt_tokens_info, ids, req.logprobs)
        chars = len(tok.decode(ids))
        return score_object(self.model_name, len(ids), chars, info, req.logprobs)

    async def completions(self, request: Request) -> Any:
        model, tok = self.model, self.model.tokenizer
        req = parse_completion(
            await self.read_json(request), self.model_name, model.generation_config, self.limits
        )
        prompt_ids = [self.encode_prompt(p, req.unknown) for p in req.prompts]
        self._check_conditioning(req)
        specs = self._specs(req, prompt_ids)
        self._check_state(len(specs))
        heads = [Head() for _ in prompt_ids]
        if req.echo:
            heads = [Head(tok.decode(ids)) for ids in prompt_ids]
            if req.logprobs is not None:
                heads = [
                    Head(
                        h.text, await run_in_threadpool(self.prompt_tokens_info, ids, req.logprobs)
                    )
                    for h, ids in zip(heads, prompt_ids, strict=True)
                ]
        queue = Mailbox(asyncio.get_running_loop())
        try:
            job = self.batcher.submit(specs, queue.put)
        except BatcherClosed as exc:
            raise APIError(503, str(exc), type="server_error") from None
        out = Completion(
            id=f"cmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=self.model_name,
            heads=[heads[i // req.n] for i in range(len(specs))],  # choice i is of prompt i // n
            logprobs=req.logprobs,
            include_usage=req.include_usage,
        )
        prompt_tokens = sum(len(ids) for ids in prompt_ids)
        if req.stream:
            return StreamingResponse(
                self._events(out, req.echo, queue, len(specs), prompt_tokens, job.cancel),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            result = await unless_disconnected(request, _collect(queue, len(specs)))
        finally:
            job.cancel()  # done, or the client left: free the batch rows at once
        if result is None:
            return Response(status_code=499)  # nobody reads it; nginx's "client closed"
        texts, tokens, finish, generated = result
        return out.response(texts, tokens, finish, usage_object(prompt_tokens, generated))

    def _check_state(self, rows: int) -> None:
        """Refuse a request whose ``rows`` sequences would carry more state than the limit."""
        per_row = self._state_bytes()
        limit = self.limits.max_state_mib * 2**20
        if rows * per_row > limit:
            cfg = self.model.config
            what = f" (memory {cfg.memory:,} tokens)" if cfg.arch == "sha-lstm" else ""
            raise APIError(
                400,
                f"{rows} completion(s) x {per_row / 2**20:.2f} MiB of model state each{what} "
                f"is more than the server's limit of {self.limits.max_state_mib} MiB per request",
                "n",
            )

    def _state_bytes(self) -> int:
        """Bytes of one sequence's state (asked of the model once)."""
        if self._row_bytes is None:
            one = self.model.init_state(1)
            self._row_bytes = sum(t.numel() * t.element_size() for t in one)
        return self._row_bytes

    def _check_conditioning(self, req: CompletionRequest) -> None:
        """A 400 for a label the model does not know, or features it does not take."""
        if req.label is not None:
            try:
                self.model.tokenizer.label_id(req.label)
            except LstmgenError as exc:
                raise APIError(400, str(exc), "label", "unknown_label") from None
        if req.features is not None:
            size = self.model.config.feature_size
            if not size:
                raise APIError(400, "this model takes no feature vectors", "features")
            if len(req.features) != size:
                raise APIError(
                    400, f"features has {len(req.features)} numbers; the model takes {size}",
                    "features",
                )  # fmt: skip

    def _specs(self, req: CompletionRequest, prompt_ids: list[list[int]]) -> list[SequenceSpec]:
        """The batcher's sequences of a request: ``n`` per prompt, in OpenAI's choice order
        (prompt-major), seeds ``seed + i``."""
        tok = self.model.tokenizer
        # The text each choice continues: the echo the response shows before it, or else the
        # client's own prompt (a word model spaces its first word from it).
        after = [
            prompt if isinstance(prompt, str) and not req.echo else tok.decode(ids)
            for prompt, ids in zip(req.prompts, prompt_ids, strict=True)
        ]
        settings = RowSettings(req.temperature, req.top_k, req.top_p, req.repetition_penalty)
        head = () if req.label is None else (tok.label_id(req.label),)  # where a document starts
        specs = []
        for p, ids in enumerate(prompt_ids):
            for j in range(req.n):
                i = p * req.n + j
                specs.append(
                    SequenceSpec(
                        prompt_ids=(tok.bos_id, *head, *ids),
                        max_new_tokens=req.max_tokens,
                        settings=settings,
                        stop=req.stop,
                        seed=None if req.seed is None else req.seed + i,
                        logprobs=req.logprobs,
                        index=i,
                        after=after[p],
                        features=req.features,
                    )
                )
        return specs

    async def _events(
        self,
        out: Completion,
        echo: bool,
        queue: Mailbox,
        n: int,
        prompt_tokens: int,
        cancel: Callable[[], None],
    ) -> AsyncIterator[bytes]:
        """The stream of a request's ``n`` choices (after their echoes with ``echo``);
        ``cancel`` frees its rows at the end."""
        loop = asyncio.get_running_loop()
        generated = 0
        try:
            if echo:
                yield out.echo_event()
            left, sent = n, 0.0
            while left:
                # At most one event per stream_interval: under load a client gets a few tokens
                # per event instead of one, which saves a send and a JSON per token.
                wait = sent + self.stream_interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                chunks = await queue.get()
                errors = [c.error for c in chunks if c.error]
                if errors:
                    yield error_event(APIError(500, errors[0], type="server_error").body())
                    return
                for c in chunks:
                    if c.finish_reason:
                        generated += c.generated
                        left -= 1
                yield out.chunks_event(chunks)
                sent = loop.time()
            if out.include_usage:
                yield out.usage_event(usage_object(prompt_tokens, generated))
            yield DONE
        finally:
            cancel()  # the client left (or we are done): free the batch rows


async def _collect(
    queue: Mailbox, n: int
) -> tuple[list[str], list[list[TokenInfo]], list[str | None], int]:
    """Wait for all ``n`` choices of a non-streaming request: their texts, tokens, finish
    reasons, and the number of tokens generated."""
    texts, tokens = [""] * n, [[] for _ in range(n)]
    finish: list[str | None] = [None] * n
    left, generated = n, 0
    while left:
        for c in await queue.get():
            if c.error:
                raise APIError(500, c.error, type="server_error")
            texts[c.index] += c.text
            tokens[c.index] += c.tokens
            if c.finish_reason:
                finish[c.index] = c.finish_reason
                generated += c.generated
                left -= 1
    return texts, tokens, finish, generated
