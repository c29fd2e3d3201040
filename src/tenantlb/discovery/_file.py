"""`FileDiscovery`: a pool that follows an endpoints file (TOML or JSON), reloaded when it changes.

The file is re-read on every round and compared by content hash, so every change is seen (an
mtime can stay the same across two quick writes); an unchanged file is not parsed again. Write it
atomically (to a temporary file, then rename over it); a reader that still catches it half-written
refuses it as invalid and keeps the previous endpoints until the next round.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, final

import anyio.to_thread

from .._clock import Clock, default_clock
from .._errors import DiscoveryError
from .._events import EventHandler
from .._validate import FieldTypeError, FieldValueError
from ..balancing import Endpoint, Pool
from ._runner import Discovery
from ._source import DiscoveryResult

__all__ = ["FileDiscovery", "parse_endpoints"]

Format = Literal["toml", "json"]

_ENDPOINT_KEYS = frozenset({"url", "weight", "zone", "metadata"})


@final
class FileDiscovery(Discovery):
    """Keep a pool in step with an endpoints file, TOML or JSON.

    ```toml
    # endpoints.toml
    endpoints = [
        "http://10.0.0.1:8000",
        { url = "http://10.0.0.2:8000", weight = 2, zone = "eu-west-1a" },
    ]
    ```

    JSON takes the same shape (``{"endpoints": [...]}``) or a bare list. The file is re-read every
    ``interval`` seconds; a changed file is applied with `Pool.update` (kept endpoints keep their
    stats). A file that is missing, unreadable, half-written or invalid (bad syntax, a bad URL or
    weight, an unknown key) is refused: the pool keeps its endpoints, and the problem is logged
    once until the file changes for the better. ``endpoints = []`` empties the pool only with
    ``allow_empty=True``. See `Discovery` for the schedule and safety rules.

    Args:
        pool: The `Pool` to keep up to date.
        path: The file; its suffix picks the format unless *format* is given.
        format: ``"toml"`` or ``"json"``; default from the suffix (``.toml``, ``.json``).
        interval: Seconds between reads (> 0).
        min_interval: Lower bound for retry delays; see `Discovery`.
        jitter: Random seconds added to each delay; see `Discovery`.
        timeout: Seconds one read may take (> 0).
        allow_empty: Apply an empty list (empty the pool); default False keeps the last set.
        clock: Seconds as a float, for the timestamps in `stats`.
        rng: Source of jitter.
        on_event: A handler for ``discovery_failed`` / ``discovery_recovered`` events.

    Raises:
        TypeError: *path* is not a str or path, or another argument has the wrong type.
        ValueError: An unknown format or suffix, or a bad interval.
    """

    def __init__(
        self,
        pool: Pool,
        path: str | os.PathLike[str],
        *,
        format: Format | None = None,
        interval: float = 5.0,
        min_interval: float | None = None,
        jitter: float | None = None,
        timeout: float = 5.0,
        allow_empty: bool = False,
        clock: Clock = default_clock,
        rng: random.Random | None = None,
        on_event: EventHandler | None = None,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or isinstance(path, bytes):
            msg = f"path must be a str or os.PathLike, got {type(path).__name__}"
            raise FieldTypeError(msg, field="path")
        file = Path(path)
        if format is None:
            suffix = file.suffix.lower()
            if suffix not in (".toml", ".json"):
                msg = f"path must end in .toml or .json (or pass format=), got {str(path)!r}"
                raise FieldValueError(msg, field="path")
            format = "toml" if suffix == ".toml" else "json"
        elif format not in ("toml", "json"):
            msg = f"format must be 'toml' or 'json', got {format!r}"
            raise FieldValueError(msg, field="format")
        super().__init__(
            pool,
            _FileSource(file, format),
            interval=interval,
            min_interval=min_interval,
            jitter=jitter,
            timeout=timeout,
            allow_empty=allow_empty,
            clock=clock,
            rng=rng,
            on_event=on_event,
        )


class _FileSource:
    """Reads, hashes and parses the file; remembers the last verdict per content hash."""

    def __init__(self, path: Path, format: Format) -> None:
        self.path = path
        self.format: Format = format
        self._digest: bytes | None = None
        self._result: DiscoveryResult | None = None
        self._error: str | None = None

    def __repr__(self) -> str:
        return f"file {str(self.path)!r}"

    async def resolve(self) -> DiscoveryResult:
        """The file's endpoints; raises `DiscoveryError` for a missing or invalid file."""
        await anyio.to_thread.run_sync(self._load)
        if self._error is not None:
            raise DiscoveryError(self._error)
        assert self._result is not None
        return self._result

    def _load(self) -> None:
        # In a worker thread: reading (and parsing a large file) must not block the event loop.
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            self._digest = None
            self._error = f"cannot read the file: {exc.strerror or exc}"
            return
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest == self._digest:
            return  # unchanged: same verdict as last time
        self._digest = digest
        try:
            endpoints = parse_endpoints(data, self.format)
        except ValueError as exc:
            self._result, self._error = None, f"file refused: {exc}"
        else:
            self._result, self._error = DiscoveryResult(endpoints), None


def parse_endpoints(data: bytes, format: Format) -> tuple[Endpoint, ...]:
    """Parse an endpoints document; every problem is a `ValueError` naming where it is.

    Raises:
        ValueError: Invalid syntax or encoding, or a document not of the expected shape.
    """
    try:
        text = data.decode("utf-8")
        document: object = tomllib.loads(text) if format == "toml" else json.loads(text)
    except UnicodeDecodeError as exc:
        msg = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ValueError(msg) from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        msg = f"invalid {format.upper()}: {exc}"
        raise ValueError(msg) from None
    if isinstance(document, Mapping):
        unknown = sorted(set(document) - {"endpoints"})
        if unknown:
            msg = f"unknown key {unknown[0]!r} (expected only 'endpoints')"
            raise ValueError(msg)
        if "endpoints" not in document:
            msg = "missing 'endpoints' (a list of URLs or tables with url/weight/zone/metadata)"
            raise ValueError(msg)
        items = document["endpoints"]
    else:
        items = document
    if not isinstance(items, list):
        msg = f"endpoints must be a list, got {type(items).__name__}"
        raise ValueError(msg)
    endpoints: list[Endpoint] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"endpoints[{i}]"
        endpoint = _endpoint(where, item)
        if endpoint.url in seen:
            msg = f"{where}: duplicate endpoint {endpoint.url!r}"
            raise ValueError(msg)
        seen.add(endpoint.url)
        endpoints.append(endpoint)
    return tuple(endpoints)


def _endpoint(where: str, item: object) -> Endpoint:
    try:
        if isinstance(item, str):
            return Endpoint(item)
        if not isinstance(item, Mapping):
            msg = f"must be a URL string or a table with 'url', got {type(item).__name__}"
            raise TypeError(msg)
        unknown = sorted(set(item) - _ENDPOINT_KEYS)
        if unknown:
            msg = f"unknown key {unknown[0]!r} (expected url, weight, zone, metadata)"
            raise ValueError(msg)
        if "url" not in item:
            msg = "missing 'url'"
            raise ValueError(msg)
        zone = item.get("zone")
        if zone is not None and not isinstance(zone, str):
            msg = f"zone must be a string, got {type(zone).__name__}"
            raise TypeError(msg)
        metadata = item.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            msg = "metadata must be a table of strings"
            raise TypeError(msg)
        return Endpoint(item["url"], weight=item.get("weight", 1.0), zone=zone, metadata=metadata)
    except (TypeError, ValueError) as exc:
        msg = f"{where}: {exc}"
        raise ValueError(msg) from None
