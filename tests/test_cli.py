"""The command line: help without markup, clear errors instead of tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tenantlb.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenantlb", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_help_has_no_rest_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """--help of the program and of each command is plain text, and demo has a description."""
    for argv in (["--help"], ["demo", "--help"], ["check", "--help"], ["hash-key", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "``" not in out, out
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "backends" in capsys.readouterr().out


def test_check_reports_a_missing_file() -> None:
    """check names a missing file as such, with no traceback."""
    result = run("check", "no-such-gateway.toml")
    assert result.returncode == 2
    assert "no-such-gateway.toml: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_accepts_the_example() -> None:
    """check validates examples/gateway.toml."""
    result = run("check", "examples/gateway.toml")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_hash_key_refuses_multi_line_input() -> None:
    """hash-key refuses two lines instead of hashing the first, and never echoes a key."""
    result = run("hash-key", stdin="sk-first-key-000\nsk-second-key-00\n")
    assert result.returncode == 2
    assert "exactly one key" in result.stderr
    assert "sk-first" not in result.stderr + result.stdout


def test_hash_key_hashes_one_line() -> None:
    """hash-key prints the digest of the one key on stdin."""
    result = run("hash-key", stdin="sk-acme-0123456789abcdef\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "sha256:63bf42112005427c6410f33d4a8dc52b7ec7102d23b59f606225da1989b16f5a"
    )
