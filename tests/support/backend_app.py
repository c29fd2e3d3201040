"""A small real ASGI backend for adapter and end-to-end tests, run by uvicorn in its own process.

Paths choose the behaviour, so one process serves every case:

- ``/`` and anything else: 200 with a JSON body naming this backend (``BACKEND_NAME`` env) and
  echoing the method, path, query and the request headers it saw.
- ``/status/{code}``: answers that status.
- ``/sleep/{seconds}``: waits, then 200.
- ``/hang``: never answers.
- ``/bytes/{n}``: streams *n* bytes of ``b"x"`` in 64 KiB chunks.
- ``/stall/{n}``: streams *n* bytes of ``b"x"``, then never sends the rest.
- ``/upload``: reads the whole body in chunks and answers its length and a SHA-256 of it.
- ``/hop``: 200 with hop-by-hop response headers (``Connection: x-hop-secret``, ``X-Hop-Secret``,
  ``Keep-Alive``, ``Proxy-Authenticate``) and an end-to-end ``X-End`` header, for proxy tests.
- ``/mode``: POST a body of ``ok`` / ``fail`` / ``hang`` to make every other path answer normally,
  with 503, or never (a backend that starts failing, then recovers).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import anyio

NAME = os.environ.get("BACKEND_NAME", "backend")
_state = {"mode": "ok"}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    parts = path.strip("/").split("/")
    if path == "/mode" and scope["method"] == "POST":
        body = await _read(receive)
        _state["mode"] = body.decode()
        await _respond(send, 200, {"mode": _state["mode"]})
        return
    if _state["mode"] == "fail":
        await _read(receive)
        await _respond(send, 503, {"backend": NAME, "error": "failing"})
        return
    if _state["mode"] == "hang" or parts[0] == "hang":
        await anyio.sleep_forever()
    if parts[0] == "status" and len(parts) == 2:
        await _read(receive)
        await _respond(send, int(parts[1]), {"backend": NAME})
        return
    if parts[0] == "sleep" and len(parts) == 2:
        await anyio.sleep(float(parts[1]))
    if parts[0] == "stall" and len(parts) == 2:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b"x" * int(parts[1]), "more_body": True})
        await anyio.sleep_forever()
    if parts[0] == "bytes" and len(parts) == 2:
        n = int(parts[1])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        chunk = b"x" * 65536
        while n > 0:
            piece = chunk[: min(n, len(chunk))]
            n -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": n > 0})
        return
    if parts[0] == "hop":
        await _read(receive)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", b"2"),
                    (b"connection", b"x-hop-secret"),
                    (b"x-hop-secret", b"1"),
                    (b"keep-alive", b"timeout=5"),
                    (b"proxy-authenticate", b"Basic"),
                    (b"x-end", b"1"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if parts[0] == "upload":
        digest = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            digest.update(body)
            if not message.get("more_body", False):
                break
        await _respond(send, 200, {"backend": NAME, "size": size, "sha256": digest.hexdigest()})
        return
    await _read(receive)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    await _respond(
        send,
        200,
        {
            "backend": NAME,
            "method": scope["method"],
            "path": path,
            "query": scope["query_string"].decode("latin-1"),
            "headers": headers,
        },
    )


async def _read(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
