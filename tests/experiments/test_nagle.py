"""C18, C36 on this kernel: Nagle holds a small write back until the delayed
ACK; TCP_NODELAY (and the other remedies) do not; asyncio and uvloop set it."""

from __future__ import annotations

import pytest

from framelab.experiments import nagle
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in nagle.run(RunContext(rounds=2, quick=True))}


def test_nagle_round_trip_waits_for_the_delayed_ack(results: dict[str, ClaimResult]) -> None:
    seen = results["C18"].observed
    # Linux's delayed ACK is 40 ms at least, 200 ms at most: generous bounds around that
    assert 20 <= seen["nagle"]["median_ms"] < 250
    assert seen["nodelay"]["median_ms"] * nagle.STALL_RATIO <= seen["nagle"]["median_ms"]
    assert results["C18"].verdict is Verdict.CONFIRMED


def test_nagle_combines_the_writes_it_held_back(results: dict[str, ClaimResult]) -> None:
    seen = results["C18"].observed
    assert seen["three_writes_nagle_segments"] == 2  # header, then body halves together
    assert seen["three_writes_nodelay_segments"] == 3


def test_nodelay_sends_each_write_at_once(results: dict[str, ClaimResult]) -> None:
    seen = results["C36"].observed
    assert seen["nodelay"]["data_segments_per_request"] == 2
    assert seen["nodelay_3_writes"]["data_segments_per_request"] == 3
    assert results["C36"].verdict is Verdict.CONFIRMED


def test_one_write_quickack_and_cork_avoid_the_stall(results: dict[str, ClaimResult]) -> None:
    seen = results["C36"].observed
    assert seen["other_remedies_avoid_stall"] == {"one_write": True, "quickack": True, "cork": True}
    assert seen["one_write"]["data_segments_per_request"] == 1
    assert seen["cork"]["data_segments_per_request"] == 1  # corked writes leave together


def test_event_loops_set_nodelay_and_clearing_it_brings_the_stall_back(
    results: dict[str, ClaimResult],
) -> None:
    loops = results["C36"].observed["event_loops"]
    assert "asyncio" in loops
    for seen in loops.values():
        assert seen["connected_nodelay"] is True
        assert seen["accepted_nodelay"] is True
        assert seen["nodelay_cleared_median_ms"] >= 20
        assert seen["default_median_ms"] * nagle.STALL_RATIO <= seen["nodelay_cleared_median_ms"]


@pytest.mark.root
def test_capture_shows_the_body_leaving_after_the_ack(results: dict[str, ClaimResult]) -> None:
    capture = results["C18"].observed["capture"]
    assert capture["header_ack_before_body"] is True
    assert capture["body_held_ms"] >= 20
    assert any("length 100" in line for line in results["C18"].trace)


def timing(ms: float, segments: float) -> nagle.Timing:
    return nagle.Timing(ms, 3, segments, client_port=1, server_port=2)


def test_verdicts_follow_the_measurements() -> None:
    """A kernel where Nagle did not stall must read as `differs`, not confirmed."""
    no_stall = {name: timing(0.05, 2) for name in ("nagle", "nodelay", "one_write", "quickack")}
    no_stall |= {"cork": timing(0.05, 1), "nagle_3_writes": timing(0.05, 3)}
    no_stall["nodelay_3_writes"] = timing(0.05, 3)
    assert nagle.c18(no_stall, {}, []).verdict is Verdict.DIFFERS
    assert nagle.c36(no_stall, {}).verdict is Verdict.DIFFERS
    stalled = no_stall | {"nagle": timing(44.0, 2), "nagle_3_writes": timing(44.0, 2)}
    assert nagle.c18(stalled, {}, []).verdict is Verdict.CONFIRMED
    assert nagle.c18(stalled, {"header_ack_before_body": False}, []).verdict is Verdict.DIFFERS
