"""One admitted request through `ProxyApp`: the attempts, the retries, streaming the answer back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Final, final

from .._errors import ContentTooLarge, NoHealthyEndpoint, RequestRejected
from ._asgi import Receive, Scope, Send, origin_form, ratelimit_headers
from ._body import Body, ClientGone
from ._headers import response_headers
from ._transport import UpstreamFailure, UpstreamResponse
from ._watch import unless_gone

if TYPE_CHECKING:
    from ..gateway import Ticket
    from ._proxy import ProxyApp

__all__ = ["IDEMPOTENT", "Exchange"]

logger = logging.getLogger("tenantlb.proxy")

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class _BadGateway(RequestRejected):
    status = 502
    title = "Bad Gateway"


class _GatewayTimeout(RequestRejected):
    status = 504
    title = "Gateway Timeout"


class _Busy(RequestRejected):
    status = 503
    title = "Service Unavailable"


class _RetryStatus(Exception):
    """Recorded on a lease whose endpoint answered a status we retry."""


@final
class Exchange:
    """One admitted request through the proxy: attempts, retries, streaming back."""

    __slots__ = (
        "_app",
        "_content",
        "_failure",
        "_out",
        "_receive",
        "_scope",
        "_send",
        "_started",
        "ticket",
    )

    def __init__(
        self, app: ProxyApp, scope: Scope, receive: Receive, send: Send, ticket: Ticket
    ) -> None:
        self._app = app
        self._scope = scope
        self._receive = receive
        self._send = send
        self.ticket = ticket
        self._started = False
        # What `_fetch` learnt of the last attempt's answer: the headers to send back, a small
        # body read whole, or why reading it failed.
        self._out: list[tuple[bytes, bytes]] = []
        self._content: bytes | None = None
        self._failure: UpstreamFailure | None = None

    def refusal(self, exc: Exception) -> RequestRejected | None:
        """What to answer for *exc*, which ended `run` (called in its ``except`` block): None
        when there is nobody to answer or the response has started."""
        if isinstance(exc, ClientGone):
            return None  # the finally clauses released everything
        if not isinstance(exc, RequestRejected):  # never a 500 from the proxy: log it, 502
            logger.exception(
                "tenantlb proxy: unexpected error for tenant %r", self.ticket.tenant.id
            )
            exc = _BadGateway(f"proxy error: {type(exc).__name__}")
        return None if self._started else exc

    async def run(self) -> None:
        """Proxy the request; what it raises is answered as `refusal` says."""
        app, scope, ticket = self._app, self._scope, self.ticket
        method: str = scope["method"]
        headers, client_host, chunked, length = app._head(scope, ticket)
        if length == -1:
            msg = "the content-length header is not one number of bytes"
            raise RequestRejected(msg)
        limit = ticket.max_body_size
        if app._max_body_size is not None and (limit is None or app._max_body_size < limit):
            limit = app._max_body_size
        if limit is not None and length is not None and length > limit:
            msg = f"the request body is over {limit} bytes"
            raise ContentTooLarge(msg, limit=limit)
        target = _target(scope)
        has_body = chunked or bool(length)
        body = Body(self._receive, limit, app._body_timeout, length) if has_body else None
        idempotent = method in IDEMPOTENT
        budget = app._budget
        budget.deposit()
        retries_left = app._retries
        fresh_retry = True  # one retry on a new connection when a reused one turns out stale
        transport = app._transport
        while True:
            endpoint = ticket.endpoint
            assert endpoint is not None  # admitted with lease=True
            url = endpoint.url
            host = client_host if app._preserve_host and client_host else app._netloc(url)
            request = [(b"host", host), *headers]
            try:
                response = await unless_gone(
                    self._receive,
                    None if body is None else body.finished,
                    self._fetch(url, method, target, request, body, chunked),
                    transport.read_within,
                )
            except (RequestRejected, ClientGone):
                # The client's body was over the limit, stalled, or the client went away: the
                # endpoint is not to blame, release its lease without an outcome.
                self._release()
                raise
            except UpstreamFailure as failure:
                if body is not None and body.failure is not None:
                    self._release()
                    raise body.failure from None
                # Taken after the attempt: once the upstream client pulled a byte of the body,
                # only a body kept whole can be sent again (an empty or partial one never is).
                unsent = body is None or not body.started
                replayable = body is None or body.replayable
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
                # A reset on a reused connection may be the endpoint closing it while idle, or
                # the endpoint dying after it got the request: only an idempotent one is resent.
                if (
                    kind == "reset"
                    and failure.stale
                    and fresh_retry
                    and idempotent
                    and replayable
                    and budget.try_withdraw()
                ):
                    fresh_retry = False
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
            cut = self._failure  # a small answer whose body broke off: nothing of it sent yet
            if (
                cut is not None
                and cut.kind in ("reset", "timeout")
                and retries_left
                and idempotent
                and (body is None or body.replayable)
                and self._retry(cut.cause)
            ):
                retries_left -= 1
                await response.aclose(complete=False)
                continue
            status = response.status
            if (
                status in app._retry_statuses
                and retries_left
                and idempotent
                and (body is None or body.replayable)
                and self._retry_status(status)
            ):
                retries_left -= 1
                await response.aclose(complete=self._content is not None)
                continue
            await self._stream(response, status)
            return

    async def _fetch(
        self,
        url: str,
        method: str,
        target: bytes,
        request: list[tuple[bytes, bytes]],
        body: Body | None,
        chunked: bool,
    ) -> UpstreamResponse:
        """Send one attempt; read a small answer's body whole in the same watched wait."""
        response = await self._app._transport.send(url, method, target, request, body, chunked)
        self._out, length = response_headers(response.headers)
        self._content = self._failure = None
        if length is not None:
            try:
                self._content = await response.read()
            except UpstreamFailure as failure:  # mid-body: answered by `_stream`
                self._failure = failure
            except BaseException:  # cancelled (the client left, a timeout): not kept
                await response.aclose(complete=False)
                raise
        return response

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
        out = self._out
        if ticket.decision is not None:
            out.extend(ratelimit_headers(ticket.decision))
        completed = False
        try:
            if self._failure is not None:
                raise self._failure
            content = self._content
            if content is not None:  # a small body, read whole: sent in one message
                self._started = True
                await send({"type": "http.response.start", "status": status, "headers": out})
                await send({"type": "http.response.body", "body": content})
            else:
                self._started = True
                await send({"type": "http.response.start", "status": status, "headers": out})
                async with aclosing(response.stream()) as chunks:
                    await unless_gone(self._receive, None, self._stream_long(chunks))
            completed = True
        except ClientGone:
            self._release()  # the client left: no outcome for the endpoint
            raise
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
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def _target(scope: Scope) -> bytes:
    """The origin-form target to send upstream: an absolute-form one (``http://host/p``) loses
    its scheme and authority (RFC 9112 §3.2.2 would have the endpoint believe them)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    if not raw.startswith(b"/"):
        raw = origin_form(raw.decode("latin-1")).encode("latin-1")
        if not raw.startswith(b"/"):
            msg = "the request target must be a path"
            raise RequestRejected(msg)
    query = scope.get("query_string")
    return raw + b"?" + query if query else raw
