"""`framelab sticky`: raw reads differ from sends, framed messages equal them."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from framelab.cli import main
from framelab.clients.sticky import observe_sticky, render
from framelab.common.words import plural
from framelab.servers.config import LoopName


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_raw_reads_differ_from_sends_and_framing_restores_them(loop: LoopName) -> None:
    report = observe_sticky(messages=20, size=30, large=1 << 20, loop=loop)
    merged, split = report.merged, report.split
    assert merged.sends == [30] * 20 and split.sends == [1 << 20]
    assert sum(merged.raw_server_reads) == 600 and len(merged.raw_server_reads) < 20
    assert sum(split.raw_server_reads) == 1 << 20 and len(split.raw_server_reads) > 1
    for obs in (merged, split):
        assert obs.raw_bytes_intact and not obs.boundaries_kept
        assert obs.framed_messages == len(obs.sends) and obs.framed_identical
        assert sum(obs.framed_client_reads) == sum(obs.sends) + 4 * len(obs.sends)
    assert report.framing_restored and report.loop == loop


def test_render_shows_the_counts_and_what_they_mean() -> None:
    report = observe_sticky(messages=10, size=50, large=300_000)
    console = Console(record=True, width=120)
    render(report, console)
    text = console.export_text()
    assert "10 × 50 B" in text and "1 × 293.0 KiB" in text
    assert f"10 sends -> {plural(len(report.merged.raw_server_reads), 'read')} (merged)" in text
    assert "10, identical" in text and "exactly one message" in text


def test_cli_json_is_one_object_with_the_observations(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sticky", "--json", "--messages", "8", "--size", "100", "--large", "200000"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["framing_restored"] is True
    assert data["merged"]["sends"] == [100] * 8 and data["merged"]["framed_messages"] == 8
    assert sum(data["split"]["raw_server_reads"]) == 200_000
    assert data["merged"]["boundaries_kept"] is False


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sticky", "--messages", "5", "--loop", "asyncio"]) == 0
    out = capsys.readouterr().out
    assert "Sticky packets on loopback (asyncio servers)" in out and "5 × 30 B" in out


def test_sizes_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        observe_sticky(messages=0)
    with pytest.raises(SystemExit):
        main(["sticky", "--size", "0"])
    assert "must be at least 1" in capsys.readouterr().err
