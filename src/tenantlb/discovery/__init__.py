"""Discovery: pools that follow DNS (A/AAAA and SRV), a watched file, or a source of your own.

```python
async with tlb.DNSDiscovery(pool, "svc.internal", port=8000, interval=30.0):
    ...  # the pool holds one endpoint per address, kept in step with DNS
```

Discovery sits beside `health`: it imports `balancing` and feeds a `Pool` through its public
`update`, never the gateway.
"""

from __future__ import annotations

from ._dns import DNSDiscovery as DNSDiscovery
from ._file import FileDiscovery as FileDiscovery
from ._runner import Discovery as Discovery
from ._runner import DiscoveryStats as DiscoveryStats
from ._source import DiscoveryResult as DiscoveryResult
from ._source import DiscoverySource as DiscoverySource

__all__ = [
    "DNSDiscovery",
    "Discovery",
    "DiscoveryResult",
    "DiscoverySource",
    "DiscoveryStats",
    "FileDiscovery",
]
