"""docs/how-to/extend.md: its Python examples run, and its TOML config names the custom balancer."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "how-to" / "extend.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.M | re.S)


def test_examples_run_and_the_toml_config_builds_the_custom_balancer(tmp_path: Path) -> None:
    """The page's Python blocks run in order in a fresh interpreter; its TOML loads afterwards."""
    python = blocks("python")
    [toml] = blocks("toml")
    assert len(python) >= 3
    config = tmp_path / "gateway.toml"
    config.write_text(toml, encoding="utf-8")
    check = textwrap.dedent(
        f"""
        gateway = tlb.load_config({str(config)!r})
        balancer = gateway.pools["shared"].balancer
        assert type(balancer).__name__ == "Failover", balancer
        with gateway.pools["shared"].acquire() as lease:
            assert lease.url == "http://primary:8000"
            lease.release()
        print("ok")
        """
    )
    script = "\n\n".join([*python, check])
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
