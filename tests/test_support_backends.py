"""The shared real-backend helper: a uvicorn process that answers, dies on SIGKILL and comes back."""

from __future__ import annotations

import httpx
import pytest

from tests.support.backends import BackendProcess


def test_backend_process_serves_dies_and_returns() -> None:
    """A backend answers with its name, refuses connections after SIGKILL, and serves again."""
    with BackendProcess("b1") as backend:
        assert httpx.get(backend.url + "/x").json()["backend"] == "b1"
        assert httpx.get(backend.url + "/status/503").status_code == 503
        backend.kill()
        with pytest.raises(httpx.ConnectError):
            httpx.get(backend.url, timeout=2)
        backend.start()
        assert httpx.get(backend.url + "/bytes/100000").content == b"x" * 100000
