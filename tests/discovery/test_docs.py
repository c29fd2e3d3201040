"""The service-discovery guide's Python examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "service-discovery.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.S | re.M)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_guide_example_runs(code: str) -> None:
    """The example exits 0."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_guide_has_examples() -> None:
    """The guide's examples were found (DNS, SRV, file, own source)."""
    assert len(BLOCKS) == 4
    assert "class ConsulSource" in BLOCKS[3]
