"""`balancing_middleware`: client-side balancing for aiohttp >= 3.12 (``pip install 'tenantlb[aiohttp]'``).

```python
import aiohttp
import tenantlb as tlb
from tenantlb.adapters.aiohttp import balancing_middleware

users = tlb.Pool(["http://10.0.0.1:8000", "http://10.0.0.2:8000"])
async with aiohttp.ClientSession(middlewares=[balancing_middleware({"users": users})]) as session:
    async with session.get("http://users/v1/me") as response:
        ...
```

The same rules as the httpx transports (`tenantlb.adapters.httpx`): each attempt goes to an
endpoint leased from the pool (scheme, host and port replaced; the ``Host`` header keeps the
logical name), records its status and latency, and is retried on *another* endpoint after a
connect error (any method), or for idempotent methods after a reset before the response or a
status in ``retry_statuses``, within ``retries`` and a `tenantlb.RetryBudget`. A body that cannot
be sent twice (an async iterator) is not retried.

A small body (``Content-Length`` up to 64 KiB, not compressed) of a request that could still be
retried is waited for before the response is returned, so a connection that breaks in the middle
of it is retried too; the body stays in ``response.content`` for the caller to read. As in the
httpx transports, a lease stays in flight until its body is done: it is recorded when the whole
body has arrived (``response.content`` at EOF, read or not), or with the error that cut it short,
or as a success when the caller closes the response early; a request cancelled before its
response head records nothing.
(A small task per streamed response waits for that with ``content.wait_eof()``, so do not call
``wait_eof()`` on such a response yourself.) ``response.url`` is the URL actually requested (the
endpoint's), as after a redirect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, final

from . import require

require("aiohttp", "aiohttp")

import aiohttp  # noqa: E402
from aiohttp.payload import AsyncIterablePayload  # noqa: E402
from yarl import URL  # noqa: E402

from ..balancing import Lease, Pool, PoolSubset, RetryBudget  # noqa: E402
from ._client import IDEMPOTENT, ClientPolicy  # noqa: E402

__all__ = ["BalancingMiddleware", "balancing_middleware"]

_Pool = Pool | PoolSubset
KeyFunc = Callable[[aiohttp.ClientRequest], "str | bytes | None"]

# The request never reached the server: safe to send again whatever the method.
_CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# The connection broke before a response started: safe to send again for idempotent methods.
_RESET_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
_URL_CACHE_SIZE = 4096
_BUFFER_LIMIT = 64 * 1024  # bodies up to this size are awaited before the response is returned


def balancing_middleware(
    pools: _Pool | Mapping[str, _Pool],
    *,
    retries: int = 2,
    retry_statuses: Iterable[int] = (502, 503, 504),
    key: str | KeyFunc | None = None,
    retry_budget: RetryBudget | None = None,
    host_header: Literal["logical", "endpoint"] = "logical",
) -> BalancingMiddleware:
    """An aiohttp client middleware that balances requests across pools.

    Args:
        pools: One `tenantlb.Pool` for every request, or a mapping of URL host (or
            ``"host:port"``) to Pool; other hosts pass through unchanged.
        retries: Retries per request on other endpoints (>= 0).
        retry_statuses: Statuses that make an idempotent request retry (default 502, 503, 504).
        key: A header name, or a callable on the `aiohttp.ClientRequest`, giving the hash key
            for hashing balancers; None for no key.
        retry_budget: A `tenantlb.RetryBudget`; default: a new ``RetryBudget()``.
        host_header: ``"logical"`` (default) keeps the request's ``Host``; ``"endpoint"``
            sends the endpoint's host and port.

    Returns:
        A `BalancingMiddleware` to pass in ``ClientSession(middlewares=[...])``. Run a
        `tenantlb.HealthChecker` next to the session (``async with checker:``) for active checks.

    Raises:
        TypeError: An argument of the wrong type.
        ValueError: A bad value (retries < 0, a status outside 100-599, an empty mapping, ...).

    A request whose pool has no endpoint to pick raises `tenantlb.NoHealthyEndpoint`.
    """
    return BalancingMiddleware(
        pools,
        retries=retries,
        retry_statuses=retry_statuses,
        key=key,
        retry_budget=retry_budget,
        host_header=host_header,
    )


@final
class BalancingMiddleware:
    """The middleware `balancing_middleware` returns; call it as aiohttp does."""

    __slots__ = ("_endpoint_host", "_policy", "_urls", "_waiting")

    def __init__(
        self,
        pools: _Pool | Mapping[str, _Pool],
        *,
        retries: int = 2,
        retry_statuses: Iterable[int] = (502, 503, 504),
        key: str | KeyFunc | None = None,
        retry_budget: RetryBudget | None = None,
        host_header: Literal["logical", "endpoint"] = "logical",
    ) -> None:
        self._policy: ClientPolicy[aiohttp.ClientRequest] = ClientPolicy(
            pools,
            retries=retries,
            retry_statuses=retry_statuses,
            key=key,
            retry_budget=retry_budget,
        )
        if host_header not in ("logical", "endpoint"):
            msg = f"host_header must be 'logical' or 'endpoint', got {host_header!r}"
            raise ValueError(msg)
        self._endpoint_host = host_header == "endpoint"
        self._urls: dict[tuple[str, str], URL] = {}
        self._waiting: set[asyncio.Task[None]] = set()  # strong references to _record_at_eof

    @property
    def retry_budget(self) -> RetryBudget:
        """The `tenantlb.RetryBudget` this middleware spends retries from."""
        return self._policy.budget

    async def __call__(
        self,
        req: aiohttp.ClientRequest,
        handler: aiohttp.ClientHandlerType,
    ) -> aiohttp.ClientResponse:
        """Send *req* to a leased endpoint through *handler*, retrying on others."""
        original = req.url
        policy = self._policy
        pool = policy.pool_for(original.host or "", original.explicit_port)
        if pool is None:
            return await handler(req)
        key = self._key(req)
        method = req.method
        body = req.body
        replayable = not isinstance(body, AsyncIterablePayload)
        policy.budget.deposit()
        lease = pool.acquire(key=key)
        tried: list[str] = []
        attempt = 0
        try:
            while True:
                self._aim(req, original, lease)
                try:
                    response = await handler(req)
                except Exception as exc:
                    lease.record(error=exc)
                    tried.append(lease.url)
                    following = (
                        self._policy.next_lease(
                            pool, key, tried, attempt, reason=type(exc).__name__
                        )
                        if self._retry_error(exc, method, req, replayable)
                        else None
                    )
                    if following is None:
                        raise
                    lease, attempt = following, attempt + 1
                    continue
                except BaseException:  # cancelled: release without an outcome
                    lease.release()
                    raise
                status = response.status
                if (
                    status in policy.retry_statuses
                    and method in IDEMPOTENT
                    and self._can_resend(req, replayable)
                ):
                    following = policy.next_lease(
                        pool, key, [*tried, lease.url], attempt, reason=str(status)
                    )
                    if following is not None:
                        response.release()
                        lease.record(status=status)
                        tried.append(lease.url)
                        lease, attempt = following, attempt + 1
                        continue
                if self._buffers(method, req, replayable, attempt, response):
                    try:
                        error = await _body_error(response.content)
                    except BaseException:  # cancelled while waiting for the body
                        response.close()
                        lease.release()
                        raise
                    if error is not None:  # the connection broke mid-body: retry it
                        response.close()
                        lease.record(status=status, error=error)
                        tried.append(lease.url)
                        following = policy.next_lease(pool, key, tried, attempt)
                        if following is None:
                            raise error
                        lease, attempt = following, attempt + 1
                        continue
                self._hold(lease, status, response)
                return response
        finally:
            req.url = original  # aiohttp may send this request object again (its own retry)

    def _hold(self, lease: Lease, status: int, response: aiohttp.ClientResponse) -> None:
        # Keep the lease in flight until the body is done, as the httpx transports do.
        content = response.content
        if content.is_eof() and content.exception() is None:
            lease.record(status=status)
            return
        task = asyncio.ensure_future(_record_at_eof(lease, status, response))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    def _key(self, req: aiohttp.ClientRequest) -> str | bytes | None:
        policy = self._policy
        if policy.header_key is not None:
            value: str | None = req.headers.get(policy.header_key)
            return value
        if policy.key_fn is not None:
            return policy.key_fn(req)
        return None

    def _aim(self, req: aiohttp.ClientRequest, original: URL, lease: Lease) -> None:
        # Point the request at the endpoint; yarl parses slowly, so each target is built once.
        path = original.raw_path_qs
        target = (lease.url, path)
        url = self._urls.get(target)
        if url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            url = self._urls[target] = URL(lease.url + path, encoded=True)
        req.url = url
        if self._endpoint_host:
            req.headers["Host"] = url.host_port_subcomponent or ""

    def _buffers(
        self,
        method: str,
        req: aiohttp.ClientRequest,
        replayable: bool,
        attempt: int,
        response: aiohttp.ClientResponse,
    ) -> bool:
        # A small identity-encoded body of a request that may still be retried is waited for
        # before the response is returned (it stays unread in response.content), so a
        # connection that breaks in the middle of it is retried like one that broke before it.
        # Below the stream's low-water mark, aiohttp never pauses reading while it waits.
        if method not in IDEMPOTENT or attempt >= self._policy.retries:
            return False
        headers = response.headers
        length = headers.get("Content-Length")
        if (
            length is None
            or not length.isdigit()
            or headers.get("Content-Encoding", "identity") != "identity"
        ):
            return False
        low_water = response.content.get_read_buffer_limits()[0]
        return int(length) <= min(_BUFFER_LIMIT, low_water) and self._can_resend(req, replayable)

    def _can_resend(self, req: aiohttp.ClientRequest, replayable: bool) -> bool:
        body = req.body
        return replayable and (isinstance(body, bytes) or not body.consumed)

    def _retry_error(
        self, exc: Exception, method: str, req: aiohttp.ClientRequest, replayable: bool
    ) -> bool:
        if not self._can_resend(req, replayable):
            return False
        if isinstance(exc, _CONNECT_ERRORS):
            return True
        return method in IDEMPOTENT and isinstance(exc, _RESET_ERRORS)


async def _body_error(content: aiohttp.StreamReader) -> BaseException | None:
    """Wait until the whole body is buffered; the error that cut it short, if any."""
    try:
        if content.exception() is None and not content.is_eof():
            await content.wait_eof()
    except Exception as exc:
        return exc
    return content.exception()


async def _record_at_eof(lease: Lease, status: int, response: aiohttp.ClientResponse) -> None:
    """Record *lease* once the response body is done (all received, broken, or closed early)."""
    content = response.content
    # wait_eof() never wakes for an error set before it was called: look first (no await between).
    error = content.exception()
    try:
        if error is None:
            await content.wait_eof()
    except asyncio.CancelledError:
        if not lease.released:
            lease.release()
        raise
    except Exception as exc:
        error = exc
    if lease.released:
        return
    # A plain ClientConnectionError ("Connection closed") is the caller closing the response
    # before the end: not the endpoint's failure (the httpx transports agree). A broken body is
    # a subclass (ClientPayloadError, ServerDisconnectedError).
    if error is not None and type(error) is not aiohttp.ClientConnectionError:
        lease.record(status=status, error=error)
    else:
        lease.record(status=status)
