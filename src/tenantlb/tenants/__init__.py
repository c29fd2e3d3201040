"""Tenants: who is calling, what they may use, and how to keep them apart.

`Tenant` (immutable), `TenantRegistry` (O(1) lookup by id and API-key digest, atomic hot reload),
`RequestInfo` (the adapter-neutral request view), resolvers (`APIKeyResolver`, `HeaderResolver`,
`HostResolver`, `PathPrefixResolver`), `hash_api_key` and `shuffle_shard`.
"""

from __future__ import annotations

from .._registry import publish as _publish
from ._keys import MAX_API_KEY_LENGTH as MAX_API_KEY_LENGTH
from ._keys import hash_api_key as hash_api_key
from ._keys import is_api_key_digest as is_api_key_digest
from ._registry import RegistrySnapshot as RegistrySnapshot
from ._registry import TenantRegistry as TenantRegistry
from ._request import RequestInfo as RequestInfo
from ._resolvers import RESOLVERS as RESOLVERS
from ._resolvers import APIKeyResolver as APIKeyResolver
from ._resolvers import HeaderResolver as HeaderResolver
from ._resolvers import HostResolver as HostResolver
from ._resolvers import PathPrefixResolver as PathPrefixResolver
from ._resolvers import TenantResolver as TenantResolver
from ._resolvers import default_resolvers as default_resolvers
from ._resolvers import register_resolver as register_resolver
from ._sharding import shard_overlap_probability as shard_overlap_probability
from ._sharding import shuffle_shard as shuffle_shard
from ._tenant import Tenant as Tenant

__all__ = [
    "APIKeyResolver",
    "HeaderResolver",
    "HostResolver",
    "MAX_API_KEY_LENGTH",
    "PathPrefixResolver",
    "RESOLVERS",
    "RegistrySnapshot",
    "RequestInfo",
    "Tenant",
    "TenantRegistry",
    "TenantResolver",
    "default_resolvers",
    "hash_api_key",
    "is_api_key_digest",
    "register_resolver",
    "shard_overlap_probability",
    "shuffle_shard",
]

_publish(globals(), __all__, __name__)
