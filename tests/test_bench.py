"""The benchmark: its histogram, its load generator's checks, a tiny grid.

Performance goals are not asserted here (that is `framelab bench`'s job);
these tests check that a run is complete, verified and sane.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framelab.benchmarks.histogram import SUB_BUCKETS, LatencyHistogram
from framelab.benchmarks.loadgen import LoadSpec, Tape, run_load
from framelab.benchmarks.targets import MAX_FRAME


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=300))
def test_percentiles_are_within_the_bucket_precision(values: list[int]) -> None:
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    ordered = sorted(values)
    for percent in (0.1, 50, 90, 99, 99.9, 100):
        exact = ordered[max(1, math.ceil(len(ordered) * percent / 100)) - 1]
        reported = hist.percentile(percent)
        assert exact <= reported <= max(exact * (1 + 2 / SUB_BUCKETS), exact + 1)
    assert hist.total == len(values)
    assert (hist.min_ns, hist.max_ns) == (ordered[0], ordered[-1])


@given(st.lists(st.integers(0, 10**9)), st.lists(st.integers(0, 10**9)))
def test_merged_histograms_equal_one_histogram(a: list[int], b: list[int]) -> None:
    left, right, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for v in a:
        left.record(v)
        both.record(v)
    for v in b:
        right.record(v)
        both.record(v)
    left.merge(right)
    assert left.counts == both.counts and left.total == both.total
    sparse = LatencyHistogram.from_sparse(left.to_sparse(), left.min_ns, left.max_ns)
    assert sparse.percentile(99) == both.percentile(99)


@pytest.mark.parametrize("message", ["bytes", "msgpack"])
def test_tape_frames_are_distinct_and_contiguous(message: str) -> None:
    tape = Tape(64, depth=8, message=message)
    frames = [bytes(tape.frames_at(i, 1)) for i in range(tape.count)]
    assert len(set(frames)) == tape.count  # a reordered echo cannot match
    # any `depth` frames from any index are one slice, even across the end
    assert bytes(tape.frames_at(tape.count - 1, 8))[: tape.frame_size] == frames[-1]
    assert (
        bytes(tape.frames_at(tape.count - 1, 8))[tape.frame_size :][: tape.frame_size] == frames[0]
    )


# -- the load generator notices a bad echo -----------------------------------
Echo = Callable[[bytes, int], bytes]


async def echo_server(mangle: Echo) -> AsyncIterator[int]:
    """An echo that passes every read through `mangle(data, bytes_so_far)`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = 0
        while data := await reader.read(65536):
            writer.write(mangle(data, seen))
            seen += len(data)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def spec(port: int, drain_timeout: float = 1.0) -> LoadSpec:
    return LoadSpec("127.0.0.1", port, 100, 4, 2, 0.05, 0.2, drain_timeout=drain_timeout)


async def test_a_faithful_echo_passes() -> None:
    async for port in echo_server(lambda data, seen: data):
        result = await run_load(spec(port))
    assert result.error is None
    assert result.frames > 0 and result.frames_per_s > 0
    assert result.checked_bytes >= result.frames * 104


async def test_a_corrupted_byte_fails_the_run() -> None:
    def flip_one(data: bytes, seen: int) -> bytes:
        if seen <= 5000 < seen + len(data):
            i = 5000 - seen
            return data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]
        return data

    async for port in echo_server(flip_one):
        result = await run_load(spec(port))
    assert result.error is not None and "differs" in result.error


async def test_a_lost_frame_fails_the_run() -> None:
    def drop_after(data: bytes, seen: int) -> bytes:
        return data[: max(0, 3000 - seen)]  # echoes the first 3000 bytes only

    async for port in echo_server(drop_after):
        result = await run_load(spec(port, drain_timeout=0.3))
    assert result.error is not None and "never came back" in result.error


# -- a tiny grid through the command ---------------------------------------------
def benchmark_servers() -> set[int]:
    """pids of running benchmark servers started from this directory (their
    command lines are distinctive)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if os.readlink(entry / "cwd") != os.getcwd():  # another checkout's run, side by side
                continue
        except OSError:
            continue
        if b"framelab.benchmarks.twisted_echo" in argv or str(MAX_FRAME).encode() in argv:
            pids.add(int(entry.name))
    return pids


def test_a_tiny_grid_is_complete_and_sane(tmp_path: Path) -> None:
    pytest.importorskip("twisted")
    before = benchmark_servers()
    out = tmp_path / "bench.json"
    targets = "raw/uvloop,framed-protocol/uvloop,msgpack-protocol/asyncio,twisted-peer"
    grid = ["--targets", targets, "--cases", "64/4/2,1024/1/1"]
    timing = ["--warmup", "0.1", "--duration", "0.3", "--rounds", "1"]
    output = ["--json", str(out), "--plot", str(tmp_path / "charts")]
    output += ["--markdown", str(tmp_path / "bench.md"), "--allow-missed-goals"]
    done = subprocess.run(
        [sys.executable, "-m", "framelab", "bench", *grid, *timing, *output],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},  # rich wraps lines at 80 columns in a pipe
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "custom run" in done.stdout  # not "full": these were not the full grid's cases
    assert "one round per cell" in done.stdout  # a warning that the numbers cannot mean much
    tally = r"(1 of 1 goal missed|the 1 goal met); \d+ not checked"  # p99 at 1 KiB D=1 only
    assert re.search(tally, done.stdout), done.stdout[-1000:]
    assert benchmark_servers() <= before  # every server it started is gone
    doc = json.loads(out.read_text())
    assert doc["errors"] == []
    assert doc["environment"]["kernel"] and doc["environment"]["python"]
    results = doc["results"]
    assert len(results) == 8
    for r in results:
        assert r["rounds"] == 1 and r["frames_per_s"] > 0 and r["checked_bytes"] > 0
        assert r["peak_rss_mib"] > 1 and 0 < r["server_cpu"] <= 1.5
        # the split per message adds up to the share of a core (one round: exactly)
        per_frame = r["server_user_us"] + r["server_system_us"]
        # (either part may be 0 ticks in a 0.3 s window of a light load; their sum is not)
        assert r["server_user_us"] >= 0 and r["server_system_us"] >= 0
        assert per_frame * r["frames_per_s"] / 1e6 == pytest.approx(r["server_cpu"], rel=1e-6)
        if r["depth"] == 1:
            lat = r["latency"]
            assert 0 < lat["p50_us"] <= lat["p90_us"] <= lat["p99_us"] <= lat["p99.9_us"]
    ratios = {row["case"]: row for row in doc["ratios"]}
    assert ratios["64/4"]["framed / raw"] > 0 and ratios["1024/1"]["framed / peer"] > 0
    goals = {(g["case"], g["what"]): g for g in doc["goals"]}
    assert goals[("1024/1", "p99 latency, framed / raw")]["measured"] > 0
    assert all(g["met"] is None for g in doc["goals"] if g["case"] not in ("1024/1", "64/4"))
    assert (tmp_path / "charts" / "throughput.png").stat().st_size > 1000
    assert (tmp_path / "charts" / "latency.png").stat().st_size > 1000
    table = (tmp_path / "bench.md").read_text()
    assert "| server | 64 B D=4 | 1 KiB D=1 |" in table and "| twisted-peer |" in table
    assert "| 1 KiB D=1 | p99 latency, framed / raw | <= 1.3 |" in table
    assert "in user space + in the kernel" in table
    assert re.search(r"\| raw/uvloop \| \d+\.\d\d \+ \d+\.\d\d \| \d+\.\d\d \+ ", table)
