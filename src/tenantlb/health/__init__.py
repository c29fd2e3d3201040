"""Health: passive outlier detection (`OutlierDetector`) and active checks (`HealthChecker`).

```python
detector = tlb.OutlierDetector(consecutive_5xx=5, base_ejection_time=30.0)
pool = tlb.Pool(urls, outlier_detector=detector)
async with tlb.HealthChecker(pool, probe=tlb.HTTPProbe("/healthz"), interval=5.0, timeout=1.0):
    ...
```
"""

from __future__ import annotations

from .._registry import publish as _publish
from ..balancing import OutlierDetector as OutlierDetector
from ..balancing import OutlierDetectorStats as OutlierDetectorStats
from ..balancing import OutlierEndpointStats as OutlierEndpointStats
from ._checker import EndpointHealth as EndpointHealth
from ._checker import HealthChecker as HealthChecker
from ._checker import HealthCheckerStats as HealthCheckerStats
from ._probes import HTTPProbe as HTTPProbe
from ._probes import Probe as Probe
from ._probes import ProbeResult as ProbeResult
from ._probes import TCPProbe as TCPProbe

__all__ = [
    "EndpointHealth",
    "HTTPProbe",
    "HealthChecker",
    "HealthCheckerStats",
    "OutlierDetector",
    "OutlierDetectorStats",
    "OutlierEndpointStats",
    "Probe",
    "ProbeResult",
    "TCPProbe",
]

_publish(globals(), __all__, __name__)
