"""Real servers on loopback, run in a background thread of the test process.

```python
with serve(app, "uvicorn") as url:          # or "hypercorn-asyncio", "hypercorn-trio", "aiohttp"
    httpx.get(url + "/path")
```

The app runs in the test process, so a test can look at the gateway it uses (in-flight counts,
slots) after the requests; the server is stopped (gracefully) when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from .backends import free_port

SERVERS = ("uvicorn", "hypercorn-asyncio", "hypercorn-trio")
KEEP_ALIVE = 75  # seconds a server keeps an idle client connection (nginx's default)


@contextlib.contextmanager
def serve(
    app: Any, server: str = "uvicorn", *, port: int | None = None, lifespan: bool = True
) -> Iterator[str]:
    """Run *app* (ASGI, or an aiohttp ``web.Application`` for ``"aiohttp"``) on a free port;
    ``lifespan=False`` (uvicorn only) sends the app no lifespan events, as ``--lifespan off``."""
    if server not in (*SERVERS, "aiohttp"):
        raise ValueError(f"unknown server {server!r}")
    if not lifespan and server != "uvicorn":
        raise ValueError("lifespan=False is for uvicorn only")
    # A port free_port() returned can be taken by another test's server before ours binds it:
    # then our server thread dies at startup, and we try again on another port.
    for attempt in range(3):
        chosen = port or free_port()
        stop = threading.Event()
        errors: list[BaseException] = []
        thread = _start(app, server, chosen, stop, errors, lifespan)
        if _listening(chosen, thread):
            break
        stop.set()
        thread.join(timeout=15)
        if port is not None or attempt == 2:
            raise errors[0] if errors else RuntimeError(f"{server} did not listen on {chosen}")
    try:
        yield f"http://127.0.0.1:{chosen}"
    finally:
        stop.set()
        thread.join(timeout=15)
    if errors:
        raise errors[0]


def _start(
    app: Any,
    server: str,
    port: int,
    stop: threading.Event,
    errors: list[BaseException],
    lifespan: bool = True,
) -> threading.Thread:
    if server == "uvicorn":
        target = _uvicorn(app, port, stop, lifespan)
    elif server == "hypercorn-asyncio":
        target = _hypercorn_asyncio(app, port, stop)
    elif server == "hypercorn-trio":
        target = _hypercorn_trio(app, port, stop)
    else:
        target = _aiohttp(app, port, stop)

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # surfaced to the test by serve()
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"{server}:{port}", daemon=True)
    thread.start()
    return thread


def _listening(port: int, thread: threading.Thread, timeout: float = 15.0) -> bool:
    """True once 127.0.0.1:*port* accepts while *thread* (our server) is still running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and thread.is_alive():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return thread.is_alive()
        except OSError:
            time.sleep(0.02)
    return False


def _uvicorn(app: Any, port: int, stop: threading.Event, lifespan: bool = True) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on" if lifespan else "off",
        proxy_headers=False,
        # Longer than any test client's keep-alive (httpx: 5 s), so the client always closes an
        # idle connection first. With both at 5 s, a request sent on a connection the server is
        # closing at that moment fails with ReadError (httpcore reuses the first idle
        # connection, so the last ones of a pool idle the longest).
        timeout_keep_alive=KEEP_ALIVE,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.ensure_future(server.serve())
        # a threading.Event set by the test thread: polled, it cannot be awaited
        while not stop.is_set() and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        server.should_exit = True
        await task

    return lambda: asyncio.run(main())


def _hypercorn_config(port: int) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = KEEP_ALIVE  # see _uvicorn
    return config


def _hypercorn_asyncio(app: Any, port: int, stop: threading.Event) -> Any:
    from hypercorn.asyncio import serve as hyper_serve

    async def trigger() -> None:
        # a threading.Event set by the test thread: polled, it cannot be awaited
        while not stop.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def main() -> None:
        await hyper_serve(app, _hypercorn_config(port), shutdown_trigger=trigger)

    return lambda: asyncio.run(main())


def _hypercorn_trio(app: Any, port: int, stop: threading.Event) -> Any:
    import trio
    from hypercorn.trio import serve as hyper_serve

    async def trigger() -> None:
        # a threading.Event set by the test thread: polled, it cannot be awaited
        while not stop.is_set():  # noqa: ASYNC110
            await trio.sleep(0.02)

    async def main() -> None:
        await hyper_serve(app, _hypercorn_config(port), shutdown_trigger=trigger)

    return lambda: trio.run(main)


def _aiohttp(app: Any, port: int, stop: threading.Event) -> Any:
    from aiohttp import web

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        try:
            # a threading.Event set by the test thread: polled, it cannot be awaited
            while not stop.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        finally:
            await runner.cleanup()

    return lambda: asyncio.run(main())
