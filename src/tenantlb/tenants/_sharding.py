"""Shuffle sharding: each tenant gets its own small, stable subset of a shared pool.

With N endpoints and shards of k, there are C(N, k) distinct shards. Two tenants share their exact
shard with probability 1 / C(N, k), so a tenant that poisons its endpoints (a query of death, a
flood) takes down every endpoint of another tenant only with that probability; N=8, k=2 gives
C(8, 2) = 28 shards and a 1/28 ≈ 3.6% chance.

The subset is chosen by rendezvous (highest-random-weight) hashing: the tenant scores every endpoint
with a keyed BLAKE2b hash of (tenant id, url) and takes the k best. Hashes never use the builtin
``hash()`` (salted per process), so every process and restart computes the same shards. When an
endpoint is added, a tenant's shard changes only if the new endpoint enters its top k (probability
k / (N + 1)), and then only by that one endpoint; removing an endpoint only touches the shards that
contained it.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import math
from collections.abc import Iterable

from .._validate import count, require_type

__all__ = ["shard_overlap_probability", "shuffle_shard"]

_PERSON = b"tenantlb-shard1"  # domain separation: these scores mean nothing elsewhere


def shuffle_shard(tenant_id: str, endpoints: Iterable[str], k: int) -> tuple[str, ...]:
    """Return the *k* endpoints of *endpoints* that belong to *tenant_id*'s shard.

    Deterministic across processes, machines and restarts; independent of the order of
    *endpoints*; minimal churn when endpoints come and go (rendezvous hashing). Results are cached
    (LRU), so calling it per request is cheap.

    ```python
    from tenantlb import shuffle_shard

    urls = [f"http://10.0.0.{i}:8000" for i in range(1, 9)]
    shard = shuffle_shard("acme", urls, 2)
    assert len(shard) == 2 and set(shard) <= set(urls)
    ```

    Args:
        tenant_id: The tenant's id.
        endpoints: The URLs of every endpoint in the shared pool (no duplicates).
        k: Shard size, >= 1. If the pool has at most *k* endpoints, the shard is all of them.

    Returns:
        The shard's URLs, best-ranked first.

    Raises:
        TypeError: *tenant_id* is not a str, *k* not an int, *endpoints* a str or an endpoint
            not a str.
        ValueError: *k* < 1, or *endpoints* has duplicates.
    """
    count("k", k)
    if isinstance(endpoints, str | bytes):
        msg = f"endpoints must be an iterable of str urls, got {type(endpoints).__name__}"
        raise TypeError(msg)
    urls = tuple(endpoints)
    try:
        return _shard(tenant_id, urls, k)
    except TypeError:
        # The cache hashes its arguments first: name an unhashable id or url, not "unhashable".
        require_type("tenant_id", tenant_id, str, "a str")
        for url in urls:
            require_type("endpoints", url, str, "str urls")
        raise


def shard_overlap_probability(n: int, k: int, shared: int) -> float:
    """Probability that two tenants' random k-of-n shards have exactly *shared* endpoints in common.

    ``C(k, shared) * C(n - k, k - shared) / C(n, k)`` (hypergeometric); with ``shared == k`` this
    is the chance that one tenant's outage takes every endpoint of another: ``1 / C(n, k)``.

    Args:
        n: Endpoints in the pool.
        k: Shard size (<= n).
        shared: Endpoints in common, 0..k.
    """
    if not (0 < k <= n and 0 <= shared <= k):
        msg = f"need 0 < k <= n and 0 <= shared <= k, got n={n}, k={k}, shared={shared}"
        raise ValueError(msg)
    return math.comb(k, shared) * math.comb(n - k, k - shared) / math.comb(n, k)


@functools.lru_cache(maxsize=16384)
def _shard(tenant_id: str, urls: tuple[str, ...], k: int) -> tuple[str, ...]:
    require_type("tenant_id", tenant_id, str, "a str")
    if len(set(urls)) != len(urls):
        msg = f"endpoints must be unique, got {len(urls)} urls with duplicates"
        raise ValueError(msg)
    # Length-prefixing the id keeps (id, url) unambiguous: ("a", "bc") never scores like ("ab", "c").
    prefix = len(tenant_id.encode()).to_bytes(4, "big") + tenant_id.encode()
    scored = []
    for url in urls:
        require_type("endpoints", url, str, "str urls")
        digest = hashlib.blake2b(prefix + url.encode(), digest_size=8, person=_PERSON).digest()
        # Ties (probability 2**-64) are broken by the url, so the order never depends on input order.
        scored.append((int.from_bytes(digest, "big"), url))
    return tuple(url for _, url in heapq.nlargest(min(k, len(scored)), scored))
