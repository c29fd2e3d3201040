"""How each of ProxyApp's upstream clients reads an endpoint's answer, from a raw scripted server:
framing (chunks, the close), HEAD, informational answers, garbage, and keep-alive reuse."""

from __future__ import annotations

import gc
import ssl
from pathlib import Path

import httpx
import pytest
import trustme

import tenantlb as tlb
from tenantlb.adapters._httptools_client import _head
from tenantlb.adapters._transport import UpstreamFailure
from tenantlb.adapters.asgi import ProxyApp
from tests.adapters.conftest import KEY, in_flight, make_gateway
from tests.support.backends import ScriptedServer, Seen
from tests.support.servers import serve

AUTH = {"x-api-key": KEY}
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@pytest.fixture(params=["uvicorn", "hypercorn-trio", "uvicorn+aiohttp", "uvicorn+httptools"])
def server(request: pytest.FixtureRequest) -> str:
    """uvicorn (asyncio) and hypercorn (trio) with httpcore; uvicorn with aiohttp and httptools."""
    return request.param  # type: ignore[no-any-return]


def make_proxy(server: str, gateway: tlb.Gateway) -> ProxyApp:
    client = server.split("+", 1)[1] if "+" in server else "httpcore"
    return ProxyApp(gateway, client=client)  # type: ignore[arg-type]


def host(server: str) -> str:
    return server.split("+", 1)[0]


def test_a_chunked_answer_arrives_whole_and_the_connection_is_reused(server: str) -> None:
    def script(seen: Seen) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )

    with ScriptedServer(script) as upstream:
        gateway = make_gateway([upstream.url])
        with serve(make_proxy(server, gateway), host(server)) as url, httpx.Client() as client:
            bodies = [client.get(url + "/c", headers=AUTH).text for _ in range(3)]
        assert bodies == ["hello world"] * 3
        if "+" in server:
            # One kept-alive connection. (aiohttp's and httptools' clients give a connection back
            # before the server can pass the end of the answer on; httpcore's release awaits, so
            # the client's next request may come first and open another: no assertion there.)
            assert [s.on_connection for s in upstream.seen] == [0, 1, 2]
    assert in_flight(gateway) == 0


def test_an_answer_framed_by_the_close_arrives_whole(server: str) -> None:
    """No Content-Length and no chunks: the body ends when the endpoint closes the connection,
    which is then not reused (the next request opens another)."""
    with ScriptedServer(
        lambda _: b"HTTP/1.1 200 OK\r\n\r\nuntil the end", closing=True
    ) as upstream:
        gateway = make_gateway([upstream.url])
        with serve(make_proxy(server, gateway), host(server)) as url, httpx.Client() as client:
            bodies = [client.get(url + "/e", headers=AUTH).text for _ in range(3)]
        assert bodies == ["until the end"] * 3
        assert [s.on_connection for s in upstream.seen] == [0, 0, 0]
    assert in_flight(gateway) == 0


def test_a_head_answer_has_no_body_and_leaves_the_connection_usable(server: str) -> None:
    """A HEAD answer's Content-Length describes the GET's body, which is not sent: the client
    must not wait for it, and the next request on the connection gets its own answer."""

    def script(seen: Seen) -> bytes:
        if seen.method == b"HEAD":
            return b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nx-kind: head\r\n\r\n"
        return OK

    with ScriptedServer(script) as upstream:
        gateway = make_gateway([upstream.url])
        with serve(make_proxy(server, gateway), host(server)) as url, httpx.Client() as client:
            head = client.head(url + "/h", headers=AUTH)
            get = client.get(url + "/h", headers=AUTH)
        assert (head.status_code, head.headers["x-kind"], head.content) == (200, "head", b"")
        assert head.headers["content-length"] == "1000"
        assert (get.status_code, get.text) == (200, "ok")
        assert [s.method for s in upstream.seen] == [b"HEAD", b"GET"]
    assert in_flight(gateway) == 0


def test_informational_answers_are_not_forwarded(server: str) -> None:
    def script(seen: Seen) -> bytes:
        return (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n" + OK
        )

    with ScriptedServer(script) as upstream:
        gateway = make_gateway([upstream.url])
        with serve(make_proxy(server, gateway), host(server)) as url, httpx.Client() as client:
            responses = [client.get(url + "/i", headers=AUTH) for _ in range(2)]
        assert [(r.status_code, r.text) for r in responses] == [(200, "ok")] * 2
        assert "link" not in responses[0].headers
    assert in_flight(gateway) == 0


