"""One declarative document (TOML, JSON, YAML or a mapping) → a ready `Gateway`.

```toml
[gateway]
hash_on = "client_ip"

[pools.shared]
endpoints = ["http://10.0.0.1:8000", { url = "http://10.0.0.2:8000", weight = 2 }]
balancer = "peak_ewma"

[[tenants]]
id = "acme"
upstream = "shared"
api_keys = ["sha256:…"]          # digests, as printed by `python -m tenantlb hash-key`
limits = [{ limit = 100, per = 1.0 }]
```

Validation reports every problem at once, each with the exact path of the bad field
(``tenants[2].limits[0].per: per must be a finite number > 0, got -1``), as one `ConfigError`.
Unknown keys are errors too, so a typo never silently disables a limit. The full schema is in
``docs/how-to/config.md``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ._config_pools import PoolsBuilder
from ._errors import ConfigError
from ._registry import Registry
from ._validate import FieldError
from .balancing import Pool
from .ratelimit import ALGORITHMS, STORES, Algorithm, Rate, Store
from .tenants import RESOLVERS, Tenant, TenantRegistry, TenantResolver

__all__ = ["build_gateway", "load_config", "read_config", "validate_config"]

T = TypeVar("T")

if TYPE_CHECKING:
    from .gateway import Gateway


def load_config(path: str | os.PathLike[str]) -> Gateway:
    """Read a TOML, JSON or YAML file and build a `Gateway` from it.

    The format follows the extension: ``.toml``, ``.json``, ``.yaml`` / ``.yml`` (YAML needs
    PyYAML installed).

    Raises:
        ConfigError: The file cannot be read or parsed, or the document is invalid.
    """
    return build_gateway(read_config(path))


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and parse a config file into a mapping, without validating it.

    Raises:
        ConfigError: The file is missing, unreadable, of an unknown format or not parseable.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read {str(file)!r}: {exc}"
        raise ConfigError(path="", message=msg) from exc
    try:
        if suffix == ".toml":
            data: object = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as exc:
                msg = "YAML config needs PyYAML: pip install pyyaml"
                raise ConfigError(path="", message=msg) from exc
            data = yaml.safe_load(text)
        else:
            msg = f"unknown config format {suffix!r}: use .toml, .json, .yaml or .yml"
            raise ConfigError(path="", message=msg)
    except ConfigError:
        raise
    except Exception as exc:  # tomllib / json / yaml each have their own error types
        msg = f"cannot parse {str(file)!r}: {exc}"
        raise ConfigError(path="", message=msg) from exc
    if not isinstance(data, dict):
        msg = f"the document must be a table/object, got {type(data).__name__}"
        raise ConfigError(path="", message=msg)
    return data


def validate_config(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Return every ``(path, message)`` problem in *config* (empty when it is valid)."""
    builder = _Builder()
    builder.build(config)
    return builder.errors


def build_gateway(config: Mapping[str, Any]) -> Gateway:
    """Build a `Gateway` from a config mapping.

    Raises:
        ConfigError: Every problem found, each with its path.
    """
    builder = _Builder()
    gateway = builder.build(config)
    if builder.errors or gateway is None:
        raise ConfigError.collect(builder.errors or [("", "invalid config")])
    return gateway


# -- the builder ---------------------------------------------------------------------------------

_TOP = {"gateway", "pools", "tenants"}
_GATEWAY = {
    "algorithm",
    "hash_on",
    "lease_ttl",
    "secret",
    "secret_env",
    "trusted_proxies",
    "resolvers",
    "store",
    "anonymous",
    "max_body_size",
    "max_header_size",
}
_ANONYMOUS = {
    "id",
    "upstream",
    "routes",
    "limits",
    "max_concurrency",
    "max_body_size",
    "max_header_size",
}
_TENANT = {
    "id",
    "display_name",
    "api_keys",
    "upstream",
    "routes",
    "limits",
    "max_concurrency",
    "weight",
    "shard_size",
    "enabled",
    "metadata",
    "max_body_size",
    "max_header_size",
}
_RATE = {"limit", "per", "burst", "name"}


