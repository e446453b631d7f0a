"""The server over real sockets (uvicorn in a thread on 127.0.0.1): clients that leave, half-open
connections and too many connections (issue #10)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

pytest.importorskip(
    "uvicorn", reason="server tests need the serve extra: pip install lstmgen[serve]"
)
httpx = pytest.importorskip("httpx", reason="server tests need httpx (pip install httpx)")

import torch  # noqa: E402
import uvicorn  # noqa: E402

from lstmgen import LanguageModel, ModelConfig  # noqa: E402
from lstmgen.server.app import create_app  # noqa: E402
from lstmgen.server.connections import uvicorn_config  # noqa: E402
from lstmgen.server.protocol import Limits  # noqa: E402
from lstmgen.tokenizers import CharTokenizer  # noqa: E402


class LiveServer:
    """``lstmgen serve``'s uvicorn settings, on a free loopback port, in a thread."""

    def __init__(self, app, **settings):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, log_level="warning", **settings))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return s

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def closed_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes ``s`` (reading what it sent), None if it stays open."""
    s.settimeout(seconds)
    start = time.monotonic()
    try:
        while s.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    tok = CharTokenizer.fit(["ROMEO: the rose\n"])
    cfg = ModelConfig(vocab_size=tok.vocab_size, embedding_size=8, hidden_size=8, num_layers=2)
    return LanguageModel(cfg, tok).eval()


def request_bytes(body: dict, port: int) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def test_a_dropped_non_streaming_request_frees_its_rows(model):
    # Issue #10: dropped requests kept generating to the end, and new ones waited behind them.
    app = create_app(model, "tiny", limits=Limits(max_tokens=10**7), max_batch=8)
    server = LiveServer(app)
    batcher = app.state.batcher
    try:
        s = server.connect()
        s.sendall(request_bytes({"prompt": "ROMEO:", "max_tokens": 10**7, "n": 4}, server.port))
        deadline = time.monotonic() + 10
        while batcher.active < 4:  # generating: minutes of work for 4 x 10^7 tokens
            assert time.monotonic() < deadline
            time.sleep(0.01)
        s.close()
        left = time.monotonic()
        while batcher.active and time.monotonic() - left < 3:
            time.sleep(0.01)
        assert batcher.active == 0, "the rows of a client that left are still generating"
        r = httpx.post(server.url + "/v1/completions", json={"max_tokens": 5}, timeout=5)
        assert r.status_code == 200
    finally:
        server.stop()


def test_half_open_connections_are_closed_after_the_read_timeout(model):
    server = LiveServer(create_app(model, "tiny", read_timeout=0.5), read_timeout=0.5)
    try:
        silent = server.connect()  # never sends a byte
        half = server.connect()  # half a header, then nothing
        half.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        for s in (silent, half):
            took = closed_within(s, 5)
            assert took is not None and took < 3, "a half-open connection stayed open"
        # A request whose body never comes gets a 408 after the same time.
        slow = server.connect()
        slow.sendall(request_bytes({"prompt": "ROMEO:"}, server.port)[:-5])
        slow.settimeout(5)
        assert slow.recv(4096).startswith(b"HTTP/1.1 408")
        # A kept-alive connection that starts its next request and stalls is closed too.
        kept = server.connect()
        kept.sendall(request_bytes({"max_tokens": 1}, server.port))
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /health HTTP/1.1\r\nHo")
        took = closed_within(kept, 5)
        assert took is not None and took < 3
        # A complete request on a fresh connection is unaffected.
        assert httpx.get(server.url + "/health").json() == {
            "status": "ok", "model": "tiny", "active_sequences": 0, "queued_requests": 0,
            "steps": 1, "tokens_generated": 1,
        }  # fmt: skip
    finally:
        server.stop()


def test_connections_beyond_the_cap_are_refused(model):
    server = LiveServer(create_app(model, "tiny"), max_connections=2, read_timeout=10)
    try:
        first, second = server.connect(), server.connect()
        third = server.connect()
        third.settimeout(5)
        assert third.recv(4096).startswith(b"HTTP/1.1 503")
        assert closed_within(third, 5) is not None
        first.close()
        time.sleep(0.2)  # the server notices the close
        fourth = server.connect()
        fourth.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert fourth.recv(4096).startswith(b"HTTP/1.1 200")
        second.close()
    finally:
        server.stop()
