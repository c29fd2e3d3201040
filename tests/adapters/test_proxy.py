"""ProxyApp under real servers (uvicorn on asyncio, hypercorn on trio) to real backend processes."""

from __future__ import annotations

import contextlib
import gc
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

import tenantlb as tlb
from tenantlb.adapters.asgi import ProxyApp
from tests.adapters.conftest import KEY, OFF_KEY, eventually, in_flight, make_gateway
from tests.support.backends import BackendProcess, free_port
from tests.support.servers import serve

AUTH = {"x-api-key": KEY}


@pytest.fixture(params=["uvicorn", "hypercorn-trio", "uvicorn+aiohttp", "uvicorn+httptools"])
def server(request: pytest.FixtureRequest) -> str:
    """Each test runs under uvicorn (asyncio) and hypercorn (trio) with the httpcore client, and
    under uvicorn with the aiohttp and the httptools clients."""
    return request.param  # type: ignore[no-any-return]


def make_proxy(server: str, gateway: tlb.Gateway, **kwargs: Any) -> ProxyApp:
    client = server.split("+", 1)[1] if "+" in server else "httpcore"
    return ProxyApp(gateway, client=client, **kwargs)  # type: ignore[arg-type]


def host(server: str) -> str:
    return server.split("+", 1)[0]


def seen_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.json()["headers"]}


def test_forwards_and_strips_hop_by_hop_headers(
    backends: list[BackendProcess], server: str
) -> None:
    """Hop-by-hop fields (and those Connection names) go neither upstream nor back; end-to-end ones do."""
    gateway = make_gateway([b.url for b in backends])
    with serve(make_proxy(server, gateway), host(server)) as url:
        response = httpx.get(
            url + "/echo?q=1",
            headers={
                **AUTH,
                "connection": "keep-alive, x-secret",
                "x-secret": "1",
                "keep-alive": "timeout=5",
                "te": "trailers",
                "proxy-authorization": "Basic Zm9vOmJhcg==",
                "x-end-to-end": "yes",
            },
        )
        assert response.status_code == 200
        body = response.json()
        assert body["path"] == "/echo"
        assert body["query"] == "q=1"
        upstream = seen_headers(response)
        for name in ("connection", "x-secret", "keep-alive", "te", "proxy-authorization"):
            assert name not in upstream, name
        assert upstream["x-end-to-end"] == "yes"
        assert upstream["x-tenant-id"] == "acme"
        assert response.headers["ratelimit-policy"] if gateway.registry.get("acme").limits else True  # type: ignore[union-attr]
        hop = httpx.get(url + "/hop", headers=AUTH)
        assert hop.status_code == 200
        assert hop.headers["x-end"] == "1"
        for name in ("x-hop-secret", "keep-alive", "proxy-authenticate"):
            assert name not in hop.headers, name
    assert in_flight(gateway) == 0


def test_adds_no_header_the_client_did_not_send(
    backends: list[BackendProcess], server: str
) -> None:
    """No Accept, Accept-Encoding or User-Agent of the upstream client goes upstream; the client's go as sent."""
    automatic = ("accept", "accept-encoding", "user-agent")
    gateway = make_gateway([backends[0].url])
    with serve(make_proxy(server, gateway), host(server)) as url, httpx.Client() as client:
        for name in automatic:
            del client.headers[name]
        seen = seen_headers(client.get(url + "/echo", headers=AUTH))
        for name in automatic:
            assert name not in seen, name
        sent = {"accept": "text/plain", "accept-encoding": "identity", "user-agent": "curl/8"}
        seen = seen_headers(client.get(url + "/echo", headers={**AUTH, **sent}))
        assert {name: seen[name] for name in automatic} == sent
        assert seen["host"] == backends[0].url.removeprefix("http://")


