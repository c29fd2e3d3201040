"""API keys: stored only as digests, presented keys checked before they are hashed.

A digest is a string ``"<scheme>:<64 lowercase hex>"``:

- ``sha256:<hex>`` — SHA-256 of the UTF-8 key; fine for long random keys (>= 128 bits of entropy).
- ``hmac-sha256:<hex>`` — HMAC-SHA-256 of the key under a server secret; a leaked digest list is then
  useless without the secret, even for short keys.

Raw keys never leave this module in a message: every error names the field, never the value.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from .._errors import Unauthenticated
from .._validate import require_type

__all__ = [
    "MAX_API_KEY_LENGTH",
    "check_presented_key",
    "digest_presented_key",
    "hash_api_key",
    "hash_presented_key",
    "is_api_key_digest",
    "normalize_secret",
    "digest_scheme",
]

MAX_API_KEY_LENGTH = 4096
"""Longest API key accepted, in characters (4 KiB); longer headers are rejected unhashed."""

_MIN_SECRET_BYTES = 16
_DIGEST_RE = re.compile(r"(?:sha256|hmac-sha256):[0-9a-f]{64}")


def hash_api_key(raw: str | bytes, *, secret: str | bytes | None = None) -> str:
    """Return the digest under which a tenant's API key is stored.

    Store the digest (in a `Tenant`'s ``api_keys`` or a config file), never the key. Without a
    secret the digest is ``"sha256:<hex>"``; with one it is ``"hmac-sha256:<hex>"``, and the
    `TenantRegistry` must be built with the same ``secret=``. ``python -m tenantlb hash-key``
    prints the same value.

    Args:
        raw: The API key as issued to the tenant: 1 to 4096 visible ASCII characters.
        secret: Optional server secret (at least 16 bytes) for HMAC-SHA-256.

    Returns:
        The digest string.

    Raises:
        TypeError: *raw* or *secret* has the wrong type.
        ValueError: *raw* is empty, too long or not visible ASCII, or *secret* is too short. The
            message never contains the key.
    """
    require_type("api key", raw, (str, bytes), "str or bytes")
    problem = _key_problem(raw)
    if problem is not None:
        msg = f"api key {problem}"
        raise ValueError(msg)
    return hash_presented_key(_to_bytes(raw), normalize_secret(secret))


def is_api_key_digest(value: object) -> bool:
    """Tell whether *value* is a digest as returned by `hash_api_key`."""
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


def digest_scheme(digest: str) -> str:
    """Return ``"sha256"`` or ``"hmac-sha256"`` for a valid digest."""
    return digest.partition(":")[0]


def normalize_secret(secret: str | bytes | None) -> bytes | None:
    """Validate a server secret and return it as bytes (UTF-8 for str)."""
    if secret is None:
        return None
    require_type("secret", secret, (str, bytes), "str, bytes or None")
    data = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(data) < _MIN_SECRET_BYTES:
        msg = f"secret must be at least {_MIN_SECRET_BYTES} bytes, got {len(data)}"
        raise ValueError(msg)
    return data


def check_presented_key(raw: object, *, source: str = "api key") -> bytes:
    """Validate a key presented by a client and return its bytes.

    Args:
        raw: The value from the request (str or bytes).
        source: How to name the key in messages, e.g. ``"x-api-key header"``.

    Raises:
        Unauthenticated: The key is not str/bytes, empty, longer than 4096 characters, or has a
            character outside visible ASCII (non-ASCII, space, CR/LF). The message names
            *source*, never the value.
    """
    # Hot path first: a well-formed str key (what headers give us) passes three C-level checks.
    if type(raw) is str and 0 < len(raw) <= MAX_API_KEY_LENGTH and _visible_ascii(raw):
        return raw.encode("ascii")
    if not isinstance(raw, str | bytes):
        msg = f"{source} must be a string"
        raise Unauthenticated(msg)
    problem = _key_problem(raw)
    if problem is not None:
        msg = f"malformed {source}: {problem}"
        raise Unauthenticated(msg)
    return _to_bytes(raw)


def digest_presented_key(raw: object, secret: bytes | None, source: str) -> str:
    """`check_presented_key` then `hash_presented_key`: the digest to look a presented key up by.

    Every request with a key comes here, so the common case (a well-formed str key, no secret)
    runs without a further call.

    Raises:
        Unauthenticated: As `check_presented_key`.
    """
    if (
        secret is None
        and type(raw) is str
        and raw
        and len(raw) <= MAX_API_KEY_LENGTH
        and raw.isascii()
        and raw.isprintable()
        and " " not in raw
    ):
        return "sha256:" + hashlib.sha256(raw.encode("ascii")).hexdigest()
    return hash_presented_key(check_presented_key(raw, source=source), secret)


def hash_presented_key(key: bytes, secret: bytes | None) -> str:
    """Digest already-validated key bytes (the hot path: no checks, C-speed HMAC)."""
    if secret is None:
        return "sha256:" + hashlib.sha256(key).hexdigest()
    return "hmac-sha256:" + hmac.digest(secret, key, "sha256").hex()


def _key_problem(raw: str | bytes) -> str | None:
    # Describes what is wrong without echoing the key.
    if not raw:
        return "is empty"
    if len(raw) > MAX_API_KEY_LENGTH:
        return f"is longer than {MAX_API_KEY_LENGTH} characters ({len(raw)})"
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if not _visible_ascii(text):
        return "must be visible ASCII characters (no spaces, control characters or CR/LF)"
    return None


def _visible_ascii(text: str) -> bool:
    # ASCII and printable (no control characters, no DEL) and no space: exactly 0x21..0x7E.
    return text.isascii() and text.isprintable() and " " not in text


def _to_bytes(raw: str | bytes) -> bytes:
    return raw.encode("ascii") if isinstance(raw, str) else raw
