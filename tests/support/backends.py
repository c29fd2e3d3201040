"""Real backend processes: `backend_app` under uvicorn on a free loopback port, killable with SIGKILL.

```python
with BackendProcess("b1") as backend:      # started, and waited for until it accepts connections
    httpx.get(backend.url)
    backend.kill()                         # SIGKILL: connections reset, port closed
    backend.start()                        # back on the same port
```

`start_backends(n)` starts several at once; `ResetServer` is a real TCP server that reads a
request and then resets the connection (what a crashing upstream looks like to a client).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BackendProcess:
    """`backend_app` in its own uvicorn process (a real server, killed for real)."""

    def __init__(self, name: str = "backend", *, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, timeout: float = 15.0) -> None:
        """Start (or restart on the same port) and wait until the port accepts connections."""
        self.launch()
        assert self.proc is not None
        wait_for_port(self.port, timeout, self.proc)

    def launch(self) -> None:
        """Start the process without waiting for it to listen (`start` waits)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        env = dict(os.environ, BACKEND_NAME=self.name)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(HERE),
                "backend_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
                # longer than the clients' keep-alive: they close idle connections first (a
                # request sent as the server closes one is reset; see servers.KEEP_ALIVE)
                "--timeout-keep-alive",
                "75",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        """SIGKILL the process (no graceful shutdown) and reap it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> BackendProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until 127.0.0.1:*port* accepts a connection (or raise, naming the port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            msg = f"server process for port {port} exited with {proc.returncode}"
            raise RuntimeError(msg)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    msg = f"nothing listened on 127.0.0.1:{port} within {timeout} s"
    raise RuntimeError(msg)


@contextlib.contextmanager
def start_backends(*names: str, timeout: float = 15.0) -> Iterator[list[BackendProcess]]:
    """Start one backend per name in parallel, wait until all listen, and kill them all after."""
    backends = [BackendProcess(name) for name in names]
    try:
        for backend in backends:
            backend.launch()
        for backend in backends:
            assert backend.proc is not None
            wait_for_port(backend.port, timeout, backend.proc)
        yield backends
    finally:
        for backend in backends:
            backend.kill()


class LoopbackServer:
    """A real TCP server on a free loopback port; each accepted connection is handed to
    `_handle` in a thread of its own (subclasses say what to do with it). `connections` counts
    the connections accepted."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the server thread
        self.sock.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ResetServer(LoopbackServer):
    """A real TCP server on loopback that reads each request's head, then resets the connection.

    To a client this is an upstream that crashed after the request was sent: no response, a
    connection reset (RST). With *reply*, it first sends those bytes (e.g. a response head that
    promises a body it never sends), so the client sees the crash in the middle of a response.
    `requests` counts the request heads it read.
    """

    def __init__(self, reply: bytes = b"") -> None:
        self.reply = reply
        self.requests = 0
        super().__init__()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
            except OSError:
                return
            with self._lock:
                self.requests += 1
            if self.reply:
                with contextlib.suppress(OSError):
                    conn.sendall(self.reply)
                    time.sleep(0.05)  # let the client read the head before the reset
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request a `ScriptedServer` read: its head and its whole body (chunked decoded)."""

    method: bytes
    target: bytes
    headers: dict[bytes, bytes]
    body: bytes
    on_connection: int  # 0 for the first request on its connection, 1 for the next...


class ScriptedServer(LoopbackServer):
    """A raw HTTP/1.1 server on loopback whose *script* decides each answer.

    ``script(seen)`` returns the bytes to answer with (the connection stays open for the next
    request) or None to reset the connection (RST) after the whole request was read: an upstream
    that crashed after it got (and maybe acted on) the request. `seen` lists every request read.
    With *closing*, the server closes each connection (FIN) after its first answer; with *tls*
    (a server-side `ssl.SSLContext`) it speaks HTTPS.
    """

    def __init__(
        self,
        script: Callable[[Seen], bytes | None],
        *,
        closing: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.script = script
        self.closing = closing
        self.tls = tls
        self.seen: list[Seen] = []
        super().__init__()

    def _handle(self, conn: socket.socket) -> None:
        if self.tls is not None:
            conn.settimeout(10)
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:  # ssl.SSLError: the client refused our certificate
                conn.close()
                return
        with conn:
            conn.settimeout(10)
            buffer = bytearray()

            def read_until(marker: bytes) -> bytes:
                while marker not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise EOFError
                    buffer.extend(chunk)
                end = buffer.index(marker) + len(marker)
                out = bytes(buffer[:end])
                del buffer[:end]
                return out

            def read_exactly(n: int) -> bytes:
                while len(buffer) < n:
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise EOFError
                    buffer.extend(chunk)
                out = bytes(buffer[:n])
                del buffer[:n]
                return out

            index = 0
            try:
                while True:
                    head = read_until(b"\r\n\r\n").split(b"\r\n")
                    method, target, _ = head[0].split(b" ", 2)
                    headers = {}
                    for line in head[1:]:
                        if line:
                            name, _, value = line.partition(b":")
                            headers[name.strip().lower()] = value.strip()
                    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                        body = b""
                        while True:
                            size = int(read_until(b"\r\n").strip().split(b";")[0], 16)
                            if size == 0:
                                read_until(b"\r\n")
                                break
                            body += read_exactly(size)
                            read_exactly(2)
                    else:
                        body = read_exactly(int(headers.get(b"content-length", b"0")))
                    seen = Seen(
                        method=method,
                        target=target,
                        headers=headers,
                        body=body,
                        on_connection=index,
                    )
                    with self._lock:
                        self.seen.append(seen)
                    index += 1
                    reply = self.script(seen)
                    if reply is None:
                        # SO_LINGER with a zero timeout: close() sends RST instead of FIN
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        return
                    conn.sendall(reply)
                    if self.closing:
                        return
            except (OSError, EOFError, ValueError):
                return
