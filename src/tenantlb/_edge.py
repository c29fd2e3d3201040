"""Edge policies the gateway applies before any quota: size limits, who an anonymous client is,
the authentication challenge, and the checks of the settings behind them."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from ._errors import ContentTooLarge, HeadersTooLarge, RequestRejected
from ._validate import FieldTypeError, FieldValueError
from .fairness import FairQueue
from .tenants import APIKeyResolver, RequestInfo, Tenant, TenantRegistry

__all__ = [
    "add_challenge",
    "challenge",
    "check_size",
    "client_key",
    "fair_queues",
    "hash_key",
    "network",
    "smaller",
]


def check_size(request: RequestInfo, max_header: int | None, max_body: int | None) -> None:
    """Refuse a request whose header fields or declared body are over the limits (431 / 413).

    Raises:
        HeadersTooLarge: The header fields are over *max_header* bytes.
        ContentTooLarge: ``Content-Length`` is over *max_body*.
        RequestRejected: ``Content-Length`` is not a number of bytes (400).
    """
    if max_header is not None and request.header_size > max_header:
        msg = f"the request's header fields are over {max_header} bytes"
        raise HeadersTooLarge(msg, limit=max_header)
    if max_body is not None:
        declared = request.header("content-length")
        if declared is not None:
            text = declared.strip()
            if not (text.isascii() and text.isdigit() and len(text) <= 19):
                msg = "the content-length header is not a number of bytes"
                raise RequestRejected(msg)
            if int(text) > max_body:
                msg = f"the request body is over {max_body} bytes"
                raise ContentTooLarge(msg, limit=max_body)


def client_key(ip: str | None) -> str:
    """Who an anonymous client is for per-IP limits: its IPv4 address, or its IPv6 /64.

    One IPv6 host holds a whole /64 (SLAAC, privacy addresses), so keying by the full address would
    give it a fresh quota per address it picks: the /64 is the smallest unit a client controls.
    """
    if not ip:
        return "unknown"
    if ":" in ip:
        try:
            network = ipaddress.IPv6Network(f"{ip}/64", strict=False)
        except ValueError:
            return ip
        return f"{network.network_address}/64"
    return ip


def smaller(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def add_challenge(exc: RequestRejected, value: str) -> None:
    """Give a 401 its ``WWW-Authenticate`` challenge unless the resolver already set one."""
    if not any(name.lower() == "www-authenticate" for name, _ in exc.headers):
        exc.headers.append(("WWW-Authenticate", value))


def challenge(registry: TenantRegistry) -> str:
    # RFC 9110 §11.6.1: a 401 carries at least one challenge. A Bearer resolver names its scheme;
    # a bare key header (x-api-key) has no registered scheme, so we name the header instead.
    for resolver in registry.resolvers:
        if isinstance(resolver, APIKeyResolver) and resolver.scheme is not None:
            return f'{resolver.scheme} realm="tenantlb"'
    return 'ApiKey realm="tenantlb"'


def fair_queues(value: object) -> dict[str, FairQueue]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        msg = f"concurrency must be a mapping of pool name -> FairQueue, got {type(value).__name__}"
        raise FieldTypeError(msg, field="concurrency")
    for name, fair in value.items():
        if not isinstance(name, str) or not isinstance(fair, FairQueue):
            msg = f"concurrency[{name!r}] must be a FairQueue, got {type(fair).__name__}"
            raise FieldTypeError(msg, field="concurrency")
    return dict(value)


def network(where: str, value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        msg = f"{where} must be an IP or CIDR string, got {type(value).__name__}"
        raise FieldTypeError(msg, field="trusted_proxies")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        msg = f"{where} must be an IP address or CIDR, got {value!r}"
        raise FieldValueError(msg, field="trusted_proxies") from None


def hash_key(hash_on: Any, request: RequestInfo, tenant: Tenant) -> str | bytes | None:
    """The key hashing balancers get, by the gateway's ``hash_on`` setting."""
    if hash_on is None:
        return None
    if hash_on == "client_ip":
        return request.client_ip
    if hash_on == "tenant":
        return tenant.id
    result: str | bytes | None = hash_on(request, tenant)
    return result
