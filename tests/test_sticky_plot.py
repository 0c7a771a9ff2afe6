"""`framelab sticky --plot`: three bars over one byte stream, per pattern."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from framelab.cli import main
from framelab.clients.sticky import Observation, StickyReport
from framelab.clients.sticky_plot import (
    binary_size,
    binary_step,
    pieces,
    tracks,
    write_sticky_chart,
)
from framelab.common.charts import ChartsUnavailable, pyplot
from framelab.common.words import plural


def observation(sends: list[int], reads: list[int], messages: int) -> Observation:
    return Observation(
        pattern=f"{len(sends)} sends",
        sends=sends,
        raw_server_reads=reads,
        raw_client_reads=reads,
        raw_bytes_intact=True,
        framed_client_reads=[sum(sends) + 4 * len(sends)],
        framed_messages=messages,
        framed_identical=True,
    )


def test_pieces_tile_the_stream_in_order() -> None:
    assert pieces([30, 30, 40]) == [(0, 30), (30, 30), (60, 40)]
    assert pieces([]) == []


def test_the_tracks_are_sends_reads_and_decoded_messages() -> None:
    merged = observation([30] * 20, [510, 90], 20)
    labels, _, sizes = zip(*tracks(merged), strict=True)
    assert labels == ("20 sends", "2 reads by the raw echo", "20 messages through framing")
    assert sizes == ([30] * 20, [510, 90], [30] * 20)
    unverified = dataclasses.replace(merged, framed_identical=False)
    assert tracks(unverified)[2][2] == []  # messages not shown unless they matched
    assert plural(1, "read") == "1 read" and plural(2, "read") == "2 reads"


def test_the_byte_axis_counts_in_binary_units_like_the_title() -> None:
    assert binary_step(1 << 20) == 128 << 10  # 1 MiB in 8 steps of 128 KiB
    assert binary_step(600) == 100
    assert [binary_size(v) for v in (0, 512, 128 << 10, 1 << 20)] == [
        "0 B",
        "512 B",
        "128 KiB",
        "1 MiB",
    ]


def test_the_chart_is_a_png(png_magic: bytes, tmp_path: Path) -> None:
    report = StickyReport(
        "uvloop",
        merged=observation([30] * 20, [510, 90], 20),
        split=observation([1 << 20], [131072, 917504], 1),
    )
    path = write_sticky_chart(report, tmp_path / "sub" / "sticky.png")
    data = path.read_bytes()
    assert data.startswith(png_magic) and len(data) > 10_000


def test_cli_plot_keeps_json_on_stdout(
    png_magic: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sticky.png"  # --plot takes a directory: the chart is named in it
    args = ["sticky", "--json", "--messages", "8", "--size", "100", "--large", "200000"]
    assert main([*args, "--plot", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["framing_restored"] is True  # the chart's note went to stderr
    assert str(path) in err
    assert path.read_bytes().startswith(png_magic)


def test_without_matplotlib_plot_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ChartsUnavailable):
        pyplot()
    args = ["sticky", "--messages", "2", "--large", "1000", "--plot", str(tmp_path / "charts")]
    with pytest.raises(SystemExit) as exit_status:  # refused while parsing, before any work
        main(args)
    assert exit_status.value.code == 2
    assert "pip install 'framelab[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "charts").exists()
