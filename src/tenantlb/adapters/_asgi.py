"""ASGI plumbing shared by `TenantMiddleware` and `ProxyApp`: types, the request view, refusals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._problem import problem

if TYPE_CHECKING:
    from .._errors import RequestRejected
    from ..gateway import Gateway
    from ..tenants import RequestInfo

__all__ = [
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "encode_headers",
    "request_info",
    "send_problem",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def request_info(gateway: Gateway, scope: Scope) -> RequestInfo:
    """The `RequestInfo` of an ``http`` or ``websocket`` scope (trusted proxies honoured)."""
    client = scope.get("client")
    return gateway.request(
        scope.get("method", "GET"),
        scope["path"],
        scope["headers"],
        scheme=scope.get("scheme", "http"),
        client=None if client is None else (client[0], client[1]),
    )


def encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """``(name, value)`` str pairs as the Latin-1 bytes ASGI wants."""
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]


async def send_problem(scope: Scope, send: Send, exc: RequestRejected) -> None:
    """Answer *exc* as problem+json; a websocket is denied (a denial response where the server
    supports it, else a close with 1008 Policy Violation)."""
    status, headers, body = problem(exc)
    raw = encode_headers(headers)
    if scope["type"] == "websocket":
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": status, "headers": raw})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": exc.title})
        return
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
