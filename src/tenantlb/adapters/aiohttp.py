"""aiohttp adapters: `tenant_middleware` for a server, `balancing_middleware` for a client session.

```python
from aiohttp import web
from tenantlb.adapters.aiohttp import TENANT_KEY, tenant_middleware

app = web.Application(middlewares=[tenant_middleware(gateway)])
# in a handler: request[TENANT_KEY] is the admitted tenantlb.Tenant
```

``TENANT_KEY`` is a ``web.RequestKey`` named ``"tenant"`` (aiohttp >= 3.14 recommends typed keys and
warns about str keys); on older aiohttp it is the string ``"tenant"``, so ``request["tenant"]``.
Pass ``key="tenant"`` to store it under the plain string anyway.

Needs the ``aiohttp`` extra: ``pip install 'tenantlb[aiohttp]'``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import require

require("aiohttp", "aiohttp")

from aiohttp import web  # noqa: E402
from aiohttp.typedefs import Middleware  # noqa: E402

from .._errors import ContentTooLarge, RequestRejected  # noqa: E402
from ..gateway import Gateway  # noqa: E402
from ..tenants import Tenant  # noqa: E402
from ._aiohttp_client import BalancingMiddleware as BalancingMiddleware  # noqa: E402
from ._aiohttp_client import balancing_middleware as balancing_middleware  # noqa: E402
from ._cleanup import leave  # noqa: E402
from ._problem import problem  # noqa: E402

if TYPE_CHECKING:
    from ..tenants import RequestInfo

__all__ = [
    "TENANT_KEY",
    "BalancingMiddleware",
    "balancing_middleware",
    "problem_response",
    "tenant_middleware",
]

TENANT_KEY: Any = web.RequestKey("tenant", Tenant) if hasattr(web, "RequestKey") else "tenant"
"""Where `tenant_middleware` stores the admitted `Tenant` on the request."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def tenant_middleware(gateway: Gateway, *, key: Any = TENANT_KEY) -> Middleware:
    """An aiohttp server middleware doing what `TenantMiddleware` does for ASGI.

    The tenant is resolved, authenticated, rate-limited and given a concurrency slot; admitted,
    it is stored in ``request[TENANT_KEY]`` (or *key*), the handler runs, the RateLimit headers are added to
    its response and its status recorded. Refusals are the same RFC 9457 problem+json answers, with
    the same statuses and headers, as through `TenantMiddleware`. A body over the tenant's
    ``max_body_size`` answers 413 when the handler reads it (also a chunked one). No endpoint is
    leased: the handler serves the request.

    A handler that streams (``await response.prepare(request)`` itself) has sent its headers
    before the middleware sees the response, so the RateLimit headers are not added to it.

    Args:
        gateway: The `Gateway` that admits requests.
        key: The request storage key for the tenant: `TENANT_KEY` (default), or a str such as
            ``"tenant"``.

    Returns:
        The middleware, for ``web.Application(middlewares=[...])``.

    Raises:
        TypeError: *gateway* is not a `Gateway`.
    """
    if not isinstance(gateway, Gateway):
        msg = f"gateway must be a tenantlb.Gateway, got {type(gateway).__name__}"
        raise TypeError(msg)
    sync = bool(gateway.store.in_process)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        admission = gateway.admit(_request_info(gateway, request), lease=False)
        inline = admission.inline  # nothing can wait: entered and left without coroutines
        try:
            ticket = admission.enter_nowait() if inline else await admission.__aenter__()
        except RequestRejected as exc:
            return problem_response(exc)
        failure: BaseException | None = None
        try:
            limit = ticket.max_body_size
            if limit is not None:
                request = request.clone(client_max_size=limit)
            request[key] = ticket.tenant
            try:
                response = await handler(request)
            except web.HTTPRequestEntityTooLarge:
                refusal = ContentTooLarge(
                    f"the request body is over {limit} bytes", limit=limit or 0
                )
                ticket.record(status=refusal.status)
                return problem_response(refusal)
            except web.HTTPException as exc:  # raised answers (404, redirects) are answers too
                ticket.record(status=exc.status)
                _add_headers(exc, ticket.headers)
                raise
            ticket.record(status=response.status)
            _add_headers(response, ticket.headers)
            return response
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if inline:
                admission.exit_nowait(failure)
            else:
                await leave(admission, failure, sync=sync)

    return middleware


def problem_response(exc: RequestRejected) -> web.Response:
    """The problem+json `web.Response` for a refusal (the same answer the ASGI adapters give)."""
    status, headers, body = problem(exc)
    response = web.Response(status=status, body=body)
    for name, value in headers:
        if name != "content-length":  # aiohttp sets it from the body
            response.headers.add(name, value)
    return response


def _request_info(gateway: Gateway, request: web.Request) -> RequestInfo:
    peer: Any = request.transport.get_extra_info("peername") if request.transport else None
    client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple | list) and peer else None
    return gateway.request(
        request.method,
        request.path,
        list(request.raw_headers),
        scheme=request.scheme,
        client=client,
    )


def _add_headers(response: web.StreamResponse, headers: list[tuple[str, str]]) -> None:
    if headers and not response.prepared:
        for name, value in headers:
            response.headers[name] = value
