"""`RequestInfo`: the small, adapter-neutral view of a request that resolvers and the gateway read."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Literal, final

from .._validate import require_type

__all__ = ["RequestInfo"]

_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_HeaderValue = str | bytes
_Headers = Mapping[str, str] | Mapping[bytes, bytes] | Iterable[tuple[_HeaderValue, _HeaderValue]]


@final
class RequestInfo:
    """What tenantlb needs to know about a request, built once per request by an adapter.

    Construction only stores its arguments; headers are decoded and indexed on the first lookup,
    and the client IP is worked out on first access, so building one is cheap.

    ```python
    import tenantlb as tlb

    info = tlb.RequestInfo(
        "GET",
        "/v1/chat",
        [(b"x-api-key", b"sk-example"), (b"x-forwarded-for", b"198.51.100.7")],
        client=("10.0.0.2", 5555),
        trusted_proxies=["10.0.0.0/8"],
    )
    assert info.header("X-API-Key") == "sk-example"
    assert info.client_ip == "198.51.100.7"
    ```

    Args:
        method: The HTTP method, e.g. ``"GET"``.
        path: The request path without the query string.
        headers: ``(name, value)`` pairs (str or bytes, as ASGI and httpx give them) or a mapping.
            Bytes are decoded as Latin-1, the HTTP convention. Repeated names are kept.
        scheme: ``"http"`` or ``"https"``.
        host: The requested host; default: the ``Host`` header.
        client: The direct peer as ``(ip, port)``, or None if unknown.
        trusted_proxies: IPs or CIDR networks (str or `ipaddress` objects) of proxies allowed to
            tell us the client address in a forwarding header. Empty (the default) means the
            headers are ignored and `client_ip` is the direct peer.
        proxy_header: Which forwarding header the trusted proxies set: ``"x-forwarded-for"``
            (default) or ``"forwarded"`` (RFC 7239). Only one is read, so a client cannot smuggle
            an address in the header your proxy does not manage.
    """

    __slots__ = (
        "_client_ip",
        "_header_size",
        "_headers",
        "_host",
        "_index",
        "_proxy_header",
        "_trusted",
        "client",
        "method",
        "path",
        "scheme",
    )

    def __init__(
        self,
        method: str,
        path: str,
        headers: _Headers = (),
        *,
        scheme: str = "http",
        host: str | None = None,
        client: tuple[str, int] | None = None,
        trusted_proxies: Iterable[str | _IPNetwork | _IPAddress] = (),
        proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
    ) -> None:
        if type(method) is not str or type(path) is not str:
            require_type("method", method, str, "a str")
            require_type("path", path, str, "a str")
        if proxy_header not in ("x-forwarded-for", "forwarded"):
            msg = f"proxy_header must be 'x-forwarded-for' or 'forwarded', got {proxy_header!r}"
            raise ValueError(msg)
        self.method = method
        self.path = path
        self.scheme = scheme
        self.client = client
        self._host = host
        self._headers = headers
        self._trusted = trusted_proxies
        self._proxy_header = proxy_header
        self._index: dict[str, list[str]] | dict[str, _HeaderValue] | None = None
        self._client_ip: str | Literal[False] | None = False  # False: not computed yet
        self._header_size = -1  # not computed yet

    def __repr__(self) -> str:
        # Header values (API keys, cookies) stay out of the repr.
        return f"RequestInfo({self.method!r}, {self.path!r}, client={self.client!r})"

    # -- headers ---------------------------------------------------------------------------------

    def header(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of header *name* (case-insensitive), or *default*."""
        values = self.header_values(name)
        return values[0] if values else default

    def header_values(self, name: str) -> tuple[str, ...]:
        """Return every value of header *name* (case-insensitive), in order."""
        index = self._index
        if index is None:
            index = self._index = _index_headers(self._headers)
        found = index.get(name)  # names are usually given lowercase: lower() only on a miss
        if found is None:
            found = index.get(name.lower())
            if found is None:
                return ()
        if type(found) is str:  # the common cases: one value, given as str or (ASGI) bytes
            return (found,)
        if type(found) is bytes:
            return (found.decode("latin-1"),)
        if isinstance(found, list):
            return tuple(found)
        return (_text(found),)

    @property
    def header_size(self) -> int:
        """The size of the header fields in bytes, counted as on the wire: ``name: value\\r\\n``."""
        size = self._header_size
        if size < 0:
            headers = self._headers
            items = headers.items() if isinstance(headers, Mapping) else headers
            size = sum(len(name) + len(value) + 4 for name, value in items)
            self._header_size = size
        return size

    # -- host and client -------------------------------------------------------------------------

    @property
    def host(self) -> str | None:
        """The requested host name, lowercased, without the port (from ``host=`` or ``Host``)."""
        raw = self._host if self._host is not None else self.header("host")
        if not raw:
            return None
        raw = raw.strip().lower()
        if raw.startswith("["):  # [v6]:port
            end = raw.find("]")
            return raw[1:end] if end > 0 else raw
        host, sep, port = raw.rpartition(":")
        if sep and port.isdigit() and ":" not in host:
            return host
        return raw

    @property
    def client_ip(self) -> str | None:
        """The client's IP address.

        The direct peer, unless the peer is a trusted proxy: then the forwarding header is walked
        right to left, skipping trusted hops, and the first untrusted address is the client. If
        every hop is trusted, the leftmost one is. Headers from untrusted peers are ignored, so a
        client cannot spoof its address.
        """
        if self._client_ip is False:
            self._client_ip = self._compute_client_ip()
        return self._client_ip

    def _compute_client_ip(self) -> str | None:
        if self.client is None:
            return None
        peer = str(self.client[0])
        networks = _networks(self._trusted)
        if not networks:
            return peer
        address = _parse_ip(peer)
        if address is None or not _is_trusted(address, networks):
            return peer
        if self._proxy_header == "forwarded":
            hops = _forwarded_for(self.header_values("forwarded"))
        else:
            hops = [h.strip() for v in self.header_values("x-forwarded-for") for h in v.split(",")]
        client = address
        for hop in reversed(hops):
            parsed = _parse_ip(_strip_port(hop))
            if parsed is None:
                break  # garbage written by a trusted hop: stop at the last address we believe
            client = parsed
            if not _is_trusted(parsed, networks):
                break
        return str(client)


