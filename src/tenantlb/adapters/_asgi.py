"""ASGI plumbing shared by `TenantMiddleware` and `ProxyApp`: types, the request view, refusals."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ..ratelimit import EPSILON
from ._problem import problem

if TYPE_CHECKING:
    from .._errors import RequestRejected
    from ..gateway import Gateway
    from ..ratelimit import Decision
    from ..tenants import RequestInfo

__all__ = [
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "encode_headers",
    "origin_form",
    "ratelimit_headers",
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
    path = scope["path"]
    return gateway.request(
        scope.get("method", "GET"),
        path if path[:1] == "/" else origin_form(path),
        scope["headers"],
        scheme=scope.get("scheme", "http"),
        client=None if client is None else (client[0], client[1]),
    )


def origin_form(target: str) -> str:
    """The path of an absolute-form request target (``http://host/p`` -> ``/p``), else *target*:
    routing (and what goes upstream) uses the path only, never an authority the client chose."""
    if target.startswith("/"):
        return target
    scheme, sep, rest = target.partition("://")
    if not sep or not scheme.isascii() or not scheme.isalpha():
        return target
    slash = rest.find("/")
    return "/" if slash < 0 else rest[slash:]


def encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """``(name, value)`` str pairs as the Latin-1 bytes ASGI wants."""
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]


_POLICY_CACHE: dict[int, tuple[object, bytes, tuple[bytes, ...]]] = {}


def ratelimit_headers(decision: Decision | None) -> list[tuple[bytes, bytes]]:
    """The RateLimit fields of an *allowed* decision as ASGI bytes, the same text as
    `Decision.headers` gives, built without re-formatting the (immutable) policies each time."""
    if decision is None:
        return []
    allowed, remaining, reset, _, policy, policies = decision
    if not allowed:
        return _lower(decision.headers())
    cached = _POLICY_CACHE.get(id(policies))
    if cached is None or cached[0] is not policies:
        cached = _cache_policies(decision)
    # Decision.headers' rounding: remaining down, reset up, both with its tolerance, neither
    # below 0 (%d truncates, which is the floor of a positive number).
    remaining += EPSILON
    reset -= EPSILON
    labels = cached[2]
    return [
        (b"ratelimit-policy", cached[1]),
        (
            b"ratelimit",
            b"%s;r=%d;t=%d"
            % (
                labels[0] if len(labels) == 1 else labels[policies.index(policy)],
                remaining if remaining > 0 else 0,
                math.ceil(reset) if reset > 0 else 0,
            ),
        ),
    ]


def _cache_policies(decision: Decision) -> tuple[object, bytes, tuple[bytes, ...]]:
    policies = decision.policies
    labels = tuple(
        ('"' + p.label.replace("\\", "\\\\").replace('"', '\\"') + '"').encode("latin-1")
        for p in policies
    )
    if len(_POLICY_CACHE) >= 1024:
        _POLICY_CACHE.clear()
    field = decision.headers()[0][1].encode("latin-1")
    cached = _POLICY_CACHE[id(policies)] = (policies, field, labels)
    return cached


def _lower(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]


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
