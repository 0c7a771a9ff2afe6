"""`framelab bench`'s user edges, without running a benchmark: the plan the
options make, a missing Twisted, missed goals, warnings, Ctrl-C."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
from typing import Any

import pytest

from framelab.benchmarks import cli as bench_cli
from framelab.benchmarks.caveats import caveats
from framelab.benchmarks.grid import Case, Plan
from framelab.benchmarks.loadgen import LoadResult, LoadSpec, cpu_clock, record_window
from framelab.benchmarks.report import GoalResult, goal_tally
from framelab.benchmarks.runner import Summary, summarize
from framelab.benchmarks.targets import FRAMED, PEER, RAW
from framelab.cli import build_parser, main

Capture = pytest.CaptureFixture[str]


def summary(target: str, case: Case, rate: float, cpu: float = 0.99) -> Summary:
    return Summary(
        target,
        "raw" if target == RAW.name else "framed",
        "uvloop",
        "protocol",
        case.size,
        case.depth,
        case.connections,
        rounds=2,
        frames_per_s=rate,
        server_cpu=cpu,
        checked_bytes=1,
        per_round_frames_per_s=[rate, rate],
    )


@pytest.fixture
def no_twisted(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "twisted" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def parse(*argv: str) -> argparse.Namespace:
    _, parsers = build_parser("bench")
    return parsers["bench"].parse_args(list(argv))


@pytest.mark.usefixtures("no_twisted")
def test_without_twisted_the_default_grid_skips_the_peer_with_one_note() -> None:
    plan, notes = bench_cli.build_plan(parse())
    assert PEER not in plan.targets and FRAMED in plan.targets
    assert notes == [
        f"{PEER.name} skipped: Twisted is not installed (pip install 'framelab[peer]')"
    ]


@pytest.mark.usefixtures("no_twisted")
def test_without_twisted_naming_the_peer_is_a_usage_error(capsys: Capture) -> None:
    assert main(["bench", "--targets", f"raw/uvloop,{PEER.name}"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "needs Twisted" in line and "framelab[peer]" in line


def test_a_custom_run_is_titled_so() -> None:
    assert bench_cli.build_plan(parse())[0].name == "full"
    assert bench_cli.build_plan(parse("--cases", "64/1/1"))[0].name == "custom run"
    assert bench_cli.build_plan(parse("--title", "after the fix"))[0].name == "after the fix"


def test_the_goal_tally_counts_only_what_was_checked() -> None:
    goal = GoalResult("64/32", "frames/s", ">= 1", 0.5, False)
    assert goal_tally([goal, GoalResult("1024/1", "p99", "<= 1", None, None)]) == (
        "1 of 1 goal missed; 1 not checked (their case or server was not in this run)"
    )
    met = GoalResult("64/32", "frames/s", ">= 1", 2.0, True)
    assert goal_tally([met]) == "the 1 goal met"
    assert goal_tally([met, met]) == "all 2 goals met"


def test_warnings_come_from_what_the_run_saw() -> None:
    case = Case(64, 32, 10)
    one_round = Plan("custom run", (case,), (RAW, FRAMED), warmup=0.1, duration=0.2, rounds=1)
    idle = summary(RAW.name, case, 1e6, cpu=0.4)
    busy = summary(FRAMED.name, case, 1e6)
    busy.per_round_frames_per_s = [0.7e6, 1.0e6, 1.1e6]
    busy.steal = 0.12
    idle.steal = 0.01  # under the threshold: not named
    found = caveats(one_round, [idle, busy], load=3.0, cores=2)
    assert found[0].startswith("one round per cell")
    assert "windows of 0.2 s" in found[1]
    assert "load average 3.0 on 2 cores" in found[2]
    assert "raw/uvloop 64 B D=32 C=10 (40%)" in found[3]
    assert "framed-protocol/uvloop 64 B D=32 C=10 (40%)" in found[4]
    assert found[5].startswith("the hypervisor gave this machine's CPU time to others")
    assert found[5].endswith(": framed-protocol/uvloop 64 B D=32 C=10 (12%)")
    calm = dataclasses_replace(one_round, rounds=3, duration=1.5)
    assert (
        caveats(
            calm,
            [busy.__class__(**{**busy.__dict__, "per_round_frames_per_s": [], "steal": 0.0})],
            0.1,
            2,
        )
        == []
    )


def dataclasses_replace(plan: Plan, **changes: Any) -> Plan:

    return dataclasses.replace(plan, **changes)


def test_ctrl_c_reports_the_cases_that_finished(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    second = Case(1024, 32, 2)

    def run_plan(plan: Plan, progress: Any = None) -> list[Summary]:
        (case,) = plan.cases
        if case == second:
            raise KeyboardInterrupt
        return [summary(t.name, case, 1e5) for t in plan.targets]

    monkeypatch.setattr(bench_cli, "run_plan", run_plan)
    code = main(
        ["bench", "--targets", "raw/uvloop,framed-protocol/uvloop", "--cases", "64/32/2,1024/32/2"]
    )
    assert code == 130
    out = capsys.readouterr().out
    assert "interrupted: 1 finished case(s) reported below" in out
    assert "64 B, D=32, C=2" in out and "1 KiB, D=32" not in out


def test_cpu_per_message_is_the_median_of_the_rounds_split_user_and_kernel() -> None:
    case = Case(64, 32, 10)
    rounds = [
        {
            "frames": 1000,
            "seconds": 1.0,
            "frames_per_s": 1000.0,
            "client_cpu_s": 0.5,
            "server_cpu_s": cpu,
            "server_user_s": user,
            "checked_bytes": 1,
        }
        for cpu, user in ((0.010, 0.004), (0.008, 0.001), (0.012, 0.002))
    ]
    s = summarize(FRAMED, case, rounds)
    assert s.server_user_us == pytest.approx(2.0)  # 4, 1, 2 µs a message
    assert s.server_system_us == pytest.approx(7.0)  # 6, 7, 10
    for r in rounds:
        del r["server_user_s"]  # a server whose times could not be read
    s = summarize(FRAMED, case, rounds)
    assert s.server_user_us is None and s.server_system_us is None


def test_steal_is_read_from_the_first_line_of_proc_stat(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = iter(["cpu  100 5 50 800 10 0 20 15 40 0\n", "cpu  150 5 60 900 10 0 25 35 60 0\n"])

    def fake_open(path: str, *args: Any, **kwargs: Any) -> Any:
        assert path == "/proc/stat"
        return io.StringIO(next(lines))

    monkeypatch.setattr("builtins.open", fake_open)
    start, end = cpu_clock(), cpu_clock()
    assert start == (15, 1000) and end == (35, 1185)  # guest (40, 60) is inside user already
    result = LoadResult()
    spec = LoadSpec("127.0.0.1", 1, 64, 1, 1, 0.0, 1.0)
    record_window(
        result,
        spec,
        frames=1,
        seconds=1.0,
        client_cpu_s=0.0,
        server_cpu=(None, None),
        machine=(start, end),
        checked_bytes=0,
        histograms=None,
    )
    assert result.steal == pytest.approx(20 / 185)
