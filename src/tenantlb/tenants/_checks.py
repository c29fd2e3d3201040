"""Runtime type checks for public arguments (kept out of line so mypy sees no dead branches)."""

from __future__ import annotations

__all__ = ["require_type"]


def require_type(
    field: str, value: object, expected: type | tuple[type, ...], description: str
) -> None:
    """Raise ``TypeError("<field> must be <description>, got <type>")`` unless *value* fits."""
    if not isinstance(value, expected):
        msg = f"{field} must be {description}, got {type(value).__name__}"
        raise TypeError(msg)