def _index_headers(headers: _Headers) -> dict[str, list[str]] | dict[str, _HeaderValue]:
    items: Collection[tuple[_HeaderValue, _HeaderValue]]
    if type(headers) is list or type(headers) is tuple:  # the common case, checked cheaply
        items = headers
    elif isinstance(headers, Mapping):
        items = headers.items()
    elif isinstance(headers, str | bytes) or not isinstance(headers, Iterable):
        msg = f"headers must be (name, value) pairs or a mapping, got {type(headers).__name__}"
        raise TypeError(msg)
    else:
        items = list(headers)
    # Fast path: one dict, values decoded only when looked up. If a name repeats, the dict lost
    # values, so rebuild the full name -> [values] index. (A loop, not a comprehension: for the
    # few headers of a request, making the comprehension's function costs more than its loop.)
    index: dict[str, _HeaderValue] = {}
    names = _NAMES
    try:
        for name, value in items:
            # Only bytes are looked up among bytes: b"a" and "a" hash alike, and comparing the
            # two raises BytesWarning under `python -bb`.
            if type(name) is bytes:
                key = names.get(name)
                if key is None:
                    key = _name(name)
                index[key] = value
            else:
                index[(name if type(name) is str else str(name)).lower()] = value
    except (TypeError, ValueError):
        # An item that is not a pair; never echo it (it may hold a credential).
        msg = "headers must be (name, value) pairs or a mapping, got an item that is not a pair"
        raise TypeError(msg) from None
    if len(index) == len(items):
        return index
    multi: dict[str, list[str]] = {}
    for name, value in items:
        key = (name.decode("latin-1") if isinstance(name, bytes) else str(name)).lower()
        multi.setdefault(key, []).append(_text(value))
    return multi


# Byte header names (ASGI, httpx) as lowercase str. The same few dozen names come with every
# request, and a dict hit costs a fifth of decoding and lowering one; bounded, as clients choose
# the names.
_NAMES: dict[bytes, str] = {}


def _name(name: bytes) -> str:
    key = name.decode("latin-1").lower()
    if len(_NAMES) >= 1024:
        _NAMES.clear()
    _NAMES[name] = key
    return key


def _text(value: _HeaderValue) -> str:
    return value.decode("latin-1") if type(value) is bytes else str(value)


@functools.lru_cache(maxsize=64)
def _parse_networks(specs: tuple[str | _IPNetwork | _IPAddress, ...]) -> tuple[_IPNetwork, ...]:
    networks: list[_IPNetwork] = []
    for spec in specs:
        if isinstance(spec, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(spec)
        elif isinstance(spec, ipaddress.IPv4Address | ipaddress.IPv6Address):
            networks.append(ipaddress.ip_network(spec))
        else:
            require_type("trusted_proxies entries", spec, str, "str or ipaddress objects")
            try:
                networks.append(ipaddress.ip_network(spec.strip(), strict=False))
            except ValueError:
                msg = f"trusted_proxies entries must be IPs or CIDR networks, got {spec!r}"
                raise ValueError(msg) from None
    return tuple(networks)


def _networks(trusted: Iterable[str | _IPNetwork | _IPAddress]) -> tuple[_IPNetwork, ...]:
    if isinstance(trusted, str):
        trusted = (trusted,)
    specs = trusted if isinstance(trusted, tuple) else tuple(trusted)
    return _parse_networks(specs) if specs else ()


def _parse_ip(text: str) -> _IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: _IPAddress, networks: Sequence[_IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def _strip_port(hop: str) -> str:
    hop = hop.strip().strip('"')
    if hop.startswith("["):  # [2001:db8::1]:443
        end = hop.find("]")
        return hop[1:end] if end > 0 else hop
    if hop.count(":") == 1:  # 203.0.113.9:5555
        return hop.partition(":")[0]
    return hop


def _forwarded_for(values: Iterable[str]) -> list[str]:
    # RFC 7239: elements separated by ",", pairs by ";", we only need for=.
    hops: list[str] = []
    for value in values:
        for element in value.split(","):
            found = "unknown"
            for pair in element.split(";"):
                name, sep, val = pair.strip().partition("=")
                if sep and name.strip().lower() == "for":
                    found = val.strip()
            hops.append(found)
    return hops
