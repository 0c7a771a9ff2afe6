"""C40 on this kernel: lost data is retransmitted with back-off, then the
connection is aborted with ETIMEDOUT and no RST."""

from __future__ import annotations

import itertools

import pytest

from framelab.experiments import retransmission
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict
from framelab.lab.netns import leftover_namespaces


@pytest.fixture(scope="module")
def result() -> ClaimResult:
    [claim] = retransmission.run(RunContext(rounds=1, quick=True))
    return claim


@pytest.mark.kernel
@pytest.mark.root
def test_lost_data_is_retransmitted_with_exponential_backoff(result: ClaimResult) -> None:
    obs = result.observed
    assert obs["total_retrans_before_abort"] >= 2
    assert obs["retransmissions_seen"] >= 2  # the same segment, captured on the wire
    rtos = [s["rto_ms"] for s in obs["samples"][1:]]
    assert all(b >= 1.9 * a for a, b in itertools.pairwise(rtos))  # the RTO doubles
    gaps = obs["retransmit_gaps_ms"]
    assert len(gaps) >= 2 and gaps[-1] > 1.5 * gaps[0]
    # every resend the capture saw is one the kernel counted, by the probe or the timer
    counters = obs["counters"]
    assert counters["Tcp.RetransSegs"] == obs["retransmissions_seen"]
    assert counters["TcpExt.TCPTimeouts"] >= counters["Tcp.RetransSegs"] - 1
    assert counters["TcpExt.TCPLossProbes"] <= 1  # at most one probe, before the timer


@pytest.mark.kernel
@pytest.mark.root
def test_the_connection_is_aborted_with_etimedout_and_no_rst(result: ClaimResult) -> None:
    obs = result.observed
    assert obs["error"] == "ETIMEDOUT"
    assert obs["state_after"] == "CLOSE"
    assert obs["rst_sent"] is False
    # TCP_USER_TIMEOUT bounds it: at the first retransmission timer after the timeout
    assert obs["user_timeout_ms"] <= obs["abort_after_ms"] < obs["user_timeout_ms"] + 4000
    assert obs["sysctl"]["net.ipv4.tcp_retries2"] is not None
    assert any("length 1000" in line for line in result.trace)
    assert leftover_namespaces() == []


@pytest.mark.kernel
@pytest.mark.root
def test_the_abort_follows_the_kernel_model_and_the_reset_part_fails(result: ClaimResult) -> None:
    limited = result.observed["tcp_retries2_run"]
    assert limited["user_timeout_ms"] is None and limited["error"] == "ETIMEDOUT"
    assert limited["model"]["resends_match_model"] and limited["model"]["abort_matches_model"]
    holds = {p.part: p.holds for p in result.parts}
    assert holds["aborted with a reset (RST)"] is False  # ETIMEDOUT, no RST on the wire
    assert sum(h is True for h in holds.values()) == 3
    assert result.verdict is Verdict.PARTLY
    assert "no RST" in result.summary and "ETIMEDOUT" in result.summary


def test_the_model_schedule_doubles_from_the_first_timer_resend() -> None:
    model = retransmission.expected_schedule(200.0, 2, probe_ms=200.0)
    assert model == {"resends_ms": [400.0, 800.0, 1600.0], "abort_ms": 3200.0}
    assert retransmission.expected_abort_ms(15) == 924_600  # RTO_MAX caps only later waits


def observation(rst: bool, error: str) -> dict[str, object]:
    return {
        "user_timeout_ms": 1500,
        "total_retrans_before_abort": 3,
        "retransmissions_seen": 3,
        "retransmit_gaps_ms": [200.0, 400.0, 800.0],
        "counters": {"TcpExt.TCPLossProbes": 0},
        "error": error,
        "state_after": "CLOSE",
        "abort_after_ms": 1600.0,
        "rst_sent": rst,
        "segments_after_abort": int(rst),
    }


def test_judge_on_synthetic_observations() -> None:
    assert retransmission.judge_c40(observation(True, "ECONNRESET"), []).verdict is (
        Verdict.CONFIRMED
    )
    silent = retransmission.judge_c40(observation(False, "ETIMEDOUT"), [])
    assert silent.verdict is Verdict.PARTLY
    assert [p.holds for p in silent.parts] == [True, True, False]


def test_without_root_it_is_skipped_with_the_reason() -> None:
    [claim] = retransmission.run(RunContext(root=False))
    assert claim.verdict is Verdict.SKIPPED and "root" in claim.summary
