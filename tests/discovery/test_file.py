"""FileDiscovery with real files: changes applied, invalid and half-written files refused."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import anyio
import pytest

import tenantlb as tlb
from tenantlb.testing import ManualClock

pytestmark = pytest.mark.anyio

TWO = """\
endpoints = [
    "http://10.0.0.1:8000",
    { url = "http://10.0.0.2:8000", weight = 2, zone = "eu-1a", metadata = { rack = "r1" } },
]
"""
THREE = TWO.replace("]\n", '    "http://10.0.0.3:8000",\n]\n')


def write(path: Path, text: str) -> None:
    """Atomic write, as the docs ask: a temporary file renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def urls(pool: tlb.Pool) -> set[str]:
    return {e.url for e in pool.endpoints}


async def test_follows_the_file(tmp_path: Path, clock: ManualClock) -> None:
    """Each change to the file is applied; kept endpoints keep their stats."""
    path = tmp_path / "endpoints.toml"
    write(path, TWO)
    pool = tlb.Pool([], clock=clock)
    found = tlb.FileDiscovery(pool, path, interval=3600.0)
    stats = await found.refresh()
    assert stats.last_outcome == "updated"
    assert urls(pool) == {"http://10.0.0.1:8000", "http://10.0.0.2:8000"}
    second = pool.state("http://10.0.0.2:8000")
    assert second.endpoint.weight == 2
    assert second.endpoint.zone == "eu-1a"
    assert second.endpoint.metadata == {"rack": "r1"}
    with pool.acquire(exclude=["http://10.0.0.1:8000"]) as lease:
        lease.record(status=200)

    assert (await found.refresh()).last_outcome == "unchanged"
    write(path, THREE)
    assert (await found.refresh()).last_outcome == "updated"
    assert len(pool) == 3
    assert pool.state("http://10.0.0.2:8000") is second
    assert second.requests == 1

    write(path, 'endpoints = ["http://10.0.0.3:8000"]\n')
    await found.refresh()
    assert urls(pool) == {"http://10.0.0.3:8000"}


async def test_json_file(tmp_path: Path) -> None:
    """JSON takes the same shape, or a bare list."""
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"endpoints": ["http://a:1", {"url": "http://b:2", "weight": 3}]}))
    pool = tlb.Pool([])
    found = tlb.FileDiscovery(pool, path)
    await found.refresh()
    assert {e.url: e.weight for e in pool.endpoints} == {"http://a:1": 1.0, "http://b:2": 3.0}
    write(path, json.dumps(["http://c:3"]))
    await found.refresh()
    assert urls(pool) == {"http://c:3"}


async def test_format_override(tmp_path: Path) -> None:
    """format= reads a file whose suffix says nothing."""
    path = tmp_path / "endpoints.conf"
    path.write_text('endpoints = ["http://a:1"]')
    pool = tlb.Pool([])
    await tlb.FileDiscovery(pool, str(path), format="toml").refresh()
    assert urls(pool) == {"http://a:1"}


