"""The tenantlb error tree.

Every error tenantlb raises on purpose derives from `TenantLBError`, so one ``except`` catches them
all; bad *arguments* to our API are ordinary `TypeError` / `ValueError` (anyio's convention), and
misuse (a lease recorded twice) is `RuntimeError`. Third-party errors (redis, httpcore, OS sockets)
are translated at the boundary with ``raise X(...) from exc``.

```
TenantLBError
├── ConfigError                 (also a ValueError) a bad config document; .path names the field
├── EndpointNotFound            (also a LookupError) an unknown endpoint URL
├── DiscoveryError              a discovery source could not produce endpoints (the pool keeps its own)
└── RequestRejected             a request cannot be served; .status is the HTTP status to answer
    ├── UnknownTenant           no tenant matched the request (401)
    ├── Unauthenticated         missing or wrong credentials (401)
    │   └── MissingCredentials  the request carries no credentials at all (401)
    ├── Forbidden               the tenant is disabled or may not use that upstream (403)
    ├── RateLimited             a rate limit said no; .decision tells when to retry (429)
    ├── OverCapacity            the tenant's concurrency slots are all taken (503)
    │   ├── QueueFull           a fair queue had no room for the request (503, Retry-After)
    │   └── QueueTimeout        a request waited in a fair queue past its timeout (503, Retry-After)
    ├── NoHealthyEndpoint       a pool had nothing to pick from (503)
    ├── StoreUnavailable        a rate-limit store (Redis) could not answer; fail_closed (503)
    ├── ContentTooLarge         the request body is over the size limit (413)
    └── HeadersTooLarge         the request's header fields are over the size limit (431)
```

An adapter needs one ``except RequestRejected``: every refusal carries its `status`, a short
`title` and the response `headers` (``Retry-After``, RateLimit fields) to send.

Messages never contain raw API keys: they name the tenant id or the header, never its value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._redact import redact

if TYPE_CHECKING:
    from .ratelimit import Decision

__all__ = [
    "ConfigError",
    "ContentTooLarge",
    "DiscoveryError",
    "EndpointNotFound",
    "Forbidden",
    "HeadersTooLarge",
    "MissingCredentials",
    "NoHealthyEndpoint",
    "OverCapacity",
    "QueueFull",
    "QueueTimeout",
    "RateLimited",
    "RequestRejected",
    "StoreUnavailable",
    "TenantLBError",
    "Unauthenticated",
    "UnknownTenant",
]


class TenantLBError(Exception):
    """The root of every error tenantlb raises on purpose."""


class ConfigError(TenantLBError, ValueError):
    """A configuration document (or value) is invalid.

    Attributes:
        path: Where the first problem is, e.g. ``tenants[2].limits[0].per`` (empty for the root).
        errors: Every problem found, as ``(path, message)`` pairs; validation reports them all at once.
    """

    def __init__(self, path: str, message: str, *, errors: Sequence[tuple[str, str]] = ()) -> None:
        # A config value may carry credentials (a Redis URL with a password, a URL with
        # ?token=...): every message is redacted before anything can print it.
        message = redact(message)
        self.path = path
        self.message = message
        self.errors: tuple[tuple[str, str], ...] = tuple((p, redact(m)) for p, m in errors) or (
            (path, message),
        )
        if len(self.errors) == 1:
            text = f"{path}: {message}" if path else message
        else:
            lines = [f"{p}: {m}" if p else m for p, m in self.errors]
            text = f"{len(self.errors)} errors in config:\n  " + "\n  ".join(lines)
        super().__init__(text)

    @classmethod
    def collect(cls, errors: Sequence[tuple[str, str]]) -> ConfigError:
        """Build one error that reports every ``(path, message)`` problem in *errors*."""
        path, message = errors[0]
        return cls(path, message, errors=errors)


class EndpointNotFound(TenantLBError, LookupError):
    """An endpoint URL that the pool does not hold."""

    def __str__(self) -> str:  # LookupError would repr() the message; keep it readable
        return str(self.args[0]) if self.args else ""


class DiscoveryError(TenantLBError):
    """A discovery source failed to produce an endpoint list (lookup failed, file invalid).

    The discovery runner counts it and keeps the pool's last good endpoints; a source of your own may
    raise it (or anything else) from ``resolve()``.
    """


class RequestRejected(TenantLBError):
    """The gateway refused a request; adapters answer with `status` and `headers`.

    Attributes:
        status: The HTTP status code an adapter should answer with.
        headers: Extra response headers (e.g. ``Retry-After``), as ``(name, value)`` pairs.
    """

    status: int = 400
    title: str = "Bad Request"

    def __init__(self, message: str, *, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.headers: list[tuple[str, str]] = list(headers)


class UnknownTenant(RequestRejected):
    """No tenant matched the request."""

    status = 401
    title = "Unknown tenant"


class Unauthenticated(RequestRejected):
    """Credentials were missing, malformed or wrong."""

    status = 401
    title = "Unauthenticated"


class MissingCredentials(Unauthenticated):
    """The request carries none of the credentials the resolver chain looks for.

    A `Gateway` with an ``anonymous`` tenant admits such requests instead of refusing them.
    """


class Forbidden(RequestRejected):
    """The tenant is known but may not do this (disabled, or an upstream it is not assigned)."""

    status = 403
    title = "Forbidden"


class RateLimited(RequestRejected):
    """A rate limit denied the request.

    Attributes:
        decision: The `Decision` that denied it; ``decision.retry_after`` says when to try again.
    """

    status = 429
    title = "Too Many Requests"

    def __init__(
        self, message: str, *, decision: Decision, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message, headers=headers)
        self.decision = decision


class OverCapacity(RequestRejected):
    """Every concurrency slot of the tenant (or the gateway) is taken."""

    status = 503
    title = "Over capacity"


class NoHealthyEndpoint(RequestRejected):
    """A pool had no endpoint it could pick (empty, or every candidate excluded)."""

    status = 503
    title = "No healthy upstream"


class StoreUnavailable(RequestRejected):
    """A rate-limit or concurrency store could not answer (e.g. Redis is down) and fails closed."""

    status = 503
    title = "Service unavailable"


class ContentTooLarge(RequestRejected):
    """The request body is larger than the gateway's or the tenant's ``max_body_size``.

    Raised at admission for a declared ``Content-Length`` over the limit, and by adapters while
    streaming a body (chunked, or lying about its length) that grows past it.

    Attributes:
        limit: The limit in bytes that was exceeded.
    """

    status = 413
    title = "Content Too Large"

    def __init__(
        self, message: str, *, limit: int, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message, headers=headers)
        self.limit = limit


class HeadersTooLarge(RequestRejected):
    """The request's header fields are larger than ``max_header_size`` (RFC 6585's 431).

    Attributes:
        limit: The limit in bytes that was exceeded.
    """

    status = 431
    title = "Request Header Fields Too Large"

    def __init__(
        self, message: str, *, limit: int, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message, headers=headers)
        self.limit = limit


class QueueFull(OverCapacity):
    """A `FairQueue` had no room: every queue in the flow's hand was at its length limit.

    Attributes:
        flow: The flow (tenant) whose request was refused.
        retry_after: Seconds after which a retry has a fair chance (also in ``headers``).
    """

    title = "Queue full"

    def __init__(self, message: str, *, flow: str, retry_after: float) -> None:
        super().__init__(message, headers=[("Retry-After", _retry_after_header(retry_after))])
        self.flow = flow
        self.retry_after = retry_after


class QueueTimeout(OverCapacity):
    """A request waited in a `FairQueue` longer than its timeout and was dropped from the queue.

    Attributes:
        flow: The flow (tenant) whose request timed out.
        retry_after: Seconds after which a retry has a fair chance (also in ``headers``).
    """

    title = "Queue timeout"

    def __init__(self, message: str, *, flow: str, retry_after: float) -> None:
        super().__init__(message, headers=[("Retry-After", _retry_after_header(retry_after))])
        self.flow = flow
        self.retry_after = retry_after


def _retry_after_header(seconds: float) -> str:
    # RFC 9110: a non-negative integer of seconds; round up so a client never retries too early.
    return str(max(1, math.ceil(seconds)))
