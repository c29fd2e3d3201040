"""`DNSDiscovery`: a pool that follows a DNS name's A/AAAA records, or a service's SRV records.

dnspython's async resolver does the lookups (the optional extra ``tenantlb[dns]``); it is imported
when a `DNSDiscovery` is built, so ``import tenantlb`` works without it. The resolver is told which
event loop runs (asyncio or trio) on every call: dnspython's own default would be fixed by the
first loop that used it.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Sequence
from typing import Any, Literal, final

import anyio

from .._clock import Clock, default_clock
from .._errors import DiscoveryError
from .._events import EventHandler
from .._validate import FieldTypeError, FieldValueError, seconds
from ..balancing import Pool
from ._runner import Discovery
from ._source import DiscoveryResult, EndpointCache

__all__ = ["DNSDiscovery", "check_hostname", "parse_nameserver"]

Family = Literal["any", "ipv4", "ipv6"]

_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_FAMILIES: dict[str, tuple[str, ...]] = {"any": ("A", "AAAA"), "ipv4": ("A",), "ipv6": ("AAAA",)}
_MAX_TIER = 127  # Endpoint.priority's bound
_PER_TRY = 2.0  # seconds one server gets before the resolver tries the next (dnspython's default)


@final
class DNSDiscovery(Discovery):
    """Keep a pool in step with DNS: the A/AAAA records of a name, or the SRV records of a service.

    ```python
    async with tlb.DNSDiscovery(pool, "svc.internal", port=8000, interval=30.0):
        ...  # the pool holds http://<each address>:8000
    async with tlb.DNSDiscovery(pool, srv="_http._tcp.svc.internal"):
        ...  # one endpoint per SRV target address, at the record's port, with its weight
    ```

    With a name, every address becomes ``{scheme}://{address}:{port}`` (Envoy's STRICT_DNS
    cluster; a Kubernetes headless service is exactly such a name). With ``srv=``, each target's
    addresses become endpoints at the record's port, the record's weight split between them, and
    SRV priorities become the pool's failover tiers (`Endpoint.priority`) by rank: the lowest
    priority value is tier 0, the next tier 1, and so on, so traffic spills over to a higher value
    only as the lower one's endpoints fail (RFC 2782's order, with Envoy's priority levels). A weight of 0 gets
    1/100 of the smallest positive weight (RFC 2782: "a very small chance"); if all are 0, they
    are equal. Each endpoint carries ``metadata["hostname"]`` (the name or SRV target), e.g. for a
    ``Host`` header or TLS server name.

    Names are looked up as given, without the system's search domains: give the fully qualified
    name (``api.default.svc.cluster.local``, not ``api``).

    Refreshes follow the records' TTL when it is shorter than ``interval`` (bounded below by
    ``min_interval``). A lookup that fails (timeout, SERVFAIL, REFUSED, unreachable server) keeps
    the pool as it is; a name that does not exist (NXDOMAIN) or has no records is an empty answer,
    applied only with ``allow_empty=True``. See `Discovery` for the schedule and safety rules.

    Args:
        pool: The `Pool` to keep up to date.
        name: A hostname to resolve (A/AAAA); give exactly one of *name* and *srv*.
        port: The port of every endpoint (1-65535); required with *name*, not allowed with *srv*.
        srv: An SRV name such as ``"_http._tcp.svc.internal"``.
        scheme: The URL scheme of the endpoints (default ``"http"``).
        family: ``"any"`` (A and AAAA, the default), ``"ipv4"`` (A) or ``"ipv6"`` (AAAA).
        nameservers: Servers to ask, as ``"IP"`` or ``"IP:PORT"`` (``"[v6]:PORT"``); default the
            system's (``/etc/resolv.conf``).
        interval: Seconds between lookups at most (> 0).
        min_interval: Lower bound for TTL-driven and retry delays; see `Discovery`.
        jitter: Random seconds added to each delay; see `Discovery`.
        timeout: Seconds one refresh (all its queries) may take (> 0).
        allow_empty: Apply an empty answer (empty the pool); default False keeps the last set.
        clock: Seconds as a float, for the timestamps in `stats`.
        rng: Source of jitter.
        on_event: A handler for ``discovery_failed`` / ``discovery_recovered`` events.

    Raises:
        ImportError: dnspython is not installed (``pip install 'tenantlb[dns]'``).
        TypeError: An argument of the wrong type.
        ValueError: Not exactly one of *name* / *srv*, a name that is not a hostname, a port out
            of range, a malformed nameserver, an unknown family or scheme, or a bad interval.
        RuntimeError: No nameservers given and the system has no resolver configuration.
    """

    def __init__(
        self,
        pool: Pool,
        name: str | None = None,
        port: int | None = None,
        *,
        srv: str | None = None,
        scheme: str = "http",
        family: Family = "any",
        nameservers: Sequence[str] | None = None,
        interval: float = 30.0,
        min_interval: float | None = None,
        jitter: float | None = None,
        timeout: float = 5.0,
        allow_empty: bool = False,
        clock: Clock = default_clock,
        rng: random.Random | None = None,
        on_event: EventHandler | None = None,
    ) -> None:
        if (name is None) == (srv is None):
            msg = "give exactly one of name= (A/AAAA records) and srv= (SRV records)"
            raise ValueError(msg)
        if name is not None:
            name = check_hostname("name", name)
            if port is None:
                msg = "port is required with name= (SRV records carry their own ports)"
                raise FieldValueError(msg, field="port")
            port = _check_port("port", port)
        else:
            srv = check_hostname("srv", srv)
            if port is not None:
                msg = "port must not be given with srv= (SRV records carry their own ports)"
                raise FieldValueError(msg, field="port")
        if not isinstance(scheme, str) or not _SCHEME.match(scheme):
            msg = f"scheme must be a URL scheme like 'http', got {scheme!r}"
            raise FieldValueError(msg, field="scheme")
        if family not in _FAMILIES:
            msg = f"family must be 'any', 'ipv4' or 'ipv6', got {family!r}"
            raise FieldValueError(msg, field="family")
        servers = _check_nameservers(nameservers)
        source = _DNSSource(
            name=name,
            port=port,
            srv=srv,
            scheme=scheme,
            family=family,
            nameservers=servers,
            timeout=seconds("timeout", timeout),
        )
        super().__init__(
            pool,
            source,
            interval=interval,
            min_interval=min_interval,
            jitter=jitter,
            timeout=timeout,
            allow_empty=allow_empty,
            clock=clock,
            rng=rng,
            on_event=on_event,
        )


class _DNSSource:
    """The lookups behind `DNSDiscovery`: one round of A/AAAA or SRV (+ target) queries."""

    def __init__(
        self,
        *,
        name: str | None,
        port: int | None,
        srv: str | None,
        scheme: str,
        family: Family,
        nameservers: list[tuple[str, int]] | None,
        timeout: float,
    ) -> None:
        _require_dnspython()
        import dns.asyncresolver
        import dns.nameserver
        import dns.resolver

        self.name = name
        self.port = port
        self.srv = srv
        self.scheme = scheme
        self.rdtypes = _FAMILIES[family]
        self.timeout = timeout
        self.nameservers = nameservers
        if nameservers is None:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration as exc:
                msg = "the system has no DNS resolver configuration; pass nameservers=[...]"
                raise RuntimeError(msg) from exc
        else:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, p) for ip, p in nameservers]
        resolver.timeout = min(_PER_TRY, timeout)
        resolver.lifetime = timeout
        self._resolver = resolver
        self._cache = EndpointCache()

    def __repr__(self) -> str:
        servers = (
            "system nameservers"
            if self.nameservers is None
            else ", ".join(_server_text(ip, p) for ip, p in self.nameservers)
        )
        if self.srv is not None:
            return f"DNS SRV {self.srv} via {servers}"
        kinds = "/".join(self.rdtypes)
        return f"DNS {kinds} {self.name} port {self.port} via {servers}"

    async def resolve(self) -> DiscoveryResult:
        """One round of lookups; raises `DiscoveryError` when a query fails."""
        import dns.asyncbackend

        # Chosen per call: dnspython's default backend sticks to the first event loop it saw.
        backend = dns.asyncbackend.get_backend(dns.asyncbackend.sniff())
        deadline = anyio.current_time() + self.timeout
        self._cache.rotate()
        if self.srv is not None:
            return await self._resolve_srv(self.srv, backend, deadline)
        assert self.name is not None
        assert self.port is not None
        addresses, ttl = await self._addresses(self.name, backend, deadline)
        endpoints = [
            self._cache.get(_url(self.scheme, address, self.port), hostname=self.name)
            for address in addresses
        ]
        return DiscoveryResult(endpoints, ttl=ttl)

    async def _resolve_srv(self, srv: str, backend: Any, deadline: float) -> DiscoveryResult:
        answer, ttl = await self._query(srv, "SRV", backend, deadline)
        groups: dict[int, list[tuple[str, int, int]]] = {}
        for record in answer:
            target = record.target.to_text(omit_final_dot=True)
            if target in ("", ".") or not record.port:
                continue  # "." = the service is decidedly not available here (RFC 2782)
            groups.setdefault(record.priority, []).append((target, record.port, record.weight))
        targets = sorted({target for records in groups.values() for target, _, _ in records})
        found = await self._all_addresses(targets, backend, deadline)
        merged: dict[str, tuple[float, str, int]] = {}
        # SRV priorities become the pool's failover tiers by rank: the lowest value is tier 0.
        for rank, priority in enumerate(sorted(groups)):
            tier = min(rank, _MAX_TIER)
            records = sorted(groups[priority])
            weights = _srv_weights([w for _, _, w in records])
            for (target, port, _), weight in zip(records, weights, strict=True):
                addresses, target_ttl = found[target]
                ttl = _min_ttl(ttl, target_ttl)
                for address in addresses:
                    url = _url(self.scheme, address, port)
                    previous = merged.get(url)
                    if previous is not None and previous[2] != tier:
                        continue  # listed again at a lower priority: the better tier keeps it
                    share = weight / len(addresses) + (previous[0] if previous else 0.0)
                    merged[url] = (share, target, tier)
        endpoints = [
            self._cache.get(url, weight=weight, hostname=target, priority=tier)
            for url, (weight, target, tier) in merged.items()
        ]
        return DiscoveryResult(endpoints, ttl=ttl)

    async def _all_addresses(
        self, names: list[str], backend: Any, deadline: float
    ) -> dict[str, tuple[list[str], float | None]]:
        found: dict[str, tuple[list[str], float | None]] = {}
        errors: list[DiscoveryError] = []

        async def lookup(name: str) -> None:
            try:
                found[name] = await self._addresses(name, backend, deadline)
            except DiscoveryError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(lookup, name)
        if errors:
            raise errors[0]  # one target failing fails the round: no half answers
        return found

    async def _addresses(
        self, name: str, backend: Any, deadline: float
    ) -> tuple[list[str], float | None]:
        # A and AAAA in parallel; either failing fails the round (no half answers).
        results: dict[str, tuple[list[str], float | None]] = {}
        errors: list[DiscoveryError] = []

        async def one(rdtype: str) -> None:
            try:
                answer, ttl = await self._query(name, rdtype, backend, deadline)
            except DiscoveryError as exc:
                errors.append(exc)
                return
            results[rdtype] = ([record.address for record in answer], ttl)

        async with anyio.create_task_group() as tg:
            for rdtype in self.rdtypes:
                tg.start_soon(one, rdtype)
        if errors:
            raise errors[0]
        addresses: list[str] = []
        ttl: float | None = None
        for rdtype in self.rdtypes:
            found, found_ttl = results[rdtype]
            addresses.extend(sorted(found, key=ipaddress.ip_address))
            ttl = _min_ttl(ttl, found_ttl)
        return addresses, ttl

    async def _query(
        self, name: str, rdtype: str, backend: Any, deadline: float
    ) -> tuple[list[Any], float | None]:
        # -> (records, TTL); [] for NXDOMAIN or no records; DiscoveryError for a failed lookup.
        import dns.exception
        import dns.resolver

        lifetime = max(deadline - anyio.current_time(), 0.001)
        try:
            answer = await self._resolver.resolve(
                name, rdtype, raise_on_no_answer=False, lifetime=lifetime, backend=backend
            )
        except dns.resolver.NXDOMAIN:
            return [], None
        except dns.exception.DNSException as exc:
            msg = f"DNS {rdtype} lookup of {name} failed: {exc}"
            raise DiscoveryError(msg) from exc
        except OSError as exc:
            msg = f"DNS {rdtype} lookup of {name} failed: {type(exc).__name__}: {exc}"
            raise DiscoveryError(msg) from exc
        rrset = answer.rrset
        if rrset is None:
            return [], None
        # The smallest TTL along the CNAME chain, not only the final record set's.
        return list(rrset), float(answer.chaining_result.minimum_ttl)


def check_hostname(arg: str, value: object) -> str:
    """Return *value* if it is a DNS hostname (``svc.internal``, ``_http._tcp.svc``), else raise.

    Raises:
        TypeError: *value* is not a str.
        ValueError: *value* is not a hostname, or is an IP address.
    """
    if not isinstance(value, str):
        msg = f"{arg} must be a hostname str, got {type(value).__name__}"
        raise FieldTypeError(msg, field=arg)
    host = value[:-1] if value.endswith(".") else value
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        msg = f"{arg} must be a DNS hostname, not an IP address ({value!r}); list fixed addresses in the Pool"
        raise FieldValueError(msg, field=arg)
    if not host or len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        msg = f"{arg} must be a DNS hostname like 'svc.internal', got {value!r}"
        raise FieldValueError(msg, field=arg)
    return value


def parse_nameserver(arg: str, value: object) -> tuple[str, int]:
    """Parse ``"IP"``, ``"IP:PORT"`` or ``"[IPv6]:PORT"`` into ``(ip, port)`` (port 53 by default).

    Raises:
        TypeError: *value* is not a str.
        ValueError: Not an IP address with an optional port in 1-65535.
    """
    if not isinstance(value, str):
        msg = f"{arg} must be an 'IP' or 'IP:PORT' str, got {type(value).__name__}"
        raise FieldTypeError(msg, field=_base(arg))
    host, port_text = value, ""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            host = ""
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    try:
        ip = ipaddress.ip_address(host)
        port = int(port_text) if port_text else 53
    except ValueError:
        msg = f"{arg} must be 'IP' or 'IP:PORT' (e.g. '127.0.0.1:5353', '[::1]:53'), got {value!r}"
        raise FieldValueError(msg, field=_base(arg)) from None
    if (port_text and not port_text.isdigit()) or not 1 <= port <= 65535:
        msg = f"{arg} port must be between 1 and 65535, got {value!r}"
        raise FieldValueError(msg, field=_base(arg))
    return str(ip), port


def _check_nameservers(value: object) -> list[tuple[str, int]] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        msg = f"nameservers must be a list of 'IP' or 'IP:PORT' strs, got {type(value).__name__}"
        raise FieldTypeError(msg, field="nameservers")
    if not value:
        msg = "nameservers must not be empty (omit it to use the system's)"
        raise FieldValueError(msg, field="nameservers")
    return [parse_nameserver(f"nameservers[{i}]", item) for i, item in enumerate(value)]


def _check_port(arg: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{arg} must be an int, got {type(value).__name__}"
        raise FieldTypeError(msg, field=arg)
    if not 1 <= value <= 65535:
        msg = f"{arg} must be between 1 and 65535, got {value!r}"
        raise FieldValueError(msg, field=arg)
    return value


def _base(arg: str) -> str:
    return arg.split("[", 1)[0]  # "nameservers[1]" -> "nameservers"


def _require_dnspython() -> None:
    try:
        import dns.asyncbackend
        import dns.asyncresolver
        import dns.nameserver
        import dns.resolver  # noqa: F401
    except ImportError as exc:
        msg = "DNSDiscovery needs dnspython; install it with: pip install 'tenantlb[dns]'"
        raise ImportError(msg, name="dns") from exc


def _srv_weights(weights: list[int]) -> list[float]:
    positive = [w for w in weights if w > 0]
    if not positive:
        return [1.0] * len(weights)
    tiny = min(positive) / 100.0
    return [float(w) if w > 0 else tiny for w in weights]


def _min_ttl(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _url(scheme: str, address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}"


def _server_text(ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return host if port == 53 else f"{host}:{port}"
