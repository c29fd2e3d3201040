"""ProxyApp against hostile clients and crashing endpoints (red-team findings), on real servers."""

from __future__ import annotations

import json
import logging
import socket

import h11
import httpx
import pytest

import tenantlb as tlb
from tenantlb.adapters._transport import _httpcore_failure
from tenantlb.adapters.asgi import ProxyApp
from tests.adapters.conftest import KEY, eventually, in_flight, make_gateway
from tests.support.backends import BackendProcess, ResetServer, ScriptedServer, Seen
from tests.support.servers import serve

AUTH = {"x-api-key": KEY}
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
HALF = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial"  # then a reset


@pytest.fixture(params=["uvicorn", "hypercorn-trio", "uvicorn+aiohttp", "uvicorn+httptools"])
def server(request: pytest.FixtureRequest) -> str:
    """uvicorn (asyncio) and hypercorn (trio) with httpcore; uvicorn with aiohttp and httptools."""
    return request.param  # type: ignore[no-any-return]


def make_proxy(server: str, gateway: tlb.Gateway, **kwargs: object) -> ProxyApp:
    client = server.split("+", 1)[1] if "+" in server else "httpcore"
    return ProxyApp(gateway, client=client, **kwargs)  # type: ignore[arg-type]


def host(server: str) -> str:
    return server.split("+", 1)[0]


def raw(url: str, request: bytes) -> bytes:
    """Send *request* as written on a new connection; the whole answer (the server closes)."""
    port = int(url.rsplit(":", 1)[1])
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def crash(_: Seen) -> None:
    return None


def answer_ok(_: Seen) -> bytes:
    return OK


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_retried_put_is_resent_with_its_whole_body(server: str, framing: str) -> None:
    """A PUT whose endpoint read the body and crashed reaches the next one with the same body."""
    with ScriptedServer(crash) as a, ScriptedServer(answer_ok) as b:
        gateway = make_gateway([a.url, b.url])
        with serve(make_proxy(server, gateway), host(server)) as url:
            for _ in range(2):  # round robin: one of them meets the crashing endpoint first
                content = b"hello" if framing == "content-length" else iter([b"hel", b"lo"])
                response = httpx.put(url + "/doc", headers=AUTH, content=content)
                assert response.status_code == 200
        assert a.seen
        assert [s.body for s in b.seen] == [b"hello", b"hello"]
    assert in_flight(gateway) == 0


def test_a_large_body_that_was_sent_is_never_resent(server: str) -> None:
    """A PUT body over 64 KiB is not kept: once an endpoint read it and crashed, 502, no retry."""
    body = b"x" * 150_000
    with ScriptedServer(crash) as a, ScriptedServer(answer_ok) as b:
        gateway = make_gateway([a.url, b.url])
        with serve(make_proxy(server, gateway, read_timeout=5.0), host(server)) as url:
            statuses = sorted(
                httpx.put(
                    url + "/doc", headers=AUTH, content=iter([body[:70_000], body[70_000:]])
                ).status_code
                for _ in range(2)
            )
        assert statuses == [200, 502]
        assert [s.body for s in b.seen] == [body]  # only its own request, whole
    assert in_flight(gateway) == 0


def test_a_get_whose_small_answer_breaks_off_is_retried_elsewhere(server: str) -> None:
    """An endpoint that dies after the head of a small answer, before its body ends: nothing of
    the answer reached the client yet, so a GET is retried on another endpoint (as the httpx and
    aiohttp client adapters do); a POST that met it is answered 502, not resent."""
    with ResetServer(reply=HALF) as half, ScriptedServer(answer_ok) as b:
        gateway = make_gateway([half.url, b.url])
        with serve(make_proxy(server, gateway), host(server)) as url, httpx.Client() as client:
            gets = [client.get(url + "/doc", headers=AUTH).status_code for _ in range(4)]
            met = half.requests
            posts = [client.post(url + "/charge", headers=AUTH).status_code for _ in range(4)]
        assert gets == [200] * 4
        assert met >= 1  # round robin: some GET met the endpoint that breaks off
        assert posts.count(502) == half.requests - met  # each POST that met it, and no other
        assert posts.count(200) == sum(s.method == b"POST" for s in b.seen)
    assert in_flight(gateway) == 0


def test_a_post_on_a_reused_connection_that_breaks_runs_once(server: str) -> None:
    """A bodiless POST whose reused keep-alive connection resets is not resent: 502, run once."""

    def script(seen: Seen) -> bytes | None:
        return None if seen.on_connection > 0 else OK  # dies on its second request

    with ScriptedServer(script) as upstream:
        gateway = make_gateway([upstream.url])
        with serve(make_proxy(server, gateway), host(server)) as url, httpx.Client() as client:
            assert client.get(url + "/warm", headers=AUTH).status_code == 200
            assert client.post(url + "/charge", headers=AUTH).status_code == 502
        assert [s.method for s in upstream.seen].count(b"POST") == 1
    assert in_flight(gateway) == 0


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn-trio", "uvicorn+httptools"])
def test_the_stale_connection_retry_comes_out_of_the_budget(server: str) -> None:
    """With an empty retry budget, a GET whose reused connection resets is not resent either
    (httpcore, httptools; aiohttp resends an idempotent request on a reused connection by itself)."""

    def script(seen: Seen) -> bytes | None:
        return None if seen.on_connection > 0 else OK

    budget = tlb.RetryBudget(ratio=0.0, min_retries_per_second=0.0)
    with ScriptedServer(script) as upstream:
        gateway = make_gateway([upstream.url])
        proxy = make_proxy(server, gateway, retry_budget=budget)
        with serve(proxy, host(server)) as url, httpx.Client() as client:
            assert client.get(url + "/warm", headers=AUTH).status_code == 200
            assert client.get(url + "/again", headers=AUTH).status_code == 502
        assert [s.target for s in upstream.seen].count(b"/again") == 1
    assert in_flight(gateway) == 0


