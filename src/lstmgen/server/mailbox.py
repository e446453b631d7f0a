"""Between the decode thread and a request's handler: the ``Mailbox`` that carries one
request's chunks to the event loop, and ``unless_disconnected``, which gives up on work whose
client has left."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from .batcher import Chunk

T = TypeVar("T")


class Mailbox:
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


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
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
