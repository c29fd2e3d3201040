"""One benchmark report: every script, repeated, its figures aggregated into ``benchmarks/README.md``.

``nox -s bench`` runs this. Each script in `SCRIPTS` runs as a subprocess ``--repeats`` times
(seeded simulations once: every run gives the same figures), one after another, with a time
limit; the figures it records with ``_report.emit`` are collected, and each figure's min /
median / max over the runs is written, with every target of `TARGETS` judged by its median and
the machine the run took place on. A script that fails, times out or needs a missing tool is
recorded as not run with the reason; the report is written all the same.

    python benchmarks/report.py                  # everything, 3 runs each (one to two hours)
    python benchmarks/report.py --quick          # each script's small mode (10-20 minutes)
    python benchmarks/report.py --only proxy --only gateway --out /tmp/r.md

Logs of every run, and the whole report as JSON (``report.json``; ``--render`` writes the README
again from it), are kept in ``build/bench/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENV = "TENANTLB_BENCH_OUT"  # the variable _report.emit reads (not imported: keep this standalone)

Better = Literal["higher", "lower"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Script:
    """How to run one benchmark script."""

    name: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()  # arguments of its small mode
    timeout: float = 900.0
    quick_timeout: float = 240.0
    seeded: bool = False  # deterministic: one run is every run
    quick_runs: int = 0  # with --quick, at most this many runs (0: as many as --repeats)
    needs: tuple[str, ...] = ()  # executables without which it cannot run
    # (tool, arguments) added to the first full-mode run when the tool is found: counts that
    # every run would give alike (and that take long), measured once.
    first_run: tuple[tuple[str, tuple[str, ...]], ...] = ()
    manual: str = ""  # not run by the report, and why


@dataclasses.dataclass(frozen=True, kw_only=True)
class Target:
    """One figure an issue asked for, with its bound."""

    issue: int
    script: str
    name: str  # as the script emits it
    bound: float
    better: Better
    unit: str
    needs: tuple[str, ...] = ()  # executables the figure needs beyond the script's own
    full_only: bool = False  # measured only without --quick
    note: str = ""  # what the bound means, when the name does not say


SCRIPTS: tuple[Script, ...] = (
    Script(name="balancing", quick=("--quick",)),
    Script(name="ratelimit_memory", quick=("--quick",)),
    Script(name="ratelimit_redis", quick=("--quick",), needs=("redis-server",)),
    Script(name="health", quick=("--seconds", "1", "--records", "50000", "--repeats", "3")),
    Script(name="gateway", quick=("--rounds", "3", "-n", "5000")),
    Script(name="request_flow", args=("--no-plot",), quick=("--no-plot",)),
    Script(name="asgi_middleware", quick=("--rounds", "3", "--requests", "5000")),
    Script(name="httpx_transport", quick=("--rounds", "3", "--requests", "300")),
    Script(name="proxy", quick=("--duration", "3", "--rounds", "1"), needs=("wrk",)),
    Script(
        name="hooks",
        quick=("--rounds", "80"),
        first_run=(("valgrind", ("--instructions",)),),
        timeout=1800.0,
    ),
    Script(name="discovery", quick=("--rounds", "20")),
    Script(name="fairness", quick=("--rounds", "3")),
    Script(name="fairness_sim", quick=("--seconds", "60"), seeded=True),
    Script(
        name="fairness_e2e",
        quick=("--seconds", "40"),
        quick_runs=1,  # real time: four runs of 40-70 s each
        timeout=1500.0,
        quick_timeout=420.0,
    ),
    # Its full run takes about 1.5 min: the quick report measures the scenarios as the issue
    # defines them (60 s, 10 / 25 / 50 clients), not simulate.py's 30 s --quick variant.
    Script(
        name="simulate",
        args=("--no-plots",),
        quick=("--no-plots",),
        seeded=True,
        quick_timeout=600.0,
    ),
    Script(
        name="compare_trees",
        manual="an A/B tool for two source trees (`python benchmarks/compare_trees.py OLD NEW`)",
    ),
)


def _t(
    issue: int,
    script: str,
    name: str,
    op: Literal["<=", ">="],
    bound: float,
    unit: str,
    *,
    needs: tuple[str, ...] = (),
    full_only: bool = False,
    note: str = "",
) -> Target:
    """A target written as the issue states it: ``_t(5, "gateway", "...", "<=", 8.0, "us")``."""
    better: Better = "lower" if op == "<=" else "higher"
    return Target(
        issue=issue, script=script, name=name, bound=bound, better=better, unit=unit,
        needs=needs, full_only=full_only, note=note,
    )  # fmt: skip


# Every target the issues set that a script measures, in issue order. The names are the ones
# the scripts emit; a name that no longer matches shows up as "missing" in the report.
TARGETS: tuple[Target, ...] = (
    _t(2, "balancing", "RoundRobin cycle, worst of 3/100/1000 endpoints", "<=", 1.5, "us"),
    _t(2, "balancing", "Maglev cycle, worst of 3/100/1000 endpoints", "<=", 1.5, "us"),
    _t(2, "balancing", "LeastRequest cycle, worst of 3/100/1000 endpoints", "<=", 2.5, "us"),
    _t(2, "balancing", "PeakEWMA cycle, worst of 3/100/1000 endpoints", "<=", 2.5, "us"),
    _t(2, "balancing", "cycle 1000 / 3 endpoints, worst strategy", "<=", 1.5, "x"),
    _t(3, "ratelimit_memory", "tenantlb gcra", "<=", 0.6, "us"),
    _t(3, "ratelimit_memory", "limits FixedWindow / tenantlb gcra", ">=", 4.0, "x"),
    _t(3, "ratelimit_redis", "gcra / limits FixedWindow, one server, c=1", ">=", 1.2, "x"),
    _t(3, "ratelimit_redis", "gcra / limits FixedWindow, one server, c=64", ">=", 1.2, "x"),
    _t(
        3,
        "ratelimit_redis",
        "tenantlb gcra round trips per decision, one server, c=256",
        "<=",
        1.0,
        "",
        note="the issue: exactly one; pipelining now sends many decisions a round trip",
    ),
    _t(4, "health", "OutlierDetector overhead on record, worst case", "<=", 1.3, "x"),
    *(
        _t(
            4,
            "health",
            f"HealthChecker CPU, 1000 endpoints, custom async probe (returns True), {backend}",
            "<=",
            10.0,
            "%",
            note="the checker's own cost; real probes add their I/O",
        )
        for backend in ("asyncio", "trio")
    ),
    _t(5, "gateway", "admit round trip, 10 tenants", "<=", 8.0, "us"),
    _t(5, "gateway", "admit round trip, 10,000 tenants", "<=", 8.0, "us"),
    _t(5, "gateway", "admit, 10,000 / 10 tenants", "<=", 1.5, "x"),
    _t(8, "asgi_middleware", "TenantMiddleware overhead over a bare app", "<=", 10.0, "us"),
    *(
        _t(
            8,
            "httpx_transport",
            f"balancing / plain throughput, AsyncClient, {backend}, 64 concurrent",
            ">=",
            0.95,
            "x",
        )
        for backend in ("asyncio", "trio")
    ),
    _t(8, "proxy", "ProxyApp / asgiproxy req/s", ">=", 1.0, "x"),
    _t(8, "proxy", "ProxyApp / asgiproxy p99", "<=", 1.0, "x"),
    _t(8, "proxy", "ProxyApp+aio / asgiproxy req/s", ">=", 1.0, "x", note='client="aiohttp"'),
    _t(8, "proxy", "ProxyApp+aio / asgiproxy p99", "<=", 1.0, "x", note='client="aiohttp"'),
    _t(8, "proxy", "ProxyApp+ht / asgiproxy req/s", ">=", 1.0, "x", note='client="httptools"'),
    _t(8, "proxy", "ProxyApp+ht / asgiproxy p99", "<=", 1.0, "x", note='client="httptools"'),
    _t(10, "ratelimit_redis", "gcra / best limits, one server, c=1", ">=", 1.0, "x"),
    _t(10, "ratelimit_redis", "gcra / best limits, one server, c=64", ">=", 3.0, "x"),
    _t(
        10,
        "ratelimit_memory",
        "MemoryStore worst call at 1,000,000 keys, not preempted",
        "<=",
        1.0,
        "ms",
        note="wall time of the calls the OS did not switch away from (all calls: next rows)",
    ),
    _t(
        10,
        "ratelimit_memory",
        "MemoryStore worst call at 1,000,000 keys, thread CPU",
        "<=",
        1.0,
        "ms",
        note="the same call without the time other processes ran on the core",
    ),
    _t(11, "hooks", "hooks / no hooks, worst case, time", "<=", 1.05, "x"),
    _t(
        11,
        "hooks",
        "hooks / no hooks, worst case, instructions",
        "<=",
        1.05,
        "x",
        needs=("valgrind",),
        full_only=True,
    ),
    _t(12, "balancing", "PeakEWMA cycle, worst of 3/100/1000 endpoints", "<=", 1.5, "us"),
    _t(
        12,
        "balancing",
        "PeakEWMA / LeastRequest cycle",
        "<=",
        1.25,
        "x",
        note="1.5 us over least-request's 1.2 us on the issue's machine",
    ),
    _t(12, "simulate", "scenario 3: PeakEWMA p99 / oracle, 10 clients", "<=", 1.1, "x"),
    _t(
        12,
        "simulate",
        "scenario 3: PeakEWMA p99 / oracle, 25 clients",
        "<=",
        1.1,
        "x",
        full_only=True,
    ),
    _t(12, "simulate", "scenario 3: PeakEWMA p99 / oracle, 50 clients", "<=", 1.1, "x"),
    _t(13, "fairness", "FairQueue.acquire / anyio.Semaphore, asyncio", "<=", 3.0, "x"),
    _t(13, "fairness", "FairQueue.acquire / anyio.Semaphore, trio", "<=", 3.0, "x"),
    _t(13, "fairness", "per queued request, 10,000 / 10 flows", "<=", 1.5, "x"),
    _t(13, "fairness_sim", "FairQueue: quiet p99 with / without the noisy tenant", "<=", 1.2, "x"),
    _t(13, "fairness_sim", "FairQueue: throughput / capacity, noisy tenant present", ">=", 95, "%"),
    _t(
        13,
        "fairness_sim",
        "FairQueue: noisy tenant's share of the slots",
        ">=",
        5.0,
        "%",
        note="not starved; its fair share is 10%",
    ),
    _t(13, "fairness_e2e", "FairQueue: quiet p99 with / without the noisy tenant", "<=", 1.2, "x"),
    _t(13, "fairness_e2e", "FairQueue: served / capacity, noisy tenant present", ">=", 95, "%"),
    _t(
        13,
        "fairness_e2e",
        "FairQueue: noisy tenant's share of the served",
        ">=",
        5.0,
        "%",
        note="not starved; its fair share is 10%",
    ),
)

PEERS = ("limits", "aiolimiter", "pyrate-limiter", "throttled-py", "slowapi", "asgiproxy")
STACK = ("httpx", "httpcore", "h11", "uvicorn", "starlette", "aiohttp", "redis", "anyio", "trio")
TOOLS = ("redis-server", "nginx", "wrk", "valgrind", "dnsmasq")


# -- running ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
    """One run of one script: how it ended and what it emitted."""

    script: str
    status: str  # "ok", "exit 1", "timed out after 240 s", "error: ..."
    seconds: float
    records: tuple[dict[str, object], ...]
    tail: str = ""  # the end of its output, when it did not end well


def which(tool: str) -> str | None:
    """The executable's path, looking in the sbin directories too (nginx is in /usr/sbin)."""
    found = shutil.which(tool)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        if os.access(f"{folder}/{tool}", os.X_OK):
            return f"{folder}/{tool}"
    return None


