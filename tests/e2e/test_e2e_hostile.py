"""Hostile input through a raw socket at the gateway process: a 4xx or a clean close, never a 500,
never a crash, never a leaked slot or lease."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import tenantlb as tlb
from tests.support.backends import start_backends
from tests.support.gateway_process import GatewayProcess

pytestmark = pytest.mark.slow

KEY = "sk-e2e-hostile-0123456789"
OTHER = "sk-e2e-other-0123456789"


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with start_backends("x1", "x2") as backends:
        config = {
            "gateway": {"max_header_size": 16384},
            "pools": {"api": {"endpoints": [b.url for b in backends]}},
            "tenants": [
                {
                    "id": "acme",
                    "api_keys": [tlb.hash_api_key(KEY)],
                    "upstream": "api",
                    "max_concurrency": 4,
                    "max_body_size": 1 << 20,
                },
                {"id": "other", "api_keys": [tlb.hash_api_key(OTHER)], "upstream": "api"},
            ],
        }
        proxy = {"client_body_timeout": 1.0, "read_timeout": 5.0}
        with GatewayProcess(config, proxy=proxy) as gw:
            yield gw


def exchange(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send *data* on a fresh connection and read until the server answers and/or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            sock.sendall(data)
        except OSError:
            return b""  # the server closed while we were still sending: a clean refusal
        chunks = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                sock.settimeout(0.3)  # the head is in: take what follows, then stop
        return b"".join(chunks)


def status(raw: bytes) -> int | None:
    """The status of the first response in *raw*, or None for a close without an answer."""
    if not raw.startswith(b"HTTP/1."):
        return None
    return int(raw.split(b" ", 2)[1])


def head(extra: bytes = b"", *, method: bytes = b"GET", target: bytes = b"/items") -> bytes:
    return (
        method + b" " + target + b" HTTP/1.1\r\nHost: gw\r\nx-api-key: " + KEY.encode() + b"\r\n"
        + extra + b"\r\n"
    )  # fmt: skip


CASES: dict[str, bytes] = {
    "bad method": b"G@T /items HTTP/1.1\r\nHost: gw\r\n\r\n",
    "unknown method": head(method=b"BREW"),
    "64 KB header": head(b"x-big: " + b"a" * 65536 + b"\r\n"),
    "many headers": head(b"".join(b"x-h%d: v\r\n" % i for i in range(2000))),
    "invalid percent-encoding": head(target=b"/items/%zz%%/..%2f..%2fetc"),
    "CRLF in a header value": head(b"x-evil: a\r\nInjected: yes\rmore\r\n"),
    "bare LF header": b"GET /items HTTP/1.1\nHost: gw\nx-api-key: " + KEY.encode() + b"\n\n",
    "absurd Content-Length": head(
        b"Content-Length: 99999999999999999999999999\r\n", method=b"POST"
    ),
    "negative Content-Length": head(b"Content-Length: -5\r\n", method=b"POST"),
    "two Content-Lengths": head(b"Content-Length: 5\r\nContent-Length: 7\r\n", method=b"POST")
    + b"hello",
    "Content-Length and chunked": head(
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", method=b"POST"
    )
    + b"0\r\n\r\n",
    "body over the tenant's limit": head(b"Content-Length: 2097152\r\n", method=b"POST")
    + b"x" * 65536,
    "bad chunk size": head(b"Transfer-Encoding: chunked\r\n", method=b"POST") + b"zz\r\nabc\r\n",
    "pipelined garbage": head() + b"\x00\x01\x02 garbage \xff\xfe\r\n\r\n" * 3,
    "not HTTP at all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    "HTTP/0.9": b"GET /items\r\n",
    "absolute-form target": head(target=b"http://evil.example/items"),
    "no key": b"GET /items HTTP/1.1\r\nHost: gw\r\n\r\n",
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_request_gets_a_4xx_or_a_clean_close(gateway: GatewayProcess, case: str) -> None:
    """Never a 5xx (the request is the client's fault), and the gateway keeps serving."""
    answer = status(exchange(gateway.port, CASES[case]))
    assert answer is None or answer < 500, (case, answer)
    assert httpx.get(gateway.url + "/items", headers={"x-api-key": KEY}).status_code == 200


def test_lying_content_length_times_out_with_408(gateway: GatewayProcess) -> None:
    """A body shorter than its Content-Length stalls: 408 after client_body_timeout, slot freed."""
    raw = exchange(gateway.port, head(b"Content-Length: 100\r\n", method=b"PUT") + b"short")
    assert status(raw) in (408, None), raw[:200]
    assert wait_released(gateway)


def test_slow_loris_bodies_and_headers_leak_nothing(gateway: GatewayProcess) -> None:
    """Trickled heads hold nothing; trickled bodies hold their tenant's slots only until
    client_body_timeout cuts them off (408), and never touch another tenant's."""
    socks = []
    try:
        for i in range(20):
            sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
            if i % 2:
                sock.sendall(b"GET /items HTTP/1.1\r\nHost: gw\r\nx-api-key: ")  # never ended
            else:
                sock.sendall(head(b"Content-Length: 1000\r\n", method=b"POST") + b"x")
            socks.append(sock)
        for _ in range(10):  # another tenant is served throughout
            ok = httpx.get(gateway.url + "/items", headers={"x-api-key": OTHER}, timeout=10)
            assert ok.status_code == 200
        assert wait_released(gateway)  # the stalled bodies were cut off and freed their slots
        for _ in range(10):  # and acme is served again, with heads still trickling
            ok = httpx.get(gateway.url + "/items", headers={"x-api-key": KEY}, timeout=10)
            assert ok.status_code == 200
    finally:
        for sock in socks:
            sock.close()
    assert wait_released(gateway)


def test_gateway_survived_everything(gateway: GatewayProcess) -> None:
    """After every hostile case the process is alive, nothing is in flight, no 500 was counted."""
    assert gateway.proc is not None
    assert gateway.proc.poll() is None
    assert wait_released(gateway)
    stats: dict[str, Any] = gateway.stats()
    assert stats["pools"]["api"]["in_flight"] == 0


def wait_released(gateway: GatewayProcess, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if gateway.stats()["in_flight"] == 0:
            return True
        time.sleep(0.05)
    return False
