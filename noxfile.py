"""Every check, one entry point: `nox` runs lint, typecheck and tests; `nox -s docs|examples|bench`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the whole test suite (asyncio and trio; real redis-server, real servers on loopback)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """The long runs: 100 MB streams through ProxyApp with bounded memory (marked `soak`, left out
    of `tests`), then the end-to-end fault and load suites with their long schedules (60 s load,
    faults held 8 s each) instead of the CI-sized ones `tests` runs."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "soak", "-s", *session.posargs)
    session.run("pytest", "tests/e2e", "-s", *session.posargs, env={"TENANTLB_SOAK": "1"})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and on tests/typing/api.py (never executed, only checked)."""
    session.install("-e", ".[test]", "mypy", "types-cachetools", "types-PyYAML")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the mkdocs site with --strict."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site")


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    """Run every program in examples/."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "tests/test_examples.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Re-measure every benchmark next to its peers and write benchmarks/README.md.

    Runs benchmarks/report.py: each script three times (`nox -s bench -- --quick` for each
    script's small mode, 10-20 minutes; `-- --only NAME` for one), then min / median / max of
    every figure, each issue's target judged, and the machine. proxy.py needs wrk (nginx for its
    nginx row), ratelimit_redis.py redis-server, hooks.py valgrind for its instruction counts;
    without them the report says "not run" and why.
    """
    session.install(
        "-e",
        ".[test]",
        "limits",
        "aiolimiter",
        "pyrate-limiter",
        "throttled-py",
        "slowapi",
        "asgiproxy",
    )
    session.run("python", "benchmarks/report.py", *session.posargs)
