"""Fairness under overload: fair queuing across tenants and an adaptive concurrency limit.

```python
import tenantlb as tlb

fq = tlb.FairQueue(64)                                # 64 in flight, fair queuing beyond
adaptive = tlb.FairQueue(tlb.AdaptiveConcurrency())   # the limit follows the upstream's latency
# async with fq.acquire("acme", weight=2.0): ...
```

Names:

- `FairQueue` - a concurrency budget shared by flows, with shuffle-sharded fair queuing (anyio);
  `FairQueueStats` its snapshot.
- `FairScheduler` - the same decisions without I/O, for simulations and other event loops;
  `Turn` one request's place in it; `TurnState`; `deal_hand` a flow's queues.
- `AdaptiveConcurrency` - Envoy's gradient controller, alone or as a FairQueue's capacity;
  `AdaptiveConcurrencyStats` its snapshot. `Capacity` - the protocol of a changing limit.
"""

from __future__ import annotations

from ._adaptive import AdaptiveConcurrency as AdaptiveConcurrency
from ._adaptive import AdaptiveConcurrencyStats as AdaptiveConcurrencyStats
from ._fair_queue import FairQueue as FairQueue
from ._hands import deal_hand as deal_hand
from ._scheduler import Capacity as Capacity
from ._scheduler import FairQueueStats as FairQueueStats
from ._scheduler import FairScheduler as FairScheduler
from ._scheduler import Turn as Turn
from ._scheduler import TurnState as TurnState

__all__ = [
    "AdaptiveConcurrency",
    "AdaptiveConcurrencyStats",
    "Capacity",
    "FairQueue",
    "FairQueueStats",
    "FairScheduler",
    "Turn",
    "TurnState",
    "deal_hand",
]
