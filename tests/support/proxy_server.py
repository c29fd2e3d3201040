"""A ProxyApp for a server process of its own (memory is measured per process): one tenant whose
key is ``PROXY_KEY``, one pool of the ``PROXY_BACKENDS`` URLs (comma-separated), and the upstream
client ``PROXY_CLIENT`` names (default httpcore).

    python -m uvicorn --app-dir tests/support proxy_server:app
"""

from __future__ import annotations

import os

import tenantlb as tlb
from tenantlb.adapters.asgi import ProxyApp

_registry = tlb.TenantRegistry(
    [tlb.Tenant("acme", api_keys=[tlb.hash_api_key(os.environ["PROXY_KEY"])], upstream="backends")]
)
_pool = tlb.Pool(os.environ["PROXY_BACKENDS"].split(","))
gateway = tlb.Gateway(registry=_registry, pools={"backends": _pool})
app = ProxyApp(gateway, client=os.environ.get("PROXY_CLIENT", "httpcore"))  # type: ignore[arg-type]
