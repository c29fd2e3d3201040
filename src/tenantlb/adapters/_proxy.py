"""`ProxyApp`: an ASGI reverse proxy to the endpoint the gateway leased, over httpcore."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from typing import Final, Literal, final

import anyio
import attrs
import httpcore

from .._errors import ContentTooLarge, NoHealthyEndpoint, RequestRejected
from .._validate import count, optional_count, seconds
from ..balancing import RetryBudget
from ..gateway import Gateway, Ticket
from ._asgi import Receive, Scope, Send, ratelimit_headers, request_info, send_problem
from ._cleanup import finish
from ._transport import (
    AiohttpTransport,
    HttpcoreTransport,
    Transport,
    UpstreamFailure,
    UpstreamResponse,
)

__all__ = ["ProxyApp", "ProxyStats"]

logger = logging.getLogger("tenantlb.proxy")

# RFC 9110 §7.6.1 (plus the de-facto Proxy-Connection): never forwarded; nor are the fields that
# a Connection header names. Proxy-Authorization/-Authenticate are for this hop too (§11.7).
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
_FORWARDING: Final = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
# Like nginx's proxy_hide_header defaults: the ASGI server sets its own Date and Server.
_HIDDEN_RESPONSE: Final = frozenset({b"date", b"server"})
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@final
@attrs.define(frozen=True, kw_only=True)
class ProxyStats:
    """A snapshot of a `ProxyApp`'s upstream connections.

    Attributes:
        connections: Upstream connections open (or opening) in the pool.
        active: Those carrying a request now (the rest are idle keep-alive connections).
    """

    connections: int
    active: int


class _BadGateway(RequestRejected):
    status = 502
    title = "Bad Gateway"


class _GatewayTimeout(RequestRejected):
    status = 504
    title = "Gateway Timeout"


class _Busy(RequestRejected):
    status = 503
    title = "Service Unavailable"


class _RequestTimeout(RequestRejected):
    status = 408
    title = "Request Timeout"


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class _RetryStatus(Exception):
    """Recorded on a lease whose endpoint answered a status we retry."""


@final
class ProxyApp:
    """An ASGI reverse proxy: admit with the gateway, forward to the leased endpoint, stream back.

    Each request is admitted with ``gateway.admit(..., lease=True)`` (a tenant without an upstream
    for the path is refused with 403), sent to the leased endpoint over a pooled keep-alive
    httpcore connection, and its response streamed back; bodies are never buffered whole.

    - Hop-by-hop headers (RFC 9110 §7.6.1, and the fields ``Connection`` names) are stripped both
      ways. ``X-Forwarded-For`` gets the peer appended, ``X-Forwarded-Proto`` / ``-Host`` are set;
      forwarding headers from a peer outside the gateway's ``trusted_proxies`` are dropped, not
      believed. The tenant id goes upstream in *tenant_header* (a client's own value is dropped).
    - An endpoint that cannot be reached answers 502, one that times out 504. A connect failure is
      retried on another endpoint for any method (the request never left); a reset or a read
      timeout before the response, or a status in *retry_statuses*, only for idempotent methods
      whose body can be replayed; all only while *retry_budget* allows. A full upstream connection
      pool (*pool_timeout*) answers 503 and counts against no endpoint: it is back-pressure.
    - Every attempt's outcome (status or error, latency) is recorded on its lease. A client that
      disconnects mid-stream releases the lease, the concurrency slot and the upstream connection.
    - A body over *max_body_size* (or the tenant's / gateway's limit) answers 413, also when it is
      chunked and grows past it; a client that stalls its body for *client_body_timeout* gets 408.

    Args:
        gateway: The `Gateway` that admits requests and leases endpoints.
        connect_timeout: Seconds to connect to an endpoint.
        read_timeout: Seconds to wait for each read from an endpoint (the answer, body chunks).
        write_timeout: Seconds to wait for each write to an endpoint.
        pool_timeout: Seconds to wait for a free connection when *max_connections* are busy.
        client_body_timeout: Seconds to wait for each piece of the client's request body.
        retries: Most retries of one request on other endpoints.
        retry_statuses: Statuses retried for idempotent requests.
        retry_budget: Caps retries across requests; default a `tenantlb.RetryBudget` (20% of the
            last 10 s of requests plus 10 a second). Share one with other clients if you like.
        max_connections: Most upstream connections open at once (all endpoints).
        max_keepalive_connections: Most idle keep-alive connections kept.
        keepalive_expiry: Seconds an idle connection is kept.
        max_body_size: Request body limit in bytes for this proxy, or None; the smallest of this,
            the gateway's and the tenant's applies.
        preserve_host: Send the client's ``Host`` upstream instead of the endpoint's.
        tenant_header: Header that tells the upstream the tenant id, or None.
        manage_gateway: Enter the gateway (its health checkers) on ASGI lifespan startup and leave
            it on shutdown. The connection pool is closed on shutdown either way.
        client: The upstream HTTP client: ``"httpcore"`` (default; asyncio and trio) or
            ``"aiohttp"`` (asyncio only, needs ``tenantlb[aiohttp]``): its compiled parser costs
            about half the CPU per request, which decides a proxy's throughput on CPython.

    Raises:
        TypeError: A parameter has the wrong type.
        ValueError: A parameter has a bad value.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        write_timeout: float = 60.0,
        pool_timeout: float = 10.0,
        client_body_timeout: float = 60.0,
        retries: int = 2,
        retry_statuses: Iterable[int] = (502, 503, 504),
        retry_budget: RetryBudget | None = None,
        max_connections: int = 1000,
        max_keepalive_connections: int = 100,
        keepalive_expiry: float = 30.0,
        max_body_size: int | None = None,
        preserve_host: bool = False,
        tenant_header: str | None = "x-tenant-id",
        manage_gateway: bool = True,
        client: Literal["httpcore", "aiohttp"] = "httpcore",
    ) -> None:
        if not isinstance(gateway, Gateway):
            msg = f"gateway must be a tenantlb.Gateway, got {type(gateway).__name__}"
            raise TypeError(msg)
        self._gateway = gateway
        self._timeouts = {
            "connect": seconds("connect_timeout", connect_timeout),
            "read": seconds("read_timeout", read_timeout),
            "write": seconds("write_timeout", write_timeout),
            "pool": seconds("pool_timeout", pool_timeout),
        }
        self._body_timeout = seconds("client_body_timeout", client_body_timeout)
        self._retries = count("retries", retries, minimum=0)
        self._retry_statuses = frozenset(_statuses(retry_statuses))
        if retry_budget is not None and not isinstance(retry_budget, RetryBudget):
            msg = f"retry_budget must be a tenantlb.RetryBudget, got {type(retry_budget).__name__}"
            raise TypeError(msg)
        self._budget = RetryBudget() if retry_budget is None else retry_budget
        self._max_body_size = optional_count("max_body_size", max_body_size)
        self._preserve_host = bool(preserve_host)
        self._tenant_header = None if tenant_header is None else _header_name(tenant_header)
        self._manage = bool(manage_gateway)
        if client not in ("httpcore", "aiohttp"):
            msg = f"client must be 'httpcore' or 'aiohttp', got {client!r}"
            raise ValueError(msg)
        make = HttpcoreTransport if client == "httpcore" else AiohttpTransport
        self._transport: Transport = make(
            timeouts=self._timeouts,
            max_connections=count("max_connections", max_connections),
            max_keepalive_connections=count(
                "max_keepalive_connections", max_keepalive_connections, minimum=0
            ),
            keepalive_expiry=seconds("keepalive_expiry", keepalive_expiry),
        )
        self._sync = bool(gateway.store.in_process)
        self._trusted = tuple(
            ipaddress.ip_network(p, strict=False) for p in gateway.trusted_proxies
        )
        self._peers: dict[str, bool] = {}
        self._netlocs: dict[str, bytes] = {}
        self._entered = False

    def __repr__(self) -> str:
        return f"<ProxyApp {self._gateway!r}>"

    def stats(self) -> ProxyStats:
        """A snapshot of the upstream connection pool."""
        active, idle = self._transport.counts()
        return ProxyStats(connections=active + idle, active=active)

    async def aclose(self) -> None:
        """Close every pooled upstream connection (lifespan shutdown does this)."""
        await self._transport.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":  # not proxied (yet): deny before the handshake completes
            await send({"type": "websocket.close", "code": 1008, "reason": "not proxied"})

    # -- lifespan ----------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._manage:
                        await self._gateway.__aenter__()
                        self._entered = True
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    if self._entered:
                        self._entered = False
                        await self._gateway.__aexit__(None, None, None)
                finally:
                    await self._transport.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- one request -------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        admission = self._gateway.admit(request_info(self._gateway, scope), lease=True)
        try:
            ticket = await admission.__aenter__()
        except RequestRejected as exc:
            await send_problem(scope, send, exc)
            return
        exchange = _Exchange(self, scope, receive, send, ticket)
        failure: BaseException | None = None
        refusal: RequestRejected | None = None
        try:
            refusal = await exchange.run()
        except BaseException as exc:
            failure = exc
            raise
        finally:
            kind = None if failure is None else type(failure)
            if self._sync:
                await admission.__aexit__(kind, failure, None)
            else:
                await finish(lambda: admission.__aexit__(kind, failure, None))
        if refusal is not None:
            # Answered once the lease and slot are back: a server may hold this send until the
            # client has finished sending a body we will never read.
            await send_problem(scope, send, refusal)

    def _netloc(self, url: str) -> bytes:
        """The Host header value for an endpoint URL (cached)."""
        found = self._netlocs.get(url)
        if found is None:
            parsed = httpcore.URL(url)
            found = parsed.host if parsed.port is None else b"%s:%d" % (parsed.host, parsed.port)
            if len(self._netlocs) >= 4096:
                self._netlocs.clear()
            self._netlocs[url] = found
        return found

    def _trusted_peer(self, peer: str) -> bool:
        if not self._trusted:
            return False
        found = self._peers.get(peer)
        if found is None:
            try:
                address = ipaddress.ip_address(peer)
            except ValueError:
                found = False
            else:
                found = any(address in net for net in self._trusted)
            if len(self._peers) >= 4096:
                self._peers.clear()
            self._peers[peer] = found
        return found

    def _headers(
        self, scope: Scope, ticket: Ticket
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None, bool, int | None]:
        """The headers to send upstream, the client's Host, whether the body is chunked (else
        *length* says whether there is one), its length (-1: unusable Content-Length)."""
        client = scope.get("client")
        peer = "" if client is None else str(client[0])
        trusted = self._trusted_peer(peer)
        out: list[tuple[bytes, bytes]] = []
        host: bytes | None = None
        xff: list[bytes] = []
        proto: bytes | None = None
        fwd_host: bytes | None = None
        named: list[bytes] = []
        length: int | None = None
        chunked = False
        skip = self._tenant_header
        for name, value in scope["headers"]:
            if name in HOP_BY_HOP:
                if name == b"connection":
                    named.extend(t.strip().lower() for t in value.split(b","))
                elif name == b"transfer-encoding":
                    chunked = True
                continue
            if name in _FORWARDING:
                if trusted:
                    if name == b"x-forwarded-for":
                        xff.append(value)
                    elif name == b"x-forwarded-proto":
                        proto = value
                    elif name == b"x-forwarded-host":
                        fwd_host = value
                    else:
                        out.append((name, value))
                continue
            if name == b"host":
                host = value
                continue
            if name == skip:
                continue
            if name == b"content-length":
                parsed = _content_length(value)
                length = (
                    -1 if parsed is None or (length is not None and length != parsed) else parsed
                )
            out.append((name, value))
        if named:
            drop = set(named)
            out = [(n, v) for n, v in out if n not in drop]
        if peer:
            xff.append(peer.encode("latin-1"))
        if xff:
            out.append((b"x-forwarded-for", b", ".join(xff)))
        out.append((b"x-forwarded-proto", proto or scope.get("scheme", "http").encode("latin-1")))
        if fwd_host is not None or host is not None:
            out.append((b"x-forwarded-host", fwd_host or host))  # type: ignore[arg-type]
        if skip is not None:
            out.append((skip, ticket.tenant.id.encode("utf-8")))
        if chunked:
            length = None
            out = [(n, v) for n, v in out if n != b"content-length"]
        return out, host, chunked, length


