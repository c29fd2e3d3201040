"""hash_api_key: digest formats, secrets, and input checks that never echo the key."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantlb.tenants import MAX_API_KEY_LENGTH, hash_api_key, is_api_key_digest

KEY = "sk-live-9f8e7d6c5b4a"
SECRET = "server-secret-0123456789"

visible_keys = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200
)


def test_sha256_digest_format() -> None:
    """Without a secret the digest is 'sha256:' and the hex SHA-256 of the key."""
    assert hash_api_key(KEY) == "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()


def test_hmac_digest_format() -> None:
    """With a secret the digest is 'hmac-sha256:' and the hex HMAC-SHA-256 under the secret."""
    expected = hmac.new(SECRET.encode(), KEY.encode(), "sha256").hexdigest()
    assert hash_api_key(KEY, secret=SECRET) == "hmac-sha256:" + expected
    assert hash_api_key(KEY, secret=SECRET.encode()) == "hmac-sha256:" + expected


def test_str_and_bytes_keys_hash_alike() -> None:
    """A key given as str or as ASCII bytes has the same digest."""
    assert hash_api_key(KEY) == hash_api_key(KEY.encode())


@given(visible_keys)
def test_every_visible_ascii_key_hashes_to_a_valid_digest(key: str) -> None:
    """Any visible-ASCII key up to the limit hashes to a digest is_api_key_digest() accepts."""
    assert is_api_key_digest(hash_api_key(key))
    assert is_api_key_digest(hash_api_key(key, secret=SECRET))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("", "api key is empty"),
        ("x" * (MAX_API_KEY_LENGTH + 1), "api key is longer than 4096 characters"),
        ("sk-with space", "api key must be visible ASCII"),
        ("sk-ünïcode", "api key must be visible ASCII"),
        ("sk-\r\nSet-Cookie:x", "api key must be visible ASCII"),
        (b"sk-\xff", "api key must be visible ASCII"),
    ],
)
def test_bad_keys_raise_value_error_without_the_key(raw: str | bytes, match: str) -> None:
    """Empty, long, spaced, non-ASCII or CR/LF keys raise ValueError whose text omits the key."""
    with pytest.raises(ValueError, match=match) as info:
        hash_api_key(raw)
    text = str(info.value) + repr(info.value)
    if len(raw) > 3:
        shown = raw if isinstance(raw, str) else raw.decode("latin-1")
        assert shown not in text


def test_non_string_key_is_a_type_error() -> None:
    """A key that is neither str nor bytes raises TypeError."""
    with pytest.raises(TypeError, match="api key must be str or bytes, got int"):
        hash_api_key(123)  # type: ignore[arg-type]


def test_short_secret_is_rejected() -> None:
    """A secret shorter than 16 bytes raises ValueError; a non-string secret TypeError."""
    with pytest.raises(ValueError, match="secret must be at least 16 bytes, got 5"):
        hash_api_key(KEY, secret="short")
    with pytest.raises(TypeError, match="secret must be str, bytes or None"):
        hash_api_key(KEY, secret=42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    ["sha256:" + "0" * 63, "sha256:" + "A" * 64, "md5:" + "0" * 64, KEY, None, 5, "sha256:"],
)
def test_is_api_key_digest_rejects_other_values(value: object) -> None:
    """is_api_key_digest() is False for raw keys, wrong lengths, uppercase hex and non-strings."""
    assert not is_api_key_digest(value)
