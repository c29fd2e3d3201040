"""`UpstreamPool`: keep-alive httpcore connections for `ProxyApp`, O(1) per request.

httpcore's ``AsyncConnectionPool`` re-examines every pooled connection on each request and each
response close (an O(connections) scan, with a readability ``poll()`` syscall per idle
connection); at 32 concurrent requests that scan, not the network, capped a proxy at a few hundred
requests a second. This pool keeps a LIFO stack of idle connections per
origin: taking one checks only that one (expired, or closed by the server meanwhile), giving one
back is an append. The HTTP/1.1 work stays httpcore's: a plain-HTTP endpoint gets an
`httpcore.AsyncHTTP11Connection` on a socket this pool opens (skipping ``AsyncHTTPConnection``'s
per-request lock, an event-loop round trip); an ``https`` one an ``AsyncHTTPConnection``, which
does the TLS handshake.

All bookkeeping is synchronous, so a cancelled request can never leave it half-updated; only
closing a connection awaits. Connections belong to the event loop that opened them: a request in
another loop (a server run again with lifespan events off, Starlette's TestClient without ``with``)
leaves the old loop's idle connections behind instead of reusing them.
"""

from __future__ import annotations

import asyncio
from typing import final

import anyio
import httpcore

from ._cleanup import finish

__all__ = ["Connection", "UpstreamPool", "event_loop"]

Connection = httpcore.AsyncHTTP11Connection | httpcore.AsyncHTTPConnection


@final
class UpstreamPool:
    """Idle keep-alive connections by origin, and a cap on requests in flight upstream.

    Args:
        max_connections: Most upstream requests (so connections in use) at once.
        max_keepalive_connections: Most idle connections kept per origin.
        keepalive_expiry: Seconds an idle connection is kept.
        pool_timeout: Seconds to wait for a free place when *max_connections* are in use.
    """

    __slots__ = (
        "_active",
        "_backend",
        "_connect_timeout",
        "_expiry",
        "_idle",
        "_keep",
        "_limit",
        "_loop",
        "_pool_timeout",
        "_slots",
    )

    def __init__(
        self,
        *,
        max_connections: int,
        max_keepalive_connections: int,
        keepalive_expiry: float,
        pool_timeout: float,
        connect_timeout: float,
    ) -> None:
        self._limit = max_connections
        self._keep = max_keepalive_connections
        self._expiry = keepalive_expiry
        self._pool_timeout = pool_timeout
        self._connect_timeout = connect_timeout
        self._backend = httpcore.AnyIOBackend()  # anyio: asyncio and trio alike
        self._idle: dict[str, list[Connection]] = {}  # by endpoint URL
        self._active = 0
        self._slots: anyio.Semaphore | None = None  # made in the server's event loop, on first use
        self._loop: object = None  # the event loop the idle connections belong to

    @property
    def active(self) -> int:
        """Connections carrying a request now."""
        return self._active

    @property
    def idle(self) -> int:
        """Idle keep-alive connections."""
        return sum(len(stack) for stack in self._idle.values())

    async def acquire(self, key: str, origin: httpcore.Origin) -> tuple[Connection, bool]:
        """A connection to *origin* (named *key*, its URL) and whether it was reused.

        Raises:
            httpcore.PoolTimeout: *max_connections* stayed in use for *pool_timeout* seconds.
            httpcore.ConnectError: A new connection could not be opened.
            httpcore.ConnectTimeout: Opening one took longer than *connect_timeout*.
        """
        slots = self._slots
        if slots is None:
            slots = self._slots = anyio.Semaphore(self._limit)
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.move_on_after(self._pool_timeout) as scope:
                await slots.acquire()
            if scope.cancelled_caught:
                msg = f"all {self._limit} upstream connections stayed busy"
                raise httpcore.PoolTimeout(msg) from None
        self._active += 1
        loop = event_loop()
        if loop is not self._loop:
            # Another event loop: the idle connections are the old one's, which has stopped (or
            # runs in another thread); they cannot be used or closed from here. Left to the
            # garbage collector (and the OS).
            self._loop = loop
            self._idle = {}
        try:
            stack = self._idle.get(key)
            while stack:
                connection = stack.pop()
                if connection.is_idle() and not connection.has_expired():
                    return connection, True
                await finish(connection.aclose)  # expired, or the server closed it meanwhile
            if origin.scheme != b"http":
                return httpcore.AsyncHTTPConnection(origin, keepalive_expiry=self._expiry), False
            stream = await self._backend.connect_tcp(
                origin.host.decode("ascii"), origin.port, timeout=self._connect_timeout
            )
        except BaseException:
            self._active -= 1
            slots.release()
            raise
        fresh = httpcore.AsyncHTTP11Connection(origin, stream, keepalive_expiry=self._expiry)
        return fresh, False

    async def release(self, key: str, connection: Connection) -> None:
        """Take *connection* back after its response was closed: kept if reusable, else closed.

        Call it exactly once per `acquire`, also after errors and cancellation.
        """
        self._active -= 1
        slots = self._slots
        if slots is not None:
            slots.release()
        if connection.is_idle() and not connection.is_closed():
            stack = self._idle.setdefault(key, [])
            if len(stack) < self._keep:
                stack.append(connection)
                return
        await finish(connection.aclose)

    async def aclose(self) -> None:
        """Close every idle connection."""
        stacks, self._idle = self._idle, {}
        for stack in stacks.values():
            for connection in stack:
                await finish(connection.aclose)


def event_loop() -> object:
    """What connections belong to: the running asyncio loop, or the trio run's token (never
    None, so it is never the "no loop yet" of a client that has not opened)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # trio
        import trio

        return trio.lowlevel.current_trio_token()
