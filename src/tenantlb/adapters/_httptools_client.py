"""`HttptoolsTransport`: `ProxyApp`'s fastest upstream client, on asyncio (``client="httptools"``).

A small HTTP/1.1 client made for a proxy and nothing else: an asyncio protocol per connection (no
stream objects, no task), httptools' compiled parser (llhttp, which uvicorn uses to read
requests) to read answers, a LIFO stack of idle keep-alive connections per endpoint, and headers
kept as the lists of byte pairs the proxy already has (no header objects, cookies, redirects or
decompression). On CPython a proxy spends most of its time in its HTTP client; this one costs
about a third of aiohttp's per request (see benchmarks/ANALYSIS.md).

Every piece of bookkeeping (the connection limit, the idle stacks, closing a connection) is
synchronous, so neither a cancellation nor a failure can leave it half-updated.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any, Final, cast, final
from urllib.parse import urlsplit

from ._headers import framed
from ._transport import UpstreamFailure, UpstreamResponse, wait_for_slot
from ._upstream import event_loop

__all__ = ["HttptoolsTransport"]

# Body bytes buffered from an endpoint before reading from it pauses (the client is slower).
_HIGH: Final = 256 * 1024
# Bytes in a row an endpoint may send that are neither body nor the end of a head (a head, its
# trailers): httptools sets no limit (h11 allows 16 KiB, aiohttp 8 KiB a line), and keeps them.
_MAX_HEAD: Final = 64 * 1024


class EndpointClosed(ConnectionResetError):
    """The endpoint closed the connection before its answer was complete."""


class BadAnswer(ConnectionResetError):
    """The endpoint's answer is not valid HTTP/1.1 (or switches protocols, which is not proxied)."""