def test_a_switch_of_protocols_nobody_asked_for_is_a_502(server: str) -> None:
    """ProxyApp forwards no upgrade, so a 101 is an endpoint's mistake: a 502, never a 101 passed on
    to the client (aiohttp's client used to pass it on) and never the connection reused."""
    switch = (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    )
    with ScriptedServer(lambda seen: switch if seen.target == b"/upgrade" else OK) as upstream:
        gateway = make_gateway([upstream.url])
        with serve(make_proxy(server, gateway), host(server)) as url, httpx.Client() as client:
            first = client.get(url + "/upgrade", headers=AUTH)
            second = client.get(url + "/plain", headers=AUTH)
        assert first.status_code == 502
        assert first.headers["content-type"] == "application/problem+json"
        assert (second.status_code, second.text) == (200, "ok")
        # the second request went on a new connection: the switched one is not reused
        assert [(s.target, s.on_connection) for s in upstream.seen] == [
            (b"/upgrade", 0),
            (b"/plain", 0),
        ]
    assert in_flight(gateway) == 0


def test_an_answer_that_is_not_http_is_a_502(server: str) -> None:
    with ScriptedServer(lambda _: b"SMTP ready, not HTTP\r\n\r\n") as upstream:
        gateway = make_gateway([upstream.url])
        with serve(make_proxy(server, gateway), host(server)) as url, httpx.Client() as client:
            response = client.get(url + "/x", headers=AUTH)
        assert response.status_code == 502
        assert response.headers["content-type"] == "application/problem+json"
    assert in_flight(gateway) == 0


@pytest.mark.parametrize("server", ["uvicorn+httptools"])
def test_bytes_after_an_answer_are_never_taken_for_the_next_one(server: str) -> None:
    """An endpoint that sends two answers to one request: the second is not the answer to the
    next request (the connection is closed, not reused)."""
    extra = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale"
    with ScriptedServer(lambda seen: OK + extra if seen.on_connection == 0 else OK) as upstream:
        gateway = make_gateway([upstream.url])
        with serve(make_proxy(server, gateway), host(server)) as url, httpx.Client() as client:
            bodies = [client.get(url + "/d", headers=AUTH).text for _ in range(3)]
        assert bodies == ["ok"] * 3
        assert [s.on_connection for s in upstream.seen] == [0, 0, 0]
    assert in_flight(gateway) == 0


def test_the_httptools_client_refuses_to_frame_a_line_break_into_a_header() -> None:
    """CR, LF and NUL would let a header end early (request smuggling): refused, never sent."""
    assert _head("GET", b"/", [(b"host", b"a"), (b"x", b"1")], False) == (
        b"GET / HTTP/1.1\r\nhost: a\r\nx: 1\r\n\r\n"
    )
    assert _head("POST", b"/", [(b"host", b"a")], True).endswith(
        b"transfer-encoding: chunked\r\n\r\n"
    )
    for bad in (b"1\r\nx-injected: 1", b"1\nx", b"1\rx", b"1\0"):
        with pytest.raises(UpstreamFailure) as caught:
            _head("GET", b"/", [(b"host", b"a"), (b"x", bad)], False)
        assert caught.value.kind == "local"
    with pytest.raises(UpstreamFailure):
        _head("GET", b"/ HTTP/1.1\r\nx: y", [(b"host", b"a")], False)
    with pytest.raises(UpstreamFailure) as caught:
        _head("G\u00c9T", b"/", [(b"host", b"a")], False)
    assert caught.value.kind == "local"


def test_the_httptools_client_never_reuses_an_expired_connection() -> None:
    """An idle connection older than *keepalive_expiry* is closed, not used: with an expiry
    shorter than any gap between two requests, each request opens a connection of its own, and
    no idle connection is left open."""
    with ScriptedServer(lambda _: OK) as upstream:
        gateway = make_gateway([upstream.url])
        proxy = ProxyApp(gateway, client="httptools", keepalive_expiry=1e-9)
        with serve(proxy, "uvicorn") as url, httpx.Client() as client:
            statuses = [client.get(url + "/k", headers=AUTH).status_code for _ in range(3)]
            assert proxy.stats().connections <= 1  # the last one, idle: closed by the next
        assert statuses == [200] * 3
        assert [s.on_connection for s in upstream.seen] == [0, 0, 0]
    assert in_flight(gateway) == 0


