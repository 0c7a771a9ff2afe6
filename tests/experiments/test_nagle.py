"""C18, C36 on this kernel: Nagle holds a small write back until the delayed
ACK; TCP_NODELAY (and the other remedies) do not; asyncio and uvloop set it."""

from __future__ import annotations

import pytest

from framelab.experiments import nagle, nagle_scripted
from framelab.experiments.context import RunContext
from framelab.experiments.nagle_scripted import HeaderAckRun, c18_scripted_part, c36_scripted_part
from framelab.experiments.result import ClaimResult, Verdict


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in nagle.run(RunContext(rounds=2, quick=True))}


@pytest.mark.kernel
def test_nagle_round_trip_waits_for_the_delayed_ack(results: dict[str, ClaimResult]) -> None:
    seen = results["C18"].observed
    # Linux's delayed ACK is 40 ms at least, 200 ms at most: generous bounds around that
    assert 20 <= seen["nagle"]["median_ms"] < 250
    assert seen["nodelay"]["median_ms"] * nagle.STALL_RATIO <= seen["nagle"]["median_ms"]
    # the kernel itself held each body back: unsent after the write, header in flight
    assert seen["nagle"]["writes"]["held_in_the_kernel"] == seen["nagle"]["rounds"]
    assert results["C18"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_nagle_combines_the_writes_it_held_back(results: dict[str, ClaimResult]) -> None:
    seen = results["C18"].observed
    assert seen["three_writes_nagle_segments"] == 2  # header, then body halves together
    assert seen["three_writes_nodelay_segments"] == 3


@pytest.mark.kernel
def test_nodelay_sends_each_write_at_once(results: dict[str, ClaimResult]) -> None:
    seen = results["C36"].observed
    assert seen["nodelay"]["data_segments_per_request"] == 2
    assert seen["nodelay_3_writes"]["data_segments_per_request"] == 3
    assert seen["nodelay"]["writes"]["held_in_the_kernel"] == 0
    assert results["C36"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_one_write_quickack_and_cork_avoid_the_stall(results: dict[str, ClaimResult]) -> None:
    seen = results["C36"].observed
    assert seen["other_remedies_avoid_stall"] == {"one_write": True, "quickack": True, "cork": True}
    assert seen["one_write"]["data_segments_per_request"] == 1
    assert seen["cork"]["data_segments_per_request"] == 1  # corked writes leave together


@pytest.mark.kernel
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


@pytest.mark.kernel
@pytest.mark.root
def test_capture_shows_the_body_leaving_after_the_ack(results: dict[str, ClaimResult]) -> None:
    capture = results["C18"].observed["capture"]
    assert capture["header_ack_before_body"] is True
    assert capture["body_held_ms"] >= 20
    assert any("length 100" in line for line in results["C18"].trace)


def timing(ms: float, segments: float, held: int = 0, in_flight: int = 0) -> nagle.Timing:
    log = nagle.WriteLog(in_flight_rounds=in_flight, held_rounds=held, writes=3)
    return nagle.Timing(ms, 3, segments, client_port=1, server_port=2, writes=log)


def fast_timings() -> dict[str, nagle.Timing]:
    fast = {name: timing(0.05, 2) for name in ("nagle", "nodelay", "one_write", "quickack")}
    fast |= {"cork": timing(0.05, 1), "nagle_3_writes": timing(0.05, 3)}
    fast["nodelay_3_writes"] = timing(0.05, 3)
    return fast


def test_without_a_delayed_ack_nagle_is_not_observable_rather_than_refuted() -> None:
    """ACKs back before the next write (a quickack route): nothing to hold, no verdict."""
    quick = fast_timings()
    assert [p.holds for p in nagle.judge_c18(quick, {}, []).parts] == [None, None, None]
    assert [p.holds for p in nagle.judge_c36(quick, {}).parts] == [True, None, None]
    assert nagle.judge_c36(quick, {}).verdict is Verdict.PARTLY


def test_nagle_holding_without_a_stall_still_holds() -> None:
    """Nagle held the body in the kernel, but the peer ACKed at once: C18 holds."""
    held = fast_timings() | {"nagle": timing(0.2, 2, held=3, in_flight=3)}
    held["nagle_3_writes"] = timing(0.2, 2, held=3, in_flight=3)
    assert nagle.judge_c18(held, {}, [], SCRIPTED).verdict is Verdict.CONFIRMED


def test_verdicts_follow_the_measurements() -> None:
    """Data in flight and still nothing held or combined: differs."""
    refuted = fast_timings() | {"nagle": timing(0.05, 2, in_flight=3)}
    refuted["nagle_3_writes"] = timing(0.05, 3, in_flight=3)
    assert [p.holds for p in nagle.judge_c18(refuted, {}, []).parts] == [False, False, None]
    assert nagle.judge_c18(refuted, {}, []).verdict is Verdict.DIFFERS
    stalled = fast_timings() | {"nagle": timing(44.0, 2, held=3, in_flight=3)}
    stalled["nagle_3_writes"] = timing(44.0, 2, held=3, in_flight=3)
    assert nagle.judge_c18(stalled, {}, [], SCRIPTED).verdict is Verdict.CONFIRMED
    assert nagle.judge_c36(stalled, {}, SCRIPTED).verdict is Verdict.CONFIRMED
    assert nagle.judge_c36(stalled, {}).verdict is Verdict.PARTLY  # no scripted peer: not root
    held_nodelay = stalled | {"nodelay": timing(0.05, 1, held=3)}
    assert nagle.judge_c36(held_nodelay, {}).parts[0].holds is False


def held_run(delay: float, after_ack: float, unsent: int = 100, sends: int = 1) -> HeaderAckRun:
    return HeaderAckRun(False, delay, 1.0, 1.0 + delay, 1.0 + delay + after_ack, unsent, sends)


SCRIPTED = [held_run(40, 0.05), held_run(120, 0.04), HeaderAckRun(True, None, 2, None, 2.01, 0, 1)]


def test_scripted_parts_follow_the_injected_ack() -> None:
    assert c18_scripted_part(SCRIPTED).holds is True
    assert c36_scripted_part(SCRIPTED).holds is True
    assert "0.05 ms after the injected ACK" in c18_scripted_part(SCRIPTED).evidence
    timer = [
        held_run(40, 0.05),
        held_run(120, -80.0),
    ]  # left at a fixed 40 ms: a timer, not the ACK
    assert c18_scripted_part(timer).holds is False
    not_held = [held_run(40, 0.05, unsent=0)]
    assert c18_scripted_part(not_held).holds is False
    probed = [held_run(40, 0.05, sends=2)]  # b probed: the body may have left without the ACK
    assert c18_scripted_part(probed).holds is None
    assert "inconclusive" in c18_scripted_part(probed).evidence
    assert (
        c18_scripted_part(None).holds is None and "needs root" in c18_scripted_part(None).evidence
    )
    slow = [HeaderAckRun(True, None, 2, None, 42.0, 0, 1)]  # NODELAY yet the body waited
    assert c36_scripted_part(slow).holds is False


@pytest.mark.root
@pytest.mark.kernel
def test_the_scripted_peer_shows_the_body_leaving_on_the_ack() -> None:
    runs, trace = nagle_scripted.scripted_header_ack()
    assert [r.nodelay for r in runs] == [False, False, True]
    for run in runs[:2]:
        assert run.unsent_after_write == len(nagle_scripted.BODY)
        assert run.body_after_ack_ms is not None and 0 <= run.body_after_ack_ms < 5
        assert run.ack_delay_ms is not None and run.body_after_header_ms is not None
        assert run.body_after_header_ms >= run.ack_delay_ms - 1
    assert runs[2].body_after_header_ms is not None and runs[2].body_after_header_ms < 5
    assert c18_scripted_part(runs).holds and c36_scripted_part(runs).holds
    assert any("length 100" in line for line in trace)
