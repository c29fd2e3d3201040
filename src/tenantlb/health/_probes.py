"""Probes: how a `HealthChecker` asks one endpoint whether it is alive.

A probe is any async callable taking an `Endpoint` and returning a `ProbeResult` or a bool.
`HTTPProbe` sends an HTTP request over one shared httpcore connection pool; `TCPProbe` opens a
TCP connection. A probe that is also an async context manager is entered by the checker when
it starts and exited when it stops (that is how `HTTPProbe` opens and closes its connections).
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import socket
import ssl
import struct
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

import anyio
import attrs
import httpcore

from .._validate import FieldTypeError, FieldValueError

if TYPE_CHECKING:
    from ..balancing import Endpoint

__all__ = ["HTTPProbe", "Probe", "ProbeResult", "TCPProbe"]

_MAX_BODY = 64 * 1024  # read at most this much of a health response
_USER_AGENT = b"tenantlb-health-check"


@final
@attrs.define(frozen=True, kw_only=True)
class ProbeResult:
    """The outcome of one probe.

    Attributes:
        healthy: Whether the endpoint passed.
        reason: A short cause for logs, stats and events (``"status 503"``, ``"connect refused"``).
        immediate: A failure that makes the endpoint unhealthy at once, without waiting for
            ``unhealthy_threshold`` failures (Envoy does this for an unexpected HTTP status).
    """

    healthy: bool
    reason: str = ""
    immediate: bool = False


@runtime_checkable
class Probe(Protocol):
    """An async callable that checks one endpoint; return a `ProbeResult` or a bool.

    Raising counts as a failed check (its type and message become the reason); so does
    returning anything else. The checker enforces the timeout; the probe need not.
    """

    async def __call__(self, endpoint: Endpoint, /) -> ProbeResult | bool: ...


@final
class HTTPProbe:
    """Check an endpoint with an HTTP request (Envoy's HTTP health check).

    ```python
    probe = tlb.HTTPProbe("/healthz", expected_statuses=range(200, 300), expect_body="ok")
    ```

    The request goes to the endpoint's URL with *path* appended. A status in *expected_statuses*
    (and, if given, *expect_body* found in the first 64 KiB of the body) passes. Any other status
    fails **immediately** (the endpoint becomes unhealthy without waiting for
    ``unhealthy_threshold``), as in Envoy, unless it is in *retriable_statuses*, which count like
    network errors. Connection errors and timeouts count towards ``unhealthy_threshold``.

    Each endpoint gets one keep-alive httpcore connection, reused from check to check, all
    closed when the checker stops (the probe is an async context manager the checker enters).
    This scales to thousands of endpoints where a single httpcore connection pool, which scans
    all its connections on every request, does not. Give each checker its own probe. Called
    outside ``async with``, the probe opens a connection for that one request.

    Args:
        path: The request path (default ``"/healthz"``).
        method: The request method (default ``"GET"``).
        expected_statuses: Statuses that pass (default 200-399).
        retriable_statuses: Statuses that fail without being immediate (Envoy's name; default none).
        expect_body: Bytes (or text, UTF-8) the body must contain; None skips the check.
        headers: Extra request headers as ``(name, value)`` pairs.
        http2: Negotiate HTTP/2 on TLS (needs the ``h2`` package).
        verify: Verify TLS certificates (default True), or an `ssl.SSLContext` to use.

    Raises:
        TypeError: An argument of the wrong type.
        ValueError: A path not starting with ``/``, or an empty status set.
    """

    def __init__(
        self,
        path: str = "/healthz",
        *,
        method: str = "GET",
        expected_statuses: Iterable[int] = range(200, 400),
        retriable_statuses: Iterable[int] = (),
        expect_body: bytes | str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        http2: bool = False,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        if not isinstance(path, str) or not path.startswith("/"):
            msg = f"path must be a str starting with '/', got {path!r}"
            raise FieldValueError(msg, field="path")
        if not isinstance(method, str) or not method.isalpha():
            msg = f"method must be an HTTP method name, got {method!r}"
            raise FieldValueError(msg, field="method")
        self.path = path
        self.method = method.upper()
        self.expected_statuses = frozenset(_statuses("expected_statuses", expected_statuses))
        if not self.expected_statuses:
            msg = "expected_statuses must not be empty"
            raise FieldValueError(msg, field="expected_statuses")
        self.retriable_statuses = frozenset(_statuses("retriable_statuses", retriable_statuses))
        if isinstance(expect_body, str):
            expect_body = expect_body.encode()
        if expect_body is not None and not isinstance(expect_body, bytes):
            msg = f"expect_body must be bytes, str or None, got {type(expect_body).__name__}"
            raise FieldTypeError(msg, field="expect_body")
        self.expect_body = expect_body
        self.headers = tuple((str(k), str(v)) for k, v in headers)
        self.http2 = bool(http2)
        if not isinstance(verify, bool | ssl.SSLContext):
            msg = f"verify must be a bool or an ssl.SSLContext, got {type(verify).__name__}"
            raise FieldTypeError(msg, field="verify")
        self.verify = verify
        self._request_headers = [
            (b"User-Agent", _USER_AGENT),
            *((k.encode(), v.encode()) for k, v in self.headers),
        ]
        self._context: ssl.SSLContext | None = None
        self._connections: dict[str, httpcore.AsyncHTTPConnection] = {}
        self._users = 0

    def __repr__(self) -> str:
        return f"HTTPProbe({self.path!r}, method={self.method!r})"

    async def __aenter__(self) -> HTTPProbe:
        if self._context is None:
            self._context = self._ssl_context()
        self._users += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._users -= 1
        if self._users <= 0:
            self._users = 0
            self._context = None
            connections, self._connections = self._connections, {}
            with anyio.CancelScope(shield=True):
                for connection in connections.values():
                    await connection.aclose()

    async def forget(self, endpoint: Endpoint) -> None:
        """Close the keep-alive connection kept for *endpoint* (the checker calls this when the
        endpoint leaves the pool)."""
        connection = self._connections.pop(endpoint.url, None)
        if connection is not None:
            with anyio.CancelScope(shield=True):
                await connection.aclose()

    @property
    def is_open(self) -> bool:
        """True while a checker holds the probe open (between its ``__aenter__`` and ``__aexit__``)."""
        return self._context is not None

    async def __call__(self, endpoint: Endpoint) -> ProbeResult:
        """Send the request to *endpoint* and judge the response."""
        if self._context is None:  # not opened by a checker: one connection for this request
            async with self:
                return await self(endpoint)
        connection = self._connections.get(endpoint.url)
        if connection is None or connection.is_closed() or not connection.is_available():
            if connection is not None:
                await connection.aclose()
            connection = self._connections[endpoint.url] = self._connect(endpoint)
        return await self._check(connection, endpoint)

    async def _check(
        self, connection: httpcore.AsyncHTTPConnection, endpoint: Endpoint
    ) -> ProbeResult:
        url = endpoint.url + self.path
        try:
            request = httpcore.Request(
                self.method,
                url,
                headers=[(b"Host", _host_header(endpoint)), *self._request_headers],
            )
            response = await connection.handle_async_request(request)
            try:
                status = response.status
                body = b""
                # Read the (small) body even when not checking it: an unread body would make
                # httpcore close the connection instead of keeping it alive for the next check.
                async for chunk in response.aiter_stream():
                    body += chunk
                    if len(body) >= _MAX_BODY:
                        break
            finally:
                await response.aclose()
        except httpcore.ConnectError as exc:
            return ProbeResult(healthy=False, reason=f"connect error: {exc or 'refused'}")
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException) as exc:
            return ProbeResult(healthy=False, reason=f"{type(exc).__name__}: {exc}")
        except httpcore.ConnectionNotAvailable:
            return ProbeResult(healthy=False, reason="connection not available")
        if status not in self.expected_statuses:
            return ProbeResult(
                healthy=False,
                reason=f"unexpected status {status}",
                immediate=status not in self.retriable_statuses,
            )
        if self.expect_body is not None and self.expect_body not in body[:_MAX_BODY]:
            return ProbeResult(healthy=False, reason="expected body not found", immediate=True)
        return ProbeResult(healthy=True, reason=f"status {status}")

    def _connect(self, endpoint: Endpoint) -> httpcore.AsyncHTTPConnection:
        # One keep-alive connection per endpoint rather than one httpcore pool: the pool scans
        # every connection on each request (O(n)), which cannot keep up with 1000 endpoints.
        scheme = endpoint.url.split("://", 1)[0].encode()
        port = endpoint.port or (443 if scheme == b"https" else 80)
        return httpcore.AsyncHTTPConnection(
            origin=httpcore.Origin(scheme, endpoint.host.encode(), port),
            ssl_context=self._context,
            http1=True,
            http2=self.http2,
            keepalive_expiry=60.0,
        )

    def _ssl_context(self) -> ssl.SSLContext:
        if self.http2:
            try:
                importlib.import_module("h2")
            except ImportError as exc:
                msg = "HTTPProbe(http2=True) needs the h2 package: pip install h2"
                raise RuntimeError(msg) from exc
        verify = self.verify
        if isinstance(verify, ssl.SSLContext):
            return verify
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.http2:
            context.set_alpn_protocols(["h2", "http/1.1"])
        return context


def _host_header(endpoint: Endpoint) -> bytes:
    netloc = endpoint.url.split("://", 1)[1].split("/", 1)[0]
    return netloc.encode()


@final
class TCPProbe:
    """Check that an endpoint accepts a TCP connection (Envoy's TCP health check without payload).

    The connection is closed right after it is established. The endpoint's URL must carry a port
    (or use a scheme with a known default port).
    """

    def __repr__(self) -> str:
        return "TCPProbe()"

    async def __call__(self, endpoint: Endpoint) -> ProbeResult:
        """Connect to *endpoint*'s host and port, then close."""
        port = endpoint.port
        if port is None:
            return ProbeResult(healthy=False, reason="endpoint has no port", immediate=True)
        try:
            family = _ip_family(endpoint.host)
            if family is None:  # a host name: resolve and connect with happy eyeballs
                stream = await anyio.connect_tcp(endpoint.host, port)
                await stream.aclose()
            else:
                await _connect_ip(family, endpoint.host, port)
        except OSError as exc:
            return ProbeResult(healthy=False, reason=f"connect error: {exc.strerror or exc}")
        return ProbeResult(healthy=True, reason="connected")


async def _connect_ip(family: socket.AddressFamily, host: str, port: int) -> None:
    # A bare non-blocking connect: about a third of anyio.connect_tcp's CPU per check, which
    # matters at a thousand checks a second. Only for IP literals (nothing to resolve).
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # Close with a reset (linger 0), as HAProxy's checks do: no TIME_WAIT socket per check
        # piling up at a thousand checks a second, and less work for both kernels.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        try:
            sock.connect((host, port))
        except BlockingIOError:
            await _wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error)) from None
    finally:
        sock.close()


_LINGER_RESET = struct.pack("ii", 1, 0)


def _ip_family(host: str) -> socket.AddressFamily | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


# anyio 4.7 renamed wait_socket_writable (now deprecated) to wait_writable.
_wait_writable = getattr(anyio, "wait_writable", None) or anyio.wait_socket_writable


def _statuses(name: str, values: Iterable[int]) -> list[int]:
    if isinstance(values, int | str | bytes):
        msg = f"{name} must be an iterable of ints, got {type(values).__name__}"
        raise FieldTypeError(msg, field=name)
    out = list(values)
    for status in out:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            msg = f"{name} must hold HTTP statuses (100-599), got {status!r}"
            raise FieldValueError(msg, field=name)
    return out
