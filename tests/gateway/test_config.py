"""Config: one document builds a gateway; every problem is reported with its path, all at once."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tenantlb as tlb
from tenantlb.config import build_gateway, validate_config

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-acme-0123456789abcdef"

VALID: dict[str, Any] = {
    "gateway": {"hash_on": "client_ip", "trusted_proxies": ["10.0.0.0/8"]},
    "pools": {
        "shared": {
            "endpoints": ["http://a:1", {"url": "http://b:2", "weight": 2, "zone": "z"}],
            "balancer": "round_robin",
            "slow_start": {"window": 10.0},
            "outlier_detection": {"consecutive_5xx": 3},
        },
        "gpu": {"endpoints": ["http://g:1"], "balancer": {"type": "least_request", "choices": 3}},
    },
    "tenants": [
        {
            "id": "acme",
            "api_keys": [tlb.hash_api_key(KEY)],
            "upstream": "shared",
            "routes": {"/v1/embeddings": "gpu"},
            "limits": [{"limit": 100, "per": 1.0, "burst": 20}, {"limit": 1000, "per": 3600}],
            "max_concurrency": 5,
        },
        {"id": "globex", "upstream": "shared", "shard_size": 1, "enabled": False},
    ],
}


def doc(**changes: Any) -> dict[str, Any]:
    """VALID with changes applied at dotted paths (None deletes)."""
    out = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        node: Any = out
        parts = dotted.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        last: Any = int(parts[-1]) if isinstance(node, list) else parts[-1]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return out


def test_valid_document_builds_a_working_gateway() -> None:
    """A valid document yields pools, balancers and tenants as written."""
    gateway = tlb.Gateway.from_config(VALID)
    assert sorted(gateway.pools) == ["gpu", "shared"]
    shared = gateway.pools["shared"]
    assert type(shared.balancer).__name__ == "RoundRobin"
    assert [e.weight for e in shared.endpoints] == [1.0, 2.0]
    assert type(gateway.pools["gpu"].balancer).__name__ == "LeastRequest"
    acme = gateway.registry.get("acme")
    assert acme is not None
    assert acme.limits[0] == tlb.Rate(100, per=1.0, burst=20)
    assert gateway.trusted_proxies == ("10.0.0.0/8",)


@pytest.mark.anyio
async def test_config_gateway_admits_requests() -> None:
    """The built gateway admits a request with the configured key."""
    gateway = tlb.Gateway.from_config(VALID)
    async with gateway.admit(
        tlb.RequestInfo("GET", "/v1/embeddings", [("x-api-key", KEY)])
    ) as ticket:
        assert ticket.endpoint.url == "http://g:1"


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"pools": None}, "pools"),
        ({"pools": {}}, "pools"),
        ({"pools__shared__endpoints": "http://a"}, "pools.shared.endpoints"),
        ({"pools__shared__endpoints__0": "not a url"}, "pools.shared.endpoints[0]"),
        ({"pools__shared__endpoints__1__weight": -1}, "pools.shared.endpoints[1].weight"),
        ({"pools__shared__endpoints__1__url": None}, "pools.shared.endpoints[1].url"),
        ({"pools__shared__endpoints__1": "http://a:1"}, "pools.shared.endpoints[1]"),
        ({"pools__shared__balancer": "fastest"}, "pools.shared.balancer"),
        ({"pools__gpu__balancer__choices": 1}, "pools.gpu.balancer.choices"),
        ({"pools__gpu__balancer__type": None}, "pools.gpu.balancer.type"),
        ({"pools__shared__panic_threshold": 2}, "pools.shared.panic_threshold"),
        ({"pools__shared__slow_start": {"window": 0}}, "pools.shared.slow_start.window"),
        ({"pools__shared__slow_start": 5}, "pools.shared.slow_start"),
        ({"pools__shared__endpoint": []}, "pools.shared.endpoint"),
        ({"tenants": {"id": "x"}}, "tenants"),
        ({"tenants__0__id": None}, "tenants[0].id"),
        ({"tenants__0__id": "bad id\n"}, "tenants[0].id"),
        ({"tenants__0__upstream": "nowhere"}, "tenants[0].upstream"),
        ({"tenants__0__routes": {"/x": "nowhere"}}, "tenants[0].routes"),
        ({"tenants__0__limits__0__per": -1}, "tenants[0].limits[0].per"),
        ({"tenants__0__limits__1__limit": 0}, "tenants[0].limits[1].limit"),
        ({"tenants__0__limits__1__limit": None}, "tenants[0].limits[1].limit"),
        ({"tenants__0__limits__0__burst": "many"}, "tenants[0].limits[0].burst"),
        ({"tenants__0__limits__0__window": 1}, "tenants[0].limits[0].window"),
        ({"tenants__0__limits": {"limit": 1}}, "tenants[0].limits"),
        ({"tenants__0__max_concurrency": 0}, "tenants[0].max_concurrency"),
        ({"tenants__0__api_keys": ["sk-raw-key-not-a-digest"]}, "tenants[0].api_keys"),
        ({"tenants__1__id": "acme"}, "tenants[1].id"),
        ({"tenants__1__shard_size": -2}, "tenants[1].shard_size"),
        ({"tenants__1__enabled": "yes"}, "tenants[1].enabled"),
        ({"tenants__1__colour": "red"}, "tenants[1].colour"),
        ({"gateway__hash_on": "cookie"}, "gateway.hash_on"),
        ({"gateway__algorithm": "leaky_bucket"}, "gateway.algorithm"),
        ({"gateway__store": "postgres"}, "gateway.store"),
        ({"gateway__store": {"type": "redis", "url": "http://x"}}, "gateway.store.url"),
        ({"gateway__secret": "short"}, "gateway.secret"),
        ({"gateway__resolvers": ["magic"]}, "gateway.resolvers[0]"),
        ({"gateway__trusted_proxies": "10.0.0.0/8"}, "gateway.trusted_proxies"),
        ({"gateway__trusted_proxies": ["10.0.0.0/33"]}, "gateway.trusted_proxies"),
        ({"extra": 1}, "extra"),
    ],
)
def test_malformed_documents_name_the_path(changes: dict[str, Any], path: str) -> None:
    """Each malformed document gives a ConfigError whose path is the bad field."""
    with pytest.raises(tlb.ConfigError) as info:
        build_gateway(doc(**changes))
    paths = [p for p, _ in info.value.errors]
    assert path in paths or any(p.startswith(path) for p in paths), paths
    assert "sk-raw-key-not-a-digest" not in str(info.value)


def test_all_errors_are_reported_at_once() -> None:
    """Three independent mistakes give one ConfigError listing all three."""
    bad = doc(
        tenants__0__limits__0__per=-1,
        pools__shared__endpoints__0="nope",
        gateway__hash_on="cookie",
    )
    with pytest.raises(tlb.ConfigError) as info:
        build_gateway(bad)
    paths = {p for p, _ in info.value.errors}
    assert {"tenants[0].limits[0].per", "pools.shared.endpoints[0]", "gateway.hash_on"} <= paths
    assert str(info.value).startswith(f"{len(info.value.errors)} errors in config")
    assert validate_config(bad) == list(info.value.errors)
    assert validate_config(VALID) == []


def test_load_config_reads_toml_json_and_yaml(tmp_path: Path) -> None:
    """load_config reads TOML, JSON and YAML files into equal gateways."""
    json_file = tmp_path / "g.json"
    json_file.write_text(json.dumps(VALID))
    import yaml

    yaml_file = tmp_path / "g.yaml"
    yaml_file.write_text(yaml.safe_dump(VALID))
    toml_gateway = tlb.load_config(ROOT / "examples" / "gateway.toml")
    assert sorted(toml_gateway.pools) == ["gpu", "shared"]
    for file in (json_file, yaml_file):
        gateway = tlb.load_config(file)
        assert sorted(gateway.pools) == ["gpu", "shared"]
        assert len(gateway.registry) == 2


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.toml", None, "cannot read"),
        ("bad.toml", "[pools\n", "cannot parse"),
        ("bad.json", "{", "cannot parse"),
        ("list.json", "[1, 2]", "must be a table"),
        ("g.ini", "x=1", "unknown config format"),
    ],
)
def test_unreadable_files_are_config_errors(
    tmp_path: Path, name: str, content: str | None, match: str
) -> None:
    """Missing, unparseable or unknown-format files raise ConfigError, never a parser error."""
    file = tmp_path / name
    if content is not None:
        file.write_text(content)
    with pytest.raises(tlb.ConfigError, match=match):
        tlb.load_config(file)


def test_secret_env_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """secret_env names an environment variable holding the HMAC secret; unset is an error."""
    secret = "server-secret-0123456789"
    config = doc(tenants__0__api_keys=[tlb.hash_api_key(KEY, secret=secret)])
    config["gateway"]["secret_env"] = "TENANTLB_TEST_SECRET"
    with pytest.raises(tlb.ConfigError, match="TENANTLB_TEST_SECRET"):
        build_gateway(config)
    monkeypatch.setenv("TENANTLB_TEST_SECRET", secret)
    gateway = build_gateway(config)
    assert gateway.registry.by_api_key(KEY).id == "acme"


def test_health_check_and_redis_store_sections(redis_url: str) -> None:
    """health_check builds a HealthChecker the gateway runs; a redis store connects to Redis."""
    config = doc(pools__shared__health_check={"path": "/healthz", "interval": 5.0, "timeout": 1.0})
    config["gateway"]["store"] = {"type": "redis", "url": redis_url, "on_error": "fail_open"}
    gateway = build_gateway(config)
    assert len(gateway.services) == 1
    assert type(gateway.store).__name__ == "RedisStore"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["gateway", "pools", "tenants", "other"]),
        json_values,
        max_size=3,
    )
)
def test_fuzzed_documents_only_raise_config_error(document: dict[str, Any]) -> None:
    """Any document either builds or raises ConfigError — never another exception."""
    with contextlib.suppress(tlb.ConfigError):
        build_gateway(document)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_fields_of_a_valid_document_only_raise_config_error(data: st.DataObject) -> None:
    """Replacing any one field of a valid document with junk gives a gateway or a ConfigError."""
    paths = [
        "pools__shared__endpoints__1__weight",
        "pools__shared__balancer",
        "pools__shared__panic_threshold",
        "pools__shared__slow_start",
        "pools__shared__outlier_detection",
        "pools__gpu__balancer",
        "tenants__0__id",
        "tenants__0__limits",
        "tenants__0__limits__0__per",
        "tenants__0__routes",
        "tenants__0__max_concurrency",
        "tenants__0__api_keys",
        "tenants__1__shard_size",
        "gateway__resolvers",
        "gateway__store",
    ]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(json_values.filter(lambda v: v is not None))
    with contextlib.suppress(tlb.ConfigError):
        build_gateway(doc(**{path: value}))


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenantlb", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_check_reports_paths(tmp_path: Path) -> None:
    """`python -m tenantlb check` accepts the example and lists every error of a bad file."""
    ok = run_cli("check", str(ROOT / "examples" / "gateway.toml"))
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc(tenants__0__limits__0__per=-1, gateway__hash_on="x")))
    result = run_cli("check", str(bad))
    assert result.returncode == 1
    assert "tenants[0].limits[0].per" in result.stderr
    assert "gateway.hash_on" in result.stderr


def test_cli_hash_key_reads_stdin() -> None:
    """`python -m tenantlb hash-key` prints the digest of the key on stdin, never the key."""
    result = run_cli("hash-key", stdin=KEY + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == tlb.hash_api_key(KEY)
    assert KEY not in result.stdout


def test_peak_ewmas_aperture_is_set_or_turned_off_in_a_file(tmp_path: Path) -> None:
    """TOML has no null: ``aperture = false`` turns PeakEWMA's aperture off (None in Python);
    a number sets it; anything else is an error that names the field."""
    document = """
[pools.a]
endpoints = ["http://a:1", "http://a:2"]
balancer = {type = "peak_ewma", aperture = false}

[pools.b]
endpoints = ["http://b:1"]
balancer = {type = "peak_ewma", aperture = 8}
"""
    path = tmp_path / "gateway.toml"
    path.write_text(document)
    gateway = tlb.load_config(path)
    assert gateway.pools["a"].balancer.aperture is None  # type: ignore[attr-defined]
    assert gateway.pools["b"].balancer.aperture == 8  # type: ignore[attr-defined]
    path.write_text(document.replace("aperture = 8", "aperture = 1"))
    with pytest.raises(tlb.ConfigError) as caught:
        tlb.load_config(path)
    assert "pools.b.balancer" in str(caught.value)
