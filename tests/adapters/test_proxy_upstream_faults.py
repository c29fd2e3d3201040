"""Endpoints that misbehave in ways found by red-teaming ProxyApp's httptools upstream client,
on real sockets and servers.

Each test is parametrized over the clients where the comparison says something: httpcore (the
reference) and httptools (the client under test).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest

import tenantlb as tlb
from tenantlb.adapters._proxy import ProxyStats
from tenantlb.adapters.asgi import ProxyApp
from tests.adapters.conftest import KEY, eventually, in_flight, make_gateway
from tests.support.backends import LoopbackServer, ScriptedServer, Seen
from tests.support.servers import serve

AUTH = {"x-api-key": KEY}
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@pytest.fixture(params=["httpcore", "httptools"])
def client(request: pytest.FixtureRequest) -> str:
    """The reference client (httpcore) and the one under test (httptools), both under uvicorn."""
    return request.param  # type: ignore[no-any-return]


def make_proxy(client: str, gateway: tlb.Gateway, **kwargs: object) -> ProxyApp:
    return ProxyApp(gateway, client=client, **kwargs)  # type: ignore[arg-type]


class RawServer(LoopbackServer):
    """A loopback TCP server that hands each accepted connection to *handle* in a thread."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.handle = handle
        super().__init__()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, EOFError):
            conn.settimeout(30)
            self.handle(conn)


def read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError
        data += chunk
    return data


