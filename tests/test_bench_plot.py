"""The benchmark's charts, drawn from small fixed results (no benchmark run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from framelab.benchmarks.plot import plain_number, write_charts
from framelab.benchmarks.runner import Summary

pytest.importorskip("matplotlib")


def cell(target: str, kind: str, size: int, depth: int, connections: int, rate: float) -> Summary:
    latency = None
    if depth == 1:
        base = 100 + size / 1000
        latency = {"p50_us": base, "p99_us": 2 * base, "p99.9_us": 3 * base, "count": 10}
    return Summary(
        target,
        kind,
        "uvloop",
        "protocol",
        size,
        depth,
        connections,
        rounds=3,
        frames_per_s=rate,
        payload_mb_per_s=rate * size / 1e6,
        latency=latency,
        checked_bytes=1,
        per_round_frames_per_s=[rate * 0.98, rate, rate * 1.01],
    )


def grid(cases: list[tuple[int, int, int]]) -> list[Summary]:
    targets = [
        ("raw/uvloop", "raw"),
        ("framed-protocol/uvloop", "framed"),
        ("twisted-peer", "peer"),
    ]
    return [
        cell(name, kind, *case, rate=1e5 / (i + 1) / (case[0] / 64) ** 0.3)
        for case in cases
        for i, (name, kind) in enumerate(targets)
    ]


@pytest.mark.parametrize(
    "cases",
    [
        [(1024, 1, 10)],  # one case: one panel, no line through two lone dots
        [(64, 1, 10), (64, 32, 10), (65536, 1, 4), (1 << 20, 1, 2)],
    ],
    ids=["one case", "four cases"],
)
def test_each_chart_is_a_non_empty_png(
    cases: list[tuple[int, int, int]], tmp_path: Path, png_magic: bytes
) -> None:
    written = write_charts(grid(cases), tmp_path)
    assert [p.name for p in written] == ["throughput.png", "latency.png"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(png_magic) and len(data) > 10_000, path


def test_without_a_timed_case_there_is_no_latency_chart(tmp_path: Path) -> None:
    written = write_charts(grid([(64, 32, 10)]), tmp_path)
    assert [p.name for p in written] == ["throughput.png"]


def test_a_failed_cell_is_marked_not_drawn(tmp_path: Path, png_magic: bytes) -> None:
    summaries = grid([(64, 32, 10)])
    summaries[1].errors = ["echo corrupted"]
    (path,) = write_charts(summaries, tmp_path)
    assert path.read_bytes().startswith(png_magic)


def test_tick_labels_are_plain_numbers() -> None:
    assert [plain_number(v) for v in (0.5, 200, 2500, 1.2e6)] == ["0.5", "200", "2.5 k", "1.2 M"]
