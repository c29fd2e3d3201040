"""`ProxyApp`: an ASGI reverse proxy to the endpoint the gateway leased, over httpcore."""

from __future__ import annotations

import gc
import ipaddress
from collections.abc import Callable, Iterable
from typing import Final, Literal, final

import attrs
import httpcore

from .._errors import RequestRejected
from .._validate import count, optional_count, seconds
from ..balancing import RetryBudget
from ..gateway import Gateway, Ticket
from ._asgi import Receive, Scope, Send, request_info, send_problem
from ._cleanup import leave
from ._exchange import Exchange
from ._headers import RequestHead, header_name, request_head
from ._httptools_client import HttptoolsTransport
from ._transport import AiohttpTransport, HttpcoreTransport, Transport
from ._watch import WATCH_AFTER

__all__ = ["ProxyApp", "ProxyStats"]

# The youngest generation's threshold `ProxyApp(tune_gc=True)` sets (at least). How often it is
# collected grows with the square of (objects held per request in flight / threshold): a young
# collection every ~40 requests at 700 under wrk, none in 11,000 requests at 10,000.
_GC_THRESHOLD: Final = 10_000
_CLIENTS: Final[dict[str, Callable[..., Transport]]] = {
    "httpcore": HttpcoreTransport,
    "aiohttp": AiohttpTransport,
    "httptools": HttptoolsTransport,
}


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
      whose body can be replayed (none, or one of up to 64 KiB read whole: it is kept while it
      streams); all only while *retry_budget* allows. A full upstream connection pool
      (*pool_timeout*) answers 503 and counts against no endpoint: it is back-pressure.
    - Every attempt's outcome (status or error, latency) is recorded on its lease. A client that
      disconnects, before the answer or mid-stream, releases the lease, the concurrency slot and
      the upstream connection within a second (a watcher starts only for waits that last).
    - The target goes upstream in origin form (an absolute-form one is routed and sent by its
      path). Header names with ``_`` that fold onto a managed header (``x_tenant_id``) are dropped.
    - A body over *max_body_size* (or the tenant's / gateway's limit) answers 413, also when it is
      chunked and grows past it; a client that stalls its body for *client_body_timeout* gets 408.

    Args:
        gateway: The `Gateway` that admits requests and leases endpoints.
        connect_timeout: Seconds to connect to an endpoint.
        read_timeout: Seconds to wait for the answer (head and a small body) and for each chunk
            of a streamed body; from 1 s up it is enforced to within a second, never early.
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
        client: The upstream HTTP client, which decides a proxy's throughput on CPython:
            ``"httpcore"`` (default; asyncio and trio; pure-Python h11 parser),
            ``"httptools"`` (asyncio only, needs ``tenantlb[httptools]``; tenantlb's own small
            HTTP/1.1 client on httptools' compiled parser: the fastest, about 0.8x the
            instructions per request of asgiproxy, half of httpcore's), or ``"aiohttp"``
            (asyncio only, needs ``tenantlb[aiohttp]``; about asgiproxy's instructions).
        tune_gc: On lifespan startup, once the gateway is entered, tune CPython's cyclic garbage
            collector for a proxy's allocation pattern: collect, `gc.freeze` what is left (the
            modules, the app, the gateway: full passes skip it) and raise the youngest
            generation's threshold to at least 10,000 allocations (CPython's default is
            700). A proxy keeps ~100 tracked objects per request in flight; with the default
            the young generation was collected every 30-50 requests under load, ~300 us each,
            and each full pass of the ~50 MB process took ~20 ms, a stall for every request in
            flight. What exists at startup is never collected afterwards, and up to
            10,000 young objects may wait for a collection; pass False if the process
            is not the proxy's alone and needs otherwise (or tunes the collector itself).
            Only the app a server runs receives lifespan events (Starlette's ``Mount`` does
            not forward them), so a `ProxyApp` mounted inside another app changes nothing.

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
        client: Literal["httpcore", "aiohttp", "httptools"] = "httpcore",
        tune_gc: bool = True,
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
        self._tenant_header = None if tenant_header is None else header_name(tenant_header)
        self._manage = bool(manage_gateway)
        self._tune_gc = bool(tune_gc)
        if client not in _CLIENTS:
            msg = f"client must be 'httpcore', 'aiohttp' or 'httptools', got {client!r}"
            raise ValueError(msg)
        # A read timeout the disconnect watcher can enforce costs no timer per request.
        lazy_read = self._timeouts["read"] >= WATCH_AFTER
        self._transport: Transport = _CLIENTS[client](
            timeouts=self._timeouts,
            max_connections=count("max_connections", max_connections),
            max_keepalive_connections=count(
                "max_keepalive_connections", max_keepalive_connections, minimum=0
            ),
            keepalive_expiry=seconds("keepalive_expiry", keepalive_expiry),
            lazy_read=lazy_read,
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
            # One request, inline: every frame between the server and the upstream client is
            # resumed again at each of its awaits.
            admission = self._gateway.admit(request_info(self._gateway, scope), lease=True)
            inline = admission.inline  # an in-process store: entered and left without coroutines
            try:
                ticket = admission.enter_nowait() if inline else await admission.__aenter__()
            except RequestRejected as exc:
                await send_problem(scope, send, exc)
                return
            exchange = Exchange(self, scope, receive, send, ticket)
            failure: BaseException | None = None
            refusal: RequestRejected | None = None
            try:
                await exchange.run()
            except Exception as exc:  # answered (or not) once everything is released
                refusal = exchange.refusal(exc)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                if inline:
                    admission.exit_nowait(failure)
                else:
                    await leave(admission, failure, sync=self._sync)
            if refusal is not None:
                # Answered once the lease and slot are back: a server may hold this send until
                # the client has finished sending a body we will never read.
                await send_problem(scope, send, refusal)
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
                if self._tune_gc:
                    _tune_gc()
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

    def _head(self, scope: Scope, ticket: Ticket) -> RequestHead:
        client = scope.get("client")
        peer = "" if client is None else str(client[0])
        return request_head(
            scope,
            trusted=self._trusted_peer(peer),
            peer=peer,
            tenant_header=self._tenant_header,
            tenant_id=ticket.tenant.id,
        )


def _tune_gc() -> None:
    """See ``tune_gc`` in `ProxyApp`: collect, freeze, young generation threshold raised."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if 0 < young < _GC_THRESHOLD:  # 0: the collector is off, leave it so
        gc.set_threshold(_GC_THRESHOLD, middle, old)


def _statuses(values: Iterable[int]) -> list[int]:
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            msg = f"retry_statuses must hold HTTP statuses (100..599), got {value!r}"
            raise ValueError(msg)
        out.append(value)
    return out
