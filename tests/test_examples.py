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


def test_live_demo_command() -> None:
    """`python -m tenantlb demo --duration 5` serves real traffic and prints real per-endpoint figures."""
    result = subprocess.run(
        [sys.executable, "-m", "tenantlb", "demo", "--duration", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "In flight at the end: 0" in out
    assert "Traceback" not in result.stderr
    summary = out[out.index("real HTTP requests") :]
    rows = {line.split()[0]: line.split() for line in summary.splitlines() if line.startswith("  ")}
    for name in ("fast-1", "fast-2", "slow", "flaky", "phoenix", "private"):
        assert name in rows, summary
    assert float(rows["private"][3].rstrip("%")) > 0.0  # initech's private pool served traffic
    assert int(rows["acme"][1]) > 0  # acme's requests were admitted and answered


def test_live_demo_rejects_bad_arguments() -> None:
    """Bad demo arguments are a usage error, not a traceback."""
    for args in (["--duration", "0"], ["--strategy", "nope"], ["--tenants", "4"]):
        result = subprocess.run(
            [sys.executable, "-m", "tenantlb", "demo", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
