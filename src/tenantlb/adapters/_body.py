"""The client's request body as `ProxyApp` streams it upstream: capped, timed, replayable if small."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final, final

import anyio

from .._errors import ContentTooLarge, RequestRejected
from ._asgi import Receive

__all__ = ["Body", "ClientGone", "RequestTimeout"]

# A body up to this size is kept while it streams, so an attempt that failed after sending it can
# be retried with the same bytes (nginx buffers request bodies for the same reason).
_KEEP: Final = 65536


class RequestTimeout(RequestRejected):
    status = 408
    title = "Request Timeout"


class ClientGone(Exception):
    """The client disconnected before its response was complete."""


@final
class Body:
    """The client's request body as an async iterator for the upstream client, capped and timed.

    The first iteration reads the client (``receive()``); a later one replays the kept bytes, but
    only when the whole body was read and was small (`replayable`).
    """

    __slots__ = (
        "_expected",
        "_kept",
        "_limit",
        "_receive",
        "_timeout",
        "done",
        "failure",
        "finished",
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
        self._kept: list[bytes] | None = [] if expected is None or expected <= _KEEP else None
        self.started = False
        self.done = False
        self.finished = anyio.Event()  # set once receive() is no longer ours (body read, or failed)
        self.received = 0
        # What stopped the body (over the limit, stalled, client gone): a client library that
        # sends bodies from a task of its own (aiohttp) reports it as a broken connection.
        self.failure: Exception | None = None

    @property
    def replayable(self) -> bool:
        """Whether another attempt can send this body: nothing was read yet, or all of it is kept."""
        return not self.started or (self.done and self._kept is not None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.started:
            if not self.replayable:  # never send a partial body as if it were the whole one
                msg = "the request body was already sent and was not kept"
                raise RuntimeError(msg)
            for chunk in self._kept or ():
                yield chunk
            return
        try:
            async for chunk in self._chunks():
                yield chunk
        except (RequestRejected, ClientGone) as exc:
            self.failure = exc
            raise
        finally:
            if not self.done:
                self._kept = None  # cut short by the upstream client: what is kept is partial
            self.finished.set()

    async def _chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        while not self.done:
            with anyio.move_on_after(self._timeout) as scope:
                message = await self._receive()
            if scope.cancelled_caught:
                msg = f"the request body stalled for {self._timeout:g} s"
                raise RequestTimeout(msg)
            if message["type"] != "http.request":
                raise ClientGone
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
                raise ClientGone  # the body ended short of its Content-Length: the client left
            if chunk:
                kept = self._kept
                if kept is not None:
                    if self.received <= _KEEP:
                        kept.append(chunk)
                    else:
                        self._kept = None
                yield chunk
