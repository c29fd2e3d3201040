"""Command line: python -m tenantlb demo | hash-key | check FILE."""

from __future__ import annotations

import argparse
import getpass
import importlib.util
import os
import sys
from collections.abc import Sequence

from ._errors import ConfigError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tenantlb`` command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m tenantlb",
        description="tenantlb: load balancing and multi-tenant gateway controls in a Python process.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="balance a burst of simulated requests, in memory",
        description="Three tenants send a burst of requests through one gateway to four simulated "
        "backends (one fast pair, one slow, one failing); prints each endpoint's share, the "
        "refusals per tenant and the ejections.",
    )
    demo.add_argument("--requests", type=int, default=50, help="requests per client (default 50)")
    demo.add_argument("--clients", type=int, default=40, help="concurrent clients (default 40)")
    demo.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")

    hash_key = commands.add_parser(
        "hash-key", help="print the digest to put in a tenant's api_keys (reads the key from stdin)"
    )
    hash_key.add_argument(
        "--secret-env",
        metavar="VAR",
        help="environment variable holding the server secret (HMAC-SHA-256 instead of SHA-256)",
    )

    check = commands.add_parser(
        "check",
        help="validate a gateway config file (TOML, JSON, YAML)",
        description="Validate a gateway config file and list every problem with its path.",
    )
    check.add_argument("file", help="the config file (.toml, .json, .yaml or .yml)")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        if args.requests < 1 or args.clients < 1:
            parser.error("--requests and --clients must be >= 1")
        if args.backend == "trio" and importlib.util.find_spec("trio") is None:
            parser.error("--backend trio needs trio installed: pip install trio")
        return run_demo(args.requests, args.clients, args.backend)
    if args.command == "hash-key":
        return _hash_key(args.secret_env)
    return _check(args.file)


def _hash_key(secret_env: str | None) -> int:
    from .tenants import hash_api_key

    secret = None
    if secret_env is not None:
        secret = os.environ.get(secret_env)
        if not secret:
            print(f"error: environment variable {secret_env!r} is not set", file=sys.stderr)
            return 2
    # The key is read, never echoed: not from argv, where it would land in shell history.
    if sys.stdin.isatty():
        raw = getpass.getpass("API key: ")
    else:
        lines = sys.stdin.read().splitlines()
        if len(lines) != 1:
            # Hashing only the first of several lines would silently store a digest of the wrong key.
            print(
                f"error: expected exactly one key on stdin, got {len(lines)} lines", file=sys.stderr
            )
            return 2
        raw = lines[0].strip()
    try:
        print(hash_api_key(raw, secret=secret))
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _check(file: str) -> int:
    from .config import load_config

    if not os.path.isfile(file):
        print(f"{file}: no such file", file=sys.stderr)
        return 2
    try:
        gateway = load_config(file)
    except ConfigError as exc:
        print(f"{file}: invalid", file=sys.stderr)
        for path, message in exc.errors:
            print(f"  {path or '<document>'}: {message}", file=sys.stderr)
        return 1
    pools = ", ".join(f"{name} ({len(pool)} endpoints)" for name, pool in gateway.pools.items())
    print(f"{file}: ok — {len(gateway.registry)} tenants; pools: {pools}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