def test_x_forwarded_for_is_appended_only_for_trusted_peers(
    backends: list[BackendProcess], server: str
) -> None:
    """An untrusted peer's forwarding headers are replaced; a trusted proxy's are kept and appended to."""
    spoof = {
        **AUTH,
        "x-forwarded-for": "6.6.6.6",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "evil.example",
        "forwarded": "for=6.6.6.6",
        "x-tenant-id": "someone-else",
    }
    untrusted = make_gateway([backends[0].url])
    with serve(make_proxy(server, untrusted), host(server)) as url:
        seen = seen_headers(httpx.get(url + "/", headers=spoof))
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-host"] == url.removeprefix("http://")
        assert "forwarded" not in seen
        assert seen["x-tenant-id"] == "acme"
        assert seen["host"] == backends[0].url.removeprefix("http://")
    trusted = make_gateway([backends[0].url], trusted_proxies=["127.0.0.1/32"])
    with serve(make_proxy(server, trusted, preserve_host=True), host(server)) as url:
        seen = seen_headers(httpx.get(url + "/", headers=spoof))
        assert seen["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
        assert seen["x-forwarded-proto"] == "https"
        assert seen["x-forwarded-host"] == "evil.example"
        assert seen["forwarded"] == "for=6.6.6.6"
        assert seen["x-tenant-id"] == "acme"
        assert seen["host"] == url.removeprefix("http://")


def test_refusals_are_problem_documents(backends: list[BackendProcess], server: str) -> None:
    """401 (with a challenge), 403 and 429 (with Retry-After and RateLimit fields) as problem+json."""
    gateway = make_gateway([backends[0].url], limits=[tlb.Rate(1, per=60.0)])
    with serve(make_proxy(server, gateway), host(server)) as url:
        missing = httpx.get(url + "/")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert "www-authenticate" in missing.headers
        assert httpx.get(url + "/", headers={"x-api-key": OFF_KEY}).status_code == 403
        first = httpx.get(url + "/", headers=AUTH)
        assert first.status_code == 200
        assert "ratelimit" in first.headers
        limited = httpx.get(url + "/", headers=AUTH)
        assert limited.status_code == 429
        assert limited.json()["status"] == 429
        assert int(limited.headers["retry-after"]) > 0
        assert "ratelimit" in limited.headers
        assert KEY not in limited.text
    assert in_flight(gateway) == 0


def test_unreachable_is_502_and_a_connect_error_is_retried_elsewhere(
    backends: list[BackendProcess], server: str
) -> None:
    """A dead endpoint is retried on a live one (even for POST: nothing was sent); all dead answers 502."""
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = make_gateway([dead, backends[0].url])
    with serve(make_proxy(server, gateway), host(server)) as url:
        for _ in range(4):
            assert httpx.get(url + "/", headers=AUTH).status_code == 200
            assert httpx.post(url + "/upload", headers=AUTH, content=b"abc").json()["size"] == 3
    stats = {e.url: e for e in gateway.stats().pools["p"].endpoints}
    assert stats[dead].failures >= 1
    alone = make_gateway([dead])
    with serve(make_proxy(server, alone), host(server)) as url:
        response = httpx.get(url + "/", headers=AUTH)
        assert response.status_code == 502
        assert response.headers["content-type"] == "application/problem+json"
    assert in_flight(gateway) == in_flight(alone) == 0


@pytest.mark.parametrize("read_timeout", [0.3, 1.2], ids=["short", "over-watch-after"])
def test_upstream_timeout_is_504(
    backends: list[BackendProcess], server: str, read_timeout: float
) -> None:
    """An endpoint that does not answer within read_timeout gives 504, and everything is released
    (a timeout of WATCH_AFTER or more is enforced by the disconnect watcher with aiohttp)."""
    gateway = make_gateway([backends[0].url], max_concurrency=1)
    proxy = make_proxy(server, gateway, read_timeout=read_timeout, retries=0)
    with serve(proxy, host(server)) as url:
        response = httpx.get(url + "/hang", headers=AUTH)
        assert response.status_code == 504
        assert response.json()["title"] == "Gateway Timeout"
        eventually(lambda: httpx.get(url + "/", headers=AUTH).status_code == 200)  # slot back
        eventually(lambda: proxy.stats().active == 0)
    assert in_flight(gateway) == 0


@pytest.mark.parametrize("read_timeout", [0.3, 1.2], ids=["short", "over-watch-after"])
def test_a_body_that_stalls_mid_stream_times_out(
    backends: list[BackendProcess], server: str, read_timeout: float
) -> None:
    """A streamed response whose endpoint stops sending is cut off after read_timeout, its
    failure recorded, and everything released."""
    gateway = make_gateway([backends[0].url], max_concurrency=1)
    proxy = make_proxy(server, gateway, read_timeout=read_timeout, retries=0)
    with serve(proxy, host(server)) as url:
        with httpx.stream("GET", url + "/stall/100000", headers=AUTH, timeout=30) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):  # cut off: fewer bytes than promised
                response.read()
        eventually(lambda: proxy.stats().active == 0 and in_flight(gateway) == 0)
        endpoint = gateway.pools["p"].stats().endpoints[0]
        assert endpoint.failures >= 1
        assert httpx.get(url + "/", headers=AUTH).status_code == 200  # the slot is free again


