"""Resolvers: how a request names its tenant (API key, Bearer token, trusted header, host, path).

A resolver is any callable ``(request, registry) -> Tenant | None``. It returns the tenant the
request belongs to, returns None when the request carries nothing it understands (the next
resolver in the chain gets a turn), or raises `Unauthenticated` / `UnknownTenant` when the request
carries something it understands but that is wrong. ``registry`` is the `RegistrySnapshot` the
whole resolution runs against, so a hot reload never splits one request across two registries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

from .._errors import Unauthenticated, UnknownTenant
from .._registry import Registry
from .._validate import FieldTypeError, FieldValueError, require_type

if TYPE_CHECKING:
    from ._registry import RegistrySnapshot
    from ._request import RequestInfo
    from ._tenant import Tenant

__all__ = [
    "APIKeyResolver",
    "HeaderResolver",
    "HostResolver",
    "PathPrefixResolver",
    "RESOLVERS",
    "TenantResolver",
    "default_resolvers",
    "register_resolver",
]

_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token


@runtime_checkable
class TenantResolver(Protocol):
    """Finds the tenant of a request; see the module docs for the contract."""

    def __call__(self, request: RequestInfo, registry: RegistrySnapshot, /) -> Tenant | None:
        """Return the request's tenant, None if this resolver does not apply, or raise."""
        ...


def _header_name(name: object) -> str:
    if not isinstance(name, str):
        msg = f"header must be a str, got {type(name).__name__}"
        raise FieldTypeError(msg, field="header")
    if _HEADER_NAME_RE.fullmatch(name) is None:
        msg = f"header must be a valid HTTP header name, got {name!r}"
        raise FieldValueError(msg, field="header")
    return name.lower()


@final
class APIKeyResolver:
    """Authenticates the API key in a header: ``x-api-key`` or ``Authorization: Bearer <key>``.

    The key is validated (visible ASCII, at most 4096 characters), hashed, looked up by digest in
    O(1) and confirmed with `hmac.compare_digest`. A missing header means "not mine" (None); a
    repeated, malformed or unknown key raises `Unauthenticated`, whose message names the header,
    never the key.

    Args:
        header: The header that carries the key.
        scheme: An auth scheme (``"Bearer"``) the value must start with, or None for a bare key.
            Values with another scheme (``Authorization: Basic ...``) are "not mine".
    """

    __slots__ = ("_header", "_prefix", "_source", "scheme")

    def __init__(self, header: str = "x-api-key", *, scheme: str | None = None) -> None:
        self._header = _header_name(header)
        if scheme is not None:
            require_type("scheme", scheme, str, "a str or None")
        if scheme is not None and not (scheme.isascii() and scheme.isalnum()):
            msg = f"scheme must be an auth scheme name like 'Bearer', got {scheme!r}"
            raise FieldValueError(msg, field="scheme")
        self.scheme = scheme
        self._prefix = None if scheme is None else scheme.lower() + " "
        self._source = (
            f"{self._header} header"
            if scheme is None
            else f"{scheme} token in the {self._header} header"
        )

    @classmethod
    def bearer(cls) -> APIKeyResolver:
        """Read the key from ``Authorization: Bearer <key>`` (RFC 6750)."""
        return cls("authorization", scheme="Bearer")

    @property
    def header(self) -> str:
        """The (lowercased) header name."""
        return self._header

    @property
    def source(self) -> str:
        """How error messages name the credential, e.g. ``"x-api-key header"``."""
        return self._source

    def __repr__(self) -> str:
        if self.scheme is None:
            return f"APIKeyResolver({self._header!r})"
        return f"APIKeyResolver({self._header!r}, scheme={self.scheme!r})"

    def __call__(self, request: RequestInfo, registry: RegistrySnapshot) -> Tenant | None:
        values = request.header_values(self._header)
        if not values:
            return None
        prefix = self._prefix
        if prefix is not None:
            n = len(prefix)
            values = tuple(v[n:].strip(" ") for v in values if v[:n].lower() == prefix)
            if not values:
                return None
        if len(values) > 1:
            msg = f"more than one {self._source} in the request"
            raise Unauthenticated(msg)
        return registry.by_api_key(values[0], source=self._source)


@final
class HeaderResolver:
    """Takes the tenant id verbatim from a header, e.g. ``x-tenant-id``.

    There is no secret here: anyone who can reach the gateway can claim to be any tenant. Use it
    only behind something that authenticates callers and sets (or strips) the header — an internal
    mesh, an upstream auth proxy — and never in the default chain.

    Args:
        header: The header that carries the tenant id.
    """

    __slots__ = ("_header",)

    def __init__(self, header: str = "x-tenant-id") -> None:
        self._header = _header_name(header)

    def __repr__(self) -> str:
        return f"HeaderResolver({self._header!r})"

    def __call__(self, request: RequestInfo, registry: RegistrySnapshot) -> Tenant | None:
        values = request.header_values(self._header)
        if not values:
            return None
        if len(values) > 1:
            msg = f"more than one {self._header} header in the request"
            raise UnknownTenant(msg)
        return _known(registry, values[0].strip(), f"{self._header} header")


