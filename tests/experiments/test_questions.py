"""The notes' open questions, answered by measurement on this kernel."""

from __future__ import annotations

from dataclasses import replace

import pytest

from framelab.experiments import questions
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict
from framelab.lab.blocked import BlockedOnReset


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in questions.run(RunContext(rounds=1, quick=True))}


def test_q1_a_blocked_reader_wakes_with_econnreset(results: dict[str, ClaimResult]) -> None:
    seen = results["Q1"].observed
    assert seen["both_blocked_first"] and not seen["woken_by_shutdown"]
    assert seen["recv"] == "ECONNRESET" and seen["recv_woke_ms"] < 1000
    assert "POLLIN" in seen["poll_revents"] and "POLLHUP" in seen["poll_revents"]
    assert results["Q1"].verdict is Verdict.CONFIRMED


@pytest.mark.root
def test_q2_reset_by_peer_only_with_abort_on_overflow(results: dict[str, ClaimResult]) -> None:
    assert [p.holds for p in results["Q2"].parts] == [False, True]


@pytest.mark.root
def test_q3_connect_latency_follows_the_syn_schedule(results: dict[str, ClaimResult]) -> None:
    runs = results["Q3"].observed["runs"]
    assert abs(runs[4]["connect_latency_s"] - 2.0) <= questions.SCHEDULE_TOLERANCE_S
    assert abs(runs[0]["connect_latency_s"] - 3.0) <= questions.SCHEDULE_TOLERANCE_S
    assert results["Q3"].verdict is Verdict.CONFIRMED


@pytest.mark.root
def test_q4_linux_sends_no_extra_ack_after_the_handshake(results: dict[str, ClaimResult]) -> None:
    assert results["Q4"].observed["segments_before_data"] == ["S", "S.", "."]
    assert results["Q4"].verdict is Verdict.DIFFERS


def test_the_syn_schedule_is_linear_then_doubles() -> None:
    assert questions.syn_schedule_s(4) == [1, 2, 3, 4, 6, 10]
    assert questions.syn_schedule_s(0) == [1, 3, 7, 15, 31, 63]


def test_q1_judged_on_synthetic_observations() -> None:
    woke = BlockedOnReset(True, "ECONNRESET", 0.3, ["POLLIN", "POLLERR"], 0.1)
    assert [p.holds for p in questions.q1(woke)] == [True, True]
    eof = replace(woke, recv="EOF")
    assert [p.holds for p in questions.q1(eof)] == [True, False]
    asleep = replace(woke, recv=None, recv_woke_ms=None, woken_by_shutdown=True)
    assert [p.holds for p in questions.q1(asleep)] == [False, False]
    unseen = replace(woke, both_blocked_first=False)
    assert [p.holds for p in questions.q1(unseen)] == [None]