def test_retry_statuses_for_idempotent_requests_only(
    backends: list[BackendProcess], server: str
) -> None:
    """A 503 GET is retried on the other endpoints (each tried once); a 503 POST is not retried."""
    gateway = make_gateway([b.url for b in backends])
    with serve(make_proxy(server, gateway, retries=2), host(server)) as url:

        def requests() -> list[int]:
            return sorted(e.requests for e in gateway.stats().pools["p"].endpoints)

        assert httpx.get(url + "/status/503", headers=AUTH).status_code == 503
        eventually(lambda: in_flight(gateway) == 0)  # the answer is recorded once it is sent
        assert requests() == [1, 1, 1]
        assert httpx.post(url + "/status/503", headers=AUTH).status_code == 503
        eventually(lambda: in_flight(gateway) == 0)
        assert sum(requests()) == 4
    assert in_flight(gateway) == 0


def test_max_body_size_answers_413_also_for_chunked_bodies(
    backends: list[BackendProcess], server: str
) -> None:
    """A declared length over the limit and a chunked body growing past it both answer 413."""
    gateway = make_gateway([backends[0].url], max_concurrency=1)
    proxy = make_proxy(server, gateway, max_body_size=100_000)
    with serve(proxy, host(server)) as url:
        declared = httpx.post(url + "/upload", headers=AUTH, content=b"x" * 100_001)
        assert declared.status_code == 413
        assert declared.headers["content-type"] == "application/problem+json"

        def chunks() -> Iterator[bytes]:
            for _ in range(40):
                yield b"y" * 8192

        chunked = httpx.post(url + "/upload", headers=AUTH, content=chunks())
        assert chunked.status_code == 413
        # The 413 went out before the handler returned: wait for the slot rather than race it.
        eventually(lambda: httpx.get(url + "/", headers=AUTH).status_code == 200)
        ok = httpx.post(url + "/upload", headers=AUTH, content=b"z" * 81920)
        assert ok.json()["size"] == 81920
        eventually(lambda: proxy.stats().active == 0)
    assert in_flight(gateway) == 0


def test_client_disconnect_mid_stream_releases_lease_slot_and_connection(
    backends: list[BackendProcess], server: str
) -> None:
    """A client that reads a little of a large download and hangs up frees its lease, slot and upstream connection."""
    gateway = make_gateway([backends[0].url], max_concurrency=1)
    proxy = make_proxy(server, gateway)
    with serve(proxy, host(server)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"GET /bytes/1000000000 HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\n\r\n".encode()
            )
            received = 0
            while received < 1_000_000:
                received += len(sock.recv(65536))
            assert in_flight(gateway) == 1
        eventually(lambda: in_flight(gateway) == 0 and proxy.stats().active == 0)
        assert httpx.get(url + "/", headers=AUTH).status_code == 200  # the slot is free again


BAD_INPUT = {
    "malformed header": b"GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n",
    "bad request line": b"GET\r\n\r\n",
    "oversized header": b"GET / HTTP/1.1\r\nHost: x\r\nx-big: " + b"b" * 200_000 + b"\r\n\r\n",
    "huge content-length": b"POST /upload HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\ncontent-length: 99999999999999999999\r\n\r\n",
    "non-numeric content-length": b"POST /upload HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\ncontent-length: abc\r\n\r\n",
    "two content-lengths": b"POST /upload HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabc",
    "lying content-length": b"POST /upload HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\ncontent-length: 1000\r\n\r\nonly-this",
    "bad chunk": b"POST /upload HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    "never-ending body": b"POST /upload HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\ncontent-length: 50000\r\n\r\nstart",
    "bad key": b"GET / HTTP/1.1\r\nHost: x\r\nx-api-key: \xff\xfe\r\n\r\n",
}