@final
class HostResolver:
    """Finds the tenant from the requested host: an exact host map, or a subdomain of a base domain.

    ```python
    HostResolver("api.example.com")               # acme.api.example.com -> tenant "acme"
    HostResolver(hosts={"api.acme.test": "acme"}) # exact hosts (e.g. custom domains)
    ```

    Only one label directly under *base_domain* counts (``x.acme.api.example.com`` does not
    match). Hosts are compared lowercased and without the port; a host that matches neither form
    means "not mine". Exact *hosts* win over the subdomain rule.

    Args:
        base_domain: The domain whose subdomains are tenant ids, or None.
        hosts: Exact host -> tenant id.
    """

    __slots__ = ("_hosts", "_suffix")

    def __init__(
        self, base_domain: str | None = None, *, hosts: Mapping[str, str] | None = None
    ) -> None:
        if base_domain is not None:
            require_type("base_domain", base_domain, str, "a str or None")
            base = base_domain.strip().strip(".").lower()
            if not base or any(c in base for c in "/:@ "):
                msg = (
                    f"base_domain must be a domain name like 'api.example.com', got {base_domain!r}"
                )
                raise FieldValueError(msg, field="base_domain")
            self._suffix: str | None = "." + base
        else:
            self._suffix = None
        self._hosts = {str(h).strip().lower(): str(t) for h, t in dict(hosts or {}).items()}
        if self._suffix is None and not self._hosts:
            msg = "HostResolver needs a base_domain or hosts"
            raise ValueError(msg)

    def __repr__(self) -> str:
        base = None if self._suffix is None else self._suffix[1:]
        return f"HostResolver({base!r}, hosts={self._hosts!r})"

    def __call__(self, request: RequestInfo, registry: RegistrySnapshot) -> Tenant | None:
        host = request.host
        if not host:
            return None
        host = host.rstrip(".")
        tenant_id = self._hosts.get(host)
        if tenant_id is None and self._suffix is not None and host.endswith(self._suffix):
            label = host[: -len(self._suffix)]
            if label and "." not in label:
                tenant_id = label
        if tenant_id is None:
            return None
        return _known(registry, tenant_id, "host")


@final
class PathPrefixResolver:
    """Finds the tenant from a path segment, e.g. ``PathPrefixResolver("/t/{tenant}/")``.

    The template is a literal path with one ``{tenant}`` placeholder standing for a whole path
    segment. Paths that do not start with the literal part mean "not mine". Like `HeaderResolver`
    this names a tenant without proving it; combine it with authentication.

    Args:
        template: The path template, starting with ``/``.
    """

    __slots__ = ("_after", "_before", "template")

    def __init__(self, template: str = "/t/{tenant}/") -> None:
        require_type("template", template, str, "a str")
        before, sep, after = template.partition("{tenant}")
        if (
            not sep
            or "{tenant}" in after
            or not before.startswith("/")
            or not before.endswith("/")
            or (after and not after.startswith("/"))
        ):
            msg = f"template must look like '/t/{{tenant}}/' with one whole-segment {{tenant}}, got {template!r}"
            raise FieldValueError(msg, field="template")
        self.template = template
        self._before = before
        self._after = after.rstrip("/")  # the literal after the segment, "" or "/x"

    def __repr__(self) -> str:
        return f"PathPrefixResolver({self.template!r})"

    def __call__(self, request: RequestInfo, registry: RegistrySnapshot) -> Tenant | None:
        path = request.path
        if not path.startswith(self._before):
            return None
        rest = path[len(self._before) :]
        tenant_id, _, tail = rest.partition("/")
        if not tenant_id:
            return None
        if self._after and not ("/" + tail + "/").startswith(self._after + "/"):
            return None
        return _known(registry, tenant_id, "path")


def default_resolvers() -> tuple[TenantResolver, ...]:
    """The default chain: the API key from ``x-api-key``, else from ``Authorization: Bearer``."""
    return (APIKeyResolver("x-api-key"), APIKeyResolver.bearer())


def _known(registry: RegistrySnapshot, tenant_id: str, source: str) -> Tenant:
    tenant = registry.get(tenant_id)
    if tenant is None:
        # The value is unverified client input: do not echo it.
        msg = f"the {source} names no known tenant"
        raise UnknownTenant(msg)
    return tenant


RESOLVERS: Registry[Callable[..., TenantResolver]] = Registry("resolver")
"""Resolver factories by the names ``gateway.resolvers`` uses in a config file."""

register_resolver = RESOLVERS.register
"""``register_resolver(name, factory, *, replace=False)``: add a resolver factory to `RESOLVERS`.

Also a class decorator: ``@register_resolver("name")``. See `tenantlb._registry.Registry.register`;
a taken name is a ValueError unless *replace* is true.
"""

_BUILT_IN: dict[str, Callable[..., TenantResolver]] = {
    "api_key": APIKeyResolver,
    "bearer": APIKeyResolver.bearer,
    "header": HeaderResolver,
    "host": HostResolver,
    "path": PathPrefixResolver,
}
for _name, _factory in _BUILT_IN.items():
    register_resolver(_name, _factory)
