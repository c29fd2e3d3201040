"""Hot reload: replace() swaps whole snapshots; concurrent readers never see a half registry."""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import tenantlb as tlb
from tenantlb.tenants import RequestInfo, Tenant, TenantRegistry, hash_api_key

N_TENANTS = 50
RELOADS = 50
KEYS = [f"sk-tenant-{i:04d}-abcdefgh" for i in range(N_TENANTS)]
DIGESTS = [hash_api_key(k) for k in KEYS]


def generation(gen: int) -> list[Tenant]:
    # Every tenant of one generation carries the generation number; odd ones rotate upstreams.
    return [
        Tenant(
            f"t{i}",
            api_keys=[DIGESTS[i]],
            upstream=f"pool-{gen % 3}",
            metadata={"gen": gen},
        )
        for i in range(N_TENANTS)
    ]


def check_whole(reg: TenantRegistry, last_gen: int) -> int:
    snap = reg.snapshot()
    gens = {t.metadata["gen"] for t in snap}
    assert len(snap) == N_TENANTS
    assert len(gens) == 1, gens
    (gen,) = gens
    assert snap.version == gen
    assert {t.upstream for t in snap} == {f"pool-{gen % 3}"}
    assert gen >= last_gen, "snapshots went backwards"
    # Resolution through the live registry sees a tenant at least as new as that snapshot.
    i = gen % N_TENANTS
    tenant = reg.resolve(RequestInfo("GET", "/", [("x-api-key", KEYS[i])]))
    assert tenant.id == f"t{i}"
    assert tenant.metadata["gen"] >= gen
    return gen


def test_thread_readers_see_only_whole_snapshots() -> None:
    """Four reader threads checking snapshots while replace() runs 50 times see only whole ones."""
    reg = TenantRegistry(generation(0))
    done = threading.Event()
    errors: list[BaseException] = []
    reads = [0] * 4

    def reader(slot: int) -> None:
        last = 0
        try:
            while not done.is_set() or reads[slot] == 0:
                last = check_whole(reg, last)
                reads[slot] += 1
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for gen in range(1, RELOADS + 1):
            reg.replace(generation(gen))
    finally:
        done.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors[0]
    assert all(reads)
    assert reg.snapshot().version == RELOADS


@pytest.mark.anyio
async def test_async_readers_see_only_whole_snapshots() -> None:
    """Tasks reading while a worker thread replaces the registry 50 times see only whole snapshots."""
    reg = TenantRegistry(generation(0))
    done = anyio.Event()
    reads = 0

    async def reader() -> None:
        nonlocal reads
        last = 0
        while not done.is_set():
            last = check_whole(reg, last)
            reads += 1
            await anyio.lowlevel.checkpoint()

    def writer() -> None:
        for gen in range(1, RELOADS + 1):
            reg.replace(generation(gen))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(reader)
        await anyio.to_thread.run_sync(writer)
        done.set()
    assert reads > 0
    assert reg.snapshot().version == RELOADS


@pytest.mark.anyio
async def test_in_flight_work_keeps_its_tenant_and_snapshot() -> None:
    """A request that resolved before a reload keeps its tenant and snapshot after it."""
    reg = TenantRegistry(generation(0))
    snap = reg.snapshot()
    info = RequestInfo("GET", "/", [("x-api-key", KEYS[1])])
    tenant = reg.resolve(info, snapshot=snap)
    started = anyio.Event()
    reloaded = anyio.Event()

    async def in_flight() -> None:
        started.set()
        await reloaded.wait()
        assert tenant.upstream == "pool-0"
        assert snap.get("t1") is tenant
        assert reg.resolve(info, snapshot=snap) is tenant

    async with anyio.create_task_group() as tg:
        tg.start_soon(in_flight)
        await started.wait()
        reg.replace([])  # every tenant removed
        reloaded.set()
    with pytest.raises(tlb.Unauthenticated):
        reg.resolve(info)


def test_concurrent_writers_serialise() -> None:
    """add() from many threads at once loses no tenant and bumps the version once per add."""
    reg = TenantRegistry()

    def add_range(start: int) -> None:
        for i in range(start, start + 25):
            reg.add(Tenant(f"w{i}"))

    threads = [threading.Thread(target=add_range, args=(s,)) for s in range(0, 100, 25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(reg) == 100
    assert reg.snapshot().version == 100
