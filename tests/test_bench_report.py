"""The benchmark report's runner (benchmarks/report.py): running, aggregating, judging, rendering."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
from benchmarks import _report, report
from benchmarks.report import Figure, Report, Run, Target

BENCH = Path(report.__file__).resolve().parent


def script(tmp_path: Path, body: str) -> list[str]:
    """A real script that emits through benchmarks/_report.py, as the benchmark scripts do."""
    path = tmp_path / "fake_bench.py"
    head = f"import sys\nsys.path.insert(0, {str(BENCH)!r})\nfrom _report import emit\n"
    path.write_text(head + textwrap.dedent(body))
    return [sys.executable, str(path)]


def run(records: list[tuple[str, float]], status: str = "ok", name: str = "gateway") -> Run:
    rows = tuple({"name": n, "value": v, "unit": "us", "better": "lower"} for n, v in records)
    return Run(script=name, status=status, seconds=1.0, records=rows)


TARGET = Target(
    issue=5,
    script="gateway",
    name="admit round trip, 10 tenants",
    bound=8.0,
    better="lower",
    unit="us",
)


def test_emit_appends_one_json_line_when_the_variable_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends one JSON line a figure to the file TENANTLB_BENCH_OUT names."""
    out = tmp_path / "figures.jsonl"
    monkeypatch.setenv(_report.ENV, str(out))
    _report.emit("ours / theirs", 1.5, "x", better="higher", note="c=64")
    _report.emit("never answered", float("inf"), "ms")
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first == {
        "name": "ours / theirs",
        "value": 1.5,
        "unit": "x",
        "better": "higher",
        "note": "c=64",
    }
    assert float(second["value"]) == float("inf")


def test_emit_does_nothing_without_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes nothing when the script runs by hand."""
    monkeypatch.delenv(_report.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    _report.emit("figure", 1.0, "us")
    assert list(tmp_path.iterdir()) == []


def test_emit_rejects_a_value_that_is_not_a_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raises TypeError naming the figure for a value that is not a number."""
    monkeypatch.setenv(_report.ENV, str(tmp_path / "figures.jsonl"))
    with pytest.raises(TypeError, match="'figure' must be a number, got str"):
        _report.emit("figure", "1.0", "us")  # type: ignore[arg-type]


def test_a_script_that_succeeds_gives_its_figures(tmp_path: Path) -> None:
    """Collects what a script emits, in order, with status ok."""
    command = script(tmp_path, 'emit("one", 1.0, "us")\nemit("two", 2.5, "x")\n')
    done = report.run_once(command, script="fake", timeout=60, log=tmp_path / "fake.log")
    assert done.status == "ok"
    assert [(r["name"], r["value"]) for r in done.records] == [("one", 1.0), ("two", 2.5)]


def test_a_script_that_fails_keeps_its_figures_and_its_last_words(tmp_path: Path) -> None:
    """Records the exit status and the end of the output, and keeps what was emitted first."""
    body = 'emit("before the crash", 3.0, "us")\nraise SystemExit("no redis-server here")\n'
    done = report.run_once(
        script(tmp_path, body), script="fake", timeout=60, log=tmp_path / "f.log"
    )
    assert done.status == "exit 1"
    assert [r["name"] for r in done.records] == ["before the crash"]
    assert "no redis-server here" in done.tail


def test_a_script_past_its_time_is_stopped_with_what_it_started(tmp_path: Path) -> None:
    """Stops a script past its time limit, and the server it started too."""
    pid_file = tmp_path / "child.pid"
    body = f"""
        import subprocess, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        emit("before the hang", 1.0, "us")
        time.sleep(600)
    """
    started = time.monotonic()
    done = report.run_once(script(tmp_path, body), script="fake", timeout=3, log=tmp_path / "f.log")
    assert done.status == "timed out after 3 s"
    assert time.monotonic() - started < 30
    assert [r["name"] for r in done.records] == ["before the hang"]
    assert _gone(int(pid_file.read_text()))


