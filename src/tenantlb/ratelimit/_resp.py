"""Redis commands as RESP bytes, packed here so that parts can be packed once in advance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["pack", "pack_items"]


def pack(args: Sequence[Any]) -> bytes:
    """*args* as a RESP array of bulk strings: the bytes every Redis reads (RESP2 and RESP3)."""
    return b"*%d\r\n%b" % (len(args), pack_items(args))


def pack_items(args: Sequence[Any]) -> bytes:
    """The bulk strings of `pack` without the array's header (for parts packed in advance)."""
    out = []
    for arg in args:
        if not isinstance(arg, bytes):
            arg = arg.encode() if isinstance(arg, str) else b"%d" % arg
        out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)