@final
class _Body:
    """The client's request body as an async iterator for httpcore, capped and timed."""

    __slots__ = (
        "_expected",
        "_limit",
        "_receive",
        "_timeout",
        "done",
        "failure",
        "received",
        "started",
    )

    def __init__(
        self, receive: Receive, limit: int | None, timeout: float, expected: int | None
    ) -> None:
        self._receive = receive
        self._limit = limit
        self._expected = expected
        self._timeout = timeout
        self.started = False
        self.done = False
        self.received = 0
        # What stopped the body (over the limit, stalled, client gone): a client library that
        # sends bodies from a task of its own (aiohttp) reports it as a broken connection.
        self.failure: Exception | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks():
                yield chunk
        except (RequestRejected, _ClientGone) as exc:
            self.failure = exc
            raise

    async def _chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        while not self.done:
            with anyio.move_on_after(self._timeout) as scope:
                message = await self._receive()
            if scope.cancelled_caught:
                msg = f"the request body stalled for {self._timeout:g} s"
                raise _RequestTimeout(msg)
            if message["type"] != "http.request":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            self.received += len(chunk)
            if self._limit is not None and self.received > self._limit:
                msg = f"the request body is over {self._limit} bytes"
                raise ContentTooLarge(msg, limit=self._limit)
            self.done = not message.get("more_body", False)
            expected = self._expected
            if expected is not None and (
                self.received > expected or (self.done and self.received < expected)
            ):
                raise _ClientGone  # the body ended short of its Content-Length: the client left
            if chunk:
                yield chunk


