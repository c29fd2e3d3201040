"""The ASGI apps benchmarks/proxy.py runs under uvicorn, each in its own process.

- ``backend``: answers every request with a small body (the upstream).
- ``tenantlb_proxy``: `ProxyApp` with key auth, one GCRA limit and a RoundRobin pool of ``UPSTREAMS``;
  ``tenantlb_proxy_aiohttp``: the same with ``client="aiohttp"``; ``tenantlb_proxy_httptools``: with
  ``client="httptools"``.
- ``asgiproxy_app``: asgiproxy's simple proxy to the first of ``UPSTREAMS`` (no auth or limits).
"""

from __future__ import annotations

import os
from typing import Any

BODY = b'{"ok":true,"payload":"' + b"x" * 200 + b'"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def backend(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].replace("lifespan.", "")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def _upstreams() -> list[str]:
    return os.environ.get("UPSTREAMS", "http://127.0.0.1:9").split(",")


def _tenantlb(client: str = "httpcore") -> Any:
    import tenantlb as tlb
    from tenantlb.adapters.asgi import ProxyApp

    tenant = tlb.Tenant(
        "bench",
        api_keys=[tlb.hash_api_key(os.environ.get("BENCH_KEY", "sk-bench-0123456789abcdef"))],
        upstream="backends",
        limits=[tlb.Rate(1_000_000_000, per=1.0)],
    )
    pool = tlb.Pool(_upstreams(), tlb.RoundRobin())
    gateway = tlb.Gateway(registry=tlb.TenantRegistry([tenant]), pools={"backends": pool})
    return ProxyApp(gateway, max_keepalive_connections=256, client=client)  # type: ignore[arg-type]


def _asgiproxy() -> Any:
    from asgiproxy.config import BaseURLProxyConfigMixin, ProxyConfig
    from asgiproxy.context import ProxyContext
    from asgiproxy.simple_proxy import make_simple_proxy_app

    upstream = _upstreams()[0]

    class Config(BaseURLProxyConfigMixin, ProxyConfig):
        upstream_base_url = upstream
        rewrite_host_header = upstream.split("://", 1)[1]

    return make_simple_proxy_app(ProxyContext(Config()))


def __getattr__(name: str) -> Any:  # built lazily: each process imports only what it serves
    if name == "tenantlb_proxy":
        return _tenantlb()
    if name == "tenantlb_proxy_aiohttp":
        return _tenantlb("aiohttp")
    if name == "tenantlb_proxy_httptools":
        return _tenantlb("httptools")
    if name == "asgiproxy_app":
        return _asgiproxy()
    raise AttributeError(name)
