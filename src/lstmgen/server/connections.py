"""uvicorn, configured so that idle or half-open connections cannot pile up (issue #10).

uvicorn (0.54) times out only a connection idle between two requests (``timeout_keep_alive``);
one that opens and never finishes its headers stays open for good (3,000 such connections all
stayed), and nothing caps how many are open. ``protocol`` wraps uvicorn's HTTP protocol with:

- a read deadline: a connection gets ``read_timeout`` seconds from its first byte (or from
  accepting it) to finish a request's headers, or is closed. ``Handlers.read_json`` gives the body
  the same time, then answers 408;
- a connection cap: a connection beyond ``max_connections`` is answered 503 and closed before
  anything of it is read.

>>> uvicorn.Server(uvicorn_config(app, read_timeout=15)).run()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

_BUSY_BODY = b'{"error": {"message": "too many connections", "type": "server_error"}}'
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


def _base_protocol() -> type[asyncio.Protocol]:
    """The class uvicorn's ``http="auto"`` picks: httptools when installed, else h11."""
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


class _Limits:
    """Mixed in before uvicorn's protocol class; uses its ``cycle``, ``transport``, ``loop``
    and ``connections`` (the server's set of open connections, this one included)."""

    read_timeout: float
    max_connections: int
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > self.max_connections:  # type: ignore[attr-defined]
            transport.write(BUSY)
            transport.close()
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _watch(self) -> None:
        """Arm the deadline while a request's headers are awaited; disarm once they are in."""
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle is not None and not cycle.response_complete:
            self._cancel()  # headers complete: the app has the request
        elif self._deadline is None and not self.transport.is_closing():  # type: ignore[attr-defined]
            loop = self.loop  # type: ignore[attr-defined]
            self._deadline = loop.call_later(self.read_timeout, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle is None or cycle.response_complete:  # still no complete headers
            self.transport.close()  # type: ignore[attr-defined]

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def protocol(read_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class with the read deadline and the connection cap."""
    base = _base_protocol()
    attrs = {"read_timeout": read_timeout, "max_connections": max_connections}
    return type(f"Limited{base.__name__}", (_Limits, base), attrs)


def uvicorn_config(
    app: Any,
    read_timeout: float = 15.0,
    keep_alive: float = 5.0,
    max_connections: int = 1000,
    log_level: str = "info",
) -> uvicorn.Config:
    """The server's uvicorn settings (``lstmgen serve`` and the tests use this)."""
    return uvicorn.Config(
        app,
        http=protocol(read_timeout, max_connections),
        timeout_keep_alive=keep_alive,  # type: ignore[arg-type]  # uvicorn takes floats too
        timeout_graceful_shutdown=10,  # then open streams are cut, so a stop never hangs
        log_level=log_level,
        access_log=log_level in ("info", "debug"),
    )