def run_once(command: Sequence[str], *, script: str, timeout: float, log: Path) -> Run:
    """Run *command* with a time limit, collecting what it emits; never raises."""
    out = log.with_suffix(".jsonl")
    out.unlink(missing_ok=True)
    env = dict(os.environ)
    env[ENV] = str(out)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    started = time.monotonic()
    try:
        with log.open("wb") as sink:
            # A session of its own, so a timeout stops the servers the script started too.
            proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            try:
                code = proc.wait(timeout=timeout)
                status = "ok" if code == 0 else f"exit {code}"
            except subprocess.TimeoutExpired:
                _stop(proc)
                status = f"timed out after {timeout:.0f} s"
            _sweep(proc.pid)
    except OSError as exc:
        status = f"error: {exc}"
    seconds = time.monotonic() - started
    records = tuple(read_records(out))
    tail = "" if status == "ok" else _tail(log)
    return Run(script=script, status=status, seconds=seconds, records=records, tail=tail)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the script's whole session, SIGKILL if it is still there after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _sweep(pgid: int) -> None:
    """Kill what is left of a finished script's session: servers a crash left running."""
    time.sleep(0.2)  # those told to stop with the script get a moment to do so
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(log: Path, lines: int = 12) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def read_records(path: Path) -> Iterable[dict[str, object]]:
    """The figures in an emit file; a torn last line (a killed script) is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    for line in lines:
        try:
            record = json.loads(line)
            float(record["value"])
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("name"), str):
            yield record


# -- aggregating and judging --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Figure:
    """One figure of one script over every run that emitted it."""

    script: str
    name: str
    unit: str
    values: tuple[float, ...]
    better: Better | None = None
    note: str = ""

    @property
    def finite(self) -> list[float]:
        return [v for v in self.values if not math.isnan(v)]

    @property
    def low(self) -> float:
        return min(self.finite, default=math.nan)

    @property
    def median(self) -> float:
        return statistics.median(self.finite) if self.finite else math.nan

    @property
    def high(self) -> float:
        return max(self.finite, default=math.nan)


def aggregate(runs: Iterable[Run]) -> dict[tuple[str, str], Figure]:
    """Figures by (script, name), values in run order; the last run's unit and note win."""
    values: dict[tuple[str, str], list[float]] = {}
    meta: dict[tuple[str, str], dict[str, object]] = {}
    for run in runs:
        for record in run.records:
            key = (run.script, str(record["name"]))
            values.setdefault(key, []).append(float(record["value"]))  # type: ignore[arg-type]
            meta[key] = record
    figures = {}
    for key, vals in values.items():
        rec = meta[key]
        better = rec.get("better")
        figures[key] = Figure(
            script=key[0],
            name=key[1],
            unit=str(rec.get("unit", "")),
            values=tuple(vals),
            better=better if better in ("higher", "lower") else None,
            note=str(rec.get("note") or ""),
        )
    return figures


