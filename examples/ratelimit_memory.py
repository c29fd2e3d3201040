"""Per-tenant quotas in memory: a burst limit plus an hourly quota, IETF headers, LLM-token costs."""

from __future__ import annotations

import anyio

import tenantlb as tlb
from tenantlb.testing import ManualClock


def main() -> None:
    clock = ManualClock()  # a real service leaves clock= out (time.monotonic)
    limiter = tlb.RateLimiter(
        [tlb.Rate(5, per=1.0, name="burst"), tlb.Rate(20, per=3600, name="hourly")],
        store=tlb.MemoryStore(clock),
    )
    for i in range(7):
        decision = limiter.acquire_nowait("acme")
        print(f"request {i}: allowed={decision.allowed} remaining={decision.remaining:.0f}")
    print("headers of the denial:", decision.headers())
    clock.advance(1.0)
    assert limiter.acquire_nowait("acme").allowed  # the burst limit has refilled

    # Costs are any positive number: charge an estimate of LLM tokens, then refund the rest.
    tokens = tlb.RateLimiter(tlb.Rate(10_000, per=60), name="tokens", store=tlb.MemoryStore(clock))
    assert tokens.acquire_nowait("acme", cost=4_000).allowed
    tokens.refund_nowait("acme", 4_000 - 1_250)  # the response used 1,250 tokens
    print("tokens left this minute:", round(tokens.peek_nowait("acme").remaining))


async def concurrency() -> None:
    slots = tlb.ConcurrencyLimiter(2)
    async with slots.slot("acme"), slots.slot("acme"):
        try:
            await slots.acquire("acme")
        except tlb.OverCapacity as exc:
            print("third request:", exc)


if __name__ == "__main__":
    main()
    anyio.run(concurrency)
