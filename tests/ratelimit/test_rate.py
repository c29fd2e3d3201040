"""Rate validation and Decision headers."""

from __future__ import annotations

import math

import pytest

from tenantlb import Decision, Rate


def test_burst_defaults_to_limit() -> None:
    """A Rate without burst may spend its whole limit at once."""
    assert Rate(100).burst == 100
    assert Rate(100, per=60, burst=20).burst == 20
    assert Rate(100, 60) == Rate(100, per=60.0, burst=100)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be > 0 and finite, got 0"),
        ({"limit": -1}, "limit must be > 0 and finite, got -1"),
        ({"limit": 1, "per": 0}, "per must be > 0 and finite, got 0"),
        ({"limit": 1, "per": math.inf}, "per must be > 0 and finite, got inf"),
        ({"limit": 1, "burst": 0}, "burst must be > 0 and finite, got 0"),
        ({"limit": math.nan}, "limit must be > 0 and finite, got nan"),
        ({"limit": 1, "name": ""}, "name must be non-empty printable ASCII"),
        ({"limit": 1, "name": "caf\u00e9"}, "name must be non-empty printable ASCII"),
    ],
)
def test_bad_values_raise_value_error(kwargs: dict[str, object], message: str) -> None:
    """Non-positive, non-finite or unprintable values are refused with the field named."""
    with pytest.raises(ValueError, match=message):
        Rate(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"limit": "10"}, {"limit": True}, {"limit": 1, "per": None}])
def test_bad_types_raise_type_error(kwargs: dict[str, object]) -> None:
    """A non-number limit or period is a TypeError."""
    with pytest.raises(TypeError, match="must be a number"):
        Rate(**kwargs)  # type: ignore[arg-type]


def test_policy_label_quota_and_window_are_integers() -> None:
    """Header quota and window are integers even for fractional rates."""
    assert (Rate(100).label, Rate(100).quota, Rate(100).window) == ("100-per-1s", 100, 1)
    assert (Rate(0.5).quota, Rate(0.5).window) == (1, 2)
    assert Rate(10, per=60, name="minute").label == "minute"


def _decision(allowed: bool, remaining: float, reset: float, retry: float) -> Decision:
    burst = Rate(100, per=1, burst=20, name="burst")
    hourly = Rate(10_000, per=3600, name="hourly")
    return Decision(allowed, remaining, reset, retry, burst, (burst, hourly))


def test_headers_follow_the_ietf_draft() -> None:
    """An allowed decision yields RateLimit-Policy for every policy and RateLimit for the deciding one."""
    headers = _decision(True, 41.7, 0.21, 0.0).headers()
    assert headers == [
        ("RateLimit-Policy", '"burst";q=100;w=1, "hourly";q=10000;w=3600'),
        ("RateLimit", '"burst";r=41;t=1'),
    ]


def test_denial_adds_retry_after_rounded_up() -> None:
    """A denied decision adds Retry-After in whole seconds, rounded up and at least 1."""
    assert _decision(False, 0.0, 3.2, 2.01).headers()[-1] == ("Retry-After", "3")
    assert _decision(False, 0.0, 0.1, 0.001).headers()[-1] == ("Retry-After", "1")
    assert _decision(False, 0.0, 5.0, 5.0).retry_after_seconds == 5


def test_legacy_headers() -> None:
    """legacy=True yields the X-RateLimit-* trio instead of the draft fields."""
    assert _decision(False, 0.0, 2.5, 2.5).headers(legacy=True) == [
        ("X-RateLimit-Limit", "100"),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset", "3"),
        ("Retry-After", "3"),
    ]


def test_decision_is_immutable_and_exposes_limit() -> None:
    """A Decision cannot be changed and reports its policy's limit."""
    decision = _decision(True, 1, 1, 0)
    assert decision.limit == 100
    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("rate", "quota", "window"),
    [(Rate(1e-6), 1, 1_000_000), (Rate(1, per=2_000_000.25), 1, 2_000_000)],
)
def test_policy_of_a_rate_slower_than_one_a_day(rate: Rate, quota: int, window: int) -> None:
    """A rate below one unit a day is advertised as one unit per interval, not one a second."""
    assert (rate.quota, rate.window) == (quota, window)
