"""RFC 9457 problem+json answers built from refusals."""

from __future__ import annotations

import json

import pytest

import tenantlb as tlb
from tenantlb.adapters._problem import problem


def rate_limited() -> tlb.RateLimited:
    limiter = tlb.RateLimiter(tlb.Rate(1, per=10.0), store=tlb.MemoryStore())
    limiter.acquire_nowait("acme")
    decision = limiter.acquire_nowait("acme")
    return tlb.RateLimited(
        "tenant 'acme' is over its rate limit", decision=decision, headers=decision.headers()
    )


CASES = [
    (tlb.MissingCredentials("missing credentials"), 401),
    (tlb.Unauthenticated("invalid x-api-key header"), 401),
    (tlb.UnknownTenant("no tenant matched the request"), 401),
    (tlb.Forbidden("tenant 'acme' is disabled"), 403),
    (tlb.ContentTooLarge("the request body is over 10 bytes", limit=10), 413),
    (tlb.HeadersTooLarge("the request's header fields are over 10 bytes", limit=10), 431),
    (rate_limited(), 429),
    (tlb.OverCapacity("all 1 concurrency slots of 'acme' are in use"), 503),
    (tlb.NoHealthyEndpoint("no endpoint"), 503),
    (tlb.StoreUnavailable("redis is down"), 503),
]


@pytest.mark.parametrize(("exc", "status"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_every_refusal_is_a_problem_document(exc: tlb.RequestRejected, status: int) -> None:
    """Each refusal gives its status, a problem+json body with type/title/status/detail, and the right headers."""
    got_status, headers, body = problem(exc)
    names = {n.lower(): v for n, v in headers}
    document = json.loads(body)
    assert got_status == status == document["status"]
    assert names["content-type"] == "application/problem+json"
    assert int(names["content-length"]) == len(body)
    assert document["type"].startswith("urn:tenantlb:problem:")
    assert document["title"] == exc.title
    if not isinstance(exc, tlb.StoreUnavailable):  # whose detail is a fixed sentence (below)
        assert document["detail"] == str(exc)
    if status in (429, 503):
        assert int(names["retry-after"]) >= 1
    if status == 401:
        assert "www-authenticate" in names
    if status == 429:
        assert "ratelimit" in names
        assert "ratelimit-policy" in names
        assert document["retry_after"] == int(names["retry-after"])


def test_own_headers_are_not_doubled() -> None:
    """A refusal that brings its own challenge or Retry-After keeps it and gets no second one."""
    exc = tlb.Unauthenticated("invalid key", headers=[("WWW-Authenticate", 'Bearer realm="x"')])
    _, headers, _ = problem(exc)
    assert [v for n, v in headers if n.lower() == "www-authenticate"] == ['Bearer realm="x"']
    busy = tlb.OverCapacity("busy", headers=[("Retry-After", "7")])
    _, headers, _ = problem(busy)
    assert [v for n, v in headers if n.lower() == "retry-after"] == ["7"]


def test_asgi_ratelimit_headers_match_the_decisions_own() -> None:
    """The adapters' cached RateLimit bytes are exactly what Decision.headers() says, for one and two policies."""
    from tenantlb.adapters._asgi import encode_headers, ratelimit_headers

    for rates in (
        [tlb.Rate(5, per=1.0)],
        [tlb.Rate(5, per=1.0, name='a"b'), tlb.Rate(100, per=60.0)],
    ):
        limiter = tlb.RateLimiter(rates, store=tlb.MemoryStore())
        for _ in range(7):
            decision = limiter.acquire_nowait("k")
            assert ratelimit_headers(decision) == [
                (n.lower(), v) for n, v in encode_headers(decision.headers())
            ]
    assert ratelimit_headers(None) == []


def test_asgi_ratelimit_headers_round_with_the_decisions_tolerance() -> None:
    """Float noise within Decision.headers' 1e-6 tolerance gives the same fields through the
    adapters' fast path (it used 1e-9: r=98 and t=1 where Decision.headers says r=99 and t=0)."""
    from tenantlb.adapters._asgi import encode_headers, ratelimit_headers

    rate = tlb.Rate(100, per=1.0)
    for remaining in (98.9999995, 99.0, 99.0000004, 0.0, -1e-7, 1e-7, 0.9999999):
        for reset in (2e-9, 0.9999999, 1.0000004, 1.5, 0.0, -1e-7, 59.9999999):
            decision = tlb.Decision(True, remaining, reset, 0.0, rate, (rate,))
            assert ratelimit_headers(decision) == [
                (n.lower(), v) for n, v in encode_headers(decision.headers())
            ], (remaining, reset)


def test_store_outage_detail_does_not_name_the_server() -> None:
    """A store outage's answer says the store is unavailable, never its address or errno."""
    exc = tlb.StoreUnavailable(
        "Redis did not answer: ConnectionError: Error 111 connecting to 10.1.2.3:6379."
    )
    status, _, body = problem(exc)
    document = json.loads(body)
    assert status == 503
    assert "10.1.2.3" not in body.decode()
    assert "6379" not in body.decode()
    assert document["detail"] == "the rate-limit store is unavailable; try again later"