def reset(conn: socket.socket) -> None:
    """Make close() send RST rather than FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# -- 1. a ProxyApp served again after a lifespan shutdown ------------------------------------------


# -- 2. a body framed by the close that ends in a reset --------------------------------------------


def test_a_close_framed_body_cut_by_a_reset_is_not_passed_off_as_whole(client: str) -> None:
    """An answer without Content-Length or chunks ends at the close: a FIN. A reset (RST) is a
    crash mid-body, not the end of the body: the client must see the answer break off (as with
    httpcore), not a complete 200 holding part of the body."""
    head_seen = threading.Event()

    def handle(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\npartial")
        head_seen.wait(30)  # the client has the head and the first bytes: now crash
        reset(conn)

    with RawServer(handle) as upstream:
        gateway = make_gateway([upstream.url])
        with serve(make_proxy(client, gateway, retries=0), "uvicorn") as url:
            received: list[bytes] = []
            with httpx.stream("GET", url + "/eof", headers=AUTH) as response:
                assert response.status_code == 200

                def read() -> None:
                    for chunk in response.iter_raw():
                        received.append(chunk)
                        head_seen.set()

                with pytest.raises(httpx.RemoteProtocolError):
                    read()
            assert b"".join(received) == b"partial"
    assert in_flight(gateway) == 0


# -- 3. a stray answer that begins in the packet of the last one -----------------------------------


@pytest.mark.parametrize("client", ["httptools"])
def test_a_stray_answer_begun_after_an_answer_is_never_the_next_requests(client: str) -> None:
    """An endpoint that sends a second, stray answer right after the first one (a framework bug
    writing an error page after a finished response): its status line arrives with the first
    answer, its headers and body later. The connection must not be reused, or the stray 500
    becomes the answer to whichever request (another tenant's, maybe) reuses it. (httpcore has
    the same defect: h11 keeps the stray bytes in its buffer for the next cycle.)"""

    def script(seen: Seen) -> bytes:
        body = seen.target
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        if seen.on_connection == 0:
            return answer + b"HTTP/1.1 500 Internal Server Error\r\n"  # the stray one begins
        return b"content-length: 5\r\n\r\nstray" + answer

    with ScriptedServer(script) as upstream:
        gateway = make_gateway([upstream.url])
        with serve(make_proxy(client, gateway), "uvicorn") as url, httpx.Client() as http:
            answers = [http.get(url + path, headers=AUTH) for path in ("/first", "/second")]
        assert [(a.status_code, a.text) for a in answers] == [(200, "/first"), (200, "/second")]
    assert in_flight(gateway) == 0


# -- 4. an endless response head -------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["many-fields", "one-long-field"])
def test_an_endless_response_head_is_refused_not_buffered(client: str, shape: str) -> None:
    """An endpoint that sends header after header and never ends its head: the proxy stops
    reading it once it is far over any sane size (httpcore: h11's 16 KiB; aiohttp: 8 KiB a
    line) and answers 502, instead of buffering all of it until the read timeout (504).
    Here 8 MiB is sent, then the endpoint stalls; an endpoint on a fast network sends GBs."""
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        if shape == "many-fields":
            field = b"x-flood: " + b"a" * 1000 + b"\r\n"
            for _ in range(8 * 1024):
                conn.sendall(field)
        else:
            conn.sendall(b"x-flood: ")
            for _ in range(128):
                conn.sendall(b"a" * 65536)
        stop.wait(30)

    with RawServer(handle) as upstream:
        gateway = make_gateway([upstream.url])
        proxy = make_proxy(client, gateway, retries=0, read_timeout=10.0)
        try:
            with serve(proxy, "uvicorn") as url:
                response = httpx.get(url + "/flood", headers=AUTH, timeout=60)
                assert response.status_code == 502
                eventually(lambda: proxy.stats().active == 0)
        finally:
            stop.set()
    assert in_flight(gateway) == 0


# -- 5. an endpoint that answers while it still reads the body (full duplex) -----------------------


def read_chunk(conn: socket.socket, buffer: bytearray) -> bytes:
    """One chunk of a chunked body (b"" for the last), read from *conn* through *buffer*."""

    def until(marker: bytes) -> bytes:
        while marker not in buffer:
            data = conn.recv(65536)
            if not data:
                raise EOFError
            buffer.extend(data)
        end = buffer.index(marker) + len(marker)
        out = bytes(buffer[:end])
        del buffer[:end]
        return out

    size = int(until(b"\r\n").split(b";")[0], 16)
    if size == 0:
        until(b"\r\n")
        return b""
    while len(buffer) < size + 2:
        data = conn.recv(65536)
        if not data:
            raise EOFError
        buffer.extend(data)
    chunk = bytes(buffer[:size])
    del buffer[: size + 2]
    return chunk


def test_an_endpoint_that_answers_while_reading_the_body_gets_all_of_it(client: str) -> None:
    """An endpoint that starts its answer before it has read the whole request body, and goes
    on reading it (an echo or transform service, Starlette's ``StreamingResponse(request.
    stream())``): the rest of the body is still sent. Only a finished answer (or a closed
    connection) means the endpoint wants no more of it."""
    echoed = [threading.Event() for _ in range(3)]

    def handle(conn: socket.socket) -> None:
        buffer = bytearray(read_head(conn).split(b"\r\n\r\n", 1)[1])
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")  # answers now
        for event in echoed:
            chunk = read_chunk(conn, buffer)
            if not chunk:
                break
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            event.set()
        read_chunk(conn, buffer)
        conn.sendall(b"0\r\n\r\n")

    def upload() -> Iterator[bytes]:
        for piece, event in zip((b"one", b"two", b"three"), echoed, strict=True):
            yield piece
            event.wait(20)  # the endpoint echoed it: it has answered, and still reads

    with RawServer(handle) as upstream:
        gateway = make_gateway([upstream.url])
        proxy = make_proxy(client, gateway, read_timeout=5.0, retries=0)
        with serve(proxy, "uvicorn") as url:
            response = httpx.post(url + "/echo", headers=AUTH, content=upload(), timeout=60)
            assert all(event.is_set() for event in echoed)
            assert (response.status_code, response.content) == (200, b"onetwothree")
            eventually(lambda: proxy.stats().active == 0)
    assert in_flight(gateway) == 0


def test_an_answer_that_refuses_an_upload_early_is_passed_on(client: str) -> None:
    """The other side of the same rule: an endpoint that answers 413 whole as soon as it has the
    request head (then discards what still comes) gets its answer passed on."""

    def handle(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 8\r\n\r\ntoo big!")
        while conn.recv(65536):
            pass

    def upload() -> Iterator[bytes]:
        for _ in range(4):
            yield b"x" * 65536

    with RawServer(handle) as upstream:
        gateway = make_gateway([upstream.url])
        proxy = make_proxy(client, gateway)
        with serve(proxy, "uvicorn") as url:
            response = httpx.post(url + "/up", headers=AUTH, content=upload(), timeout=60)
            assert (response.status_code, response.content) == (413, b"too big!")
            eventually(lambda: proxy.stats().active == 0)
    assert in_flight(gateway) == 0


# -- 6. the max_connections limit ------------------------------------------------------------------


@pytest.mark.parametrize("client", ["httpcore", "aiohttp", "httptools"])
def test_the_connection_limit_answers_503_and_gives_every_slot_back(client: str) -> None:
    """With max_connections=1 and one request held by its endpoint: a second one waits for the
    pool and is answered 503 (back-pressure); once the first is answered the limit's one slot
    serves the next requests."""
    arrived = threading.Event()
    release = threading.Event()

    def handle(conn: socket.socket) -> None:
        while True:
            head = read_head(conn)
            if b" /hold " in head:
                arrived.set()
                release.wait(30)
            conn.sendall(OK)

    with RawServer(handle) as upstream:
        gateway = make_gateway([upstream.url])
        proxy = make_proxy(client, gateway, max_connections=1, pool_timeout=0.2)
        with serve(proxy, "uvicorn") as url:
            held: list[httpx.Response] = []
            holder = threading.Thread(
                target=lambda: held.append(httpx.get(url + "/hold", headers=AUTH, timeout=60))
            )
            holder.start()
            try:
                assert arrived.wait(30)
                busy = httpx.get(url + "/busy", headers=AUTH, timeout=60)
                assert busy.status_code == 503
                assert busy.headers["retry-after"] == "1"
                assert proxy.stats().active == 1
            finally:
                release.set()
                holder.join(30)
            assert held[0].status_code == 200
            eventually(lambda: proxy.stats().active == 0)
            for _ in range(3):  # the one slot was given back each time
                assert httpx.get(url + "/next", headers=AUTH).status_code == 200
            eventually(lambda: proxy.stats().active == 0)
    assert in_flight(gateway) == 0


@pytest.mark.parametrize("client", ["httpcore", "aiohttp", "httptools"])
def test_a_client_that_hangs_up_while_waiting_for_the_pool_takes_nothing(client: str) -> None:
    """A request waiting for a free upstream connection (max_connections=1, held) whose client
    hangs up is cancelled there: its lease goes back, and the limit's one slot is neither lost
    nor doubled (the next requests are served one at a time, all of them)."""
    arrived = threading.Event()
    release = threading.Event()

    def handle(conn: socket.socket) -> None:
        while True:
            head = read_head(conn)
            if b" /hold " in head:
                arrived.set()
                release.wait(30)
            conn.sendall(OK)

    with RawServer(handle) as upstream:
        gateway = make_gateway([upstream.url])
        proxy = make_proxy(client, gateway, max_connections=1, pool_timeout=30.0)
        with serve(proxy, "uvicorn") as url:
            port = int(url.rsplit(":", 1)[1])
            held: list[httpx.Response] = []
            holder = threading.Thread(
                target=lambda: held.append(httpx.get(url + "/hold", headers=AUTH, timeout=60))
            )
            holder.start()
            try:
                assert arrived.wait(30)
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(
                        b"GET /waits HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\n\r\n" % KEY.encode()
                    )
                    eventually(lambda: in_flight(gateway) == 2)
                eventually(lambda: in_flight(gateway) == 1)  # the waiting one gave up
                assert proxy.stats().active == 1
            finally:
                release.set()
                holder.join(30)
            assert held[0].status_code == 200
            eventually(lambda: proxy.stats().active == 0)
            answers: list[int] = []
            threads = [
                threading.Thread(
                    target=lambda: answers.append(
                        httpx.get(url + "/next", headers=AUTH, timeout=60).status_code
                    )
                )
                for _ in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert answers == [200] * 4
            eventually(lambda: proxy.stats().active == 0)
    assert in_flight(gateway) == 0


# -- 7. the pool closed while a request is in flight -----------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [pytest.param(("asyncio", {}), id="asyncio")])
@pytest.mark.parametrize("client", ["httptools"])
async def test_closing_the_pool_under_a_request_lets_it_finish_and_keeps_nothing(
    client: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`ProxyApp.aclose()` (lifespan shutdown does it) while a request waits for its answer: the
    request is answered whole, nothing is logged as an error, and its connection, returned to a
    closed pool, is closed rather than kept. (httpcore's UpstreamPool keeps it: open after
    shutdown.)"""
    arrived = threading.Event()
    release = threading.Event()

    def handle(conn: socket.socket) -> None:
        read_head(conn)
        arrived.set()
        release.wait(30)
        conn.sendall(OK)
        while conn.recv(65536):
            pass

    with RawServer(handle) as upstream:
        gateway = make_gateway([upstream.url])
        proxy = make_proxy(client, gateway)
        sent: list[dict[str, object]] = []
        requested = False

        async def receive() -> dict[str, object]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await anyio.sleep_forever()
            raise AssertionError  # pragma: no cover

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/closing",
            "raw_path": b"/closing",
            "query_string": b"",
            "headers": [(b"host", b"proxy.test"), (b"x-api-key", KEY.encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        async with anyio.create_task_group() as tg:
            tg.start_soon(proxy, scope, receive, send)
            await anyio.to_thread.run_sync(arrived.wait, 30)
            await proxy.aclose()
            release.set()
        assert [m.get("status") for m in sent] == [200, None]
        assert sent[-1]["body"] == b"ok"
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
        assert proxy.stats() == ProxyStats(connections=0, active=0)
        await proxy.aclose()
    assert in_flight(gateway) == 0


# -- 8. a status under 100 -------------------------------------------------------------------------


def test_a_status_under_100_is_a_502_not_an_informational_answer(client: str) -> None:
    """``HTTP/1.1 099`` is no HTTP status (100..599; h11 refuses it): a 502 at once, not an
    informational answer after which the proxy waits for another until its read timeout."""
    with ScriptedServer(lambda _: b"HTTP/1.1 099 Odd\r\ncontent-length: 0\r\n\r\n") as upstream:
        gateway = make_gateway([upstream.url])
        proxy = make_proxy(client, gateway, retries=0, read_timeout=10.0)
        with serve(proxy, "uvicorn") as url:
            response = httpx.get(url + "/odd", headers=AUTH, timeout=60)
            assert response.status_code == 502
            eventually(lambda: proxy.stats().active == 0)
    assert in_flight(gateway) == 0
