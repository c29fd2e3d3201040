"""Config documents that used to escape as raw exceptions or echo secrets (issue 12's review)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tenantlb as tlb
from tenantlb._redact import redact

POOL = {"p": {"endpoints": ["http://a:1"]}}


def doc(**parts: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"pools": POOL, "tenants": [{"id": "t", "upstream": "p"}]}
    base.update(parts)
    return base


@pytest.mark.parametrize(
    ("limits", "path", "needle"),
    [
        ([{"limit": 1e-10, "per": 1e300}], "tenants[0].limits[0].limit", "between 1e-12"),
        ([{"limit": 10**400}], "tenants[0].limits[0].limit", "401 digits"),
        ([{"limit": 1e300, "per": 1e-300}], "tenants[0].limits[0].limit", "between 1e-12"),
    ],
)
def test_absurd_rates_are_config_errors(limits: list[Any], path: str, needle: str) -> None:
    """Rates whose numbers overflow are a ConfigError at their path, not an OverflowError."""
    config = doc(tenants=[{"id": "t", "upstream": "p", "limits": limits}])
    with pytest.raises(tlb.ConfigError) as info:
        tlb.Gateway.from_config(config)
    assert info.value.path == path
    assert needle in str(info.value)


def test_rate_overflow_is_a_value_error() -> None:
    """Rate(10**400) and a rate of 1e-10 per 1e300 s raise ValueError, as documented."""
    with pytest.raises(ValueError, match="401 digits"):
        tlb.Rate(10**400)
    with pytest.raises(ValueError, match="units a second"):
        tlb.Rate(1e-10, per=1e300)


def test_bad_redis_port_is_a_config_error() -> None:
    """A Redis URL with a port that is not a number is reported at gateway.store."""
    config = doc(gateway={"store": {"type": "redis", "url": "redis://:notaport"}})
    with pytest.raises(tlb.ConfigError) as info:
        tlb.Gateway.from_config(config)
    assert info.value.path == "gateway.store"


def test_every_problem_is_listed_with_an_unknown_upstream() -> None:
    """An unknown upstream is reported even when another pool has an error too."""
    config = {
        "pools": {"p": {"endpoints": ["http://a:1"]}, "q": {"endpoints": ["bad"]}},
        "tenants": [{"id": "t", "upstream": "nope"}],
    }
    with pytest.raises(tlb.ConfigError) as info:
        tlb.Gateway.from_config(config)
    paths = [p for p, _ in info.value.errors]
    assert "pools.q.endpoints[0]" in paths
    assert "tenants[0].upstream" in paths


def test_a_pool_without_endpoints_is_refused() -> None:
    """`endpoints = []` is a mistake a config check must catch."""
    with pytest.raises(tlb.ConfigError, match="at least one endpoint") as info:
        tlb.Gateway.from_config({"pools": {"p": {"endpoints": []}}})
    assert info.value.path == "pools.p.endpoints"


@pytest.mark.parametrize(
    "config",
    [
        doc(gateway={"store": "redis://:hunter2@localhost:6379"}),
        doc(gateway={"store": {"type": "redis", "url": "redis//:hunter2@localhost:6379"}}),
        doc(gateway={"store": {"type": "redis", "url": "redis://u:hunter2@h:notaport"}}),
        {"pools": {"p": {"endpoints": ["http://a:1/x?token=hunter2"]}}},
        {"pools": {"p": {"endpoints": ["not a url ?token=hunter2"]}}},
        {"pools": {"p": {"endpoints": ["ftp://user:hunter2@a:1"]}}},
    ],
)
def test_config_errors_never_echo_credentials(config: dict[str, Any]) -> None:
    """Passwords in URLs and query-string tokens are redacted in every ConfigError."""
    with pytest.raises(tlb.ConfigError) as info:
        tlb.Gateway.from_config(config)
    text = str(info.value) + repr(info.value.errors)
    assert "hunter2" not in text, text


def test_endpoint_errors_never_echo_tokens() -> None:
    """An endpoint URL error outside config redacts its query too."""
    with pytest.raises(ValueError, match=r"token=\*\*\*") as info:
        tlb.Endpoint("http://a:1/x?token=hunter2")
    assert "hunter2" not in str(info.value)


def test_redact() -> None:
    """redact hides URL passwords and query values and leaves other text alone."""
    assert redact("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("rediss://user:p:w@host") == "rediss://user:***@host"
    assert redact("http://h/x?token=abc&b=2") == "http://h/x?token=***&b=***"
    assert redact("limit must be > 0, got -1") == "limit must be > 0, got -1"


def test_check_command_prints_no_traceback(tmp_path: Path) -> None:
    """`python -m tenantlb check` reports the absurd rate as invalid, with no traceback."""
    path = tmp_path / "gateway.json"
    path.write_text(
        json.dumps(
            {
                "gateway": {"store": "redis://:hunter2@localhost:6379"},
                "pools": POOL,
                "tenants": [{"id": "t", "upstream": "p", "limits": [{"limit": 10**400}]}],
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "tenantlb", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "tenants[0].limits[0].limit" in result.stderr


def test_endpoint_error_with_a_bad_port_hides_the_password() -> None:
    """A URL with a password and an unparsable port is redacted in the ValueError."""
    for bad in ("http://admin:hunter2@10.0.0.1:99999", "http://admin:hunter2@[::1"):
        with pytest.raises(ValueError, match="endpoint url") as info:
            tlb.Endpoint(bad)
        assert "hunter2" not in str(info.value)
        with pytest.raises(ValueError, match="endpoint url") as info:
            tlb.Pool([bad])
        assert "hunter2" not in str(info.value)