@pytest.mark.parametrize("payload", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_4xx_or_a_clean_close_never_500(
    backends: list[BackendProcess], server: str, payload: bytes
) -> None:
    """Malformed, oversized, lying or never-ending requests get a 4xx or a closed connection, and leak nothing."""
    gateway = make_gateway([backends[0].url], max_concurrency=1)
    proxy = make_proxy(server, gateway, client_body_timeout=0.5)
    if b"%s" in payload:
        payload = payload.replace(b"%s", KEY.encode())
    with serve(proxy, host(server)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(payload)
            if payload.endswith(b"only-this"):
                sock.shutdown(socket.SHUT_WR)  # the client gives up before its promised length
            answer = b""
            try:
                while b"\r\n" not in answer:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            except (ConnectionResetError, TimeoutError):
                answer = b""
        if answer:
            status = int(answer.split(b" ", 2)[1])
            assert 400 <= status < 500, answer[:200]
        eventually(lambda: in_flight(gateway) == 0 and proxy.stats().active == 0)
        assert httpx.get(url + "/", headers=AUTH).status_code == 200  # no slot leaked


def test_streams_a_body_both_ways(backends: list[BackendProcess], server: str) -> None:
    """A 20 MB upload arrives whole and a 20 MB download comes back whole, chunk by chunk."""
    gateway = make_gateway([backends[0].url])
    with serve(make_proxy(server, gateway), host(server)) as url:

        def chunks() -> Iterator[bytes]:
            for _ in range(320):
                yield b"z" * 65536

        uploaded = httpx.post(url + "/upload", headers=AUTH, content=chunks(), timeout=60)
        assert uploaded.json()["size"] == 320 * 65536
        size = 0
        with httpx.stream("GET", url + "/bytes/20000000", headers=AUTH, timeout=60) as response:
            for chunk in response.iter_bytes():
                size += len(chunk)
        assert size == 20_000_000
    assert in_flight(gateway) == 0


def test_problem_bodies_never_hold_the_key(backends: list[BackendProcess], server: str) -> None:
    """A wrong key is refused without echoing it."""
    gateway = make_gateway([backends[0].url])
    with serve(make_proxy(server, gateway), host(server)) as url:
        wrong = "sk-wrong-0123456789abcdef"
        response = httpx.get(url + "/", headers={"x-api-key": wrong})
        assert response.status_code == 401
        assert wrong not in response.text
        assert wrong not in json.dumps(dict(response.headers))


def test_the_retry_budget_caps_retries(backends: list[BackendProcess], server: str) -> None:
    """With an empty retry budget a dead endpoint is not retried elsewhere: 502, not a second try."""
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = make_gateway([dead, backends[0].url])
    budget = tlb.RetryBudget(ratio=0.0, min_retries_per_second=0.0)
    with serve(make_proxy(server, gateway, retry_budget=budget), host(server)) as url:
        statuses = {httpx.get(url + "/", headers=AUTH).status_code for _ in range(4)}
    assert statuses == {200, 502}  # round robin: every other request meets the dead one
    assert budget.stats().exhausted >= 1
    with pytest.raises(TypeError, match="retry_budget"):
        ProxyApp(gateway, retry_budget=0.2)  # type: ignore[arg-type]


@pytest.mark.parametrize("tune", [True, False])
def test_lifespan_startup_tunes_the_collector(
    backends: list[BackendProcess], server: str, tune: bool
) -> None:
    """Lifespan startup freezes what exists and raises gen0's threshold, unless told not to."""
    gc.unfreeze()  # the autouse `_collector_as_it_was` fixture restores both afterwards
    gc.set_threshold(700, *gc.get_threshold()[1:])
    proxy = make_proxy(server, make_gateway([backends[0].url]), tune_gc=tune)
    with serve(proxy, host(server)) as url:
        assert httpx.get(url + "/", headers=AUTH).status_code == 200
        assert (gc.get_freeze_count() > 0) is tune
        assert gc.get_threshold()[0] == (10_000 if tune else 700)


def test_a_mounted_proxy_leaves_the_collector_alone(backends: list[BackendProcess]) -> None:
    """Mounted inside another app, ProxyApp gets no lifespan events, so tune_gc changes nothing."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    gc.unfreeze()  # the autouse `_collector_as_it_was` fixture restores both afterwards
    gc.set_threshold(700, *gc.get_threshold()[1:])
    proxy = ProxyApp(make_gateway([backends[0].url]), tune_gc=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await proxy.aclose()  # mounted, the proxy's own shutdown never comes

    app = Starlette(routes=[Mount("/api", app=proxy)], lifespan=lifespan)
    with serve(app, "uvicorn") as url:
        assert httpx.get(url + "/api/echo", headers=AUTH).status_code == 200
        assert (gc.get_freeze_count(), gc.get_threshold()[0]) == (0, 700)