class _Builder:
    """Walks a document once, building objects and collecting ``(path, message)`` errors."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.fair_queues: dict[str, Any] = {}  # pool name -> FairQueue

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def attempt(
        self,
        path: str,
        fields: set[str] | None,
        make: Callable[..., T],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> T | None:
        """Call ``make(*args, **kwargs)``; turn a TypeError/ValueError into an error at *path*, or
        at ``path.field`` when it is a `FieldError` about one of *fields* (None: any field, for a
        registered factory whose arguments are the table's keys)."""
        try:
            return make(*args, **kwargs)
        except ConfigError as exc:
            self.errors.extend(exc.errors)
        except FieldError as exc:
            known = fields is None or exc.field in fields
            self.error(f"{path}.{exc.field}" if known else path, str(exc))
        except (TypeError, ValueError) as exc:
            self.error(path, str(exc))
        return None

    def make(
        self,
        path: str,
        registry: Registry[Callable[..., T]],
        spec: object,
        expected: type,
        *,
        nested: str | None = None,
    ) -> T | None:
        """Build what *spec* names in *registry*: a name, or a table whose ``type`` is one and whose
        other keys are the factory's keyword arguments (the key *nested*, if given, is itself a
        spec in the same registry, e.g. a `BoundedLoad`'s ``inner``)."""
        kwargs: dict[str, Any] = {}
        where = path
        if isinstance(spec, Mapping):
            kwargs = {str(k): v for k, v in spec.items()}
            spec = kwargs.pop("type", None)
            where = f"{path}.type"
        try:
            factory = registry.get(spec)
        except (TypeError, ValueError) as exc:
            self.error(where, str(exc))
            return None
        if nested is not None and nested in kwargs:
            inner = self.make(f"{path}.{nested}", registry, kwargs[nested], expected, nested=nested)
            if inner is None:
                return None
            kwargs[nested] = inner
        try:
            made = self.attempt(path, None, factory, **kwargs)
        except ImportError as exc:  # a factory's optional dependency (redis) is missing
            self.error(path, str(exc))
            return None
        if made is not None and not isinstance(made, expected):
            self.error(path, f"the factory made a {_type(made)}, not a {expected.__name__}")
            return None
        return made

    def table(self, path: str, value: object, allowed: set[str]) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.error(path, f"must be a table, got {_type(value)}")
            return None
        for key in value:
            if key not in allowed:
                self.error(
                    _join(path, str(key)), f"unknown key {key!r}; expected one of {sorted(allowed)}"
                )
        return value

    # -- sections ----------------------------------------------------------------------------------

    def build(self, config: Mapping[str, Any]) -> Gateway | None:
        from .gateway import Gateway

        doc = self.table("", config, _TOP)
        if doc is None:
            return None
        gw = self.table("gateway", doc.get("gateway", {}), _GATEWAY) or {}
        pools, services = PoolsBuilder(self).pools(doc.get("pools"))
        tenants = self.tenants(doc.get("tenants", []), pools)
        secret = self.secret(gw)
        resolvers = self.resolvers(gw.get("resolvers"))
        store = self.store(gw.get("store", "memory"))
        algorithm = self.make(
            "gateway.algorithm", ALGORITHMS, gw.get("algorithm", "gcra"), Algorithm
        )
        hash_on = gw.get("hash_on")
        if hash_on not in (None, "client_ip", "tenant"):
            self.error("gateway.hash_on", f"must be 'client_ip' or 'tenant', got {hash_on!r}")
        trusted = gw.get("trusted_proxies", [])
        if not isinstance(trusted, list) or not all(isinstance(t, str) for t in trusted):
            self.error(
                "gateway.trusted_proxies", f"must be a list of CIDR strings, got {trusted!r}"
            )
        lease_ttl = gw.get("lease_ttl", 60.0)
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int | float):
            self.error("gateway.lease_ttl", f"must be a number of seconds > 0, got {lease_ttl!r}")
        anonymous = self.anonymous(gw.get("anonymous"), pools)
        sizes = {k: gw[k] for k in ("max_body_size", "max_header_size") if k in gw}
        if self.errors:
            return None
        registry = self.attempt(
            "tenants",
            set(),
            TenantRegistry,
            tenants,
            resolvers=resolvers,
            secret=secret,
        )
        if registry is None:
            return None
        return self.attempt(
            "gateway",
            {
                "trusted_proxies",
                "hash_on",
                "algorithm",
                "lease_ttl",
                "max_body_size",
                "max_header_size",
            },
            Gateway,
            registry=registry,
            pools=pools,
            store=store,
            algorithm=algorithm,
            hash_on=hash_on,
            services=services,
            trusted_proxies=tuple(trusted),
            owns_store=True,
            lease_ttl=lease_ttl,
            anonymous=anonymous,
            concurrency=self.fair_queues,
            **sizes,
        )

    def kwargs(self, path: str, value: object) -> dict[str, Any] | None:
        """A table's items as keyword arguments; None (and an error) if it is not a table."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.error(path, f"must be a table, got {_type(value)}")
            return None
        return {str(k): v for k, v in value.items()}

    def tenants(self, value: object, pools: Mapping[str, Pool]) -> list[Tenant]:
        out: list[Tenant] = []
        if not isinstance(value, list):
            self.error("tenants", f"must be a list of tenant tables, got {_type(value)}")
            return out
        seen: dict[str, int] = {}
        for i, spec in enumerate(value):
            path = f"tenants[{i}]"
            table = self.table(path, spec, _TENANT)
            if table is None:
                continue
            if "id" not in table:
                self.error(f"{path}.id", "is required")
                continue
            limits = self.limits(f"{path}.limits", table.get("limits", []))
            kwargs = {k: v for k, v in table.items() if k not in ("id", "limits")}
            if limits is None:
                continue
            tenant = self.attempt(
                path,
                _TENANT,
                Tenant,
                table["id"],
                limits=limits,
                **kwargs,
            )
            if tenant is None:
                continue
            if tenant.id in seen:
                self.error(
                    f"{path}.id",
                    f"duplicate tenant id {tenant.id!r} (also tenants[{seen[tenant.id]}])",
                )
                continue
            seen[tenant.id] = i
            for name in sorted(tenant.upstreams):
                if pools and name not in pools:
                    field = "upstream" if name == tenant.upstream else "routes"
                    self.error(
                        f"{path}.{field}", f"unknown pool {name!r}; pools are {sorted(pools)}"
                    )
            out.append(tenant)
        return out

    def anonymous(self, value: object, pools: Mapping[str, Pool]) -> Tenant | None:
        """``[gateway.anonymous]``: the tenant requests without credentials are admitted as."""
        if value is None:
            return None
        path = "gateway.anonymous"
        table = self.table(path, value, _ANONYMOUS)
        if table is None:
            return None
        limits = self.limits(f"{path}.limits", table.get("limits", []))
        if limits is None:
            return None
        kwargs = {k: v for k, v in table.items() if k not in ("id", "limits")}
        tenant = self.attempt(
            path, _ANONYMOUS, Tenant, table.get("id", "anonymous"), limits=limits, **kwargs
        )
        if tenant is not None:
            for name in sorted(tenant.upstreams):
                if pools and name not in pools:
                    field = "upstream" if name == tenant.upstream else "routes"
                    self.error(
                        f"{path}.{field}", f"unknown pool {name!r}; pools are {sorted(pools)}"
                    )
        return tenant

    def limits(self, path: str, value: object) -> list[Rate] | None:
        if not isinstance(value, list):
            self.error(path, f"must be a list of rate tables, got {_type(value)}")
            return None
        out: list[Rate] = []
        ok = True
        for j, spec in enumerate(value):
            where = f"{path}[{j}]"
            table = self.table(where, spec, _RATE)
            if table is None:
                ok = False
                continue
            if "limit" not in table:
                self.error(f"{where}.limit", "is required")
                ok = False
                continue
            rate = self.attempt(where, _RATE, Rate, **table)
            if rate is None:
                ok = False
            else:
                out.append(rate)
        return out if ok else None

    def secret(self, gw: Mapping[str, Any]) -> str | None:
        if "secret" in gw and "secret_env" in gw:
            self.error("gateway.secret", "give secret or secret_env, not both")
            return None
        if "secret_env" in gw:
            name = gw["secret_env"]
            if not isinstance(name, str) or not name:
                self.error(
                    "gateway.secret_env", f"must be an environment variable name, got {name!r}"
                )
                return None
            secret = os.environ.get(name)
            if not secret:
                self.error("gateway.secret_env", f"environment variable {name!r} is not set")
            return secret
        secret = gw.get("secret")
        if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
            self.error("gateway.secret", "must be a string of at least 16 characters")
            return None
        return secret

    def resolvers(self, value: object) -> Sequence[TenantResolver] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            self.error("gateway.resolvers", f"must be a non-empty list, got {_type(value)}")
            return None
        out: list[TenantResolver] = []
        for i, spec in enumerate(value):
            path = f"gateway.resolvers[{i}]"
            made = self.make(path, RESOLVERS, spec, TenantResolver)
            if made is not None:
                out.append(made)
        return out

    def store(self, value: object) -> Store | None:
        return self.make("gateway.store", STORES, value, Store)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type(value: object) -> str:
    return type(value).__name__
