"""Every ```python block in README.md and docs/ is valid Python that runs as pasted.

A page's blocks run in order in one fresh interpreter and share one namespace, as a reader who
pastes them one after another would run them. Pages that need a service get it from a fixture
through the environment (``REDIS_URL``), never from a hard-coded port.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RedisServer

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)

RUNNER = r"""
import sys, traceback
blocks = eval(sys.stdin.read())
namespace = {"__name__": "__main__"}
for line, source in blocks:
    try:
        exec(compile(source, f"{sys.argv[1]}:{line}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"block at line {line} failed", file=sys.stderr)
        sys.exit(1)
"""


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The page's python blocks as (first line number, source) pairs."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p)]


def test_pages_have_code() -> None:
    """The collector finds the README's and the docs' python blocks (it is not silently empty)."""
    assert ROOT / "README.md" in PAGES_WITH_CODE
    assert len(PAGES_WITH_CODE) >= 5


@pytest.mark.parametrize(
    "page", PAGES_WITH_CODE, ids=[str(p.relative_to(ROOT)) for p in PAGES_WITH_CODE]
)
def test_python_blocks_run(page: Path, redis_server: RedisServer) -> None:
    """Each block compiles (no top-level await) and the page runs to completion."""
    redis_server.start()
    redis_server.flush()
    blocks = python_blocks(page)
    env = dict(os.environ, REDIS_URL=redis_server.url)
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(page.relative_to(ROOT))],
        input=repr(blocks),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
