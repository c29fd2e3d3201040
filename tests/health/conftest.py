"""Real backends on loopback for the health tests: tiny anyio HTTP/1.1 servers that can be told to
answer 200 or 500, to hang (accept and never answer), or to die and come back on the same port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Literal

import anyio
import anyio.abc
import pytest

Mode = Literal["ok", "error", "hang"]


class Backend:
    """One HTTP server on 127.0.0.1; ``mode`` decides how it answers the next request."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg
        self.port = 0
        self.mode: Mode = "ok"
        self.status_ok = 200
        self.status_error = 500
        self.body = b"ok"
        self.hits = 0
        self.connections = 0
        self.open_connections = 0
        self._scope: anyio.CancelScope | None = None
        self._stopped = anyio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._scope is not None

    async def start(self) -> None:
        """Listen (on the same port as before, after a `stop`)."""
        assert self._scope is None
        await self._tg.start(self._serve)

    async def stop(self) -> None:
        """Die: close the listener and every open connection."""
        if self._scope is not None:
            self._scope.cancel()
            await self._stopped.wait()

    async def _serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._stopped = anyio.Event()
        try:
            with anyio.CancelScope() as self._scope:
                listener = await anyio.create_tcp_listener(
                    local_host="127.0.0.1", local_port=self.port
                )
                async with listener:
                    self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
                    task_status.started()
                    await listener.serve(self._handle)
        finally:
            self._scope = None
            self._stopped.set()

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        self.open_connections += 1
        try:
            await self._converse(stream)
        finally:
            self.open_connections -= 1

    async def _converse(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        chunk = await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        return
                    buffer += chunk
                _, buffer = buffer.split(b"\r\n\r\n", 1)
                self.hits += 1
                if self.mode == "hang":
                    await anyio.sleep_forever()
                status = self.status_ok if self.mode == "ok" else self.status_error
                body = self.body if self.mode == "ok" else b"boom"
                head = (
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
                    "Content-Type: text/plain\r\n\r\n"
                ).encode()
                try:
                    await stream.send(head + body)
                except (anyio.BrokenResourceError, OSError):
                    return


BackendsFactory = Callable[[int], AbstractAsyncContextManager[list[Backend]]]


@pytest.fixture
def backends() -> BackendsFactory:
    """``async with backends(n) as servers:`` runs *n* real HTTP servers on loopback."""

    @asynccontextmanager
    async def run(n: int) -> AsyncIterator[list[Backend]]:
        async with anyio.create_task_group() as tg:
            servers = [Backend(tg) for _ in range(n)]
            for server in servers:
                await server.start()
            try:
                yield servers
            finally:
                tg.cancel_scope.cancel()

    return run