def judge(target: Target, figure: Figure | None, why_missing: str) -> str:
    """Met or not met (by the median), or why there is no figure."""
    if figure is None or not figure.finite:
        return why_missing
    return "met" if meets(target, figure.median) else "not met"


def meets(target: Target, value: float) -> bool:
    return value <= target.bound if target.better == "lower" else value >= target.bound


def agreement(target: Target, figure: Figure) -> str:
    """How many runs met the target, when they disagree: "(2 of 3 runs met it)"."""
    runs = figure.finite
    met = sum(meets(target, value) for value in runs)
    return "" if met in (0, len(runs)) else f" ({met} of {len(runs)} runs met it)"


def why_missing(
    target: Target, runs: Sequence[Run] | None, not_run: str | None, quick: bool
) -> str:
    """Why *target* has no figure: its script did not run or failed, a tool is missing, ..."""
    if not_run:
        return f"not run: {not_run}"
    missing = [tool for tool in target.needs if which(tool) is None]
    if missing:
        return f"not run: {', '.join(missing)} not found"
    if target.full_only and quick:
        return "not run: measured without --quick only"
    bad = [run.status for run in runs or () if run.status != "ok"]
    if bad:
        return f"not measured: {bad[0]}"
    return "missing: the script did not emit it"


# -- the machine --------------------------------------------------------------------------------


