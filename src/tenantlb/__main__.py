"""Command line: ``python -m tenantlb demo | hash-key | check FILE``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

from ._errors import ConfigError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tenantlb`` command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tenantlb", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="balance a burst of simulated requests, in memory")
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

    check = commands.add_parser("check", help="validate a gateway config file (TOML, JSON, YAML)")
    check.add_argument("file")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        if args.requests < 1 or args.clients < 1:
            parser.error("--requests and --clients must be >= 1")
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
    raw = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    try:
        print(hash_api_key(raw, secret=secret))
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _check(file: str) -> int:
    from .config import load_config

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
