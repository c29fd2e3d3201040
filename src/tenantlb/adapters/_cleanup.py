"""Cleanup that must finish even when the task running it is being cancelled.

``anyio.CancelScope(shield=True)`` protects against anyio and trio cancellation, but on asyncio a
plain ``task.cancel()`` (``asyncio.wait_for``, a server cancelling its handler) still interrupts the
next ``await`` inside the shield. `finish` therefore runs the cleanup in a task of its own on
asyncio, waits for it through every cancellation, and re-raises the cancellation afterwards; on
trio a shielded cancel scope is enough.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ..gateway import Admission

__all__ = ["finish", "leave"]


async def finish(cleanup: Callable[[], Awaitable[object]]) -> None:
    """Run ``await cleanup()`` to completion whatever cancellation arrives meanwhile."""
    try:
        asyncio.current_task()
    except RuntimeError:  # no asyncio loop running: trio
        with anyio.CancelScope(shield=True):
            await cleanup()
        return

    async def run() -> None:
        await cleanup()

    task = asyncio.ensure_future(run())
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done() and task.cancelled():
                break
            cancelled = True  # ours, not the cleanup's: keep waiting, re-raise afterwards
    if not task.cancelled():
        task.result()  # the cleanup's own exception, if any
    if cancelled:
        raise asyncio.CancelledError


async def leave(admission: Admission, failure: BaseException | None, *, sync: bool) -> None:
    """Leave *admission* (``__aexit__`` with *failure*, or None when the request completed)
    whatever cancellation arrives meanwhile; see `finish`. With *sync* (an in-process store)
    leaving never suspends, so nothing can interrupt it and no cleanup task is needed."""
    kind = None if failure is None else type(failure)
    if sync:
        await admission.__aexit__(kind, failure, None)
    else:
        await finish(lambda: admission.__aexit__(kind, failure, None))
