"""The HTTP API: OpenAI-compatible completions, scoring, model info and the playground page.

    POST /v1/completions   OpenAI's completions API (streaming as server-sent events)
    POST /v1/score         lstmgen's own: per-token log-probabilities, loss and perplexity of a text
    GET  /v1/models        the loaded model and its metadata (also /v1/models/{id})
    GET  /health           liveness, public; with the API key also the batcher's load
    GET  /                 the browser playground (static/playground.html)

Handlers only check requests and shape responses; generation runs in the ``Batcher``'s decode
loop, which steps all active sequences of all requests as one batch. Errors are JSON in OpenAI's
shape; a bug becomes a 500 with a generic message, its traceback goes to the server log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import asdict
from importlib import resources
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import LstmgenError
from ..sampling import effective_temperature, effective_top_p
from ..tokenizers import UnknownTextError, unknown_policy
from .batcher import Batcher, BatcherClosed, Chunk, SequenceSpec, TokenInfo, token_text
from .guard import RequestGuard
from .protocol import APIError, Limits, parse_completion, parse_score
from .rows import RowSettings
from .scoring import score_ids

log = logging.getLogger("lstmgen.server")
T = TypeVar("T")


def create_app(
    model: Any,
    model_name: str = "lstmgen",
    api_key: str | None = None,
    limits: Limits | None = None,
    max_batch: int = 64,
    created: int | None = None,
    stream_interval: float = 0.05,
    read_timeout: float = 30.0,
    allowed_hosts: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    bound_host: str | None = None,
) -> FastAPI:
    """The ASGI app serving ``model``. The decode loop starts and stops with the app's lifespan.
    ``stream_interval`` is the shortest time between two events of one stream;
    ``read_timeout`` the longest wait for a request's body. Requests must name the server in
    ``Host`` (localhost, ``bound_host`` or one of ``allowed_hosts``) and come from its own page
    or one of ``cors_origins`` (``guard.py``).

    >>> app = create_app(LanguageModel.from_pretrained("runs/poems"), "poems")  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    batcher = Batcher(model, max_batch=max_batch)
    limits = limits or Limits()
    limits = Limits(**{**asdict(limits), "max_choices": min(limits.max_choices, max_batch)})
    tok = model.tokenizer
    created = int(created if created is not None else time.time())
    page = resources.files(__package__).joinpath("static/playground.html").read_text("utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(batcher.close)

    app = FastAPI(
        title="lstmgen",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.batcher = batcher
    # Added last = outermost: the guard refuses first; CORS answers the origins it let through.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )
    app.add_middleware(
        RequestGuard,
        allowed_hosts=tuple(allowed_hosts),
        cors_origins=tuple(cors_origins),
        bound_host=bound_host,
    )

    # --- errors -------------------------------------------------------------------------------

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(LstmgenError)
    async def library_error(request: Request, exc: LstmgenError) -> JSONResponse:
        return JSONResponse(APIError(400, _message(exc)).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = (
            f"no such endpoint: {request.method} {request.url.path}"
            if exc.status_code == 404
            else f"{request.method} is not allowed on {request.url.path}"
            if exc.status_code == 405
            else str(exc.detail)
        )
        err = APIError(exc.status_code, message, type="invalid_request_error")
        return JSONResponse(err.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(APIError(400, "invalid request").body(), status_code=400)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("error while handling %s %s", request.method, request.url.path, exc_info=exc)
        err = APIError(500, "internal server error", type="server_error")
        return JSONResponse(err.body(), status_code=500)

    # --- helpers ------------------------------------------------------------------------------

    async def authorize(request: Request) -> None:  # async: no thread pool hop per request
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), api_key.encode()
        ):
            raise APIError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )

    async def read_json(request: Request) -> Any:
        # A JSON content type is what makes a cross-site <form> or no-cors fetch impossible
        # without a CORS preflight (issue #10); the playground and every client send it.
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            raise APIError(415, "send the body as JSON, with 'Content-Type: application/json'")
        too_big = f"request body is larger than {limits.max_body_bytes} bytes"
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise APIError(413, too_big)

        async def body() -> bytearray:
            data = bytearray()
            async for part in request.stream():
                data += part
                if len(data) > limits.max_body_bytes:
                    raise APIError(413, too_big)
            return data

        try:  # a body that never comes ends the wait (asyncio.timeout needs Python 3.11)
            data = await asyncio.wait_for(body(), read_timeout)
        except asyncio.TimeoutError:
            raise APIError(408, f"the request body took longer than {read_timeout:g} s") from None
        try:
            return json.loads(data)
        except RecursionError:  # "[[[[..." thousands deep
            raise APIError(400, "the request body's JSON is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, bad UTF-8, an int of > 4300 digits
            if "integer string conversion" in str(exc):  # Python's words, not the client's
                raise APIError(400, "a number in the request body has too many digits") from None
            raise APIError(400, f"malformed JSON in the request body: {exc}") from None

    def encode_prompt(prompt: str | list[int], unknown: str | None) -> list[int]:
        if isinstance(prompt, list):
            bad = [t for t in prompt if not 0 <= t < tok.vocab_size]
            if bad:
                raise APIError(
                    400, f"token id {bad[0]} is out of range [0, {tok.vocab_size})", "prompt"
                )
            ids = prompt
        else:
            try:
                ids = tok.encode(prompt, unknown=unknown_policy(tok, unknown))
            except LstmgenError as exc:
                raise APIError(400, _message(exc), "prompt", "unencodable_prompt") from None
        if len(ids) > limits.max_prompt_tokens:
            raise APIError(
                400,
                f"prompt has {len(ids)} tokens, more than the server's limit of "
                f"{limits.max_prompt_tokens}",
                "prompt",
                "context_length_exceeded",
            )
        return ids

    def logprobs_object(tokens: list[TokenInfo], k: int) -> dict[str, Any]:
        """OpenAI's (legacy) logprobs object."""
        return {
            "tokens": [t.token for t in tokens],
            "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [t.top or {} for t in tokens] if k > 0 else None,
            "text_offset": [t.offset for t in tokens],
        }

    def prompt_tokens_info(ids: list[int], k: int) -> list[TokenInfo]:
        """Log-probabilities of the prompt's own tokens (for ``echo`` with ``logprobs``)."""
        if not ids:
            return []
        scored = score_ids(model, ids, top_k=k)
        out, offset, dec = [], 0, tok.stream_decoder()
        for i, t in enumerate(ids):
            top = None
            if scored.top is not None:
                top = {token_text(tok.token_bytes(j)): v for j, v in scored.top[i].items()}
            text = token_text(tok.token_bytes(t))
            out.append(TokenInfo(text, scored.token_logprobs[i], offset, top))
            offset += len(dec.step(t))
        return out

    # --- routes -------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        # The page holds no data and no key; it asks for the key when the server needs one.
        return HTMLResponse(page)

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        # Public, for load balancers and probes; the load is for those with the key.
        try:
            await authorize(request)
        except APIError:
            return {"status": "ok"}
        return {
            "status": "ok",
            "model": model_name,
            "active_sequences": batcher.active,
            "queued_requests": batcher.queued,
            "steps": batcher.steps,
            "tokens_generated": batcher.tokens,
        }

    def model_card() -> dict[str, Any]:
        return {
            "id": model_name,
            "object": "model",
            "created": created,
            "owned_by": "lstmgen",
            "config": model.config.to_dict(),
            "parameters": model.num_parameters(),
            "tokenizer": {"type": tok.kind, "vocab_size": tok.vocab_size},
            "generation_config": model.generation_config.to_dict(),
            "limits": {**asdict(limits), "max_batch": max_batch, "auth": api_key is not None},
        }

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(authorize)])
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id != model_name:
            raise APIError(404, f"model {model_id!r} does not exist", "model", "model_not_found")
        return model_card()

    @app.post("/v1/score", dependencies=[Depends(authorize)])
    async def score(request: Request) -> dict[str, Any]:
        req = parse_score(await read_json(request), model_name)
        try:
            ids = tok.encode(req.text, unknown=unknown_policy(tok, req.unknown))
        except LstmgenError as exc:
            raise APIError(400, _message(exc), "text", "unencodable_prompt") from None
        if not ids:
            raise APIError(400, "text has no tokens to score", "text")
        if len(ids) > limits.max_score_tokens:
            raise APIError(
                400,
                f"text has {len(ids)} tokens, more than the server's limit of "
                f"{limits.max_score_tokens}",
                "text",
                "context_length_exceeded",
            )
        info = await run_in_threadpool(prompt_tokens_info, ids, req.logprobs)
        loss = -math.fsum(t.logprob for t in info) / len(info)
        chars = len(tok.decode(ids))
        return {
            "object": "score",
            "model": model_name,
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "bits_per_token": loss / math.log(2),
            "bits_per_char": loss * len(ids) / math.log(2) / max(chars, 1),
            "logprobs": logprobs_object(info, req.logprobs),
            "usage": {"prompt_tokens": len(ids), "total_tokens": len(ids)},
        }

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(request: Request) -> Any:
        req = parse_completion(
            await read_json(request), model_name, model.generation_config, limits
        )
        prompt_ids = [encode_prompt(p, req.unknown) for p in req.prompts]
        # The text each choice continues: the echo the response shows before it, or else the
        # client's own prompt (a word model spaces its first word from it).
        after = [
            prompt if isinstance(prompt, str) and not req.echo else tok.decode(ids)
            for prompt, ids in zip(req.prompts, prompt_ids, strict=True)
        ]
        settings = RowSettings(
            effective_temperature(req.temperature),
            req.top_k,
            effective_top_p(req.top_p),
            req.repetition_penalty,
        )
        specs = []
        for p, ids in enumerate(prompt_ids):
            for j in range(req.n):
                i = p * req.n + j  # OpenAI's choice order: prompt-major
                specs.append(
                    SequenceSpec(
                        prompt_ids=(tok.bos_id, *ids),
                        max_new_tokens=req.max_tokens,
                        settings=settings,
                        stop=req.stop,
                        seed=None if req.seed is None else req.seed + i,
                        logprobs=req.logprobs,
                        index=i,
                        after=after[p],
                    )
                )
        echo_text = [tok.decode(ids) if req.echo else "" for ids in prompt_ids]
        echo_info: list[list] = [[] for _ in prompt_ids]
        if req.echo and req.logprobs is not None:
            echo_info = [
                await run_in_threadpool(prompt_tokens_info, ids, req.logprobs) for ids in prompt_ids
            ]
        queue = _Mailbox(asyncio.get_running_loop())
        try:
            job = batcher.submit(specs, queue.put)
        except BatcherClosed as exc:
            raise APIError(503, str(exc), type="server_error") from None
        cid, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        usage = {"prompt_tokens": sum(len(ids) for ids in prompt_ids), "completion_tokens": 0}

        def head(i: int) -> tuple[str, list]:
            p = i // req.n
            return echo_text[p], echo_info[p]

        if not req.stream:
            try:
                result = await _unless_disconnected(request, _collect(queue, len(specs), usage))
            finally:
                job.cancel()  # done, or the client left: free the batch rows at once
            if result is None:
                return Response(status_code=499)  # nobody reads it; nginx's "client closed"
            texts, tokens, finish = result
            choices = []
            for i in range(len(specs)):
                echo, einfo = head(i)
                lp = None
                if req.logprobs is not None:
                    lp = logprobs_object(einfo + _shifted(tokens[i], len(echo)), req.logprobs)
                choices.append(
                    {
                        "index": i,
                        "text": echo + texts[i],
                        "logprobs": lp,
                        "finish_reason": finish[i],
                    }
                )
            return {
                "id": cid,
                "object": "text_completion",
                "created": now,
                "model": model_name,
                "choices": choices,
                "usage": _usage(usage),
            }

        async def events() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()

            def event(choices: list[dict], **extra: Any) -> bytes:
                data = {
                    "id": cid,
                    "object": "text_completion",
                    "created": now,
                    "model": model_name,
                    "choices": choices,
                    **({"usage": None} if req.include_usage else {}),
                    **extra,
                }
                return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"

            try:
                if req.echo:
                    first = []
                    for i in range(len(specs)):
                        echo, einfo = head(i)
                        lp = None
                        if req.logprobs is not None:
                            lp = logprobs_object(einfo, req.logprobs)
                        first.append(
                            {"index": i, "text": echo, "logprobs": lp, "finish_reason": None}
                        )
                    yield event(first)
                left, sent = len(specs), 0.0
                while left:
                    # At most one event per stream_interval: under load a client gets a few
                    # tokens per event instead of one, which saves a send and a JSON per token.
                    wait = sent + stream_interval - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    chunks = await queue.get()
                    errors = [c.error for c in chunks if c.error]
                    if errors:
                        err = APIError(500, errors[0], type="server_error")
                        yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
                        return
                    merged: dict[int, dict[str, Any]] = {}
                    for c in chunks:
                        m = merged.setdefault(
                            c.index, {"index": c.index, "text": "", "tokens": [], "fin": None}
                        )
                        m["text"] += c.text
                        m["tokens"] += c.tokens
                        if c.finish_reason:
                            m["fin"] = c.finish_reason
                            usage["completion_tokens"] += c.generated
                            left -= 1
                    choices = []
                    for i, m in sorted(merged.items()):
                        echo, _ = head(i)
                        lp = None
                        if req.logprobs is not None:
                            lp = logprobs_object(_shifted(m["tokens"], len(echo)), req.logprobs)
                        choices.append(
                            {
                                "index": i,
                                "text": m["text"],
                                "logprobs": lp,
                                "finish_reason": m["fin"],
                            }
                        )
                    yield event(choices)
                    sent = loop.time()
                if req.include_usage:
                    yield event([], usage=_usage(usage))
                yield b"data: [DONE]\n\n"
            finally:
                job.cancel()  # the client left (or we are done): free the batch rows

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