class _Exchange:
    """One admitted request through the proxy: attempts, retries, streaming back."""

    __slots__ = ("_app", "_receive", "_scope", "_send", "_started", "ticket")

    def __init__(
        self, app: ProxyApp, scope: Scope, receive: Receive, send: Send, ticket: Ticket
    ) -> None:
        self._app = app
        self._scope = scope
        self._receive = receive
        self._send = send
        self.ticket = ticket
        self._started = False

    async def run(self) -> RequestRejected | None:
        """Proxy the request; returns the refusal to answer with if no response was started."""
        try:
            await self._run()
        except _ClientGone:
            return None  # nobody to answer; the finally clauses released everything
        except RequestRejected as exc:
            return None if self._started else exc
        except Exception as exc:  # never a 500 from the proxy: log it, answer 502
            logger.exception(
                "tenantlb proxy: unexpected error for tenant %r", self.ticket.tenant.id
            )
            msg = f"proxy error: {type(exc).__name__}"
            return None if self._started else _BadGateway(msg)
        return None

    async def _run(self) -> None:
        app, scope, ticket = self._app, self._scope, self.ticket
        method: str = scope["method"]
        headers, client_host, chunked, length = app._headers(scope, ticket)
        if length == -1:
            msg = "the content-length header is not one number of bytes"
            raise RequestRejected(msg)
        limit = ticket.max_body_size
        if app._max_body_size is not None and (limit is None or app._max_body_size < limit):
            limit = app._max_body_size
        if limit is not None and length is not None and length > limit:
            msg = f"the request body is over {limit} bytes"
            raise ContentTooLarge(msg, limit=limit)
        has_body = chunked or bool(length)
        body = _Body(self._receive, limit, app._body_timeout, length) if has_body else None
        target = scope.get("raw_path") or scope["path"].encode("utf-8")
        query = scope.get("query_string")
        if query:
            target = target + b"?" + query
        idempotent = method in IDEMPOTENT
        app._budget.deposit()
        retries_left = app._retries
        fresh_retry = True  # one retry on a new connection when a reused one turns out stale
        transport = app._transport
        while True:
            endpoint = ticket.endpoint
            assert endpoint is not None  # admitted with lease=True
            url = endpoint.url
            host = client_host if app._preserve_host and client_host else app._netloc(url)
            replayable = body is None or not body.started
            try:
                response = await transport.send(
                    url, method, target, [(b"host", host), *headers], body, chunked
                )
            except (RequestRejected, _ClientGone):
                # The client's body was over the limit, stalled, or the client went away: the
                # endpoint is not to blame, release its lease without an outcome.
                self._release()
                raise
            except UpstreamFailure as failure:
                if body is not None and body.failure is not None:
                    self._release()
                    raise body.failure from None
                unsent = body is None or not body.started
                kind = failure.kind
                if kind == "busy":
                    # Our own connection pool was busy: back-pressure, not the endpoint's failure.
                    self._release()
                    msg = f"no free upstream connection for {ticket.upstream!r}"
                    raise _Busy(msg, headers=[("retry-after", "1")]) from None
                if kind == "local":  # what the client sent cannot be forwarded
                    self._release()
                    msg = "the request cannot be forwarded as sent"
                    raise RequestRejected(msg) from failure.cause
                if kind == "reset" and failure.stale and fresh_retry and unsent:
                    fresh_retry = False  # the endpoint closed an idle keep-alive connection
                    continue
                # A read or write timeout before any response is retried like a reset: for an
                # idempotent request that can be replayed (Envoy retries per-try timeouts so).
                retryable = (kind in ("connect", "connect_timeout") and unsent) or (
                    kind in ("reset", "timeout") and idempotent and replayable
                )
                if retries_left and retryable and self._retry(failure.cause):
                    retries_left -= 1
                    continue
                self._record_error(failure.cause)
                if kind in ("timeout", "connect_timeout"):
                    msg = f"upstream {ticket.upstream!r} timed out"
                    raise _GatewayTimeout(msg) from failure.cause
                msg = f"upstream {ticket.upstream!r} failed: {type(failure.cause).__name__}"
                raise _BadGateway(msg) from failure.cause
            status = response.status
            if (
                status in app._retry_statuses
                and retries_left
                and idempotent
                and body is None
                and self._retry_status(status)
            ):
                retries_left -= 1
                await response.aclose(complete=False)
                continue
            await self._stream(response, status)
            return

    def _retry(self, exc: BaseException) -> bool:
        if not self._app._budget.try_withdraw():
            return False
        try:
            self.ticket.reroute(exc)
        except NoHealthyEndpoint:
            return False
        return True

    def _retry_status(self, status: int) -> bool:
        if not self._app._budget.try_withdraw():
            return False
        ticket = self.ticket
        ticket.record(status=status)
        try:
            ticket.reroute(_RetryStatus(status))
        except NoHealthyEndpoint:
            return False
        return True

    def _release(self) -> None:
        lease = self.ticket.lease
        if lease is not None and not lease.released:
            lease.release()

    def _record_error(self, exc: BaseException) -> None:
        lease = self.ticket.lease
        if lease is not None and not lease.released:
            self.ticket.record(error=exc)

    async def _stream(self, response: UpstreamResponse, status: int) -> None:
        """Send the response back; records the outcome and gives the connection back always."""
        ticket = self.ticket
        send = self._send
        out = _response_headers(response.headers)
        if ticket.decision is not None:
            out.extend(ratelimit_headers(ticket.decision))
        completed = False
        try:
            length = _small_length(response.headers)
            if length is not None:  # a small body: read it whole, send it in one message
                async with aclosing(response.stream()) as chunks:
                    body = b"".join([chunk async for chunk in chunks])
                self._started = True
                await send({"type": "http.response.start", "status": status, "headers": out})
                await send({"type": "http.response.body", "body": body})
            else:
                self._started = True
                await send({"type": "http.response.start", "status": status, "headers": out})
                async with aclosing(response.stream()) as chunks:
                    await self._stream_long(chunks)
            completed = True
        except UpstreamFailure as failure:
            self._record_error(failure.cause)
            if failure.kind == "timeout":
                msg = f"upstream {ticket.upstream!r} timed out mid-body"
                raise _GatewayTimeout(msg) from failure.cause
            msg = f"upstream {ticket.upstream!r} failed mid-body"
            raise _BadGateway(msg) from failure.cause
        finally:
            await response.aclose(complete=completed)
            if completed:
                ticket.record(status=status)

    async def _stream_long(self, chunks: AsyncIterator[bytes]) -> None:
        """Stream a body of many chunks, stopping when the client disconnects."""
        send = self._send
        receive = self._receive
        gone = False

        async def watch(scope: anyio.CancelScope) -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    scope.cancel()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            tg.cancel_scope.cancel()
        if gone:
            raise _ClientGone


