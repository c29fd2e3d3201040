"""How `ProxyApp` talks to an endpoint: httpcore (default, asyncio and trio) or aiohttp (asyncio).

Both send one request and hand back an `UpstreamResponse`; every failure is an `UpstreamFailure`
whose ``kind`` says what the proxy should do with it (retry elsewhere, 502, 504, 400).
aiohttp is offered because its HTTP parser is compiled: on CPython it costs a proxy about half
the CPU per request of httpcore's pure-Python h11 (see benchmarks/ANALYSIS.md).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, AsyncIterable, Sequence
from typing import Any, Literal, Protocol, cast, final

import anyio
import h11
import httpcore

from ._cleanup import finish
from ._upstream import Connection, UpstreamPool, event_loop

__all__ = [
    "AiohttpTransport",
    "HttpcoreTransport",
    "Transport",
    "UpstreamFailure",
    "UpstreamResponse",
    "wait_for_slot",
]

FailureKind = Literal["connect", "connect_timeout", "timeout", "reset", "local", "busy"]


class UpstreamFailure(Exception):
    """Talking to the endpoint failed.

    Attributes:
        kind: ``connect`` (nothing was sent), ``connect_timeout``, ``timeout`` (waiting for the
            endpoint), ``reset`` (the connection broke), ``local`` (the request cannot be
            sent as it is), ``busy`` (no free upstream connection in time).
        stale: The connection was a reused keep-alive one (a reset may just mean the endpoint
            closed it while idle: worth one retry on a fresh connection).
    """

    def __init__(self, cause: BaseException, *, kind: FailureKind, stale: bool = False) -> None:
        super().__init__(f"{kind}: {type(cause).__name__}")
        self.kind: FailureKind = kind
        self.cause = cause
        self.stale = stale


class UpstreamResponse(Protocol):
    """An endpoint's answer: status and headers now, the body as it arrives."""

    status: int
    headers: Sequence[tuple[bytes, bytes]]

    def stream(self) -> AsyncGenerator[bytes, None]:
        """The body chunks; raises `UpstreamFailure`."""
        ...

    async def read(self) -> bytes:
        """The whole body (a small one); raises `UpstreamFailure`."""
        ...

    async def aclose(self, *, complete: bool) -> None:
        """Give the connection back (kept alive only if the body was read whole: *complete*)."""
        ...


class Transport(Protocol):
    """Sends requests to endpoints over pooled keep-alive connections.

    Attributes:
        read_within: The read timeout the caller enforces on ``send()`` and ``read()`` (with
            `unless_gone`), or None when the transport times its reads itself.
    """

    read_within: float | None

    async def send(
        self,
        url: str,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterable[bytes] | None,
        chunked: bool,
    ) -> UpstreamResponse:
        """Send a request to the endpoint *url*; raises `UpstreamFailure`."""
        ...

    def counts(self) -> tuple[int, int]:
        """(connections carrying a request, idle keep-alive connections)."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...


async def wait_for_slot(slots: asyncio.Semaphore, limit: int, within: float) -> None:
    """Take one of the *limit* connection slots, waiting up to *within* seconds for one (the
    caller checked that none is free: a pool wait arms a timer, a free slot does not)."""
    try:
        async with asyncio.timeout(within):
            await slots.acquire()
    except TimeoutError:
        msg = f"all {limit} upstream connections stayed busy"
        raise UpstreamFailure(TimeoutError(msg), kind="busy") from None


# -- httpcore ---------------------------------------------------------------------------------------


def _httpcore_failure(exc: Exception, *, reused: bool) -> UpstreamFailure | None:
    if isinstance(exc, httpcore.ConnectTimeout):
        return UpstreamFailure(exc, kind="connect_timeout")
    if isinstance(exc, httpcore.ConnectError):
        return UpstreamFailure(exc, kind="connect")
    if isinstance(exc, httpcore.PoolTimeout):
        return UpstreamFailure(exc, kind="busy")
    if isinstance(exc, httpcore.TimeoutException):
        return UpstreamFailure(exc, kind="timeout")
    # h11's own errors can escape httpcore while it streams the request body: a local one means
    # what the client sent cannot be framed upstream (400), a remote one a broken endpoint.
    if isinstance(exc, httpcore.LocalProtocolError | h11.LocalProtocolError):
        return UpstreamFailure(exc, kind="local")
    if isinstance(exc, httpcore.NetworkError | httpcore.ProtocolError | h11.RemoteProtocolError):
        return UpstreamFailure(exc, kind="reset", stale=reused)
    return None


@final
class HttpcoreTransport:
    """httpcore connections in an `UpstreamPool`; runs on asyncio and trio.

    With *lazy_read*, httpcore reads without a timeout of its own (each read's timer is a
    cancel scope with a deadline): the caller enforces `read_within` on the answer and a small
    body, and a streamed body times each chunk here.
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
        self._pool = UpstreamPool(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry,
            pool_timeout=timeouts["pool"],
            connect_timeout=timeouts["connect"],
        )
        self._extensions = {"timeout": {**timeouts, "read": None} if lazy_read else timeouts}
        self._origins: dict[str, httpcore.Origin] = {}
        self.read_within: float | None = timeouts["read"] if lazy_read else None

    def counts(self) -> tuple[int, int]:
        return self._pool.active, self._pool.idle

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def send(
        self,
        url: str,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterable[bytes] | None,
        chunked: bool,
    ) -> UpstreamResponse:
        origin = self._origins.get(url)
        if origin is None:
            if len(self._origins) >= 4096:
                self._origins.clear()
            origin = self._origins[url] = httpcore.URL(url).origin
        if chunked:
            headers = [*headers, (b"transfer-encoding", b"chunked")]
        request = httpcore.Request(
            method,
            httpcore.URL(scheme=origin.scheme, host=origin.host, port=origin.port, target=target),
            headers=headers,
            content=body,
            extensions=self._extensions,
        )
        pool = self._pool
        try:
            connection, reused = await pool.acquire(url, origin)
        except Exception as exc:
            failure = _httpcore_failure(exc, reused=False)
            if failure is None:
                raise
            raise failure from exc
        try:
            response = await connection.handle_async_request(request)
        except BaseException as exc:
            await pool.release(url, connection)
            failure = _httpcore_failure(exc, reused=reused) if isinstance(exc, Exception) else None
            if failure is not None:
                raise failure from exc
            raise
        return _HttpcoreResponse(pool, url, connection, response, self.read_within)


