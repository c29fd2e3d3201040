"""`Endpoint`: one upstream address with a weight, as a validated, normalised value object."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from typing import Any, final
from urllib.parse import urlsplit

import attrs

from .._redact import redact
from .._validate import FieldTypeError, positive

__all__ = ["Endpoint", "normalize_url"]

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_MAX_URL = 2048


def normalize_url(url: object) -> str:
    """Return *url* in canonical form: lower-case scheme and host, no default port, no trailing ``/``.

    ``"HTTP://Example.COM:80/"`` becomes ``"http://example.com"``. A path prefix is kept
    (``"http://a:8000/api"``). Credentials, queries and fragments are refused: a URL with a password
    would leak it into stats, events and logs.

    Raises:
        TypeError: *url* is not a string.
        ValueError: *url* is not an absolute ``scheme://host[:port][/path]`` URL.
    """
    if not isinstance(url, str):
        msg = f"endpoint url must be a str, got {type(url).__name__}"
        raise TypeError(msg)
    if not url or len(url) > _MAX_URL or not url.isprintable() or any(c.isspace() for c in url):
        msg = f"endpoint url must be 1..{_MAX_URL} printable characters without spaces, got {redact(url[:80])!r}"
        raise ValueError(msg)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        msg = f"invalid endpoint url {redact(url)!r}: {exc}"
        raise ValueError(msg) from None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if not _SCHEME.match(scheme) or not host or not parts.netloc:
        msg = f"endpoint url must look like 'http://host:port', got {redact(url)!r}"
        raise ValueError(msg)
    if parts.username is not None or parts.password is not None:
        msg = "endpoint url must not contain credentials"
        raise ValueError(msg)
    if parts.query or parts.fragment:
        msg = f"endpoint url must not have a query or fragment, got {redact(url)!r}"
        raise ValueError(msg)
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return f"{scheme}://{netloc}{path}"


def _check_weight(_: Any, attribute: attrs.Attribute[float], value: object) -> None:
    positive("weight", value)


def _check_priority(_: Any, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"priority must be an int, got {type(value).__name__}"
        raise TypeError(msg)
    if not 0 <= value <= 127:
        msg = f"priority must be between 0 and 127, got {value}"
        raise ValueError(msg)


def _freeze_metadata(value: object) -> Mapping[str, str]:
    if value is None:
        return types.MappingProxyType({})
    if not isinstance(value, Mapping):
        msg = f"metadata must be a mapping, got {type(value).__name__}"
        raise FieldTypeError(msg, field="metadata")
    return types.MappingProxyType(dict(value))


@final
@attrs.define(frozen=True)
class Endpoint:
    """One upstream: a URL and a relative weight.

    ```python
    Endpoint("http://10.0.0.2:8000", weight=2, zone="eu-west-1a")
    Endpoint("http://backup:8000", priority=1)   # used as tier 0 fails (Envoy's priority levels)
    ```

    Attributes:
        url: ``scheme://host[:port][/path]``; normalised by `normalize_url`.
        weight: Relative share of traffic (> 0). Weighted balancers honour it; see each strategy.
        zone: Optional locality label, carried for your own use and for stats.
        metadata: Optional read-only labels.
        priority: The failover tier, 0 (the default) the highest. Traffic goes to tier 0 while
            enough of it is available and spills over to tier 1, 2, ... as it fails (see
            `Pool`); NGINX's and HAProxy's ``backup`` servers are priority 1.
        host: The host part (IPv6 without brackets).
        port: The port, the scheme's default filled in when known, else None.
    """

    url: str = attrs.field(converter=normalize_url)
    weight: float = attrs.field(default=1.0, kw_only=True, validator=_check_weight)
    zone: str | None = attrs.field(default=None, kw_only=True)
    metadata: Mapping[str, str] = attrs.field(
        default=None, kw_only=True, converter=_freeze_metadata, eq=False, repr=False
    )
    priority: int = attrs.field(default=0, kw_only=True, validator=_check_priority)
    host: str = attrs.field(init=False, eq=False, repr=False)
    port: int | None = attrs.field(init=False, eq=False, repr=False)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled by its arguments: the read-only metadata view is not picklable itself, and
        # processes (multiprocessing, a pool of workers) pass endpoints around.
        args = (self.url, self.weight, self.zone, dict(self.metadata), self.priority)
        return (_rebuild, args)

    def __attrs_post_init__(self) -> None:
        parts = urlsplit(self.url)
        object.__setattr__(self, "host", parts.hostname or "")
        object.__setattr__(self, "port", parts.port or _DEFAULT_PORTS.get(parts.scheme))

    def __str__(self) -> str:
        return self.url


def _rebuild(
    url: str, weight: float, zone: str | None, metadata: dict[str, str], priority: int
) -> Endpoint:
    return Endpoint(url, weight=weight, zone=zone, metadata=metadata, priority=priority)
