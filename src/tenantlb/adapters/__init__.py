"""Thin adapters that put tenantlb into a framework; each is an optional extra.

- `tenantlb.adapters.httpx`: ``BalancingTransport`` / ``AsyncBalancingTransport`` (``tenantlb[httpx]``).
- `tenantlb.adapters.asgi`: ``TenantMiddleware`` and the ``ProxyApp`` reverse proxy (no extra: pure ASGI).
- `tenantlb.adapters.aiohttp`: ``tenant_middleware`` and ``balancing_middleware`` (``tenantlb[aiohttp]``).

Adapters use only tenantlb's public names; the core never imports them.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import *module* or raise an ImportError that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{module} is not installed: pip install 'tenantlb[{extra}]'"
        raise ImportError(msg, name=module) from exc
