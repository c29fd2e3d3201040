"""RequestInfo: header access in every input form, host parsing, and trusted-proxy client IPs."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

from tenantlb.tenants import RequestInfo

TRUSTED = ["10.0.0.0/8", "2001:db8::/32"]


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Api-Key", "k1"), ("Accept", "a")],
        [(b"x-api-key", b"k1"), (b"accept", b"a")],
        {"X-API-KEY": "k1", "accept": "a"},
        {b"x-api-key": b"k1", b"accept": b"a"},
    ],
)
def test_headers_in_every_form_are_found_case_insensitively(headers: object) -> None:
    """Pairs or mappings of str or bytes are read with case-insensitive names."""
    info = RequestInfo("GET", "/", headers)  # type: ignore[arg-type]
    assert info.header("x-api-key") == "k1"
    assert info.header("X-API-Key") == "k1"
    assert info.header("missing") is None
    assert info.header("missing", "d") == "d"


def test_repeated_headers_keep_every_value_in_order() -> None:
    """header() returns the first value and header_values() all of them."""
    info = RequestInfo("GET", "/", [("a", "1"), ("B", "x"), ("A", "2")])
    assert info.header("a") == "1"
    assert info.header_values("A") == ("1", "2")
    assert info.header_values("c") == ()


def test_bytes_are_decoded_as_latin1_and_never_fail() -> None:
    """Non-ASCII header bytes decode as Latin-1 instead of raising."""
    info = RequestInfo("GET", "/", [(b"x-api-key", b"\xff\xfe")])
    assert info.header("x-api-key") == "\xff\xfe"


def test_construction_does_not_parse_headers() -> None:
    """Headers are indexed on first lookup, not when the object is built."""

    class Exploding:
        def __iter__(self) -> object:
            raise AssertionError("headers parsed eagerly")

    info = RequestInfo("GET", "/", Exploding())  # type: ignore[arg-type]
    assert info.method == "GET"
    with pytest.raises(AssertionError):
        info.header("x")


def test_repr_hides_header_values() -> None:
    """repr() shows method, path and client but no header values."""
    info = RequestInfo("GET", "/p", [("x-api-key", "sk-secret-value")], client=("1.2.3.4", 5))
    assert "sk-secret-value" not in repr(info)
    assert "/p" in repr(info)


def test_bad_arguments_raise_typed_errors() -> None:
    """A non-str method or path is a TypeError; an unknown proxy_header is a ValueError."""
    with pytest.raises(TypeError, match="method must be a str"):
        RequestInfo(b"GET", "/")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path must be a str"):
        RequestInfo("GET", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="proxy_header must be"):
        RequestInfo("GET", "/", proxy_header="x-real-ip")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host_arg", "host_header", "expected"),
    [
        (None, "Acme.Example.COM:8443", "acme.example.com"),
        (None, "[2001:db8::1]:443", "2001:db8::1"),
        (None, "[2001:db8::1]", "2001:db8::1"),
        (None, None, None),
        ("given.example", "ignored.example", "given.example"),
        (None, "plain", "plain"),
    ],
)
def test_host_is_lowercased_without_port(
    host_arg: str | None, host_header: str | None, expected: str | None
) -> None:
    """host comes from host= or the Host header, lowercased and without the port."""
    headers = [] if host_header is None else [("host", host_header)]
    assert RequestInfo("GET", "/", headers, host=host_arg).host == expected


def test_client_ip_is_the_peer_without_trusted_proxies() -> None:
    """With no trusted proxies, X-Forwarded-For is ignored and the peer is the client."""
    info = RequestInfo("GET", "/", [("x-forwarded-for", "198.51.100.1")], client=("10.0.0.2", 1234))
    assert info.client_ip == "10.0.0.2"
    assert RequestInfo("GET", "/").client_ip is None


def test_spoofed_xff_from_an_untrusted_peer_is_ignored() -> None:
    """A client that is not a trusted proxy cannot choose its address with X-Forwarded-For."""
    info = RequestInfo(
        "GET",
        "/",
        [("x-forwarded-for", "10.0.0.9, 1.1.1.1")],
        client=("203.0.113.50", 40000),
        trusted_proxies=TRUSTED,
    )
    assert info.client_ip == "203.0.113.50"


def test_xff_is_walked_right_to_left_skipping_trusted_hops() -> None:
    """The first untrusted address from the right is the client; spoofed left entries are ignored."""
    info = RequestInfo(
        "GET",
        "/",
        [("X-Forwarded-For", "6.6.6.6, 198.51.100.7"), ("x-forwarded-for", "10.1.1.1")],
        client=("10.0.0.2", 1),
        trusted_proxies=TRUSTED,
    )
    assert info.client_ip == "198.51.100.7"


def test_all_trusted_hops_yield_the_leftmost() -> None:
    """If every hop is trusted, the leftmost address is the client."""
    info = RequestInfo(
        "GET",
        "/",
        [("x-forwarded-for", "10.9.9.9, 10.1.1.1")],
        client=("10.0.0.2", 1),
        trusted_proxies=TRUSTED,
    )
    assert info.client_ip == "10.9.9.9"


def test_garbage_hop_stops_the_walk_at_the_last_believed_address() -> None:
    """An unparsable hop ends the walk; the last parsed address is returned, not the garbage."""
    info = RequestInfo(
        "GET",
        "/",
        [("x-forwarded-for", "198.51.100.7, not-an-ip, 10.1.1.1")],
        client=("10.0.0.2", 1),
        trusted_proxies=TRUSTED,
    )
    assert info.client_ip == "10.1.1.1"


def test_xff_with_ports_and_ipv6() -> None:
    """Hops with ports, bracketed IPv6 and IPv4-mapped peers are parsed."""
    info = RequestInfo(
        "GET",
        "/",
        [("x-forwarded-for", "[2001:db9::5]:443, 198.51.100.7:5555")],
        client=("::ffff:10.0.0.2", 1),
        trusted_proxies=TRUSTED,
    )
    assert info.client_ip == "198.51.100.7"
    info = RequestInfo(
        "GET",
        "/",
        [("x-forwarded-for", "[2001:db9::5]:443")],
        client=("2001:db8::1", 1),
        trusted_proxies=TRUSTED,
    )
    assert info.client_ip == "2001:db9::5"


def test_forwarded_header_is_read_only_when_chosen() -> None:
    """RFC 7239 Forwarded is used with proxy_header='forwarded'; then X-Forwarded-For is ignored."""
    headers = [
        ("forwarded", 'for=6.6.6.6, for="[2001:db9::7]:80";proto=https, for=10.2.2.2;by=10.0.0.2'),
        ("x-forwarded-for", "5.5.5.5"),
    ]
    chosen = RequestInfo(
        "GET",
        "/",
        headers,
        client=("10.0.0.2", 1),
        trusted_proxies=TRUSTED,
        proxy_header="forwarded",
    )
    assert chosen.client_ip == "2001:db9::7"
    default = RequestInfo("GET", "/", headers, client=("10.0.0.2", 1), trusted_proxies=TRUSTED)
    assert default.client_ip == "5.5.5.5"


def test_forwarded_unknown_or_obfuscated_for_stops_the_walk() -> None:
    """Forwarded 'for=unknown' or an obfuscated identifier stops at the last address believed."""
    info = RequestInfo(
        "GET",
        "/",
        [("forwarded", "for=unknown, for=_hidden, for=10.3.3.3")],
        client=("10.0.0.2", 1),
        trusted_proxies=TRUSTED,
        proxy_header="forwarded",
    )
    assert info.client_ip == "10.3.3.3"


def test_trusted_proxies_accept_ipaddress_objects_and_single_ips() -> None:
    """trusted_proxies takes CIDR strings, bare IPs and ipaddress objects."""
    for trusted in (
        ["10.0.0.2"],
        [ipaddress.ip_network("10.0.0.0/24")],
        [ipaddress.ip_address("10.0.0.2")],
        ("10.0.0.2/32",),
    ):
        info = RequestInfo(
            "GET",
            "/",
            [("x-forwarded-for", "198.51.100.7")],
            client=("10.0.0.2", 1),
            trusted_proxies=trusted,
        )
        assert info.client_ip == "198.51.100.7", trusted


def test_bad_trusted_proxy_entries_raise_clear_errors() -> None:
    """A malformed trusted_proxies entry is a ValueError, a wrong type a TypeError."""
    info = RequestInfo("GET", "/", client=("10.0.0.2", 1), trusted_proxies=["10.0.0.300/8"])
    with pytest.raises(ValueError, match="trusted_proxies entries must be IPs or CIDR"):
        _ = info.client_ip
    info = RequestInfo("GET", "/", client=("10.0.0.2", 1), trusted_proxies=[42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="trusted_proxies entries must be str or ipaddress"):
        _ = info.client_ip


def test_non_ip_peer_is_returned_as_is() -> None:
    """A peer that is not an IP (a unix socket path) is returned unchanged."""
    info = RequestInfo(
        "GET",
        "/",
        [("x-forwarded-for", "1.1.1.1")],
        client=("/run/app.sock", 0),
        trusted_proxies=TRUSTED,
    )
    assert info.client_ip == "/run/app.sock"


@pytest.mark.parametrize(
    "headers",
    [
        "x-api-key: sk-secret-value",
        b"x-api-key",
        5,
        [("x-api-key", "sk-secret-value", "x")],
        [None],
    ],
)
def test_malformed_headers_are_a_type_error_without_their_values(headers: object) -> None:
    """Headers that are not pairs or a mapping raise a TypeError naming headers, not a value."""
    info = RequestInfo("GET", "/", headers)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"headers must be \(name, value\) pairs") as caught:
        info.header("x-api-key")
    assert "sk-secret-value" not in str(caught.value)


def test_bytes_and_str_header_names_in_one_process_under_bytes_warnings() -> None:
    """ASGI's bytes names and aiohttp's str names meet in one process without comparing bytes
    to str (b"a" and "a" hash alike; under ``python -bb`` such a comparison raises)."""
    code = (
        "import tenantlb as tlb\n"
        "for headers in ([(b'x-api-key', b'k1')], [('x-api-key', 'k2')], [(b'x-api-key', b'k3')]):\n"
        "    print(tlb.RequestInfo('GET', '/', headers).header('x-api-key'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-bb", "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["k1", "k2", "k3"]
