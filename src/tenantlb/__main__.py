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
        help="a live gateway on real sockets: backends, ProxyApp, tenants and real traffic",
        description="Starts six loopback backends (a fast pair, one slow, one that starts failing, "
        "one that is stopped and comes back, one private), ProxyApp under uvicorn in front of them "
        "with three tenants, and real HTTP traffic from httpx clients through "
        "AsyncBalancingTransport; shows each endpoint's share, latency and health and each "
        "tenant's admitted/429/503 live, then a summary. --simulate runs the older in-memory "
        "simulation instead (no sockets).",
    )
    demo.add_argument(
        "--duration", type=float, default=20.0, help="seconds of traffic (default 20)"
    )
    demo.add_argument(
        "--strategy",
        default="peak_ewma",
        help="balancer of the shared pool: peak_ewma (default), least_request, round_robin, "
        "weighted_random, rendezvous",
    )
    demo.add_argument("--tenants", type=int, default=3, help="how many tenants send traffic (1-3)")
    demo.add_argument(
        "--simulate", action="store_true", help="the in-memory simulation, no sockets (no extras)"
    )
    demo.add_argument("--requests", type=int, default=50, help="--simulate: requests per client")
    demo.add_argument("--clients", type=int, default=40, help="--simulate: concurrent clients")
    demo.add_argument(
        "--backend", choices=["asyncio", "trio"], default="asyncio", help="--simulate: event loop"
    )

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
        return _demo(parser, args)
    if args.command == "hash-key":
        return _hash_key(args.secret_env)
    return _check(args.file)


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.simulate:
        from ._demo_sim import run_demo

        if args.requests < 1 or args.clients < 1:
            parser.error("--requests and --clients must be >= 1")
        if args.backend == "trio" and importlib.util.find_spec("trio") is None:
            parser.error("--backend trio needs trio installed: pip install trio")
        return run_demo(args.requests, args.clients, args.backend)
    from ._demo import STRATEGIES, run_live_demo

    if not (0 < args.duration <= 3600):
        parser.error(f"--duration must be between 0 and 3600 seconds, got {args.duration:g}")
    if args.strategy not in STRATEGIES:
        parser.error(f"--strategy must be one of {', '.join(STRATEGIES)}, got {args.strategy!r}")
    if not (1 <= args.tenants <= 3):
        parser.error(f"--tenants must be 1, 2 or 3, got {args.tenants}")
    return run_live_demo(args.duration, args.strategy, args.tenants)


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
