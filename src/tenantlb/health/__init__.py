"""Health: passive outlier detection (`OutlierDetector`) and active checks (`HealthChecker`)."""

from __future__ import annotations

from ._outlier import OutlierDetector as OutlierDetector
from ._outlier import OutlierDetectorStats as OutlierDetectorStats
from ._outlier import OutlierEndpointStats as OutlierEndpointStats

__all__ = [
    "OutlierDetector",
    "OutlierDetectorStats",
    "OutlierEndpointStats",
]