async def test_half_written_file_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A truncated (half-written) file is refused with one logged error; the old list stays."""
    path = tmp_path / "endpoints.toml"
    write(path, TWO)
    pool = tlb.Pool([])
    found = tlb.FileDiscovery(pool, path)
    await found.refresh()
    caplog.set_level(logging.INFO, logger="tenantlb.discovery")

    path.write_text(THREE[: len(THREE) // 2])  # a writer caught mid-way
    for _ in range(3):
        stats = await found.refresh()
    assert stats.last_outcome == "failed"
    assert stats.last_error is not None
    assert "invalid TOML" in stats.last_error
    assert urls(pool) == {"http://10.0.0.1:8000", "http://10.0.0.2:8000"}
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1
    assert "endpoints.toml" in errors[0].getMessage()

    path.write_text(THREE)  # the writer finished
    stats = await found.refresh()
    assert stats.last_outcome == "updated"
    assert len(pool) == 3
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.INFO]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing 'endpoints'"),
        ("endpoints = 'http://a:1'", "endpoints must be a list"),
        ("endpoint = ['http://a:1']", "unknown key 'endpoint'"),
        ('endpoints = ["http://a:1", "not-a-url"]', "endpoints[1]: endpoint url must look like"),
        ('endpoints = [{ url = "http://a:1", weight = -1 }]', "endpoints[0]: weight must be > 0"),
        ('endpoints = [{ url = "http://a:1", wieght = 2 }]', "endpoints[0]: unknown key 'wieght'"),
        ("endpoints = [{ weight = 2 }]", "endpoints[0]: missing 'url'"),
        ("endpoints = [3]", "endpoints[0]: must be a URL string"),
        ('endpoints = ["http://a:1", "HTTP://A:1/"]', "endpoints[1]: duplicate endpoint"),
        ('endpoints = [{ url = "http://a:1", zone = 5 }]', "endpoints[0]: zone must be a string"),
        (
            'endpoints = [{ url = "http://a:1", metadata = { n = 1 } }]',
            "endpoints[0]: metadata must be a table of strings",
        ),
        ('endpoints = ["http://user:secret@a:1"]', "endpoints[0]: endpoint url must not contain"),
    ],
)
async def test_invalid_file_refused(tmp_path: Path, text: str, message: str) -> None:
    """An invalid file is refused with a message saying where; the previous list is kept."""
    path = tmp_path / "endpoints.toml"
    write(path, TWO)
    pool = tlb.Pool([])
    found = tlb.FileDiscovery(pool, path)
    await found.refresh()
    write(path, text)
    stats = await found.refresh()
    assert stats.last_outcome == "failed"
    assert stats.last_error is not None
    assert message in stats.last_error
    assert "secret" not in stats.last_error
    assert urls(pool) == {"http://10.0.0.1:8000", "http://10.0.0.2:8000"}


async def test_invalid_bytes_refused(tmp_path: Path) -> None:
    """A file that is not UTF-8 is refused, not a crash."""
    path = tmp_path / "endpoints.json"
    path.write_bytes(b'["http://a:1"]\xff')
    stats = await tlb.FileDiscovery(tlb.Pool(["http://z:1"]), path).refresh()
    assert stats.last_error is not None
    assert "not UTF-8" in stats.last_error


async def test_missing_file_keeps_pool(tmp_path: Path) -> None:
    """A missing file is a failure: the pool keeps what it has."""
    pool = tlb.Pool(["http://10.0.0.9:8000"])
    found = tlb.FileDiscovery(pool, tmp_path / "nope.toml")
    stats = await found.refresh()
    assert stats.last_outcome == "failed"
    assert stats.last_error is not None
    assert "cannot read the file" in stats.last_error
    assert urls(pool) == {"http://10.0.0.9:8000"}
    write(tmp_path / "nope.toml", TWO)
    assert (await found.refresh()).last_outcome == "updated"


async def test_empty_list_needs_allow_empty(tmp_path: Path) -> None:
    """``endpoints = []`` empties the pool only with allow_empty=True."""
    path = tmp_path / "endpoints.toml"
    write(path, "endpoints = []\n")
    pool = tlb.Pool(["http://10.0.0.9:8000"])
    stats = await tlb.FileDiscovery(pool, path).refresh()
    assert stats.last_outcome == "empty"
    assert len(pool) == 1
    stats = await tlb.FileDiscovery(pool, path, allow_empty=True).refresh()
    assert stats.last_outcome == "updated"
    assert len(pool) == 0


async def test_background_task_reloads(tmp_path: Path) -> None:
    """Inside ``async with`` a rewritten file reaches the pool by itself."""
    path = tmp_path / "endpoints.toml"
    write(path, TWO)
    pool = tlb.Pool([])
    added = anyio.Event()
    pool.subscribe(lambda e: added.set() if e.url == "http://10.0.0.3:8000" else None)
    async with tlb.FileDiscovery(pool, path, interval=0.02, min_interval=0.02):
        assert len(pool) == 2
        write(path, THREE)
        with anyio.fail_after(20):  # a liveness bound, not a timing assertion
            await added.wait()
        assert len(pool) == 3


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((b"endpoints.toml",), {}, TypeError, "path must be a str or os.PathLike"),
        (("endpoints.yaml",), {}, ValueError, "path must end in .toml or .json"),
        (("endpoints.toml",), {"format": "yaml"}, ValueError, "format must be 'toml' or 'json'"),
        (("endpoints.toml",), {"interval": 0}, ValueError, "interval must be > 0"),
        (("endpoints.toml",), {"allow_empty": "yes"}, TypeError, "allow_empty must be a bool"),
    ],
)
def test_bad_input(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """Bad arguments raise a typed error that names the argument."""
    with pytest.raises(error, match=match):
        tlb.FileDiscovery(tlb.Pool([]), *args, **kwargs)  # type: ignore[arg-type]
