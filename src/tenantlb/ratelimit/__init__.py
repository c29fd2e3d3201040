"""Rate limiting and concurrency limits per key, in memory or shared through Redis.

```python
from tenantlb.ratelimit import RateLimiter, Rate, RedisStore

limiter = RateLimiter([Rate(100, per=1.0, burst=20), Rate(10_000, per=3600)])
decision = limiter.acquire_nowait("acme")                      # sync, MemoryStore (the default)
decision.allowed, decision.remaining, decision.headers()

shared = RateLimiter(Rate(100), store=RedisStore(redis.asyncio.Redis()))
decision = await shared.acquire("acme", cost=250)           # async, any store
```

Names:

- `Rate` - a quota; `RateLimiter` - decides per key; `Decision` - its answer and headers.
- Algorithms: `GCRA` (default), `TokenBucket`, `SlidingWindow`, `FixedWindow`; `Algorithm` to add one
  (with `State`, `Step`, `Kernel`, `KernelResult`, `EPSILON`), `register_algorithm` to name it in
  `ALGORITHMS` (what ``Gateway(algorithm="name")`` and config files look up).
- Stores: `MemoryStore` (one process), `RedisStore` (shared: one atomic script per decision, pipelined);
  `Store` is the protocol a new store implements (with `RateSpec`, `RateBackend`, ...);
  `STORES` / `register_store` name stores for config files.
- `ConcurrencyLimiter` - slots in flight per key (`async with limiter.slot(key)`), held as `Slot`.
"""

from __future__ import annotations

from .._registry import publish as _publish
from ._algorithms import ALGORITHMS as ALGORITHMS
from ._algorithms import EPSILON as EPSILON
from ._algorithms import GCRA as GCRA
from ._algorithms import Algorithm as Algorithm
from ._algorithms import FixedWindow as FixedWindow
from ._algorithms import Kernel as Kernel
from ._algorithms import KernelResult as KernelResult
from ._algorithms import SlidingWindow as SlidingWindow
from ._algorithms import State as State
from ._algorithms import Step as Step
from ._algorithms import TokenBucket as TokenBucket
from ._algorithms import register_algorithm as register_algorithm
from ._algorithms import resolve_algorithm as resolve_algorithm
from ._concurrency import ConcurrencyLimiter as ConcurrencyLimiter
from ._decision import Decision as Decision
from ._limiter import RateLimiter as RateLimiter
from ._memory import MemoryStore as MemoryStore
from ._memory import MemoryStoreStats as MemoryStoreStats
from ._rate import Rate as Rate
from ._redis_store import RedisStore as RedisStore
from ._redis_store import RedisStoreStats as RedisStoreStats
from ._store import ConcurrencyBackend as ConcurrencyBackend
from ._store import ConcurrencySpec as ConcurrencySpec
from ._store import RateBackend as RateBackend
from ._store import RateSpec as RateSpec
from ._store import Slot as Slot
from ._store import Store as Store
from ._stores import STORES as STORES
from ._stores import redis_store as redis_store
from ._stores import register_store as register_store

__all__ = [
    "ALGORITHMS",
    "EPSILON",
    "GCRA",
    "STORES",
    "Algorithm",
    "ConcurrencyBackend",
    "ConcurrencyLimiter",
    "ConcurrencySpec",
    "Decision",
    "FixedWindow",
    "Kernel",
    "KernelResult",
    "MemoryStore",
    "MemoryStoreStats",
    "Rate",
    "RateBackend",
    "RateLimiter",
    "RateSpec",
    "RedisStore",
    "RedisStoreStats",
    "Slot",
    "SlidingWindow",
    "State",
    "Step",
    "Store",
    "TokenBucket",
    "redis_store",
    "register_algorithm",
    "register_store",
    "resolve_algorithm",
]

_publish(globals(), __all__, __name__)