@pytest.mark.parametrize("body", [b"", b"payload"], ids=["bodiless", "with-body"])
def test_a_client_that_hangs_up_before_the_answer_frees_everything(
    backends: list[BackendProcess], server: str, body: bytes
) -> None:
    """Hanging up while the endpoint has not answered frees the lease, the slot and the upstream
    connection at once, not when the (60 s) read timeout fires."""
    gateway = make_gateway([backends[0].url], max_concurrency=1)
    proxy = make_proxy(server, gateway)
    with serve(proxy, host(server)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /hang HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\ncontent-length: %d\r\n\r\n%s"
                % (KEY.encode(), len(body), body)
            )
            eventually(lambda: in_flight(gateway) == 1)
        eventually(lambda: in_flight(gateway) == 0 and proxy.stats().active == 0)
        assert httpx.get(url + "/", headers=AUTH).status_code == 200  # the slot is free again
    assert in_flight(gateway) == 0


def test_an_absolute_form_target_is_routed_and_sent_by_its_path(
    backends: list[BackendProcess], server: str
) -> None:
    """``GET http://evil.example/gpu/x`` goes to the /gpu route's pool as ``GET /gpu/x``, with the
    endpoint's Host: the client cannot choose the authority the endpoint believes."""
    registry = tlb.TenantRegistry(
        [
            tlb.Tenant(
                "acme",
                api_keys=[tlb.hash_api_key(KEY)],
                upstream="cpu",
                routes={"/gpu": "gpu"},
            )
        ]
    )
    pools = {"cpu": tlb.Pool([backends[0].url]), "gpu": tlb.Pool([backends[1].url])}
    gateway = tlb.Gateway(registry=registry, pools=pools)
    with serve(make_proxy(server, gateway), host(server)) as url:
        answer = raw(
            url,
            b"GET http://evil.example/gpu/x?q=1 HTTP/1.1\r\nHost: evil.example\r\n"
            b"x-api-key: %s\r\nconnection: close\r\n\r\n" % KEY.encode(),
        )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    seen = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert seen["backend"] == backends[1].name
    assert seen["path"] == "/gpu/x"
    assert seen["query"] == "q=1"
    assert dict(seen["headers"])["host"] == backends[1].url.removeprefix("http://")
    assert in_flight(gateway) == 0


def test_connection_cannot_name_away_the_body_framing(
    backends: list[BackendProcess], server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``Connection: content-length`` on a request with a body is ignored: the body arrives whole,
    and nothing is logged as an error."""
    gateway = make_gateway([backends[0].url])
    with caplog.at_level(logging.ERROR), serve(make_proxy(server, gateway), host(server)) as url:
        answer = raw(
            url,
            b"POST /upload HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\n"
            b"connection: close, content-length, host\r\ncontent-length: 5\r\n\r\nhello"
            % KEY.encode(),
        )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["size"] == 5
    assert not [r for r in caplog.records if r.name.startswith("tenantlb")]
    assert in_flight(gateway) == 0


def test_h11_protocol_errors_are_mapped() -> None:
    """h11's own errors (escaping httpcore mid-body) are a client-side 400 or a broken endpoint."""
    local = _httpcore_failure(h11.LocalProtocolError("bad framing"), reused=False)
    remote = _httpcore_failure(h11.RemoteProtocolError("bad answer"), reused=True)
    assert local is not None
    assert local.kind == "local"
    assert remote is not None
    assert remote.kind == "reset"


def test_underscore_spellings_of_managed_headers_are_dropped(
    backends: list[BackendProcess], server: str
) -> None:
    """x_tenant_id / x_forwarded_for / x_real_ip never reach the endpoint (CGI folds them onto the
    dashed names); other underscore names pass."""
    gateway = make_gateway([backends[0].url])
    spoof = {
        **AUTH,
        "x_tenant_id": "other",
        "x_forwarded_for": "6.6.6.6",
        "x_real_ip": "6.6.6.6",
        "X_Forwarded_Host": "evil.example",
        "content_length": "7",
        "x_custom": "kept",
    }
    with serve(make_proxy(server, gateway), host(server)) as url:
        response = httpx.get(url + "/", headers=spoof)
    seen = dict(response.json()["headers"])
    for name in ("x_tenant_id", "x_forwarded_for", "x_real_ip", "x_forwarded_host"):
        assert name not in seen, name
    assert "content_length" not in seen
    assert seen["x_custom"] == "kept"
    assert seen["x-tenant-id"] == "acme"
    assert seen["x-forwarded-for"] == "127.0.0.1"