class _Mailbox:
    """Chunks from the decode thread for one request, read on the event loop.

    The decode thread wakes the event loop (``call_soon_threadsafe``, a pipe write) only when
    the reader is already waiting; a reader that comes back after ``stream_interval`` takes
    what arrived meanwhile without any wake-up. One wake-up per token per request cost a third
    of the decode thread's time at one client (py-spy on benchmarks/load_server.py)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.lock = threading.Lock()
        self.items: list[Chunk] = []
        self.waiter: asyncio.Future | None = None

    def put(self, chunks: list[Chunk]) -> None:  # on the decode thread
        with self.lock:
            self.items += chunks
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            self.loop.call_soon_threadsafe(_wake, waiter)

    async def get(self) -> list[Chunk]:  # on the event loop
        with self.lock:
            if self.items:
                items, self.items = self.items, []
                return items
            waiter = self.waiter = self.loop.create_future()
        await waiter
        with self.lock:
            items, self.items = self.items, []
        return items


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _collect(
    queue: _Mailbox, n: int, usage: dict[str, int]
) -> tuple[list[str], list[list], list[str | None]]:
    """Wait for all ``n`` choices of a non-streaming request."""
    texts, tokens = [""] * n, [[] for _ in range(n)]
    finish: list[str | None] = [None] * n
    left = n
    while left:
        for c in await queue.get():
            if c.error:
                raise APIError(500, c.error, type="server_error")
            texts[c.index] += c.text
            tokens[c.index] += c.tokens
            if c.finish_reason:
                finish[c.index] = c.finish_reason
                usage["completion_tokens"] += c.generated
                left -= 1
    return texts, tokens, finish


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """``await work``, or None as soon as the client disconnects (the work is then cancelled).

    Once the body is read, the server's next ASGI message for this request is
    ``http.disconnect``: it comes when the client closes the connection, or after the response
    is sent. A non-streaming request that waited for its result alone kept its rows generating
    until the end (issue #10: 40 dropped requests held 63 rows for over a minute)."""
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        return None
    return task.result()


def _message(exc: LstmgenError) -> str:
    """The error for an HTTP client: advice names the request field, not the CLI flag."""
    if isinstance(exc, UnknownTextError):
        return exc.advise('"unknown": "drop" or "replace" in the request')
    return str(exc)


def _shifted(tokens: list[TokenInfo], by: int) -> list[TokenInfo]:
    """Offsets into the generated text -> offsets into the returned text (after the echo)."""
    return [dataclasses.replace(t, offset=t.offset + by) for t in tokens] if by else tokens


def _usage(usage: dict[str, int]) -> dict[str, int]:
    return {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
