"""`framelab experiment` and its engine: list, select, run, --json, an experiment that raises."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from framelab.cli import main
from framelab.experiments import cli, engine, registry
from framelab.experiments.context import DEFAULT_ROUNDS, QUICK_ROUNDS, RunContext, running_as_root
from framelab.experiments.registry import EXPERIMENT_MODULES, Experiment
from framelab.experiments.result import ClaimResult, Verdict, judge


def fine_run(ctx: RunContext) -> list[ClaimResult]:
    return [
        judge("fine", "C98", ctx.rounds == 3, {"rounds": ctx.rounds}, confirmed="ok", differs="no")
    ]


def boom_run(ctx: RunContext) -> list[ClaimResult]:
    raise RuntimeError("the kernel said no")


FAKES = {
    "boom": Experiment("boom", ("C90", "C91"), "no", "always raises", boom_run),
    "fine": Experiment("fine", ("C98",), "no", "always works", fine_run),
}


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two fake experiments next to the real ones."""
    real_load = registry.load

    def load(name: str) -> Experiment:
        return FAKES[name] if name in FAKES else real_load(name)

    monkeypatch.setattr(engine, "load", load)
    monkeypatch.setattr(engine, "EXPERIMENT_MODULES", [*EXPERIMENT_MODULES, *FAKES])


def test_list_names_every_registered_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENT_MODULES:
        assert name in out
    assert "C17" in out and "C25" in out


@pytest.mark.kernel
def test_run_writes_a_json_list_of_results(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    assert main(["experiment", "run", "broken_pipe", "--quick", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert isinstance(data, list) and len(data) == 1
    [result] = data
    assert {"experiment", "claim", "verdict", "observed", "summary", "trace"} <= set(result)
    assert result["experiment"] == "broken_pipe" and result["claim"] == "C25"
    assert result["verdict"] == "confirmed"
    assert result["observed"]["after_fin"]["second_send"] == "EPIPE"


@pytest.mark.usefixtures("fake_registry")
def test_a_raising_experiment_is_skipped_the_rest_still_run_and_exit_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.json"
    assert main(["experiment", "run", "boom", "fine", "--quick", "--json", str(path)]) == 1
    data = json.loads(path.read_text())
    assert [(r["claim"], r["verdict"]) for r in data] == [
        ("C90", "skipped"),
        ("C91", "skipped"),
        ("C98", "confirmed"),  # ran after the failure, with --quick's 3 rounds
    ]
    assert "RuntimeError: the kernel said no" in data[0]["summary"]
    assert "boom" in capsys.readouterr().out


@pytest.mark.usefixtures("fake_registry")
def test_differs_is_an_answer_not_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "run", "fine", "--rounds", "4"]) == 0  # differs: 4 != 3
    assert "0 confirmed, 0 partly, 1 differs, 0 skipped" in capsys.readouterr().out


def test_unknown_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "run", "sticky", "no_such_experiment"]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert "unknown experiment(s): no_such_experiment" in line and "sticky" in line
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.usefixtures("fake_registry")
def test_run_experiments_returns_every_result_without_raising() -> None:
    results = engine.run_experiments(
        ["boom", "fine"], RunContext(rounds=3), progress=False, show=False
    )
    assert [r.verdict for r in results] == [Verdict.SKIPPED, Verdict.SKIPPED, Verdict.CONFIRMED]


def test_all_expands_to_the_registry_without_duplicates() -> None:
    assert engine.select(["sticky", "all"]) == EXPERIMENT_MODULES
    assert engine.select(["nagle", "nagle"]) == ["nagle"]


def test_select_names_every_unknown_experiment() -> None:
    with pytest.raises(engine.UnknownExperiment) as caught:
        engine.select(["nagle", "nope", "all", "neither"])
    assert caught.value.unknown == ["nope", "neither"]


def test_a_module_that_fails_to_import_is_reported_as_failed_and_the_rest_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(name: str) -> Experiment:
        if name == "fine":
            return FAKES["fine"]
        raise ModuleNotFoundError("No module named 'somedep'", name="somedep")

    monkeypatch.setattr(engine, "load", broken)
    loaded = engine.load_experiment("sticky")
    assert loaded.experiment is None
    assert loaded.problem is not None and "somedep" in loaded.problem
    batch = engine.execute(["sticky", "fine"], RunContext(rounds=3), progress=False)
    assert [(r.experiment, r.verdict) for r in batch.results] == [
        ("sticky", Verdict.SKIPPED),
        ("fine", Verdict.CONFIRMED),
    ]
    assert batch.failed == ["sticky"]


def test_the_context_asks_for_root_when_it_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RunContext().root == running_as_root()
    monkeypatch.setattr("os.geteuid", lambda: 12345)
    assert RunContext().root is False
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert RunContext().root is True


def test_options_reach_the_experiments_as_context_fields() -> None:
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    assert cli.context_from(parser.parse_args(["run", "x"])).rounds == DEFAULT_ROUNDS
    quick = cli.context_from(parser.parse_args(["run", "x", "--quick"]))
    assert quick.quick and quick.rounds == QUICK_ROUNDS
    assert cli.context_from(parser.parse_args(["run", "x", "--quick", "--rounds", "7"])).rounds == 7
    outputs = cli.outputs_from(parser.parse_args(["run", "x", "--json", "r.json", "--plot", "d"]))
    assert outputs == engine.Outputs(json=Path("r.json"), charts=Path("d"))


def test_namespaces_left_behind_are_reported() -> None:
    out = io.StringIO()
    batch = engine.Batch(leftover_namespaces=["framelab-123-a"])
    engine.report(Console(file=out, width=200), batch)
    assert "network namespaces left behind: framelab-123-a" in out.getvalue()


def test_sysctl_and_mtu_reach_the_run_context() -> None:
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    args = parser.parse_args(
        ["run", "backlog", "--sysctl", "net.ipv4.tcp_syncookies=2", "--mtu", "9000"]
    )
    ctx = cli.context_from(args)
    assert ctx.sysctls == (("net.ipv4.tcp_syncookies", "2"),) and ctx.mtu == 9000


@pytest.mark.parametrize(
    "bad",
    [["--sysctl", "net.ipv4.tcp_syncookies"], ["--sysctl", "kernel.pid_max=5"], ["--mtu", "9"]],
)
def test_bad_settings_are_one_line_errors(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_status:  # argparse's own exit for a bad argument
        main(["experiment", "run", "backlog", *bad])
    assert exit_status.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err
