"""Every program in examples/ runs to completion, and the README's demo command works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path) -> None:
    """The example exits 0 within a minute."""
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_simulated_demo_command(backend: str) -> None:
    """`python -m tenantlb demo --simulate` balances a burst, starves the broken backend and leaks nothing."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tenantlb",
            "demo",
            "--simulate",
            "--requests",
            "20",
            "--clients",
            "12",
            "--backend",
            backend,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "In flight after the burst: 0" in out
    # the instantly failing backend gets next to nothing (failure penalty, then ejection)
    [row] = [line for line in out.splitlines() if line.strip().startswith("http://broken.internal")]
    share = float(row.split()[2].rstrip("%"))
    assert share < 10.0, row
    assert "initech  Forbidden: 5" in out


def test_examples_exist() -> None:
    """There is at least one example program (the suite would silently test nothing otherwise)."""
    assert EXAMPLES
