"""ASGI adapters: `TenantMiddleware` in front of your app, `ProxyApp` as a reverse proxy.

Pure ASGI (no Starlette or FastAPI import), so they run under uvicorn, hypercorn, granian and any
framework:

```python
from tenantlb.adapters.asgi import ProxyApp, TenantMiddleware

app = TenantMiddleware(app, gateway=gateway)    # FastAPI: app.add_middleware(TenantMiddleware, gateway=gateway)
gateway_app = ProxyApp(gateway)                 # uvicorn module:gateway_app
```

``ProxyApp`` needs httpcore, a dependency of tenantlb itself, so no extra is needed; install
``tenantlb[asgi]`` for a server (uvicorn).
"""

from __future__ import annotations

from typing import final

from .._errors import ContentTooLarge, RequestRejected
from ..gateway import Gateway, Ticket
from ..tenants import RequestInfo
from ._asgi import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    origin_form,
    ratelimit_headers,
    send_problem,
)
from ._cleanup import leave
from ._proxy import ProxyApp, ProxyStats

__all__ = ["ProxyApp", "ProxyStats", "TenantMiddleware"]


@final
class TenantMiddleware:
    """Admission (auth, limits, concurrency) in front of an ASGI app that serves the request.

    For each ``http`` and ``websocket`` scope the tenant is resolved and authenticated, its rate
    limits and concurrency applied, and then:

    - admitted: the tenant is stored in ``scope["state"]["tenant"]`` (``request.state.tenant`` in
      Starlette and FastAPI), the app runs, the RateLimit headers are added to its response and
      its status is recorded as the outcome; the concurrency slot is held until the app returns
      (for a websocket: until it closes);
    - refused: an RFC 9457 ``application/problem+json`` answer with the refusal's status (401,
      403, 413, 429, 431, 503), ``Retry-After`` on 429 and 503 and ``WWW-Authenticate`` on 401;
      a websocket is denied with that response where the server supports it, else closed with
      1008 before it is accepted.

    A body larger than the tenant's ``max_body_size`` is cut off: the app sees a disconnect and
    the client gets a 413 (unless the app already answered). Lifespan and other scopes pass
    through untouched. No endpoint is leased (``gateway.admit(..., lease=False)``): the app itself
    serves the request.

    Args:
        app: The ASGI app to protect.
        gateway: The `Gateway` that admits requests.

    Raises:
        TypeError: *gateway* is not a `Gateway`.
    """

    __slots__ = ("_admit", "_app", "_gateway", "_sync", "_trusted")

    def __init__(self, app: ASGIApp, *, gateway: Gateway) -> None:
        if not isinstance(gateway, Gateway):
            msg = f"gateway must be a tenantlb.Gateway, got {type(gateway).__name__}"
            raise TypeError(msg)
        if not callable(app):
            msg = f"app must be an ASGI callable, got {type(app).__name__}"
            raise TypeError(msg)
        self._app = app
        self._gateway = gateway
        self._admit = gateway.admit
        self._trusted = gateway.trusted_proxies
        # An in-process store: leaving an admission never suspends, so no cleanup task is needed
        # (and with no fair queue either, the admission is `inline`: entered without coroutines).
        self._sync = bool(gateway.store.in_process)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self._app(scope, receive, send)
            return
        # The request view, as `Gateway.request` builds it (written out: every request pays it).
        path = scope["path"]
        client = scope.get("client")
        request = RequestInfo(
            scope.get("method", "GET"),
            path if path[:1] == "/" else origin_form(path),
            scope["headers"],
            scheme=scope.get("scheme", "http"),
            client=None if client is None else (client[0], client[1]),
            trusted_proxies=self._trusted,
        )
        admission = self._admit(request, lease=False)
        try:
            inline = admission.inline
            ticket = admission.enter_nowait() if inline else await admission.__aenter__()
        except RequestRejected as exc:
            await send_problem(scope, send, exc)
            return
        failure: BaseException | None = None
        try:
            state = scope.get("state")
            if state is None:
                scope["state"] = state = {}
            state["tenant"] = ticket.tenant
            if kind == "http" and ticket.max_body_size is None:
                # The common case, kept to one closure: no body cap to enforce.
                decision = ticket.decision

                async def send_through(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        ticket.status = message["status"]  # `record`, for a ticket with no lease
                        if decision is not None:
                            message["headers"] = [
                                *message.get("headers", ()),
                                *ratelimit_headers(decision),
                            ]
                    await send(message)

                await self._app(scope, receive, send_through)
            elif kind == "http":
                await _Exchange(self._app, scope, receive, send, ticket).run()
            else:
                await _WebSocket(self._app, scope, receive, send, ticket).run()
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if inline:
                admission.exit_nowait(failure)
            else:
                await leave(admission, failure, sync=self._sync)


class _Exchange:
    """One admitted HTTP request: adds the RateLimit headers, records the status, caps the body."""

    __slots__ = ("_app", "_limit", "_receive", "_received", "_scope", "_send", "_started", "ticket")

    def __init__(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, ticket: Ticket
    ) -> None:
        self._app = app
        self._scope = scope
        self._receive = receive
        self._send = send
        self.ticket = ticket
        self._limit = ticket.max_body_size
        self._received = 0
        self._started = False  # a response start went out (the app's, or our 413)

    async def run(self) -> None:
        await self._app(
            self._scope, self._receive if self._limit is None else self.receive, self.send
        )

    async def receive(self) -> Message:
        if self._limit is not None and self._received > self._limit:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit:  # type: ignore[operator]
                exc = ContentTooLarge(
                    f"the request body is over {self._limit} bytes", limit=self._limit or 0
                )
                if not self._started:
                    self._started = True
                    self.ticket.record(status=exc.status)
                    await send_problem(self._scope, self._send, exc)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if self._started:
                return  # we answered 413 already: drop the app's answer
            self._started = True
            ticket = self.ticket
            ticket.record(status=message["status"])
            if ticket.decision is not None:
                message["headers"] = [
                    *message.get("headers", ()),
                    *ratelimit_headers(ticket.decision),
                ]
        elif self._limit is not None and self._received > self._limit:
            return
        await self._send(message)


class _WebSocket:
    """One admitted websocket: RateLimit headers on the accept, 101 recorded on accept."""

    __slots__ = ("_app", "_receive", "_scope", "_send", "ticket")

    def __init__(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, ticket: Ticket
    ) -> None:
        self._app = app
        self._scope = scope
        self._receive = receive
        self._send = send
        self.ticket = ticket

    async def run(self) -> None:
        await self._app(self._scope, self._receive, self.send)

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self.ticket.record(status=101)
            if self.ticket.decision is not None:
                message["headers"] = [
                    *message.get("headers", ()),
                    *ratelimit_headers(self.ticket.decision),
                ]
        elif kind == "websocket.close" and self.ticket.status is None:
            self.ticket.record(status=403)  # closed before it was accepted: the server denies it
        elif kind == "websocket.http.response.start":
            self.ticket.record(status=message["status"])
        await self._send(message)
