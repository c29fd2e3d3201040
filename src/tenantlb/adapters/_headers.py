"""`ProxyApp`'s header handling: what goes upstream, what comes back, and the request target."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ._asgi import Scope

__all__ = [
    "HOP_BY_HOP",
    "RequestHead",
    "content_length",
    "framed",
    "header_name",
    "request_head",
    "response_headers",
]

# RFC 9110 §7.6.1 (plus the de-facto Proxy-Connection): never forwarded; nor are the fields that
# a Connection header names. Proxy-Authorization/-Authenticate are for this hop too (§11.7).
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
_FORWARDING: Final = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
# Fields the proxy decides itself: a client's Connection header may not name them away (the body
# would be sent without its framing).
_MANAGED: Final = frozenset({b"content-length", b"transfer-encoding", b"host"})
# Like nginx's proxy_hide_header defaults: the ASGI server sets its own Date and Server.
_HIDDEN_RESPONSE: Final = frozenset({b"date", b"server"})
_SKIPPED_RESPONSE: Final = HOP_BY_HOP | _HIDDEN_RESPONSE
# What request_head does with a header, by name; None (most names): pass it on.
_HOP, _FORWARDED, _HOST, _LENGTH = 1, 2, 3, 4
_ROLES: Final = {
    **dict.fromkeys(HOP_BY_HOP, _HOP),
    **dict.fromkeys(_FORWARDING, _FORWARDED),
    b"host": _HOST,
    b"content-length": _LENGTH,
}
_SCHEMES: Final = {"http": b"http", "https": b"https"}
_SMALL: Final = 65536

RequestHead = tuple[list[tuple[bytes, bytes]], bytes | None, bool, int | None]


def request_head(
    scope: Scope, *, trusted: bool, peer: str, tenant_header: bytes | None, tenant_id: str
) -> RequestHead:
    """The headers to send upstream, the client's Host, whether the body is chunked (else
    *length* says whether there is one), its length (-1: unusable Content-Length).

    A name with ``_`` that reads as a hop-by-hop, forwarding, framing or tenant header once ``_``
    is ``-`` (``x_forwarded_for``, ``x_tenant_id``) is dropped: CGI-style servers fold both
    spellings into one variable, so it would smuggle a value the proxy removes.
    """
    out: list[tuple[bytes, bytes]] = []
    host: bytes | None = None
    xff: list[bytes] | None = None
    proto: bytes | None = None
    fwd_host: bytes | None = None
    named: set[bytes] | None = None
    length: int | None = None
    chunked = False
    skip = tenant_header
    roles = _ROLES
    for name, value in scope["headers"]:
        role = roles.get(name)
        if role is None:  # most headers: passed on
            # 95 is "_": bytes look an int up directly, a bytes needle only after an exception.
            if name == skip or (95 in name and _spoofs(name.replace(b"_", b"-"), skip)):
                continue
            out.append((name, value))
        elif role == _HOP:
            if name == b"connection":
                named = named or set()
                named.update(t.strip().lower() for t in value.split(b","))
            elif name == b"transfer-encoding":
                chunked = True
        elif role == _FORWARDED:
            if trusted:
                if name == b"x-forwarded-for":
                    xff = xff or []
                    xff.append(value)
                elif name == b"x-forwarded-proto":
                    proto = value
                elif name == b"x-forwarded-host":
                    fwd_host = value
                else:
                    out.append((name, value))
        elif role == _HOST:
            host = value
        elif name == skip:  # a tenant header named like a framing one
            continue
        else:  # content-length
            parsed = content_length(value)
            length = -1 if parsed is None or (length is not None and length != parsed) else parsed
            out.append((name, value))
    if named is not None:
        named -= _MANAGED
        if named:
            out = [(n, v) for n, v in out if n not in named]
    if xff is None:
        if peer:
            out.append((b"x-forwarded-for", peer.encode("latin-1")))
    else:
        if peer:
            xff.append(peer.encode("latin-1"))
        out.append((b"x-forwarded-for", b", ".join(xff)))
    scheme = scope.get("scheme", "http")
    out.append((b"x-forwarded-proto", proto or _SCHEMES.get(scheme) or scheme.encode("latin-1")))
    if fwd_host is not None or host is not None:
        out.append((b"x-forwarded-host", fwd_host or host))  # type: ignore[arg-type]
    if skip is not None:
        out.append((skip, tenant_id.encode("utf-8")))
    if chunked:
        length = None
        out = [(n, v) for n, v in out if n != b"content-length"]
    return out, host, chunked, length


def _spoofs(dashed: bytes, tenant_header: bytes | None) -> bool:
    return (
        dashed in HOP_BY_HOP
        or dashed in _FORWARDING
        or dashed in _MANAGED
        or dashed == tenant_header
    )


def response_headers(
    headers: Sequence[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """An endpoint's response headers without hop-by-hop fields, those Connection names, Date
    and Server; and its Content-Length if the body is small enough to read whole (<= 64 KiB)."""
    named: set[bytes] | None = None
    out: list[tuple[bytes, bytes]] = []
    small: int | None = None
    seen_length = False
    for name, value in headers:
        lower = name.lower()
        if lower in _SKIPPED_RESPONSE:
            if lower == b"connection":
                named = named or set()
                named.update(t.strip().lower() for t in value.split(b","))
            continue
        if lower == b"content-length" and not seen_length:
            seen_length = True
            length = content_length(value)
            small = length if length is not None and length <= _SMALL else None
        out.append((lower, value))
    if named:
        out = [(n, v) for n, v in out if n not in named]
    return out, small


def content_length(value: bytes) -> int | None:
    """A Content-Length value as an int, or None if it is not one number."""
    text = value.strip()
    if text.isdigit() and len(text) <= 19:
        return int(text)
    return None


def framed(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether an answer says where its body ends (else the end of the connection does)."""
    for name, _ in headers:
        lower = name.lower()
        if lower in (b"content-length", b"transfer-encoding"):
            return True
    return False


def header_name(name: object) -> bytes:
    """*name* (the ``tenant_header`` argument) checked and lower-cased as bytes."""
    if not isinstance(name, str):
        msg = f"tenant_header must be a str or None, got {type(name).__name__}"
        raise TypeError(msg)
    if (
        not name
        or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name)
        or not name.isascii()
    ):
        msg = f"tenant_header must be a valid HTTP header name, got {name!r}"
        raise ValueError(msg)
    return name.lower().encode("ascii")