@final
class _HttpcoreResponse:
    __slots__ = ("_connection", "_pool", "_response", "_url", "_within", "headers", "status")

    def __init__(
        self,
        pool: UpstreamPool,
        url: str,
        connection: Connection,
        response: httpcore.Response,
        within: float | None,
    ) -> None:
        self._pool = pool
        self._url = url
        self._connection = connection
        self._response = response
        self._within = within
        self.status = response.status
        self.headers: Sequence[tuple[bytes, bytes]] = response.headers

    async def stream(self) -> AsyncGenerator[bytes, None]:
        chunks = cast(AsyncGenerator[bytes, None], self._response.aiter_stream())  # a generator
        within = self._within
        try:
            while True:
                try:
                    if within is None:  # httpcore times each read
                        chunk = await chunks.__anext__()
                    else:
                        with anyio.fail_after(within):
                            chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                yield chunk
        except TimeoutError as exc:
            raise UpstreamFailure(exc, kind="timeout") from exc
        except Exception as exc:
            failure = _httpcore_failure(exc, reused=False)
            if failure is None:
                raise
            raise failure from exc
        finally:
            await chunks.aclose()  # closed now, not by the garbage collector (trio warns)

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except Exception as exc:
            failure = _httpcore_failure(exc, reused=False)
            if failure is None:
                raise
            raise failure from exc

    async def aclose(self, *, complete: bool) -> None:
        try:
            if complete:
                await self._response.aclose()
            else:  # cancelled, disconnected or failed: never back to the pool half-read
                await finish(self._response.aclose)
        finally:
            await self._pool.release(self._url, self._connection)


# -- aiohttp ----------------------------------------------------------------------------------------


