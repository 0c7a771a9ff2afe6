"""`--plot`: the charts the experiments declare, drawn from results alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from framelab.cli import main
from framelab.experiments import engine, nagle, registry, retransmission
from framelab.experiments.context import RunContext
from framelab.experiments.plot import write_charts
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Verdict, skipped

# shaped like what the nagle and retransmission experiments observe
NAGLE_SEEN: dict[str, Any] = {
    "nodelay": {"median_ms": 0.025},
    "nagle": {"median_ms": 44.0},
    "one_write": {"median_ms": 0.018},
    "quickack": {"median_ms": 0.03},
    "cork": {"median_ms": 0.037},
    "event_loops": {
        "asyncio": {"default_median_ms": 0.031, "nodelay_cleared_median_ms": 44.0},
        "uvloop": {"default_median_ms": 0.021, "nodelay_cleared_median_ms": 43.9},
    },
}
RETRANSMISSION_SEEN: dict[str, Any] = {
    "user_timeout_ms": 1500,
    "retransmit_gaps_ms": [205.3, 208.0, 420.0, 832.0],
    "error": "ETIMEDOUT",
    "abort_after_ms": 1917.4,
}


def result(experiment: str, claim: str, observed: dict[str, Any]) -> ClaimResult:
    return ClaimResult(experiment, claim, Verdict.CONFIRMED, "seen", observed)


def test_each_experiment_draws_its_own_chart_as_png(png_magic: bytes, tmp_path: Path) -> None:
    results = [
        result("nagle", "C36", NAGLE_SEEN),
        result("retransmission", "C40", RETRANSMISSION_SEEN),
    ]
    written = write_charts(results, tmp_path / "charts")
    assert [p.name for p in written] == ["nagle.png", "retransmission.png"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(png_magic) and len(data) > 10_000


def test_skipped_or_absent_claims_draw_nothing(tmp_path: Path) -> None:
    results = [
        skipped("retransmission", "C40", "needs root"),
        result("nagle", "C18", {}),  # C18 alone: the chart needs C36's numbers
        result("sticky", "C17", {}),  # an experiment that declares no chart
    ]
    assert write_charts(results, tmp_path / "charts") == []
    assert not (tmp_path / "charts").exists()


def test_nagle_rows_pair_each_mode_with_its_median() -> None:
    rows = dict(nagle.chart_rows(NAGLE_SEEN))
    assert len(rows) == 9
    stalled = {label for label, ms in rows.items() if ms >= nagle.STALL_MS}
    assert stalled == {
        "Nagle on: write, write, read",
        "asyncio, TCP_NODELAY cleared",
        "uvloop, TCP_NODELAY cleared",
    }
    assert rows["TCP_NODELAY"] == 0.025


def test_transmissions_are_placed_by_their_gaps() -> None:
    assert retransmission.transmission_times(RETRANSMISSION_SEEN) == pytest.approx(
        [0, 205.3, 413.3, 833.3, 1665.3]
    )


def test_the_retransmission_legend_sits_below_the_axis_clear_of_every_stem() -> None:
    from framelab.common.charts import pyplot

    draw = retransmission.timeline([result("retransmission", "C40", RETRANSMISSION_SEEN)])
    assert draw is not None
    fig, ax = pyplot().subplots(figsize=(9, 4.2))
    try:
        draw(ax)
        fig.canvas.draw()
        legend = ax.get_legend().get_window_extent()
        axes = ax.get_window_extent()
        assert legend.y1 <= axes.y0  # entirely under the plotting area
    finally:
        pyplot().close(fig)


def test_the_cli_writes_the_charts_a_run_allows(
    png_magic: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def nagle_like(ctx: RunContext) -> list[ClaimResult]:
        return [result("nagle_like", "C36", NAGLE_SEEN)]

    fake = Experiment(
        "nagle_like", ("C36",), "no", "Nagle's numbers", nagle_like, charts=nagle.EXPERIMENT.charts
    )
    real_load = registry.load

    def load(name: str) -> Experiment:
        return fake if name == fake.name else real_load(name)

    monkeypatch.setattr(engine, "load", load)
    monkeypatch.setattr("framelab.experiments.plot.load", load)
    monkeypatch.setattr(engine, "EXPERIMENT_MODULES", [fake.name])
    monkeypatch.setattr("framelab.experiments.plot.EXPERIMENT_MODULES", [fake.name])
    assert main(["experiment", "run", "nagle_like", "--plot", str(tmp_path)]) == 0
    assert (tmp_path / "nagle.png").read_bytes().startswith(png_magic)
    assert not (tmp_path / "retransmission.png").exists()
    assert "nagle.png" in capsys.readouterr().out
