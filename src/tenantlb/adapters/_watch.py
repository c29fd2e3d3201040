"""`unless_gone`: await something, cancelled if the ASGI client disconnects (or a deadline passes).

ASGI servers do not cancel an app whose client hung up (uvicorn even drops what it is sent): the
app learns of it only from ``receive()`` returning ``http.disconnect``. So while `ProxyApp` waits
for an endpoint, someone has to wait on ``receive()`` too.

A task group per request did that, and cost a proxy more CPU than the upstream client's HTTP
parsing (anyio's cancel() alone formats a task repr). On asyncio the watcher is therefore started
lazily: one sweeper per event loop (one timer for all requests) starts it once the awaited work has
taken *WATCH_AFTER* seconds, so a request answered quickly (nearly all of them) pays for a dict
insert and delete, and a client that hangs up is still noticed within *WATCH_AFTER* seconds, at once
after that. It cancels the waiting task natively and takes its cancellation back
(``Task.uncancel``). Trio keeps a nursery (cheap there).

The same watcher can enforce a read deadline (*timeout*), so the aiohttp transport needs no timer
of its own per request either: the deadline only matters for waits that outlast *WATCH_AFTER*.
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

import anyio

from ._asgi import Receive
from ._body import ClientGone
from ._transport import UpstreamFailure

__all__ = ["WATCH_AFTER", "unless_gone"]

# How long awaited work may run before a watcher is started: short enough that a client that
# hangs up is let go of soon, long enough that requests to a saturated proxy (tens to hundreds of
# ms at 32 connections on a loaded machine) do not need one, which would add to the overload.
WATCH_AFTER: Final = 1.0

_T = TypeVar("_T")


async def unless_gone(
    receive: Receive,
    after: anyio.Event | None,
    call: Coroutine[Any, Any, _T],
    within: float | None = None,
) -> _T:
    """``await call``, cancelled if the client disconnects first (then `ClientGone`).

    Args:
        receive: The ASGI receive callable; the watcher reads it only after *after* is set
            (while a request body streams, its reader owns ``receive()`` and reports a
            disconnect itself).
        after: Set once ``receive()`` is free to watch, or None if it is free now.
        call: The work to run (a coroutine, awaited here).
        within: Seconds *call* may take once *after* is set (None: no limit). Enforced to
            within *WATCH_AFTER* (late, never early); give at least that much.

    Raises:
        ClientGone: The client disconnected before *call* finished.
        UpstreamFailure: *within* seconds passed (kind ``timeout``).
    """
    sweeper = _last
    loop = None if sweeper is None or sweeper.thread != threading.get_ident() else sweeper.loop()
    # The task of the loop this thread ran last, asked of that loop directly: a plain
    # current_task() calls get_running_loop(), a getpid() system call on CPython 3.11 (~1 us).
    # None when that loop is not the one running (it is not running at all then).
    host = None if loop is None else asyncio.current_task(loop)
    if host is None:
        try:
            host = asyncio.current_task()
        except RuntimeError:  # no asyncio loop running: trio
            host = None
        if host is None:
            return await _with_nursery(receive, after, call, within)
        loop = host.get_loop()
        if sweeper is None or sweeper.loop() is not loop:
            sweeper = _sweeper(loop)
    assert sweeper is not None
    assert loop is not None
    watch = _Watch(receive, after, host, within)
    sweeper.waits[watch] = watch.since = loop.time()
    if sweeper.timer is None:
        sweeper.timer = loop.call_later(WATCH_AFTER, sweeper.sweep, loop)
    try:
        result = await call
    except asyncio.CancelledError:
        # Ours unless someone else cancels this task too (then theirs goes on).
        why = watch.stop(sweeper)
        if why is not None and not host.cancelling():
            raise _why(why, within) from None
        raise
    except BaseException:
        watch.stop(sweeper)
        raise
    if watch.stop(sweeper) == _GONE:
        raise ClientGone  # call() swallowed our cancellation: the client is still gone
    return result


_GONE: Final = "gone"
_LATE: Final = "late"


def _why(why: str, timeout: float | None) -> Exception:
    if why == _GONE:
        return ClientGone()
    return UpstreamFailure(TimeoutError(f"no answer within {timeout:g} s"), kind="timeout")


class _Watch:
    """The lazily started asyncio watcher of one `unless_gone` call."""

    __slots__ = ("_after", "_host", "_receive", "_task", "_timeout", "_why", "since")

    def __init__(
        self,
        receive: Receive,
        after: anyio.Event | None,
        host: asyncio.Task[Any],
        timeout: float | None,
    ) -> None:
        self._receive = receive
        self._after = after
        self._host = host
        self._timeout = timeout
        self._why: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.since = 0.0  # set by the sweeper

    def start(self) -> None:
        self._task = self._host.get_loop().create_task(self._watch())

    async def _watch(self) -> None:
        timeout = self._timeout
        deadline = None
        after = self._after
        if after is not None and not after.is_set():
            await after.wait()
        if timeout is not None:
            # It counts from the end of the request body: from the start of the wait when
            # there is none, else from now (when the body ended is not known: never early,
            # at most WATCH_AFTER late).
            start = self.since if after is None else self._host.get_loop().time()
            deadline = start + timeout
        receive = self._receive
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break
        except TimeoutError:
            self._why = _LATE
        else:
            self._why = _GONE
        self._host.cancel()

    def stop(self, sweeper: _Sweeper) -> str | None:
        """Stop watching; returns why the wait was cancelled (its cancel taken back), or None."""
        task = self._task
        if task is None:
            sweeper.waits.pop(self, None)
        else:
            task.cancel()  # never resumes receive(): a message it waits for stays queued
            self._task = None
        if self._why is not None:
            self._host.uncancel()
        return self._why


class _Sweeper:
    """The waits of one event loop, oldest first; one timer starts the watchers of those due."""

    __slots__ = ("loop", "thread", "timer", "waits")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # weak: the loop is the key of `_sweepers`
        self.thread = threading.get_ident()  # made from a task of *loop*: the thread it runs in
        self.waits: dict[_Watch, float] = {}  # insertion order is start order
        self.timer: asyncio.TimerHandle | None = None

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the watchers of the waits that have lasted *WATCH_AFTER*; come back for the rest."""
        self.timer = None
        waits = self.waits
        due = loop.time() - WATCH_AFTER
        while waits:
            watch, since = next(iter(waits.items()))
            if since > due:
                self.timer = loop.call_at(since + WATCH_AFTER, self.sweep, loop)
                return
            del waits[watch]
            watch.start()


_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
    weakref.WeakKeyDictionary()
)
_sweepers_lock = threading.Lock()
_last: _Sweeper | None = None  # the one used last: a loop per process is the rule


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    global _last
    with _sweepers_lock:
        found = _sweepers.get(loop)
        if found is None:
            found = _sweepers[loop] = _Sweeper(loop)
    _last = found
    return found


async def _with_nursery(
    receive: Receive,
    after: anyio.Event | None,
    call: Coroutine[Any, Any, _T],
    within: float | None,
) -> _T:
    why: str | None = None
    done = False
    result: _T | None = None
    error: Exception | None = None

    async def watch(scope: anyio.CancelScope) -> None:
        nonlocal why
        if after is not None:
            await after.wait()
        with anyio.move_on_after(math.inf if within is None else within):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    why = _GONE
                    scope.cancel()
                    return
        why = _LATE
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, tg.cancel_scope)
        try:
            result = await call
            done = True
        except Exception as exc:  # re-raised outside the task group, not in a group
            error = exc
        tg.cancel_scope.cancel()
    if done:
        return result  # type: ignore[return-value]  # a disconnect now is seen when streaming
    if why is not None:
        raise _why(why, within)
    assert error is not None  # neither done nor cancelled by the watch: call() raised
    raise error
