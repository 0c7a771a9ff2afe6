"""`framelab experiment`: list, run, --json, and an experiment that raises."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from framelab.cli import main
from framelab.experiments import cli, registry
from framelab.experiments.context import RunContext
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
    """Two fake experiments next to the real ones (and one that does not exist)."""
    real_load = registry.load

    def load(name: str) -> Experiment:
        return FAKES[name] if name in FAKES else real_load(name)

    monkeypatch.setattr(cli, "load", load)
    names = [*EXPERIMENT_MODULES, *FAKES, "not_written_yet"]
    monkeypatch.setattr(cli, "EXPERIMENT_MODULES", names)


def test_list_names_every_registered_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENT_MODULES:
        assert name in out
    assert "C17" in out and "C25" in out


@pytest.mark.usefixtures("fake_registry")
def test_list_shows_missing_modules_as_not_available(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "list"]) == 0
    out = capsys.readouterr().out
    assert "not_written_yet" in out and cli.NOT_AVAILABLE in out


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
    assert "0 confirmed, 1 differs, 0 skipped" in capsys.readouterr().out


@pytest.mark.usefixtures("fake_registry")
def test_missing_module_is_left_out_of_a_run_and_reported() -> None:
    batch = cli.execute(["fine", "not_written_yet"], RunContext(rounds=3), progress=False)
    assert [r.claim for r in batch.results] == ["C98"]
    assert batch.unavailable == ["not_written_yet"] and batch.failed == []


@pytest.mark.usefixtures("fake_registry")
def test_naming_a_missing_module_explicitly_fails() -> None:
    assert main(["experiment", "run", "not_written_yet"]) == 1


def test_unknown_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "run", "no_such_experiment"]) == 2
    assert "unknown experiment" in capsys.readouterr().out


@pytest.mark.usefixtures("fake_registry")
def test_run_experiments_returns_every_result_without_raising() -> None:
    results = cli.run_experiments(
        ["boom", "fine"], RunContext(rounds=3), progress=False, show=False
    )
    assert [r.verdict for r in results] == [Verdict.SKIPPED, Verdict.SKIPPED, Verdict.CONFIRMED]


def test_all_expands_to_the_registry_without_duplicates() -> None:
    assert cli.expand(["sticky", "all"]) == EXPERIMENT_MODULES
    assert cli.expand(["nagle", "nagle"]) == ["nagle"]


def test_a_module_that_fails_to_import_is_not_mistaken_for_a_missing_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(name: str) -> Experiment:
        raise ModuleNotFoundError("No module named 'somedep'", name="somedep")

    monkeypatch.setattr(cli, "load", broken)
    loaded = cli.load_experiment("sticky")
    assert loaded.available and loaded.experiment is None
    assert loaded.problem is not None and "somedep" in loaded.problem


def test_namespaces_left_behind_are_reported() -> None:
    out = io.StringIO()
    batch = cli.Batch(leftover_namespaces=["framelab-123-a"])
    cli.report(Console(file=out, width=200), batch)
    assert "network namespaces left behind: framelab-123-a" in out.getvalue()
