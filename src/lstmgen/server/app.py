"""The HTTP API: OpenAI-compatible completions, scoring, model info and the playground page.

    POST /v1/completions   OpenAI's completions API (streaming as server-sent events)
    POST /v1/score         lstmgen's own: per-token log-probabilities, loss and perplexity of a text
    GET  /v1/models        the loaded model and its metadata (also /v1/models/{id})
    GET  /health           liveness, public; with the API key also the batcher's load
    GET  /                 the browser playground (static/playground.html)

This module is the wiring: routes, middleware, error handlers and the lifespan that starts and
stops the decode loop. What each endpoint does is in ``handlers.py`` (which checks requests with
``protocol.py`` and shapes answers with ``openai.py``); generation runs in the ``Batcher``'s
decode loop, which steps all active sequences of all requests as one batch. Errors are JSON in
OpenAI's shape; a bug becomes a 500 with a generic message, its traceback goes to the server log
only.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import LstmgenError
from ..models.base import Model
from .batcher import Batcher
from .guard import RequestGuard
from .handlers import Handlers, client_message
from .protocol import APIError, Limits

log = logging.getLogger("lstmgen.server")


def create_app(
    model: Model,
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
    handlers = Handlers(
        model=model,
        model_name=model_name,
        batcher=batcher,
        limits=limits,
        max_batch=max_batch,
        created=int(created if created is not None else time.time()),
        api_key=api_key,
        stream_interval=stream_interval,
        read_timeout=read_timeout,
    )
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
    _add_error_handlers(app)

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        # The page holds no data and no key; it asks for the key when the server needs one.
        return HTMLResponse(page)

    auth = [Depends(handlers.authorize)]
    app.get("/health")(handlers.health)
    app.get("/v1/models", dependencies=auth)(handlers.list_models)
    app.get("/v1/models/{model_id:path}", dependencies=auth)(handlers.get_model)
    app.post("/v1/score", dependencies=auth)(handlers.score)
    app.post("/v1/completions", dependencies=auth)(handlers.completions)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's error object: ours with their status, the library's as 400s,
    routing's as 404/405, a bug as a 500 whose traceback goes to the log only."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(LstmgenError)
    async def library_error(request: Request, exc: LstmgenError) -> JSONResponse:
        return JSONResponse(APIError(400, client_message(exc)).body(), status_code=400)

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
