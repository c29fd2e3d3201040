"""Credentials out of messages: passwords in URLs and values in query strings become ``***``.

Every error that may echo user input containing a URL (config values, endpoint URLs, store URLs)
passes its text through `redact` first, so ``redis://:hunter2@host`` or ``http://a/x?token=...``
never reach a log or a terminal.
"""

from __future__ import annotations

import re

__all__ = ["redact"]

# scheme://user:password@  or  scheme://:password@  (the password is everything up to the last
# '@' before the host, so a password containing ':' or '@' is hidden whole)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s/@:'\"]*):([^\s/'\"]*)@")
# the same with a mistyped scheme ("redis//:pw@host") or none ("user:pw@host")
_BARE_USERINFO = re.compile(r"(//|^|['\"\s(])([^\s/@:'\"]*):([^\s/'\"]*)@")
# ?name=value / &name=value / ;name=value in a URL or a query-looking string
_QUERY = re.compile(r"([?&;][^=\s&#'\"?;]+)=([^&\s#'\";]*)")


def redact(text: str) -> str:
    """Hide URL passwords and query-string values in *text*."""
    if "@" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", text)
    text = _BARE_USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", text)
    return _QUERY.sub(lambda m: f"{m.group(1)}=***", text)