def test_a_server_a_script_left_running_is_stopped(tmp_path: Path) -> None:
    """Stops a process the script started and did not stop before it exited."""
    pid_file = tmp_path / "child.pid"
    body = f"""
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        raise SystemExit(3)
    """
    done = report.run_once(
        script(tmp_path, body), script="fake", timeout=60, log=tmp_path / "f.log"
    )
    assert done.status == "exit 3"
    assert _gone(int(pid_file.read_text()))


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as exited)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_a_missing_interpreter_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """Records an error when the command cannot start."""
    done = report.run_once(
        [str(tmp_path / "no-such-python")], script="fake", timeout=5, log=tmp_path / "f.log"
    )
    assert done.status.startswith("error: ")
    assert done.records == ()


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    """Reads every whole record and skips a line cut short by a killed script."""
    path = tmp_path / "figures.jsonl"
    path.write_text('{"name": "whole", "value": 1.0}\n{"name": "torn", "val')
    assert [r["name"] for r in report.read_records(path)] == ["whole"]


def test_figures_are_aggregated_over_runs() -> None:
    """Gives each figure's min, median and max over the runs that emitted it."""
    runs = [run([("a", 3.0), ("b", 1.0)]), run([("a", 1.0)]), run([("a", 2.0), ("b", 5.0)])]
    figures = report.aggregate(runs)
    a, b = figures["gateway", "a"], figures["gateway", "b"]
    assert (a.low, a.median, a.high, a.values) == (1.0, 2.0, 3.0, (3.0, 1.0, 2.0))
    assert (b.low, b.median, b.high) == (1.0, 3.0, 5.0)


def test_a_target_is_judged_by_the_median_and_disagreement_is_shown() -> None:
    """Judges by the median and says how many runs met the target when they disagree."""
    split = Figure(script="gateway", name=TARGET.name, unit="us", values=(7.0, 7.5, 9.0))
    assert report.judge(TARGET, split, "why") == "met"
    assert report.agreement(TARGET, split) == " (2 of 3 runs met it)"
    slow = Figure(script="gateway", name=TARGET.name, unit="us", values=(9.0, 8.5, 12.0))
    assert report.judge(TARGET, slow, "why") == "not met"
    assert report.agreement(TARGET, slow) == ""
    higher = Target(issue=3, script="s", name="n", bound=4.0, better="higher", unit="x")
    assert report.judge(higher, Figure(script="s", name="n", unit="x", values=(4.0,)), "") == "met"
    assert report.judge(TARGET, None, "not run: wrk not found") == "not run: wrk not found"
    nan = Figure(script="gateway", name=TARGET.name, unit="us", values=(float("nan"),))
    assert report.judge(TARGET, nan, "missing") == "missing"


def test_why_a_figure_is_missing() -> None:
    """Names the reason: the script not run, a tool missing, quick mode, a failed run."""
    assert report.why_missing(TARGET, None, "wrk not found", False) == "not run: wrk not found"
    tool = Target(
        issue=11, script="hooks", name="n", bound=1.05, better="lower", unit="x",
        needs=("no-such-tool-here",), full_only=True,
    )  # fmt: skip
    assert report.why_missing(tool, [], None, True) == "not run: no-such-tool-here not found"
    quick = Target(
        issue=12, script="s", name="n", bound=1.1, better="lower", unit="x", full_only=True
    )
    assert report.why_missing(quick, [], None, True) == "not run: measured without --quick only"
    failed = [run([], status="timed out after 240 s")]
    assert report.why_missing(TARGET, failed, None, False) == "not measured: timed out after 240 s"
    assert (
        report.why_missing(TARGET, [run([])], None, False) == "missing: the script did not emit it"
    )


