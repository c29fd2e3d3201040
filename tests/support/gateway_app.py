"""The gateway the end-to-end tests run in its own process: `ProxyApp` under uvicorn or hypercorn.

``TENANTLB_E2E_CONFIG`` holds the gateway's config as JSON (`Gateway.from_config`), and
``TENANTLB_E2E_PROXY`` the `ProxyApp` keyword arguments as JSON. Besides proxying, the app answers
``GET /__e2e/stats`` (never proxied) with what the tests check from outside: in-flight counts,
each endpoint's state, the gateway's counters and the retry budget's.

    uvicorn --factory --app-dir tests/support gateway_app:create_app
"""

from __future__ import annotations

import json
import os
import resource
from typing import Any

import tenantlb as tlb
from tenantlb.adapters.asgi import ProxyApp


def create_app() -> Any:
    gateway = tlb.Gateway.from_config(json.loads(os.environ["TENANTLB_E2E_CONFIG"]))
    budget = tlb.RetryBudget()
    options = json.loads(os.environ.get("TENANTLB_E2E_PROXY", "{}"))
    proxy = ProxyApp(gateway, retry_budget=budget, **options)

    def stats() -> dict[str, Any]:
        snapshot = gateway.stats()
        used = budget.stats()
        return {
            "in_flight": snapshot.in_flight,
            "admitted": snapshot.admitted,
            "refused": dict(snapshot.refused),
            "pools": {
                name: {
                    "in_flight": pool.in_flight,
                    "endpoints": {
                        e.url: {
                            "healthy": e.healthy,
                            "ejected": e.ejected,
                            "requests": e.requests,
                            "failures": e.failures,
                            "in_flight": e.in_flight,
                        }
                        for e in pool.endpoints
                    },
                }
                for name, pool in snapshot.pools.items()
            },
            "retry_budget": {"requests": used.requests, "retries": used.retries},
            "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "rss_kb": _rss_kb(),
        }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/__e2e/stats":
            body = json.dumps(stats()).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await proxy(scope, receive, send)

    return app


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