def tool_version(tool: str) -> str:
    path = which(tool)
    if path is None:
        return "not found"
    flag = "-v" if tool == "nginx" else "--version"
    try:
        done = subprocess.run([path, flag], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    match = re.search(r"\d+(?:\.\d+)+", done.stdout + done.stderr)
    return match.group(0) if match else "?"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def project_version() -> str:
    try:
        with (ROOT / "pyproject.toml").open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def machine() -> dict[str, str]:
    """What the figures were measured on, before the run (the load average is re-read after)."""
    load = os.getloadavg()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "CPU": f"{cpu_model()}, {os.cpu_count()} logical cores",
        "load before": " / ".join(f"{x:.2f}" for x in load),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": platform.platform(),
        "tenantlb": f"{project_version()} (this checkout's src/, first on the scripts' path)",
        "tools": ", ".join(f"{t} {tool_version(t)}" for t in TOOLS),
        "peers": ", ".join(f"{p} {package_version(p)}" for p in PEERS),
        "stack": ", ".join(f"{p} {package_version(p)}" for p in STACK),
    }


# -- the report ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Report:
    """Everything the markdown is rendered from."""

    machine: dict[str, str]
    runs: dict[str, list[Run]]  # by script, in the order run
    not_run: dict[str, str]  # script -> reason
    quick: bool
    repeats: int
    commands: dict[str, str]  # script -> how it was run, as markdown: "`python benchmarks/...`"
    invocation: str = "python benchmarks/report.py"

    @property
    def figures(self) -> dict[tuple[str, str], Figure]:
        return aggregate(run for runs in self.runs.values() for run in runs)

    def verdicts(self) -> list[tuple[Target, Figure | None, str]]:
        figures = self.figures
        rows = []
        for target in TARGETS:
            figure = figures.get((target.script, target.name))
            reason = why_missing(
                target, self.runs.get(target.script), self.not_run.get(target.script), self.quick
            )
            rows.append((target, figure, judge(target, figure, reason)))
        return rows