def test_the_httptools_client_on_trio_is_a_502_that_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """httptools' client runs on asyncio only: under a trio server each request is answered 502
    and the log names the client to use instead; nothing leaks."""
    with ScriptedServer(lambda _: OK) as upstream:
        gateway = make_gateway([upstream.url])
        with serve(ProxyApp(gateway, client="httptools"), "hypercorn-trio") as url:
            response = httpx.get(url + "/t", headers=AUTH)
        assert response.status_code == 502
        assert "use client='httpcore' on trio" in caplog.text
        assert upstream.seen == []
    assert in_flight(gateway) == 0


def test_the_httptools_client_speaks_tls_to_https_endpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``https`` endpoint is reached over TLS, its certificate verified against the CAs the
    system trusts (``SSL_CERT_FILE`` names ours); an endpoint whose certificate no trusted CA
    signed is not talked to: 502, the endpoint never sees a request."""
    ca, stranger = trustme.CA(), trustme.CA()
    trusted, untrusted = (
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
    )
    ca.issue_cert("localhost").configure_cert(trusted)
    stranger.issue_cert("localhost").configure_cert(untrusted)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))

    def script(seen: Seen) -> bytes:
        return OK

    for tls, expected in ((trusted, [200, 200]), (untrusted, [502, 502])):
        with ScriptedServer(script, tls=tls) as upstream:
            gateway = make_gateway([f"https://localhost:{upstream.port}"])
            proxy = ProxyApp(gateway, client="httptools")
            with serve(proxy, "uvicorn") as url, httpx.Client() as client:
                statuses = [client.get(url + "/s", headers=AUTH).status_code for _ in range(2)]
            assert statuses == expected
            if tls is trusted:
                assert upstream.seen[0].headers[b"host"] == f"localhost:{upstream.port}".encode()
                assert [s.on_connection for s in upstream.seen] == [0, 1]  # kept alive
            else:
                assert upstream.seen == []
        assert in_flight(gateway) == 0


@pytest.mark.parametrize("server", ["uvicorn", "uvicorn+aiohttp", "uvicorn+httptools"])
def test_a_proxy_served_again_after_shutdown_still_proxies(server: str) -> None:
    """Lifespan shutdown closes the upstream connections; the same `ProxyApp` served again (a
    new event loop) opens new ones instead of using the old loop's."""
    with ScriptedServer(lambda _: OK) as upstream:
        gateway = make_gateway([upstream.url])
        proxy = make_proxy(server, gateway)
        for _ in range(2):
            with serve(proxy, host(server)) as url:
                assert httpx.get(url + "/again", headers=AUTH).status_code == 200
    assert in_flight(gateway) == 0


@pytest.mark.parametrize("server", ["uvicorn", "uvicorn+aiohttp", "uvicorn+httptools"])
# The connections a run leaves behind are closed by the garbage collector, with a ResourceWarning
# each (in whichever thread collects them: ProxyApp collects at startup).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_proxy_served_again_without_lifespan_still_proxies(server: str) -> None:
    """With lifespan events off nothing closes the upstream connections between two runs (as with
    Starlette's TestClient without ``with``): each new event loop must leave the old loop's
    connections and semaphore alone (they used to answer 502s)."""
    with ScriptedServer(lambda _: OK) as upstream:
        gateway = make_gateway([upstream.url])
        client_name = server.split("+", 1)[1] if "+" in server else "httpcore"
        # tune_gc would gc.freeze() the second run's connections at the third run's startup
        proxy = ProxyApp(gateway, client=client_name, tune_gc=False)  # type: ignore[arg-type]
        for lifespan in (False, False, True):  # the last run's shutdown closes its connections
            with serve(proxy, host(server), lifespan=lifespan) as url, httpx.Client() as client:
                statuses = [client.get(url + "/again", headers=AUTH).status_code for _ in range(3)]
            assert statuses == [200] * 3
        assert len(upstream.seen) == 9
    assert in_flight(gateway) == 0
    gc.collect()  # what the runs left behind goes here, not in a later test