@final
class HttptoolsTransport:
    """Sends requests over pooled keep-alive connections, parsed by httptools; asyncio only.

    With *lazy_read*, the read timeout of the answer and of a small body is left to the caller
    (`read_within`); a streamed body times each chunk itself. Without it every wait for the
    endpoint is timed here.
    """

    def __init__(
        self,
        *,
        timeouts: dict[str, float],
        max_connections: int,
        max_keepalive_connections: int,
        keepalive_expiry: float,
        lazy_read: bool = False,
    ) -> None:
        from . import require

        self._httptools: Any = require("httptools", "httptools")
        self._timeouts = timeouts
        self._limit = max_connections
        self._keep = max_keepalive_connections
        self._expiry = keepalive_expiry
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tls: ssl.SSLContext | None = None
        self._active = 0
        self._idle: dict[str, list[_Connection]] = {}  # by endpoint URL; the last is the newest
        self._swept = 0.0
        self._origins: dict[str, tuple[str, int, bool]] = {}
        self.read_within: float | None = timeouts["read"] if lazy_read else None
        # The answer's and a small body's read timeout, unless the caller enforces it.
        self._head_within: float | None = None if lazy_read else timeouts["read"]

    def counts(self) -> tuple[int, int]:
        return self._active, sum(len(stack) for stack in self._idle.values())

    async def aclose(self) -> None:
        # The next request opens afresh, in its own event loop (a server may run this app again).
        self._loop = None
        self._slots = None
        stacks, self._idle = self._idle, {}
        for stack in stacks.values():
            for connection in stack:
                # Not a graceful close: TLS would wait for the endpoint's close_notify, and the
                # server's loop may stop first (an unclosed socket). Closed in the next iteration.
                connection.abort()
        await asyncio.sleep(0)

    def _open(self) -> asyncio.AbstractEventLoop:
        try:
            asyncio.current_task()
        except RuntimeError:
            msg = "ProxyApp(client='httptools') runs on asyncio only; use client='httpcore' on trio"
            raise RuntimeError(msg) from None
        if self._loop is not None:  # another loop, no aclose() between (lifespan off): the old
            self._idle = {}  # loop's connections can be neither used nor closed; left to the GC
        self._loop = loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self._limit)  # of this loop (one with waiters is bound)
        return loop

    async def send(
        self,
        url: str,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterable[bytes] | None,
        chunked: bool,
    ) -> UpstreamResponse:
        loop = self._loop
        if loop is None or loop is not event_loop():  # under trio, _open says why not
            loop = self._open()
        slots = self._slots
        assert slots is not None  # made with the loop
        if slots.locked():
            await wait_for_slot(slots, self._limit, self._timeouts["pool"])
        else:
            await slots.acquire()  # returns at once
        self._active += 1
        connection: _Connection | None = None
        try:
            head = _head(method, target, headers, chunked)
            connection = self._idle_connection(url, loop)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(url, loop)
            response = _Response(self, url, connection, slots, method == "HEAD")
            connection.start(response, head)
            if body is None:
                response.sent = True
            else:
                await self._send_body(connection, response, body, chunked)
            # headers is a list the parser appends to: a Sequence to the proxy
            return cast(UpstreamResponse, await response.wait_head(reused))
        except BaseException:
            if connection is not None:
                connection.abort()
            self._release(slots)
            raise

    def _release(self, slots: asyncio.Semaphore) -> None:
        self._active -= 1
        slots.release()  # the one taken: `aclose` may have made another since

    def _idle_connection(self, url: str, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        """The newest idle connection to *url* still usable, closing expired ones on the way."""
        now = loop.time()
        if now - self._swept > self._expiry:
            self._sweep(now)
        stack = self._idle.get(url)
        while stack:
            connection = stack.pop()
            if not connection.closed and now - connection.idle_since < self._expiry:
                return connection
            connection.close()
        return None

    def _sweep(self, now: float) -> None:
        """Close every expired idle connection (also those to endpoints no longer used)."""
        self._swept = now
        for url, stack in list(self._idle.items()):
            keep = []
            for connection in stack:
                if not connection.closed and now - connection.idle_since < self._expiry:
                    keep.append(connection)
                else:
                    connection.close()
            if keep:
                self._idle[url] = keep
            else:
                del self._idle[url]

    def _give_back(self, url: str, connection: _Connection, slots: asyncio.Semaphore) -> None:
        """Keep *connection* idle, unless the pool holds enough or was closed since it was taken
        (*slots*, the semaphore of the pool it came from, is no longer the pool's)."""
        loop = self._loop
        stack = self._idle.setdefault(url, [])
        if loop is not None and slots is self._slots and len(stack) < self._keep:
            connection.idle_since = loop.time()
            stack.append(connection)
        else:
            connection.close()

    async def _connect(self, url: str, loop: asyncio.AbstractEventLoop) -> _Connection:
        origin = self._origins.get(url)
        if origin is None:
            origin = _origin(url)
            if len(self._origins) >= 4096:
                self._origins.clear()
            self._origins[url] = origin
        host, port, tls = origin
        if tls and self._tls is None:
            self._tls = ssl.create_default_context()
        parser = self._httptools.HttpResponseParser
        try:
            async with asyncio.timeout(self._timeouts["connect"]):
                _, connection = await loop.create_connection(
                    lambda: _Connection(parser),
                    host,
                    port,
                    ssl=self._tls if tls else None,
                    server_hostname=host if tls else None,
                )
        except TimeoutError as exc:
            raise UpstreamFailure(exc, kind="connect_timeout") from exc
        except OSError as exc:
            raise UpstreamFailure(exc, kind="connect") from exc
        return connection

    async def _send_body(
        self,
        connection: _Connection,
        response: _Response,
        body: AsyncIterable[bytes],
        chunked: bool,
    ) -> None:
        """Stream the request body; stops early (quietly) when the endpoint closed or its whole
        answer arrived, as an endpoint may refuse a body before reading it (the answer is then
        read). An answer still arriving is no refusal: an endpoint may stream its answer while
        it reads the body (an echo), and waits for the rest of it."""
        chunks = aiter(body)
        try:
            async for chunk in chunks:
                if connection.closed or response.finished:
                    return
                if chunk:
                    connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    if connection.paused:
                        await self._drain(connection)
                        if connection.closed or response.finished:
                            return
            if chunked and not connection.closed:
                connection.write(b"0\r\n\r\n")
            response.sent = True
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]  # Body's is a generator

    async def _drain(self, connection: _Connection) -> None:
        try:
            async with asyncio.timeout(self._timeouts["write"]):
                await connection.writable()
        except TimeoutError as exc:
            raise UpstreamFailure(exc, kind="timeout") from exc


