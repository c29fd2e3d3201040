"""Run `gateway_app` in its own server process (uvicorn or hypercorn) and read its stats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.backends import free_port, wait_for_port

HERE = Path(__file__).resolve().parent


class GatewayProcess:
    """`ProxyApp` for *config* in a server process on a free loopback port."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        server: str = "uvicorn",
        proxy: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.server = server
        self.proxy = proxy or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(
            os.environ,
            TENANTLB_E2E_CONFIG=json.dumps(self.config),
            TENANTLB_E2E_PROXY=json.dumps(self.proxy),
        )
        if self.server == "uvicorn":
            argv = [
                sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(HERE),
                "gateway_app:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "warning", "--no-access-log", "--timeout-keep-alive", "75",
            ]  # fmt: skip
        else:
            argv = [
                sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{self.port}",
                "--log-level", "warning", "--keep-alive", "75", "gateway_app:create_app()",
            ]  # fmt: skip
        self.proc = subprocess.Popen(argv, env=env, cwd=HERE)
        wait_for_port(self.port, 30, self.proc)

    def stats(self) -> dict[str, Any]:
        response = httpx.get(self.url + "/__e2e/stats", timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> GatewayProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