def save(report: Report, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(report), indent=1), encoding="utf-8")


def load(path: Path) -> Report:
    """A report saved as JSON by an earlier run (``build/bench/report.json``)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["runs"] = {
        name: [Run(**{**run, "records": tuple(run["records"])}) for run in runs]
        for name, runs in data["runs"].items()
    }
    return Report(**data)


def fmt(value: float, unit: str = "") -> str:
    """A figure to about three significant digits; a ratio to three decimals (1.054 > 1.05)."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    size = abs(value)
    if unit == "x" and 0.1 <= size < 10:
        return f"{value:.3f}"
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def bound_text(target: Target) -> str:
    sign = "≤" if target.better == "lower" else "≥"
    unit = target.unit
    return f"{sign} {target.bound:g}{unit if unit in ('x', '%') else ' ' + unit if unit else ''}"


def status_text(runs: Sequence[Run]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def render(report: Report) -> str:
    """The generated README: machine, targets, scripts, then every figure of every script."""
    info = report.machine
    verdicts = report.verdicts()
    met = sum(v == "met" for _, _, v in verdicts)
    not_met = sum(v == "not met" for _, _, v in verdicts)
    mode = " in its small `--quick` mode (shorter runs: noisier figures)" if report.quick else ""
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by benchmarks/report.py (`nox -s bench`): edit that, not this file. -->",
        "",
        f"Generated by `{report.invocation}` ({info.get('date', 'undated')}; `nox -s bench` runs it). Each"
        " benchmark script measures tenantlb, its peers and a baseline side by side in one"
        " process and one run, and prints its own tables. This report runs every script"
        f" {'once' if report.repeats == 1 else f'{report.repeats} times'}, one after another{mode}, seeded simulations once (every run"
        " gives the same figures; the scripts table gives each script's runs), and shows each"
        " figure's min / median / max over the runs. A"
        " ratio is taken within each run, then aggregated. A target is judged by the median."
        " On a shared machine compare the ratios, not the absolute times. What the figures"
        " mean, how they were obtained and what was tried: [ANALYSIS.md](ANALYSIS.md).",
        "",
        "<!-- --8<-- [start:summary] -->",  # docs/benchmarks.md includes this part
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in info.items()),
        "",
        "## Targets",
        "",
        f"{len(verdicts)} targets from the issues: **{met} met**, {not_met} not met,"
        f" {len(verdicts) - met - not_met} without a figure in this run. Targets in us or ms are"
        " absolute times set for a quiet core: on a loaded machine (the load average above)"
        " read them next to the ratios, which hold.",
        "",
        "| issue | script | figure | target | min | median | max | runs | verdict |",
        "|---:|---|---|---|---:|---:|---:|---:|---|",
    ]
    for target, figure, verdict in verdicts:
        values = (
            [
                *(fmt(v, figure.unit) for v in (figure.low, figure.median, figure.high)),
                str(len(figure.values)),
            ]
            if figure
            else ["-", "-", "-", "0"]
        )
        shown = "**not met**" if verdict == "not met" else verdict
        if figure and verdict in ("met", "not met"):
            shown += agreement(target, figure)
        out.append(
            f"| {target.issue} | {target.script} | {target.name}"
            + (f" ({target.note})" if target.note else "")
            + f" | {bound_text(target)} | "
            + " | ".join(values)
            + f" | {shown} |"
        )
    out += ["<!-- --8<-- [end:summary] -->", "", "## Scripts", ""]
    out.append("| script | command | runs | time per run | status |")
    out.append("|---|---|---:|---:|---|")
    for script in SCRIPTS:
        runs = report.runs.get(script.name, [])
        if script.name in report.not_run:
            status, took = f"not run: {report.not_run[script.name]}", "-"
        else:
            status = status_text(runs)
            took = f"{statistics.median(r.seconds for r in runs):.0f} s" if runs else "-"
        command = report.commands.get(script.name, "-")
        out.append(f"| {script.name}.py | {command} | {len(runs)} | {took} | {status} |")
    figures = report.figures
    targets_by_figure: dict[tuple[str, str], list[Target]] = {}
    for target in TARGETS:
        targets_by_figure.setdefault((target.script, target.name), []).append(target)
    for script in SCRIPTS:
        runs = report.runs.get(script.name, [])
        if not runs:
            continue
        out += ["", f"## {script.name}.py", ""]
        seeded = " (seeded: one run gives every run's figures)" if script.seeded else ""
        out.append(f"{report.commands[script.name]}: {status_text(runs)}{seeded}.")
        mine = [f for (name, _), f in figures.items() if name == script.name]
        if mine:
            out += ["", "| figure | unit | better | min | median | max | runs | target |"]
            out.append("|---|---|---|---:|---:|---:|---:|---|")
        for figure in mine:
            bounds = targets_by_figure.get((figure.script, figure.name), [])
            judged = ", ".join(f"{bound_text(t)} (issue {t.issue})" for t in bounds)
            name = figure.name + (f" ({figure.note})" if figure.note else "")
            out.append(
                f"| {name} | {figure.unit} | {figure.better or ''} | {fmt(figure.low, figure.unit)} |"
                f" {fmt(figure.median, figure.unit)} | {fmt(figure.high, figure.unit)} |"
                f" {len(figure.values)} | {judged or '-'} |"
            )
        for number, run in enumerate(runs, 1):
            if run.status != "ok":
                out += ["", f"Run {number}: {run.status}; the end of its output:", "", "```"]
                out += [run.tail or "(no output)", "```"]
    out += [
        "",
        "Reproduce: `nox -s bench` (all scripts, 3 runs each), `nox -s bench -- --quick`, or"
        " `python benchmarks/report.py --only NAME`; one script by hand: `python"
        " benchmarks/NAME.py` (it prints its own tables).",
        "",
    ]
    return "\n".join(out)


