"""Endpoint: URL normalisation and validation."""

from __future__ import annotations

import copy
import pickle

import pytest

import tenantlb as tlb


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("HTTP://Example.COM:80/", "http://example.com"),
        ("https://api.example.com:443", "https://api.example.com"),
        ("http://10.0.0.1:8000", "http://10.0.0.1:8000"),
        ("http://10.0.0.1:8000/api/", "http://10.0.0.1:8000/api"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("tcp://db:5432", "tcp://db:5432"),
    ],
)
def test_url_is_normalised(raw: str, normal: str) -> None:
    """Scheme and host are lower-cased, default ports and trailing slashes dropped."""
    endpoint = tlb.Endpoint(raw)
    assert endpoint.url == normal
    assert str(endpoint) == normal


def test_host_and_port_are_derived() -> None:
    """An endpoint exposes its host and port, filling in the scheme's default port."""
    assert (tlb.Endpoint("https://a.example").host, tlb.Endpoint("https://a.example").port) == (
        "a.example",
        443,
    )
    assert tlb.Endpoint("http://[::1]:9").host == "::1"
    assert tlb.Endpoint("tcp://db:5432").port == 5432


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "10.0.0.1:8000",
        "http://",
        "http:///path",
        "http://host:99999",
        "http://host:port",
        "http://user:secret@host",
        "http://host/?q=1",
        "http://host/#frag",
        "http://ho st",
        "http://host\r\nX: y",
        "x" * 5000,
    ],
)
def test_bad_urls_are_rejected_with_the_value(raw: str) -> None:
    """A malformed URL raises ValueError; credentials are never echoed back."""
    with pytest.raises(ValueError, match="url") as info:
        tlb.Endpoint(raw)
    assert "secret" not in str(info.value)


def test_non_string_url_is_a_type_error() -> None:
    """A URL that is not a str raises TypeError naming the type."""
    with pytest.raises(TypeError, match="bytes"):
        tlb.Endpoint(b"http://a")  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [0, -1, float("nan"), float("inf")])
def test_weight_must_be_positive_and_finite(weight: float) -> None:
    """A weight <= 0 or not finite raises ValueError naming the value."""
    with pytest.raises(ValueError, match="weight must be > 0"):
        tlb.Endpoint("http://a", weight=weight)


@pytest.mark.parametrize("weight", ["2", True, None])
def test_weight_must_be_a_number(weight: object) -> None:
    """A weight that is not a number raises TypeError."""
    with pytest.raises(TypeError, match="weight must be a number"):
        tlb.Endpoint("http://a", weight=weight)  # type: ignore[arg-type]


def test_endpoint_is_frozen_and_metadata_read_only() -> None:
    """Endpoints are immutable values; their metadata cannot be changed after the fact."""
    labels = {"rack": "r1"}
    endpoint = tlb.Endpoint("http://a", metadata=labels, zone="z1")
    labels["rack"] = "r2"
    assert endpoint.metadata["rack"] == "r1"
    with pytest.raises(TypeError):
        endpoint.metadata["rack"] = "r3"  # type: ignore[index]
    with pytest.raises(AttributeError):
        endpoint.weight = 3  # type: ignore[misc]
    assert endpoint == tlb.Endpoint("HTTP://A", zone="z1")


def test_endpoints_pickle_and_copy_with_their_metadata() -> None:
    """An endpoint survives pickle (multiprocessing) and deepcopy, metadata and all, still read-only."""
    endpoint = tlb.Endpoint(
        "http://10.0.0.2:8000", weight=2, zone="eu-1a", metadata={"rack": "r7"}, priority=1
    )
    for copy_ in (pickle.loads(pickle.dumps(endpoint)), copy.deepcopy(endpoint)):
        assert copy_ == endpoint
        assert (copy_.zone, copy_.priority, dict(copy_.metadata)) == ("eu-1a", 1, {"rack": "r7"})
        assert (copy_.host, copy_.port) == ("10.0.0.2", 8000)
        with pytest.raises(TypeError):
            copy_.metadata["rack"] = "r8"  # type: ignore[index]
