"""httpx transports that balance requests across a `Pool`: ``pip install 'tenantlb[httpx]'``.

```python
import httpx
import tenantlb as tlb
from tenantlb.adapters.httpx import AsyncBalancingTransport

users = tlb.Pool(["http://10.0.0.1:8000", "http://10.0.0.2:8000"])
client = httpx.AsyncClient(transport=AsyncBalancingTransport(users), base_url="http://users")
```

Each request is sent to an endpoint leased from the pool: the wrapped transport (by default
``httpx.AsyncHTTPTransport()`` / ``httpx.HTTPTransport()``, which keeps connections alive) sees the
URL's scheme, host and port replaced by the endpoint's (and the endpoint's path prefix, if any,
put in front of the path), while the ``Host`` header keeps the logical name. Every attempt holds a
`tenantlb.Lease` and records its status and latency, so PeakEWMA and outlier detection learn from
real traffic. A response's lease is released when its body is closed (``response.aclose()``,
leaving ``client.stream(...)``, or the end of a non-streamed request), or when the request is
cancelled.

Retries go to *another* endpoint: a connect error for any method, and for idempotent methods
(GET, HEAD, OPTIONS, TRACE, PUT, DELETE) also a reset, read or write error before the response
is returned and a status in ``retry_statuses``. A small body (``Content-Length`` up to 64 KiB) of
a request that could still be retried is read before the response is returned, so a connection
that breaks in the middle of it counts as "before" too; larger bodies stream as usual. A body that cannot be sent twice (a generator, a file
upload) is never retried, and a `tenantlb.RetryBudget` caps retries to a share of recent requests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, ExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Literal, cast, final

from . import require

require("httpx", "httpx")

import anyio.from_thread  # noqa: E402
import httpx  # noqa: E402

from ..balancing import Lease, Pool, PoolSubset, RetryBudget  # noqa: E402
from ..health import HealthChecker  # noqa: E402
from ._client import IDEMPOTENT, ClientPolicy, check_health  # noqa: E402

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AsyncBalancingTransport", "BalancingTransport"]

_Pool = Pool | PoolSubset
KeyFunc = Callable[[httpx.Request], "str | bytes | None"]
HostHeader = Literal["logical", "endpoint"]

# The request never reached the server: safe to send again whatever the method.
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)
# The connection broke before a response started: safe to send again for idempotent methods.
_RESET_ERRORS = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
_URL_CACHE_SIZE = 4096
_BUFFER_LIMIT = 64 * 1024  # bodies up to this size are read before the response is returned


class _Balancing:
    """What both transports share: arguments, routing and the retry decision."""

    def __init__(
        self,
        pools: _Pool | Mapping[str, _Pool],
        *,
        retries: int,
        retry_statuses: Iterable[int],
        key: str | KeyFunc | None,
        retry_budget: RetryBudget | None,
        health: HealthChecker | Iterable[HealthChecker] | None,
        host_header: HostHeader,
    ) -> None:
        self._policy: ClientPolicy[httpx.Request] = ClientPolicy(
            pools,
            retries=retries,
            retry_statuses=retry_statuses,
            key=key,
            retry_budget=retry_budget,
        )
        self._health = check_health(health)
        if host_header not in ("logical", "endpoint"):
            msg = f"host_header must be 'logical' or 'endpoint', got {host_header!r}"
            raise ValueError(msg)
        self._endpoint_host = host_header == "endpoint"
        # httpx parses a URL in tens of microseconds: build each (endpoint, path) target once.
        self._urls: dict[tuple[str, bytes], httpx.URL] = {}

    @property
    def retry_budget(self) -> RetryBudget:
        """The `tenantlb.RetryBudget` this transport spends retries from (see its ``stats()``)."""
        return self._policy.budget

    def _key(self, request: httpx.Request) -> str | bytes | None:
        policy = self._policy
        if policy.header_key is not None:
            value: str | None = request.headers.get(policy.header_key)
            return value
        if policy.key_fn is not None:
            return policy.key_fn(request)
        return None

    def _endpoint_url(self, url: httpx.URL, lease: Lease) -> httpx.URL:
        # The endpoint's address with the request's path and query (httpx parses a URL in tens
        # of microseconds: each (endpoint, path) pair is parsed once).
        raw_path = url.raw_path
        target = (lease.url, raw_path)
        endpoint_url = self._urls.get(target)
        if endpoint_url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            endpoint_url = self._urls[target] = httpx.URL(lease.url + raw_path.decode("ascii"))
        return endpoint_url

    def _attempt(self, request: httpx.Request, url: httpx.URL) -> httpx.Request:
        # The request as the wrapped transport must see it: the endpoint's address, our headers.
        # A copy, never the caller's own request changed for the call: the same request may be
        # in flight twice, and a wrapped transport may keep what it was given.
        headers = request.headers
        if self._endpoint_host:
            headers = headers.copy()
            headers["Host"] = url.netloc.decode("ascii")
        return httpx.Request(
            request.method,
            url,
            headers=headers,
            stream=request.stream,
            extensions=request.extensions,
        )

    def _buffers(
        self, method: str, replayable: bool, attempt: int, response: httpx.Response
    ) -> bool:
        # A small body of a request that may still be retried is read before it is returned, so
        # a connection that breaks in the middle of it is retried like one that broke before it.
        if method not in IDEMPOTENT or not replayable or attempt >= self._policy.retries:
            return False
        # The raw pairs, not headers.get(): a fresh Headers works out its text encoding from
        # every field on its first lookup, a quarter of what this transport costs a request.
        for name, value in response.headers.raw:
            if len(name) == 14 and name.lower() == b"content-length":
                return value.isdigit() and int(value) <= _BUFFER_LIMIT
        return False

    def _retry_error(self, exc: Exception, method: str, replayable: bool) -> bool:
        if not replayable:
            return False
        if isinstance(exc, _CONNECT_ERRORS):
            return True
        return method in IDEMPOTENT and isinstance(exc, _RESET_ERRORS)


@final
class AsyncBalancingTransport(_Balancing, httpx.AsyncBaseTransport):
    """An httpx async transport that sends each request to an endpoint leased from a pool.

    ```python
    transport = AsyncBalancingTransport({"users": users_pool, "billing": billing_pool})
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("http://users/v1/me")          # balanced across users_pool
        await client.get("https://example.com/")        # not in the mapping: sent as is
    ```

    Args:
        pools: One `tenantlb.Pool` for every request, or a mapping of URL host (or
            ``"host:port"``) to Pool; a host not in the mapping goes to *transport* unchanged.
        transport: The transport that does the I/O (default ``httpx.AsyncHTTPTransport()``).
        retries: Retries per request on other endpoints (>= 0; 0 disables retries).
        retry_statuses: Statuses that make an idempotent request retry (default 502, 503, 504).
        key: A header name whose value, or a callable on the `httpx.Request` whose result,
            is the hash key for hashing balancers (sticky sessions); None for no key.
        retry_budget: A `tenantlb.RetryBudget` (share one across transports if you like);
            default: a new ``RetryBudget()`` (20% of recent requests plus 10 retries a second).
        health: A `tenantlb.HealthChecker` (or several) started by ``async with transport``
            (and so by ``async with httpx.AsyncClient(transport=...)``) and stopped on exit.
        host_header: ``"logical"`` (default) keeps the request's ``Host``; ``"endpoint"``
            sends the endpoint's host and port instead.

    Raises:
        TypeError: An argument of the wrong type (a pool that is not a Pool, a key that is
            neither a header name nor a callable, a transport that is not an httpx one).
        ValueError: A bad value (retries < 0, a status outside 100-599, an empty mapping).

    A request whose pool has no endpoint to pick raises `tenantlb.NoHealthyEndpoint`
    (a `tenantlb.RequestRejected` with status 503).
    """

    def __init__(
        self,
        pools: _Pool | Mapping[str, _Pool],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retries: int = 2,
        retry_statuses: Iterable[int] = (502, 503, 504),
        key: str | KeyFunc | None = None,
        retry_budget: RetryBudget | None = None,
        health: HealthChecker | Iterable[HealthChecker] | None = None,
        host_header: HostHeader = "logical",
    ) -> None:
        super().__init__(
            pools,
            retries=retries,
            retry_statuses=retry_statuses,
            key=key,
            retry_budget=retry_budget,
            health=health,
            host_header=host_header,
        )
        if transport is None:
            transport = httpx.AsyncHTTPTransport()
        elif not isinstance(transport, httpx.AsyncBaseTransport):
            msg = f"transport must be an httpx.AsyncBaseTransport, got {type(transport).__name__}"
            raise TypeError(msg)
        self._transport = transport
        self._stack: AsyncExitStack | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* to a leased endpoint, retrying on others as the class describes."""
        logical = request.url
        policy = self._policy
        pool = policy.pool_for(logical.host, logical.port)
        if pool is None:
            return await self._transport.handle_async_request(request)
        key = self._key(request)
        method = request.method
        replayable = isinstance(request.stream, httpx.ByteStream)
        policy.budget.deposit()
        lease = pool.acquire(key=key)
        tried: list[str] = []
        attempt = 0
        while True:
            try:
                response = await self._transport.handle_async_request(
                    self._attempt(request, self._endpoint_url(logical, lease))
                )
            except Exception as exc:
                lease.record(error=exc)
                tried.append(lease.url)
                following = (
                    self._policy.next_lease(pool, key, tried, attempt, reason=type(exc).__name__)
                    if self._retry_error(exc, method, replayable)
                    else None
                )
                if following is None:
                    raise
                lease, attempt = following, attempt + 1
                continue
            except BaseException:  # cancelled: release without an outcome
                lease.release()
                raise
            status = response.status_code
            if replayable and status in policy.retry_statuses and method in IDEMPOTENT:
                following = policy.next_lease(
                    pool, key, [*tried, lease.url], attempt, reason=str(status)
                )
                if following is not None:
                    try:
                        await response.aclose()
                    except BaseException:
                        following.release()
                        raise
                    finally:
                        lease.record(status=status)
                    tried.append(lease.url)
                    lease, attempt = following, attempt + 1
                    continue
            if self._buffers(method, replayable, attempt, response):
                stream = cast(httpx.AsyncByteStream, response.stream)
                try:
                    body = b"".join([chunk async for chunk in stream])
                    await stream.aclose()
                except Exception as exc:  # the connection broke mid-body: retry it
                    with contextlib.suppress(Exception):
                        await stream.aclose()
                    lease.record(status=status, error=exc)
                    tried.append(lease.url)
                    following = policy.next_lease(pool, key, tried, attempt)
                    if following is None:
                        raise
                    lease, attempt = following, attempt + 1
                    continue
                except BaseException:
                    lease.release()
                    await stream.aclose()
                    raise
                lease.record(status=status)
                response.stream = httpx.ByteStream(body)
                return response
            response.stream = _AsyncLeasedStream(response.stream, lease, status)  # type: ignore[arg-type]
            return response

    async def __aenter__(self) -> Self:
        """Enter the wrapped transport and start the health checkers."""
        if self._stack is not None:
            msg = "AsyncBalancingTransport is already entered"
            raise RuntimeError(msg)
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._transport)
            for checker in self._health:
                await stack.enter_async_context(checker)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        """Stop the health checkers and close the wrapped transport."""
        await self.aclose()

    async def aclose(self) -> None:
        """Stop what the transport started and close the wrapped transport (idempotent)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()  # health checkers first, then the transport's own __aexit__
        else:
            await self._transport.aclose()


@final
class BalancingTransport(_Balancing, httpx.BaseTransport):
    """The sync twin of `AsyncBalancingTransport`, for ``httpx.Client`` (same arguments).

    ```python
    with httpx.Client(transport=BalancingTransport(users_pool), base_url="http://users") as client:
        client.get("/v1/me")
    ```

    Health checkers given with ``health=`` run in a background thread (an anyio blocking portal)
    while the transport is entered (``with transport:`` or ``with httpx.Client(transport=...)``).
    The transport is thread-safe as far as httpx's own transport is.
    """

    def __init__(
        self,
        pools: _Pool | Mapping[str, _Pool],
        *,
        transport: httpx.BaseTransport | None = None,
        retries: int = 2,
        retry_statuses: Iterable[int] = (502, 503, 504),
        key: str | KeyFunc | None = None,
        retry_budget: RetryBudget | None = None,
        health: HealthChecker | Iterable[HealthChecker] | None = None,
        host_header: HostHeader = "logical",
    ) -> None:
        super().__init__(
            pools,
            retries=retries,
            retry_statuses=retry_statuses,
            key=key,
            retry_budget=retry_budget,
            health=health,
            host_header=host_header,
        )
        if transport is None:
            transport = httpx.HTTPTransport()
        elif not isinstance(transport, httpx.BaseTransport):
            msg = f"transport must be an httpx.BaseTransport, got {type(transport).__name__}"
            raise TypeError(msg)
        self._transport = transport
        self._stack: ExitStack | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* to a leased endpoint, retrying on others as the class describes."""
        logical = request.url
        policy = self._policy
        pool = policy.pool_for(logical.host, logical.port)
        if pool is None:
            return self._transport.handle_request(request)
        key = self._key(request)
        method = request.method
        replayable = isinstance(request.stream, httpx.ByteStream)
        policy.budget.deposit()
        lease = pool.acquire(key=key)
        tried: list[str] = []
        attempt = 0
        while True:
            try:
                response = self._transport.handle_request(
                    self._attempt(request, self._endpoint_url(logical, lease))
                )
            except Exception as exc:
                lease.record(error=exc)
                tried.append(lease.url)
                following = (
                    self._policy.next_lease(pool, key, tried, attempt, reason=type(exc).__name__)
                    if self._retry_error(exc, method, replayable)
                    else None
                )
                if following is None:
                    raise
                lease, attempt = following, attempt + 1
                continue
            except BaseException:  # KeyboardInterrupt and the like
                lease.release()
                raise
            status = response.status_code
            if replayable and status in policy.retry_statuses and method in IDEMPOTENT:
                following = policy.next_lease(
                    pool, key, [*tried, lease.url], attempt, reason=str(status)
                )
                if following is not None:
                    try:
                        response.close()
                    except BaseException:
                        following.release()
                        raise
                    finally:
                        lease.record(status=status)
                    tried.append(lease.url)
                    lease, attempt = following, attempt + 1
                    continue
            if self._buffers(method, replayable, attempt, response):
                stream = cast(httpx.SyncByteStream, response.stream)
                try:
                    body = b"".join(list(stream))
                    stream.close()
                except Exception as exc:  # the connection broke mid-body: retry it
                    with contextlib.suppress(Exception):
                        stream.close()
                    lease.record(status=status, error=exc)
                    tried.append(lease.url)
                    following = policy.next_lease(pool, key, tried, attempt)
                    if following is None:
                        raise
                    lease, attempt = following, attempt + 1
                    continue
                except BaseException:
                    lease.release()
                    stream.close()
                    raise
                lease.record(status=status)
                response.stream = httpx.ByteStream(body)
                return response
            response.stream = _SyncLeasedStream(response.stream, lease, status)  # type: ignore[arg-type]
            return response

    def __enter__(self) -> Self:
        """Enter the wrapped transport and start the health checkers in a background thread."""
        if self._stack is not None:
            msg = "BalancingTransport is already entered"
            raise RuntimeError(msg)
        with ExitStack() as stack:
            stack.enter_context(self._transport)
            if self._health:
                portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
                for checker in self._health:
                    stack.enter_context(portal.wrap_async_context_manager(checker))
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        """Stop the health checkers and close the wrapped transport."""
        self.close()

    def close(self) -> None:
        """Stop what the transport started and close the wrapped transport (idempotent)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        else:
            self._transport.close()


class _AsyncLeasedStream(httpx.AsyncByteStream):
    """A response body that records its lease's outcome when it is closed.

    An iterator object, not an async generator: one generator fewer per response, and none of
    ours left for the garbage collector when a caller stops reading early.
    """

    __slots__ = ("_cancelled", "_error", "_iterator", "_lease", "_status", "_stream")

    def __init__(self, stream: httpx.AsyncByteStream, lease: Lease, status: int) -> None:
        self._stream = stream
        self._iterator: AsyncIterator[bytes] | None = None
        self._lease = lease
        self._status = status
        self._error: Exception | None = None
        self._cancelled = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._iterator = self._stream.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        if self._iterator is None:
            self._iterator = self._stream.__aiter__()
        try:
            return await self._iterator.__anext__()
        except StopAsyncIteration:
            raise
        except Exception as exc:
            self._error = exc
            raise
        except BaseException:
            self._cancelled = True
            raise

    async def aclose(self) -> None:
        self._iterator = None
        try:
            await self._stream.aclose()
        finally:
            _finish(self._lease, self._status, self._error, self._cancelled)


class _SyncLeasedStream(httpx.SyncByteStream):
    """A response body that records its lease's outcome when it is closed."""

    __slots__ = ("_cancelled", "_error", "_lease", "_status", "_stream")

    def __init__(self, stream: httpx.SyncByteStream, lease: Lease, status: int) -> None:
        self._stream = stream
        self._lease = lease
        self._status = status
        self._error: Exception | None = None
        self._cancelled = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except Exception as exc:
            self._error = exc
            raise
        except BaseException:
            self._cancelled = True
            raise

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            _finish(self._lease, self._status, self._error, self._cancelled)


def _finish(lease: Lease, status: int, error: Exception | None, cancelled: bool) -> None:
    # The body is closed: count the outcome once (a cancelled read counts nothing, as Lease does).
    if lease.released:
        return
    if cancelled:
        lease.release()
    elif error is not None:
        lease.record(status=status, error=error)
    else:
        lease.record(status=status)
