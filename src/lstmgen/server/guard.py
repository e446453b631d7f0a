"""Which web pages may drive the server: the Host and Origin checks (issue #10).

A server on 127.0.0.1 without an API key is reachable from any page the user's browser opens:
a cross-site ``fetch`` or ``<form>`` POST reaches it directly, and DNS rebinding (a name that
first points at the attacker, then at 127.0.0.1) even lets the page read the answers. Local
model servers (Ollama, llama.cpp, Jupyter) refuse both, and so does lstmgen:

- ``Host`` must name the server: localhost, 127.0.0.1, ::1 or the bound address (any port), or
  a name in ``allowed_hosts`` (``*`` = any). A rebound name fails here.
- A browser's ``Origin`` must be the server's own (the playground page) or one of
  ``cors_origins`` (``*`` = any); those allowed get proper CORS answers, preflights included
  (Starlette's ``CORSMiddleware``, inside this one). Clients that are not browsers send no Origin.

The third leg, ``Content-Type: application/json`` on POST bodies, is checked where bodies are
read (``Handlers.read_json``): no page can send that cross-site without a preflight.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .protocol import APIError

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(host: str) -> str:
    """``Host`` header -> the name without port or IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1:].partition("]")[0]
    if host.count(":") > 1:  # a bare IPv6 address
        return host
    return host.partition(":")[0].rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class RequestGuard:
    """ASGI middleware refusing foreign ``Host`` names and cross-origin requests with a 403."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Sequence[str] = (),
        cors_origins: Sequence[str] = (),
        bound_host: str | None = None,
    ):
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.hosts = {*LOCAL_NAMES, *(host_name(h) for h in allowed_hosts)}
        # Bound to every address (0.0.0.0, ::): any of the machine's addresses is the server's
        # own, and an address cannot be rebound, only a name can.
        bound_ip = None if bound_host is None else _ip(bound_host)
        self.any_ip = bound_ip is not None and bound_ip.is_unspecified
        if bound_host:
            self.hosts.add(host_name(bound_host))
        self.any_origin = "*" in cors_origins
        self.origins = {o.strip().lower().rstrip("/") for o in cors_origins}

    def host_ok(self, host: str | None) -> bool:
        if host is None or self.any_host:  # no Host: HTTP/1.0, never a browser
            return True
        name = host_name(host)
        return name in self.hosts or (self.any_ip and _ip(name) is not None)

    def origin_ok(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if self.any_origin or origin in self.origins:
            return True
        parts = urlsplit(origin)  # "null" (a sandboxed page, a file) is never the same origin
        return parts.scheme in ("http", "https") and parts.netloc == (host or "").lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            host, origin = headers.get("host"), headers.get("origin")
            if not self.host_ok(host):
                return await _refuse(
                    f"host {host_name(host or '')!r} is not this server's; to serve under that"
                    " name, start it with --allowed-hosts",
                    "forbidden_host",
                    scope,
                    receive,
                    send,
                )
            if origin is not None and not self.origin_ok(origin, host):
                return await _refuse(
                    f"cross-origin requests from {origin!r} are not allowed; to allow that"
                    " page, start the server with --cors-origins",
                    "forbidden_origin",
                    scope,
                    receive,
                    send,
                )
        await self.app(scope, receive, send)


async def _refuse(message: str, code: str, scope: Scope, receive: Receive, send: Send) -> None:
    err = APIError(403, message, code=code)
    await JSONResponse(err.body(), status_code=403)(scope, receive, send)