def _origin(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    return host, parts.port or (443 if tls else 80), tls


def _head(method: str, target: bytes, headers: list[tuple[bytes, bytes]], chunked: bool) -> bytes:
    """The request line and header block; a CR, LF or NUL where none may be is refused."""
    try:
        lines = [b"%s %s HTTP/1.1" % (method.encode("ascii"), target)]
    except UnicodeEncodeError:
        msg = "the method is not ASCII"
        raise UpstreamFailure(ValueError(msg), kind="local") from None
    lines += [name + b": " + value for name, value in headers]
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    lines += (b"", b"")
    head = b"\r\n".join(lines)
    breaks = len(lines) - 1
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks or b"\0" in head:
        msg = "a CR, LF or NUL in the request line or a header"
        raise UpstreamFailure(ValueError(msg), kind="local")
    return head


@final
class _Connection(asyncio.Protocol):
    """One connection to an endpoint: feeds what arrives to httptools, which calls back."""

    def __init__(self, make_parser: Any) -> None:
        self._make_parser = make_parser
        self._parser: Any = make_parser(self)
        self._transport: asyncio.Transport | None = None
        self._response: _Response | None = None
        self._writable: asyncio.Future[None] | None = None
        self._informational = False
        self._progress = False  # the bytes fed ended a head or carried body
        self._unread = 0  # bytes fed in a row that did neither (see _MAX_HEAD)
        self.closed = False
        self.broken = False  # something arrived that no request asked for: never reused
        self.paused = False  # writing is paused: the endpoint reads slower than we send
        self.reading = True
        self.idle_since = 0.0

    # -- used by the transport and the response

    def start(self, response: _Response, head: bytes) -> None:
        self._response = response
        self._unread = 0
        self.write(head)

    def write(self, data: bytes) -> None:
        if not self.closed and self._transport is not None:
            self._transport.write(data)

    async def writable(self) -> None:
        if self.paused and not self.closed:
            waiter = self._writable = asyncio.get_running_loop().create_future()
            await waiter

    def pause(self, pause: bool) -> None:
        """Stop or resume reading from the endpoint (flow control of a buffered body)."""
        transport = self._transport
        if transport is not None and not self.closed and self.reading == pause:
            self.reading = not pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closed = True
        self._response = None
        if self._transport is not None:
            self._transport.abort()

    def done(self) -> None:
        """The current exchange is over (its response was closed)."""
        self._response = None
        if not self.reading:
            self.pause(False)

    # -- asyncio's protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None or response.finished:
            self.broken = True  # bytes nobody asked for: this connection cannot be trusted
            self.abort()
            return
        self._progress = False
        try:
            self._parser.feed_data(data)
        except Exception as exc:  # httptools.HttpParserError, HttpParserUpgrade
            response.fail(BadAnswer(f"the endpoint's answer is not valid HTTP/1.1: {exc}"))
            self.abort()
            return
        if self._progress:
            self._unread = 0
        elif not response.finished:
            self._unread += len(data)
            if self._unread > _MAX_HEAD:  # an endless head (or trailers): never buffered
                response.fail(BadAnswer(f"the endpoint's answer head is over {_MAX_HEAD} bytes"))
                self.abort()

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is not None and not response.finished:
            response.lost(exc)
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.wake_writer()

    def wake_writer(self) -> None:
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools' callbacks

    def on_message_begin(self) -> None:
        response = self._response
        if response is None or response.finished:  # a second answer to one request begins:
            self.broken = True  # whatever follows of it must not answer the next request

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self._response
        if response is not None and not response.finished:
            response.headers.append((name, value))
        else:
            self.broken = True

    def on_headers_complete(self) -> None:
        self._progress = True
        response = self._response
        if response is None or response.finished:  # a second answer to one request
            self.broken = True
            return
        status = self._parser.get_status_code()
        if status < 100:  # no HTTP status (llhttp reads any three digits)
            response.fail(BadAnswer(f"the endpoint answered status {status}"))
            self.abort()
            return
        if status < 200:  # 100 Continue, 103 Early Hints: not forwarded (a 101 raises)
            self._informational = True
            response.headers = []
            return
        response.head(status, self._parser.should_keep_alive())
        if response.bodiless:  # the answer to a HEAD: no body, whatever its headers say
            self._parser = self._make_parser(self)  # the old one would wait for that body
            response.complete()

    def on_body(self, body: bytes) -> None:
        self._progress = True
        response = self._response
        if response is not None and not response.finished:
            response.feed(body)
        else:
            self.broken = True

    def on_message_complete(self) -> None:
        self._progress = True
        if self._informational:
            self._informational = False
            return
        response = self._response
        if response is not None and not response.finished:
            response.complete()


@final
class _Response:
    """One answer as it arrives: status and headers, then body chunks, then the end."""

    __slots__ = (
        "_chunks",
        "_closed",
        "_connection",
        "_error",
        "_size",
        "_slots",
        "_transport",
        "_url",
        "_waiter",
        "bodiless",
        "finished",
        "headers",
        "keep_alive",
        "sent",
        "status",
    )

    def __init__(
        self,
        transport: HttptoolsTransport,
        url: str,
        connection: _Connection,
        slots: asyncio.Semaphore,
        bodiless: bool,
    ) -> None:
        self._transport = transport
        self._url = url
        self._connection = connection
        self._slots = slots
        self.bodiless = bodiless
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.keep_alive = False
        self.sent = False  # the whole request went out (a body cut short leaves the connection)
        self.finished = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    # -- from the connection

    def head(self, status: int, keep_alive: bool) -> None:
        self.status = status
        self.keep_alive = keep_alive
        self._wake()

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > _HIGH:
            self._connection.pause(True)
        self._wake()

    def complete(self) -> None:
        self.finished = True
        self._wake()
        self._connection.wake_writer()  # answered whole while an upload waits: stop sending

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def lost(self, exc: Exception | None) -> None:
        """The connection closed: the end of a body framed by the close (a FIN; a reset is a
        crash), else a failure."""
        if exc is None and self.status and not framed(self.headers):
            self.keep_alive = False
            self.complete()
        else:
            self.fail(EndpointClosed("the endpoint closed the connection"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, within: float | None) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            if within is None:
                await waiter
            else:
                async with asyncio.timeout(within):
                    await waiter
        finally:
            self._waiter = None

    # -- from the proxy

    async def wait_head(self, reused: bool) -> _Response:
        within = self._transport._head_within
        try:
            while not self.status:
                if self._error is not None:
                    raise UpstreamFailure(self._error, kind="reset", stale=reused)
                await self._wait(within)
        except TimeoutError as exc:
            raise UpstreamFailure(exc, kind="timeout") from exc
        return self

    async def read(self) -> bytes:
        within = self._transport._head_within
        try:
            while not self.finished:
                if self._error is not None:
                    raise UpstreamFailure(self._error, kind="reset")
                await self._wait(within)
        except TimeoutError as exc:
            raise UpstreamFailure(exc, kind="timeout") from exc
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def stream(self) -> AsyncGenerator[bytes, None]:
        within = self._transport._timeouts["read"]  # each chunk: always timed here
        chunks = self._chunks
        try:
            while True:
                if chunks:
                    chunk = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    chunks.clear()
                    self._size = 0
                    self._connection.pause(False)
                    yield chunk
                elif self.finished:
                    return
                elif self._error is not None:
                    raise UpstreamFailure(self._error, kind="reset")
                else:
                    await self._wait(within)
        except TimeoutError as exc:
            raise UpstreamFailure(exc, kind="timeout") from exc

    async def aclose(self, *, complete: bool) -> None:
        if self._closed:
            return
        self._closed = True
        transport, connection = self._transport, self._connection
        transport._release(self._slots)
        if (
            complete
            and self.finished
            and self.keep_alive
            and self.sent
            and not connection.closed
            and not connection.broken
        ):
            connection.done()
            transport._give_back(self._url, connection, self._slots)
        else:
            connection.abort()  # half-read, failed, or not to be kept: closed, not reused
