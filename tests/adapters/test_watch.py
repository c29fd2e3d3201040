"""ProxyApp's disconnect watch: a client that hangs up cancels the wait; nothing else is taken for one."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from tenantlb.adapters._body import ClientGone
from tenantlb.adapters._transport import UpstreamFailure
from tenantlb.adapters._watch import WATCH_AFTER, unless_gone


def disconnecting_receive(after: anyio.Event) -> Any:
    async def receive() -> dict[str, Any]:
        await after.wait()
        return {"type": "http.disconnect"}

    return receive


def silent_receive() -> Any:
    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    return receive


@pytest.mark.anyio
async def test_a_disconnect_cancels_the_wait_and_raises_client_gone() -> None:
    """A client that disconnects while the wait runs cancels it and raises ClientGone."""
    hang_up = anyio.Event()
    cancelled = False

    async def slow() -> str:
        nonlocal cancelled
        hang_up.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled = True
            raise
        return "never"  # pragma: no cover

    with anyio.fail_after(10), pytest.raises(ClientGone):
        await unless_gone(disconnecting_receive(hang_up), None, slow())
    assert cancelled
    await anyio.sleep(0.1)  # the cancellation was taken back: this task is not cancelled


@pytest.mark.anyio
async def test_the_watch_waits_for_the_body_to_free_receive() -> None:
    """While the request body still owns receive(), the watch does not read it."""
    body_done = anyio.Event()
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def work() -> str:
        await anyio.sleep(WATCH_AFTER + 0.2)  # long enough for a watcher to have started
        return "done"

    assert await unless_gone(receive, body_done, work()) == "done"
    assert reads == 0


@pytest.mark.anyio
async def test_an_outside_cancellation_is_not_taken_for_a_disconnect() -> None:
    """Cancelling the request from outside (wait_for, a cancel scope) cancels it; no ClientGone."""

    async def slow() -> str:
        await anyio.sleep_forever()
        return "never"  # pragma: no cover

    try:
        asyncio.current_task()
    except RuntimeError:
        with anyio.move_on_after(0.2) as scope:
            await unless_gone(silent_receive(), None, slow())
        assert scope.cancelled_caught
        return
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(unless_gone(silent_receive(), None, slow()), 0.2)


@pytest.mark.anyio
async def test_results_and_errors_pass_through() -> None:
    """The awaited work's result comes back and its exception goes up unchanged."""

    async def ok() -> int:
        await anyio.sleep(0.1)
        return 7

    async def fails() -> int:
        await anyio.sleep(0.1)
        raise ValueError("boom")

    assert await unless_gone(silent_receive(), None, ok()) == 7
    with pytest.raises(ValueError, match="boom"):
        await unless_gone(silent_receive(), None, fails())


@pytest.mark.anyio
async def test_a_wait_longer_than_within_is_an_upstream_timeout() -> None:
    """A wait that outlasts *within* is cancelled as an upstream failure of kind timeout."""

    async def slow() -> str:
        await anyio.sleep_forever()
        return "never"  # pragma: no cover

    with anyio.fail_after(10), pytest.raises(UpstreamFailure) as caught:
        await unless_gone(silent_receive(), None, slow(), WATCH_AFTER + 0.2)
    assert caught.value.kind == "timeout"
    await anyio.sleep(0.1)  # the cancellation was taken back: this task is not cancelled


@pytest.mark.anyio
async def test_within_counts_from_the_end_of_the_body() -> None:
    """Time spent while the request body still streams does not count against *within*."""
    body_done = anyio.Event()
    within = WATCH_AFTER + 0.2

    async def work() -> str:
        await anyio.sleep(0.5)
        body_done.set()  # the body took 0.5 s, the answer then takes within - 0.2 s
        await anyio.sleep(within - 0.2)
        return "done"

    assert await unless_gone(silent_receive(), body_done, work(), within) == "done"
