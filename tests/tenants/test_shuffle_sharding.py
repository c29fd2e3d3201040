"""Shuffle sharding: coverage of all shards, minimal churn, and determinism across processes."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantlb.tenants import shard_overlap_probability, shuffle_shard

URLS8 = [f"http://10.0.0.{i}:8000" for i in range(1, 9)]
NINTH = "http://10.0.0.9:8000"
TENANTS = [f"tenant-{i}" for i in range(4000)]


def test_every_pair_appears_for_n8_k2() -> None:
    """With N=8, k=2 every one of the C(8,2)=28 pairs is some tenant's shard, roughly evenly."""
    counts: dict[frozenset[str], int] = {}
    for tenant in TENANTS:
        shard = shuffle_shard(tenant, URLS8, 2)
        assert len(shard) == 2
        assert len(set(shard)) == 2
        counts[frozenset(shard)] = counts.get(frozenset(shard), 0) + 1
    assert len(counts) == math.comb(8, 2) == 28
    expected = len(TENANTS) / 28
    assert min(counts.values()) > 0.5 * expected
    assert max(counts.values()) < 1.5 * expected


def test_adding_a_ninth_endpoint_moves_few_shards() -> None:
    """Adding a 9th endpoint changes only shards it enters, about k/(N+1) = 2/9 of them, by one member."""
    changed = 0
    for tenant in TENANTS:
        before = set(shuffle_shard(tenant, URLS8, 2))
        after = set(shuffle_shard(tenant, [*URLS8, NINTH], 2))
        if before != after:
            changed += 1
            assert NINTH in after
            assert len(before & after) == 1
    fraction = changed / len(TENANTS)
    print(
        f"\nN=8 -> 9, k=2: {changed}/{len(TENANTS)} shards changed ({fraction:.1%}; ideal 2/9 = 22.2%)"
    )
    # Rendezvous hashing meets the lower bound k/(N+1) in expectation; naive re-sampling moves ~90%.
    assert fraction <= 2 / 9 + 0.03
    assert fraction >= 2 / 9 - 0.03


def test_removing_an_endpoint_only_touches_shards_that_held_it() -> None:
    """Removing an endpoint changes exactly the shards that contained it."""
    gone = URLS8[3]
    for tenant in TENANTS[:1000]:
        before = shuffle_shard(tenant, URLS8, 2)
        after = shuffle_shard(tenant, [u for u in URLS8 if u != gone], 2)
        if gone in before:
            assert set(before) - {gone} < set(after)
        else:
            assert set(before) == set(after)


def test_same_assignment_in_another_process() -> None:
    """A fresh interpreter (different hash seed) computes the same shards."""
    sample = TENANTS[:200]
    code = (
        "import json, sys; from tenantlb.tenants import shuffle_shard; "
        "t, u = json.load(sys.stdin); "
        "print(json.dumps([list(shuffle_shard(x, u, 2)) for x in t]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps([sample, URLS8]),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=60,
    ).stdout
    assert json.loads(out) == [list(shuffle_shard(t, URLS8, 2)) for t in sample]


def test_known_vector_is_stable_across_releases() -> None:
    """A fixed tenant and pool always give the same shard (changing it would reshuffle everyone)."""
    assert shuffle_shard("acme", URLS8, 2) == ("http://10.0.0.7:8000", "http://10.0.0.5:8000")


@given(
    st.text(min_size=1, max_size=40),
    st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=20, unique=True),
    st.integers(1, 25),
    st.randoms(use_true_random=False),
)
def test_shard_properties(tenant: str, urls: list[str], k: int, rnd: object) -> None:
    """A shard is min(k, N) distinct members of the pool and ignores the pool's order."""
    shard = shuffle_shard(tenant, urls, k)
    assert len(shard) == min(k, len(urls))
    assert len(set(shard)) == len(shard)
    assert set(shard) <= set(urls)
    shuffled = list(urls)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert shuffle_shard(tenant, shuffled, k) == shard
    # Growing k only appends: the top-k is a prefix of the top-(k+1).
    assert shuffle_shard(tenant, urls, k + 1)[: len(shard)] == shard


def test_ids_that_concatenate_alike_get_independent_shards() -> None:
    """('a', 'b<x>') and ('ab', '<x>') rank differently, as the id is length-prefixed."""
    suffixes = [f"{i}.example:8000" for i in range(20)]
    one = shuffle_shard("a", [f"b{s}" for s in suffixes], 20)
    other = shuffle_shard("ab", suffixes, 20)
    # Unprefixed, every score pair would be equal and the two rankings identical (chance 1/20!).
    assert [url[1:] for url in one] != list(other)


@pytest.mark.parametrize(
    ("k", "urls", "exc", "match"),
    [
        (0, URLS8, ValueError, "k must be >= 1, got 0"),
        (1.5, URLS8, TypeError, "k must be an int"),
        (True, URLS8, TypeError, "k must be an int"),
        (2, ["a", "a"], ValueError, "endpoints must be unique"),
        (2, ["a", 3], TypeError, "endpoints must be str urls"),
        (2, ["a", ["b"]], TypeError, "endpoints must be str urls, got list"),
        (2, "http://10.0.0.1:8000", TypeError, "endpoints must be an iterable of str urls"),
    ],
)
def test_bad_arguments(k: object, urls: list[object], exc: type[Exception], match: str) -> None:
    """Bad k or endpoints raise TypeError or ValueError naming the argument."""
    with pytest.raises(exc, match=match):
        shuffle_shard("acme", urls, k)  # type: ignore[arg-type]


@pytest.mark.parametrize("tenant_id", [["acme"], 7])
def test_a_tenant_id_that_is_not_a_str_is_a_type_error(tenant_id: object) -> None:
    """A non-str tenant id, hashable or not, is a TypeError naming tenant_id."""
    with pytest.raises(TypeError, match="tenant_id must be a str"):
        shuffle_shard(tenant_id, URLS8, 2)  # type: ignore[arg-type]


def test_blast_radius_math() -> None:
    """Overlap probabilities for N=8, k=2 are 15/28, 12/28 and 1/28, and sum to one."""
    probs = [shard_overlap_probability(8, 2, j) for j in range(3)]
    assert probs == pytest.approx([15 / 28, 12 / 28, 1 / 28])
    assert sum(probs) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="need 0 < k <= n"):
        shard_overlap_probability(2, 3, 0)
    # Empirically: the fraction of tenant pairs sharing a whole shard is near 1/28.
    shards = [frozenset(shuffle_shard(t, URLS8, 2)) for t in TENANTS[:600]]
    pairs = list(itertools.combinations(shards, 2))
    same = sum(a == b for a, b in pairs) / len(pairs)
    assert same == pytest.approx(1 / 28, abs=0.01)