@final
class AiohttpTransport:
    """aiohttp's client (compiled HTTP parser, its own keep-alive pool); asyncio only.

    Per request it starts no timer: the connection limit is a semaphore taken without waiting
    while there is room, and, with *lazy_read*, the read timeout of the answer and of a small
    body is left to the caller (`read_within`, enforced by the disconnect watcher, which runs
    only for waits that last); a streamed body times each chunk itself. aiohttp's own
    ``sock_read`` re-arms a timer on every read, ``connect`` on every request.
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

        self._aiohttp: Any = require("aiohttp", "aiohttp")
        self._yarl: Any = require("yarl", "aiohttp")
        self._timeouts = timeouts
        self._limit = max_connections
        self._expiry = keepalive_expiry
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the session's
        self._slots: asyncio.Semaphore | None = None
        self._active = 0
        self._urls: dict[tuple[str, bytes], Any] = {}  # parsed once: most targets recur
        self.read_within: float | None = timeouts["read"] if lazy_read else None

    def counts(self) -> tuple[int, int]:
        return self._active, 0

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> Any:
        try:
            asyncio.current_task()
        except RuntimeError:
            msg = "ProxyApp(client='aiohttp') runs on asyncio only; use client='httpcore' on trio"
            raise RuntimeError(msg) from None
        aiohttp = self._aiohttp
        timeouts = self._timeouts
        # A session is bound to its event loop: in another loop (lifespan events off, Starlette's
        # TestClient without `with`) the old one can be neither used nor closed; it is dropped.
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self._limit)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(  # the limit is ours: `_slots`
                limit=0, limit_per_host=0, keepalive_timeout=self._expiry
            ),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=timeouts["connect"],
                sock_read=None if self.read_within is not None else timeouts["read"],
            ),
            auto_decompress=False,
            request_class=_request_class(aiohttp),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self._session

    async def send(
        self,
        url: str,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterable[bytes] | None,
        chunked: bool,
    ) -> UpstreamResponse:
        session = self._session
        if session is None or self._loop is not event_loop():  # under trio, _open says why not
            session = self._open()
        slots = self._slots
        assert slots is not None  # made with the session
        if slots.locked():
            await wait_for_slot(slots, self._limit, self._timeouts["pool"])
        else:
            await slots.acquire()  # returns at once
        self._active += 1
        aiohttp = self._aiohttp
        parsed = self._urls.get((url, target))
        if parsed is None:
            if len(self._urls) >= 4096:
                self._urls.clear()
            parsed = self._yarl.URL(url + target.decode("latin-1"), encoded=True)
            self._urls[url, target] = parsed
        sent = False
        try:
            response = await session.request(
                method,
                parsed,
                headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers],
                data=body,
                chunked=True if chunked else None,
                allow_redirects=False,
                compress=None,
            )
            sent = True
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamFailure(exc, kind="connect_timeout") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamFailure(exc, kind="connect") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamFailure(exc, kind="timeout") from exc
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
            raise UpstreamFailure(exc, kind="reset") from exc
        except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamFailure(exc, kind="reset") from exc
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise UpstreamFailure(exc, kind="local") from exc
        except aiohttp.ClientError as exc:  # e.g. our body iterator failed while sending
            raise UpstreamFailure(exc, kind="reset") from exc
        finally:
            if not sent:
                self._release()
        if response.status == 101:
            # ProxyApp forwards no Upgrade, so a switch of protocols is the endpoint's mistake and
            # its connection no longer speaks HTTP: a 502, as httpcore and httptools answer (aiohttp
            # would hand the 101 on). close() drops the connection instead of pooling it.
            response.close()
            self._release()
            error = ConnectionResetError("the endpoint switched protocols unasked (101)")
            raise UpstreamFailure(error, kind="reset")
        return _AiohttpResponse(self, response)

    def _release(self) -> None:
        self._active -= 1
        assert self._slots is not None
        self._slots.release()


@functools.cache
def _request_class(aiohttp: Any) -> Any:
    """A ``ClientRequest`` that sends the headers it is given and no others (made once).

    A proxy must add no ``Accept``, ``Accept-Encoding`` or ``User-Agent`` the client did not
    send. ``skip_auto_headers`` says so too, but builds two more ``CIMultiDict`` per request
    (~17k instructions); and the session already hands over a fresh ``CIMultiDict`` of our
    headers (the Host first), which is copied instead of rebuilt field by field (~7k more).
    Both are ``ClientRequest``'s public hooks, called from its constructor.
    """
    from multidict import CIMultiDict

    class ProxiedRequest(aiohttp.ClientRequest):  # type: ignore[misc]
        def update_auto_headers(self, skip_auto_headers: object) -> None:
            pass  # nothing of aiohttp's own: the headers are the client's and ours

        def update_headers(self, headers: object) -> None:
            if type(headers) is CIMultiDict and "Host" in headers:
                self.headers = headers.copy()
            else:
                super().update_headers(headers)

    return ProxiedRequest


@final
class _AiohttpResponse:
    __slots__ = ("_closed", "_response", "_transport", "headers", "status")

    def __init__(self, transport: AiohttpTransport, response: Any) -> None:
        self._transport = transport
        self._response = response
        self._closed = False
        self.status: int = response.status
        self.headers: Sequence[tuple[bytes, bytes]] = response.raw_headers  # a tuple: not copied

    async def stream(self) -> AsyncGenerator[bytes, None]:
        aiohttp = self._transport._aiohttp
        within = self._transport.read_within
        content = self._response.content
        try:
            while True:
                if within is None:  # aiohttp's sock_read times it
                    chunk: bytes = await content.readany()
                else:
                    async with asyncio.timeout(within):
                        chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamFailure(exc, kind="timeout") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(exc, kind="reset") from exc

    async def read(self) -> bytes:
        aiohttp = self._transport._aiohttp
        try:
            return await self._response.read()  # type: ignore[no-any-return]
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamFailure(exc, kind="timeout") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(exc, kind="reset") from exc

    async def aclose(self, *, complete: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._transport._release()
        if complete:
            response = self._response
            # At the end of a body aiohttp gives the connection back itself (and says so in
            # `closed`); release() would then only mark the stream closed, through an
            # asyncio.isfuture() that fails a hasattr (an exception raised and dropped).
            if not response.closed:
                response.release()  # back to aiohttp's keep-alive pool
        else:
            self._response.close()  # half-read: the connection is closed, not reused
