"""C29 on this kernel: what close() does under SO_LINGER, measured, and the
verdict computed from those measurements."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from framelab.experiments import linger
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict


@pytest.fixture(scope="module")
def result() -> ClaimResult:
    [claim] = linger.run(RunContext(rounds=2, quick=True))
    return claim


def observed(result: ClaimResult, case: str) -> dict[str, Any]:
    data: dict[str, Any] = result.observed[case]
    return data


@pytest.mark.kernel
def test_default_close_sends_fin_peer_reads_eof_closer_waits(result: ClaimResult) -> None:
    case = observed(result, "default_close")
    assert case["peer_recv"] == "EOF"
    assert case["closer_state_after_fin_acked"] == "FIN_WAIT2"
    assert case["peer_state_after_close"] == "CLOSE_WAIT"
    assert case["closer_state_after_peer_close"] == "TIME_WAIT"
    assert case["time_wait_timer_s"] >= 50  # TIME_WAIT is observed, never waited out
    assert case["same_every_round"]


@pytest.mark.kernel
def test_linger_zero_resets_at_once_without_time_wait(result: ClaimResult) -> None:
    case = observed(result, "linger_0")
    assert case["peer_recv"] == "ECONNRESET"
    assert case["closer_state_after_close"] is None  # no TIME_WAIT, no FIN_WAIT
    assert case["close_ms_median"] < 100


@pytest.mark.kernel
def test_linger_n_blocks_about_n_seconds_on_a_nonblocking_socket(result: ClaimResult) -> None:
    case = observed(result, "linger_n_unsendable")
    assert case["nonblocking_socket"] and case["linger_s"] == 1
    assert 800 <= case["close_ms_median"] < 3000
    assert case["close_raised"] is None  # close() returns 0 at the timeout


@pytest.mark.kernel
def test_linger_n_timeout_does_not_reset_the_data_still_arrives(result: ClaimResult) -> None:
    case = observed(result, "linger_n_unsendable")
    assert case["closer_state_after_close"] == "FIN_WAIT1"  # orphaned, data still queued
    assert case["queued_bytes_after_close"] > 0
    assert case["peer_bytes_read_later"] == case["bytes_queued"]
    assert case["peer_read_end"] == "EOF"


@pytest.mark.kernel
def test_linger_n_with_reading_peer_returns_once_acked(result: ClaimResult) -> None:
    case = observed(result, "linger_n_peer_reads")
    assert case["all_bytes_read"] and case["peer_read_end"] == "EOF"
    assert case["closer_state_after_close"] == "FIN_WAIT2"  # our FIN was acked
    assert case["close_ms_median"] < 500


@pytest.mark.kernel
def test_this_kernel_keeps_the_data_instead_of_resetting_at_the_timeout(
    result: ClaimResult,
) -> None:
    assert [p.holds for p in result.parts] == [True, True, False, True]
    assert result.verdict is Verdict.PARTLY


# --- the judge, on synthetic observations ----------------------------------------------

DEFAULT = linger.Case(
    linger.DefaultClose("EOF", "FIN_WAIT2", "CLOSE_WAIT", "TIME_WAIT", True, False), 0.05
)
ZERO = linger.Case(linger.LingerZero(None, "ECONNRESET", None, False, True), 0.04)
KEPT = linger.LingerStuck(True, 2, 196608, None, "FIN_WAIT1", False, False, 196608, "EOF")
READS = linger.Case(linger.LingerReads(2, "FIN_WAIT2", True, "EOF", True, False), 30.0)


def judged(stuck: linger.LingerStuck, close_ms: float = 2010.0) -> ClaimResult:
    case = linger.Case(stuck, close_ms, details={"queued_bytes_after_close": 69000})
    return linger.judge_c29(DEFAULT, ZERO, case, READS, {"captured": True}, [])


def test_judge_confirms_when_the_timeout_ends_in_a_reset() -> None:
    result = judged(replace(KEPT, rst_at_timeout=True))
    assert result.verdict is Verdict.CONFIRMED
    assert "close() blocked 2010 ms" in result.summary and "an RST was sent" in result.summary
    assert result.observed["linger_n_unsendable"]["close_ms_median"] == 2010.0


def test_judge_names_the_failing_part_when_the_data_is_kept() -> None:
    result = judged(KEPT)
    assert result.verdict is Verdict.PARTLY
    assert [p.holds for p in result.parts] == [True, True, False, True]
    failing = result.parts[2]
    assert "no RST was sent" in failing.evidence and "69000 bytes queued" in failing.evidence


def test_judge_without_a_capture_reads_a_reset_from_the_peer() -> None:
    uncaptured = replace(KEPT, rst_at_timeout=None, fin_sent_by_timeout=None)
    assert judged(uncaptured).parts[2].holds is False  # the peer got all its data
    lost = replace(uncaptured, peer_read_end="ECONNRESET", peer_bytes_read_later=1000)
    assert judged(lost).verdict is Verdict.CONFIRMED
    short = replace(uncaptured, peer_bytes_read_later=1000)  # EOF after part: no telling
    assert judged(short).parts[2].holds is None
    early = judged(replace(KEPT, rst_at_timeout=True), close_ms=300)  # long before the timeout
    assert [p.holds for p in early.parts] == [True, False, True, True]


def test_judge_linger_zero_and_a_reading_peer_are_parts_of_their_own() -> None:
    fin_on_zero = replace(ZERO, facts=replace(ZERO.facts, client_sent_fin=True))
    result = linger.judge_c29(DEFAULT, fin_on_zero, linger.Case(KEPT, 2010.0), READS, {}, [])
    assert result.parts[3].holds is False
    slow = replace(READS, close_ms_median=1900.0)  # waited out the timeout instead
    result = linger.judge_c29(DEFAULT, ZERO, linger.Case(KEPT, 2010.0), slow, {}, [])
    assert result.parts[0].holds is False


@pytest.mark.kernel
@pytest.mark.root
def test_capture_shows_fin_rst_and_no_rst_at_the_timeout(result: ClaimResult) -> None:
    assert observed(result, "default_close")["client_sent_fin"] is True
    zero = observed(result, "linger_0")
    assert zero["client_sent_rst"] is True and zero["client_sent_fin"] is False
    stuck = observed(result, "linger_n_unsendable")
    assert stuck["rst_at_timeout"] is False and stuck["fin_sent_by_timeout"] is False
    assert any("Flags [R.]" in line for line in result.trace)
    assert len(result.trace) <= 30


def test_without_capture_the_peer_reads_decide() -> None:
    [claim] = linger.run(RunContext(rounds=1, quick=True, root=False))
    stuck = observed(claim, "linger_n_unsendable")
    assert stuck["rst_at_timeout"] is None and claim.trace == []
    assert stuck["peer_bytes_read_later"] == stuck["bytes_queued"]
    assert [p.holds for p in claim.parts] == [True, True, False, True]
    assert claim.verdict is Verdict.PARTLY
