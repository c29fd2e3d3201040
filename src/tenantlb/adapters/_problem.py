"""RFC 9457 ``application/problem+json`` answers for a `RequestRejected`, shared by every adapter.

```json
{"type": "urn:tenantlb:problem:rate-limited", "title": "Too Many Requests", "status": 429,
 "detail": "tenant 'acme' is over its rate limit", "retry_after": 2}
```

The ``detail`` is the error's message, which never holds a key or a digest (the core's contract).
Headers: the error's own (``Retry-After`` and the RateLimit fields on 429, ``WWW-Authenticate`` on
401), plus a ``Retry-After`` on every 503 and a challenge on every 401 when the error did not bring
one, so a client always learns when to come back and how to authenticate.
"""

from __future__ import annotations

import json
import math
import re
from typing import Final

from .._errors import RateLimited, RequestRejected, StoreUnavailable

__all__ = ["problem", "problem_type"]

_CONTENT_TYPE: Final = "application/problem+json"
_DEFAULT_RETRY_AFTER: Final = "1"
_DEFAULT_CHALLENGE: Final = 'ApiKey realm="tenantlb"'
_KEBAB = re.compile(r"(?<!^)(?=[A-Z])")
_TYPES: dict[type[RequestRejected], str] = {}


def problem_type(exc: RequestRejected) -> str:
    """The problem ``type`` URI of *exc*: ``urn:tenantlb:problem:<kebab-case class name>``."""
    cls = type(exc)
    found = _TYPES.get(cls)
    if found is None:
        found = _TYPES[cls] = (
            "urn:tenantlb:problem:" + _KEBAB.sub("-", cls.__name__.lstrip("_")).lower()
        )
    return found


def problem(exc: RequestRejected) -> tuple[int, list[tuple[str, str]], bytes]:
    """Build the answer to *exc*: ``(status, headers, body)``.

    Args:
        exc: The refusal.

    Returns:
        The status, the response headers (``content-type``, ``content-length``, ``cache-control``
        and the refusal's own), and the JSON body as bytes.
    """
    status = exc.status
    payload: dict[str, object] = {
        "type": problem_type(exc),
        "title": exc.title,
        "status": status,
        "detail": _detail(exc),
    }
    if isinstance(exc, RateLimited):
        payload["retry_after"] = math.ceil(exc.decision.retry_after)
    body = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    headers = [
        ("content-type", _CONTENT_TYPE),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
    ]
    names = set()
    for name, value in exc.headers:
        names.add(name.lower())
        headers.append((name, value))
    if (status in (429, 503)) and "retry-after" not in names:
        headers.append(("retry-after", _DEFAULT_RETRY_AFTER))
    if status == 401 and "www-authenticate" not in names:
        headers.append(("www-authenticate", _DEFAULT_CHALLENGE))
    return status, headers, body


def _detail(exc: RequestRejected) -> str:
    # A store outage's message names the internal server (host:port, errno): that is for the
    # operator's logs, not for any client on the internet.
    if isinstance(exc, StoreUnavailable):
        return "the rate-limit store is unavailable; try again later"
    return str(exc)
