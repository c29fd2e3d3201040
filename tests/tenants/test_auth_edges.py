"""Authentication edge cases: every bad credential is a typed error that never echoes the key."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tenantlb as tlb
from tenantlb.tenants import RegistrySnapshot, RequestInfo, Tenant, TenantRegistry, hash_api_key

KEY = "sk-acme-0123456789abcdef"
OFF_KEY = "sk-off-0123456789abcdef"
REG = TenantRegistry(
    [
        Tenant("acme", api_keys=[hash_api_key(KEY)]),
        Tenant("off", api_keys=[hash_api_key(OFF_KEY)], enabled=False),
    ]
)


def attempt(headers: list[tuple[str | bytes, str | bytes]]) -> tlb.RequestRejected:
    with pytest.raises(tlb.RequestRejected) as info:
        REG.resolve(RequestInfo("POST", "/v1/chat", headers))
    return info.value


def assert_not_leaked(err: BaseException, *secrets: str) -> None:
    text = " ".join([str(err), repr(err), str(err.args), repr(getattr(err, "headers", ""))])
    for secret in secrets:
        assert secret not in text


CASES: list[tuple[str, list[tuple[str | bytes, str | bytes]], type[Exception], str]] = [
    ("missing", [], tlb.MissingCredentials, "missing credentials"),
    ("wrong key", [("x-api-key", "sk-acme-0123456789abcdeX")], tlb.Unauthenticated, "invalid"),
    ("key prefix", [("x-api-key", KEY[:-1])], tlb.Unauthenticated, "invalid x-api-key"),
    ("key + suffix", [("x-api-key", KEY + "0")], tlb.Unauthenticated, "invalid x-api-key"),
    (
        "wrong bearer",
        [("authorization", "Bearer sk-nope-12345678")],
        tlb.Unauthenticated,
        "invalid Bearer",
    ),
    ("empty bearer", [("authorization", "Bearer ")], tlb.Unauthenticated, "is empty"),
    ("empty header", [("x-api-key", "")], tlb.Unauthenticated, "is empty"),
    ("10 KB", [("x-api-key", "k" * 10_240)], tlb.Unauthenticated, "longer than 4096"),
    ("10 KB bearer", [("authorization", "Bearer " + "k" * 10_240)], tlb.Unauthenticated, "longer"),
    ("non-ascii", [("x-api-key", "sk-acme-ü")], tlb.Unauthenticated, "visible ASCII"),
    ("non-ascii bytes", [(b"x-api-key", b"sk-\xc3\xbc\xff")], tlb.Unauthenticated, "visible ASCII"),
    ("crlf", [("x-api-key", KEY + "\r\nX-Admin: 1")], tlb.Unauthenticated, "visible ASCII"),
    ("nul", [("x-api-key", KEY + "\x00")], tlb.Unauthenticated, "visible ASCII"),
    ("space inside", [("x-api-key", "sk acme")], tlb.Unauthenticated, "visible ASCII"),
    ("two keys", [("x-api-key", KEY), ("x-api-key", KEY)], tlb.Unauthenticated, "more than one"),
    (
        "two bearers",
        [("authorization", f"Bearer {KEY}"), ("authorization", f"Bearer {KEY}")],
        tlb.Unauthenticated,
        "more than one",
    ),
    (
        "basic auth",
        [("authorization", "Basic " + KEY)],
        tlb.MissingCredentials,
        "missing credentials",
    ),
    ("disabled", [("x-api-key", OFF_KEY)], tlb.Forbidden, "tenant 'off' is disabled"),
    ("disabled bearer", [("authorization", f"Bearer {OFF_KEY}")], tlb.Forbidden, "disabled"),
]


@pytest.mark.parametrize(
    ("headers", "exc", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_credentials_raise_the_right_typed_error(
    headers: list[tuple[str | bytes, str | bytes]], exc: type[Exception], match: str
) -> None:
    """Each bad credential raises its typed RequestRejected, whose text omits every key."""
    err = attempt(headers)
    assert type(err) is exc
    assert match in str(err)
    assert err.status in (401, 403)
    values = [v.decode("latin-1") if isinstance(v, bytes) else v for _, v in headers]
    assert_not_leaked(err, KEY, OFF_KEY, *(v for v in values if len(v) > 8))


def test_header_and_bearer_forms_both_authenticate() -> None:
    """The same key works in x-api-key and as a Bearer token, with surrounding spaces tolerated."""
    for headers in (
        [("x-api-key", KEY)],
        [("X-API-KEY", KEY)],
        [("authorization", f"Bearer {KEY}")],
        [("authorization", f"BEARER   {KEY}  ")],
        [(b"authorization", f"Bearer {KEY}".encode())],
    ):
        assert REG.resolve(RequestInfo("GET", "/", headers)).id == "acme", headers


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_arbitrary_header_values_never_crash(value: str) -> None:
    """Any x-api-key or Authorization value yields a tenant or a RequestRejected, never a crash."""
    for name in ("x-api-key", "authorization"):
        for v in (value, "Bearer " + value):
            try:
                tenant = REG.resolve(RequestInfo("GET", "/", [(name, v)]))
            except tlb.RequestRejected as err:
                # A value that is part of our own wording ("x-api-key") is not a leak.
                ours = f"invalid {name} header missing credentials authorization bearer"
                leaks = [v] if len(v) > 8 and v.lower() not in ours.lower() else []
                assert_not_leaked(err, *leaks)
            else:
                assert tenant.id == "acme"
                assert KEY in v


@given(st.binary(max_size=200))
def test_arbitrary_bytes_to_by_api_key_never_crash(raw: bytes) -> None:
    """by_api_key() on arbitrary bytes returns the owner or raises Unauthenticated."""
    try:
        tenant = REG.by_api_key(raw)
    except tlb.Unauthenticated:
        pass
    else:
        assert raw == KEY.encode()
        assert tenant.id == "acme"


def test_non_string_key_is_unauthenticated() -> None:
    """by_api_key() with a non-str/bytes value raises Unauthenticated, not TypeError."""
    with pytest.raises(tlb.Unauthenticated, match="must be a string"):
        REG.by_api_key(12345)  # type: ignore[arg-type]


def test_key_check_uses_hmac_compare_digest() -> None:
    """The final key comparison in by_api_key() is hmac.compare_digest, not == (by inspection)."""
    source = textwrap.dedent(inspect.getsource(RegistrySnapshot.by_api_key))
    tree = ast.parse(source)
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "hmac"
    ]
    assert len(calls) == 1
    # No ==/!= comparisons of digests anywhere in the function.
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    assert all(not isinstance(op, ast.Eq | ast.NotEq) for node in compares for op in node.ops), (
        "by_api_key must not compare digests with == or !="
    )
    module = inspect.getmodule(RegistrySnapshot.by_api_key)  # the class says `tenantlb.tenants`
    assert module is not None
    assert module.hmac.compare_digest is __import__("hmac").compare_digest  # type: ignore[attr-defined]