def test_the_report_shows_machine_targets_and_every_script() -> None:
    """Renders the machine, every target with its verdict, and each script's figures and failures."""
    runs = {
        "gateway": [
            run([(TARGET.name, 9.0), ("part: sha256 of the key", 0.4)]),
            run([(TARGET.name, 7.0)]),
            Run(script="gateway", status="exit 1", seconds=2.0, records=(), tail="Traceback: boom"),
        ]
    }
    text = report.render(
        Report(
            machine={"CPU": "Test CPU, 2 logical cores", "load before": "1.00 / 1.00 / 1.00"},
            runs=runs,
            not_run={"proxy": "wrk not found"},
            quick=True,
            repeats=3,
            commands={"gateway": "`python benchmarks/gateway.py --rounds 3`"},
        )
    )
    assert "| CPU | Test CPU, 2 logical cores |" in text
    assert "[ANALYSIS.md](ANALYSIS.md)" in text
    assert (
        "| 5 | gateway | admit round trip, 10 tenants | ≤ 8 us | 7.00 | 8.00 | 9.00 | 2 |" in text
    )
    assert (
        "| 8 | proxy | ProxyApp / asgiproxy req/s | ≥ 1x | - | - | - | 0 | not run: wrk not found |"
        in text
    )
    assert "| part: sha256 of the key | us | lower | 0.4 | 0.4 | 0.4 | 1 | - |" in text
    assert (
        "| gateway.py | `python benchmarks/gateway.py --rounds 3` | 3 | 1 s | 2 ok, 1 exit 1 |"
        in text
    )
    assert "Run 3: exit 1; the end of its output:" in text
    assert "Traceback: boom" in text
    assert f"{len(report.TARGETS)} targets from the issues" in text


def test_a_saved_report_renders_the_same(tmp_path: Path) -> None:
    """Renders a report saved as JSON exactly as the report it was saved from."""
    unanswered = {"name": "FIFO: quiet p99", "value": "inf", "unit": "ms", "better": "lower"}
    runs = {"gateway": [run([(TARGET.name, 7.5)]), run([(TARGET.name, 8.5)])]}
    runs["fairness_e2e"] = [
        Run(script="fairness_e2e", status="ok", seconds=9.0, records=(unanswered,))
    ]
    original = Report(
        machine={"date": "2026-11-29 21:00 UTC"},
        runs=runs,
        not_run={"proxy": "wrk not found"},
        quick=False,
        repeats=2,
        commands={
            "gateway": "python benchmarks/gateway.py",
            "fairness_e2e": "python benchmarks/fairness_e2e.py",
        },
    )
    report.save(original, tmp_path / "report.json")
    text = report.render(report.load(tmp_path / "report.json"))
    assert text == report.render(original)
    assert "| FIFO: quiet p99 | ms | lower | ∞ | ∞ | ∞ | 1 | - |" in text


def test_a_run_with_nothing_to_run_still_writes_the_report(tmp_path: Path) -> None:
    """Writes a complete report when no script runs, and the same again from its saved JSON."""
    out = tmp_path / "README.md"
    assert report.main(["--only", "compare_trees", "--out", str(out), "--logs", str(tmp_path)]) == 0
    text = out.read_text()
    assert "not run: not selected (--only)" in text
    assert "| compare_trees.py | - | 0 | - | not run: an A/B tool" in text
    again = tmp_path / "again.md"
    assert report.main(["--render", str(tmp_path / "report.json"), "--out", str(again)]) == 0
    assert again.read_text() == text


def test_an_unknown_script_is_refused() -> None:
    """Refuses --only with a name that is not a benchmark script."""
    with pytest.raises(SystemExit) as exc:
        report.main(["--only", "nope"])
    assert exc.value.code == 2


def test_every_script_and_target_is_known() -> None:
    """Lists every benchmark script, and every target names a listed script that emits figures."""
    scripts = {s.name for s in report.SCRIPTS}
    on_disk = {p.stem for p in BENCH.glob("[!_]*.py")} - {"report"}
    assert scripts == on_disk
    for target in report.TARGETS:
        assert target.script in scripts, target
        assert "emit(" in (BENCH / f"{target.script}.py").read_text(), target
    assert len({(t.script, t.name, t.issue) for t in report.TARGETS}) == len(report.TARGETS)