def _response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    named: set[bytes] | None = None
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"connection":
                named = named or set()
                named.update(t.strip().lower() for t in value.split(b","))
            continue
        if lower in _HIDDEN_RESPONSE:
            continue
        out.append((lower, value))
    if named:
        out = [(n, v) for n, v in out if n not in named]
    return out


_SMALL: Final = 65536


def _small_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The response's Content-Length if it is small enough to read whole (<= 64 KiB), else None."""
    for name, value in headers:
        if len(name) == 14 and name.lower() == b"content-length":
            length = _content_length(value)
            return length if length is not None and length <= _SMALL else None
    return None


def _content_length(value: bytes) -> int | None:
    text = value.strip()
    if text.isdigit() and len(text) <= 19:
        return int(text)
    return None


def _header_name(name: object) -> bytes:
    if not isinstance(name, str):
        msg = f"tenant_header must be a str or None, got {type(name).__name__}"
        raise TypeError(msg)
    if (
        not name
        or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name)
        or not name.isascii()
    ):
        msg = f"tenant_header must be a valid HTTP header name, got {name!r}"
        raise ValueError(msg)
    return name.lower().encode("ascii")


def _statuses(values: Iterable[int]) -> list[int]:
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            msg = f"retry_statuses must hold HTTP statuses (100..599), got {value!r}"
            raise ValueError(msg)
        out.append(value)
    return out