# -- main ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each script's small mode")
    parser.add_argument("--repeats", type=int, default=3, help="runs per script (default 3)")
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run only this script"
    )
    parser.add_argument("--timeout", type=float, help="seconds per run (default: per script)")
    parser.add_argument("--out", type=Path, default=HERE / "README.md")
    parser.add_argument("--logs", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="REPORT_JSON",
        help="run nothing: write the README again from a saved build/bench/report.json",
    )
    argv_used = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv_used)
    known = {script.name for script in SCRIPTS}
    wrong = [name for name in args.only if name.removesuffix(".py") not in known]
    if wrong:
        parser.error(f"unknown script {wrong[0]!r}; choose from {', '.join(sorted(known))}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    only = {name.removesuffix(".py") for name in args.only}
    if args.render:
        args.out.write_text(render(load(args.render)), encoding="utf-8")
        print(f"wrote {args.out} from {args.render}")
        return 0
    args.logs.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    info = machine()
    print(f"benchmark report: {info['CPU']}, load {info['load before']}, commit {info['commit']}")
    runs: dict[str, list[Run]] = {}
    not_run: dict[str, str] = {}
    commands: dict[str, str] = {}
    chosen = [s for s in SCRIPTS if not only or s.name in only]
    for index, script in enumerate(chosen, 1):
        head = f"[{index:2}/{len(chosen)}] {script.name:17}"
        missing = [tool for tool in script.needs if which(tool) is None]
        if script.manual:
            not_run[script.name] = script.manual
        elif missing:
            not_run[script.name] = f"{', '.join(missing)} not found"
        if script.name in not_run:
            print(f"{head} not run: {not_run[script.name]}", flush=True)
            continue
        extra = script.quick if args.quick else script.args
        first = (
            () if args.quick else tuple(a for t, more in script.first_run if which(t) for a in more)
        )
        typed = " ".join(["python", f"benchmarks/{script.name}.py", *extra])
        commands[script.name] = f"`{typed}`" + (
            f", the first run with `{' '.join(first)}`" if first else ""
        )
        timeout = args.timeout or (script.quick_timeout if args.quick else script.timeout)
        repeats = 1 if script.seeded else args.repeats
        if args.quick and script.quick_runs:
            repeats = min(repeats, script.quick_runs)
        for attempt in range(1, repeats + 1):
            print(f"{head} run {attempt}/{repeats} ...", end=" ", flush=True)
            log = args.logs / f"{script.name}-{attempt}.log"
            more = first if attempt == 1 else ()
            command = [sys.executable, str(HERE / f"{script.name}.py"), *extra, *more]
            run = run_once(command, script=script.name, timeout=timeout, log=log)
            runs.setdefault(script.name, []).append(run)
            print(f"{run.status}, {run.seconds:.0f} s, {len(run.records)} figures", flush=True)
            if run.status.startswith("timed out"):
                break  # another would take as long
    for script in SCRIPTS:
        if only and script.name not in only:
            not_run[script.name] = "not selected (--only)"
    info["load after"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    info["report took"] = f"{(time.monotonic() - started) / 60:.1f} min"
    report = Report(
        machine=info,
        runs=runs,
        not_run=not_run,
        quick=args.quick,
        repeats=args.repeats,
        commands=commands,
        invocation=" ".join(["python benchmarks/report.py", *argv_used]),
    )
    args.out.write_text(render(report), encoding="utf-8")
    save(report, args.logs / "report.json")
    verdicts = [v for _, _, v in report.verdicts()]
    print(
        f"wrote {args.out}: {verdicts.count('met')} targets met, {verdicts.count('not met')} not"
        f" met, {len(verdicts) - verdicts.count('met') - verdicts.count('not met')} without a"
        f" figure ({info['report took']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
