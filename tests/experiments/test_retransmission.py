"""C40 on this kernel: lost data is retransmitted with back-off, then the
connection is aborted with ETIMEDOUT and no RST."""

from __future__ import annotations

import itertools
from dataclasses import replace

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


SAMPLES = [
    retransmission.RetransSample(0, 0, 204.0, 1),
    retransmission.RetransSample(3, 2, 816.0, 1),
]
TIMED = retransmission.AbortRun(
    user_timeout_ms=1500,
    sysctl={"net.ipv4.tcp_retries2": "15", "net.ipv4.tcp_retries1": "3"},
    samples=SAMPLES,
    total_retrans_before_abort=3,
    retransmissions_seen=3,
    retransmit_gaps_ms=[200.0, 400.0, 800.0],
    transmit_times_ms=[0.0, 200.0, 600.0, 1400.0],
    counters={"TcpExt.TCPLossProbes": 0, "TcpExt.TCPTimeouts": 3, "Tcp.RetransSegs": 3},
    error="ETIMEDOUT",
    abort_after_ms=1600.0,
    abort_after_first_send_ms=1600.0,
    segments_after_abort=0,
    state_after="CLOSE",
    rst_sent=False,
)
# tcp_retries2=2 and no probe: the timer resends at 200, 600, 1400 ms, the model aborts at 3000
LIMITED = replace(
    TIMED,
    user_timeout_ms=None,
    sysctl={"net.ipv4.tcp_retries2": "2", "net.ipv4.tcp_retries1": "3"},
    abort_after_ms=3000.0,
    abort_after_first_send_ms=3000.0,
)


def holds(result: ClaimResult) -> list[bool | None]:
    return [p.holds for p in result.parts]


def test_c40_judge_on_synthetic_runs_the_reset_part_fails_without_an_rst() -> None:
    result = retransmission.judge_c40(TIMED, LIMITED, [])
    assert holds(result) == [True, True, True, False]
    assert result.verdict is Verdict.PARTLY
    retransmitted, limit, aborted, reset = (p.evidence for p in result.parts)
    assert retransmitted == (
        "3 resends of the lost segment on the wire, gaps 200, 400, 800 ms"
        " (TCP_USER_TIMEOUT 1500 ms)"
    )
    assert "tcp_retries2=2 in a namespace" in limit
    assert "timer resends at [200.0, 600.0, 1400.0] ms (RTO 200.0 ms), aborted at 3000.0" in limit
    assert "(expected): resends at [200.0, 600.0, 1400.0] ms, abort at 3000.0 ms" in limit
    assert "user timeout: the application got ETIMEDOUT, socket state CLOSE after 1600 ms" in (
        aborted
    )
    assert "tcp_retries2: the application got ETIMEDOUT, socket state CLOSE after 3000 ms" in (
        aborted
    )
    assert "no RST left a's interface (0 segments captured after the abort), error ETIMEDOUT" in (
        reset
    )


def test_c40_judge_confirms_when_both_runs_end_in_a_reset() -> None:
    def loud(run: retransmission.AbortRun) -> retransmission.AbortRun:
        return replace(run, rst_sent=True, error="ECONNRESET", segments_after_abort=1)

    result = retransmission.judge_c40(loud(TIMED), loud(LIMITED), [])
    assert holds(result) == [True, True, True, True]
    assert result.verdict is Verdict.CONFIRMED
    assert "an RST left a's interface (1 segments captured after the abort)" in result.summary
    one_loud = retransmission.judge_c40(loud(TIMED), LIMITED, [])
    assert holds(one_loud)[3] is False  # every run must reset


def test_c40_judge_follows_each_observation() -> None:
    probed = replace(TIMED, counters={**TIMED.counters, "TcpExt.TCPLossProbes": 1})
    assert (
        retransmission.judge_c40(probed, None, [])
        .parts[0]
        .evidence.startswith("a tail loss probe (TCPLossProbes +1), then 3 resends")
    )
    silent = replace(LIMITED, total_retrans_before_abort=0)
    assert holds(retransmission.judge_c40(TIMED, silent, []))[0] is False
    late = replace(LIMITED, abort_after_first_send_ms=5000.0)
    result = retransmission.judge_c40(TIMED, late, [])
    assert holds(result) == [True, False, True, False]
    assert "aborted at 5000.0 ms" in result.parts[1].evidence
    off_schedule = replace(LIMITED, transmit_times_ms=[0.0, 200.0, 600.0])
    assert holds(retransmission.judge_c40(TIMED, off_schedule, []))[1] is False
    alive = replace(TIMED, error=None, state_after="ESTABLISHED")
    result = retransmission.judge_c40(alive, LIMITED, [])
    assert holds(result)[2] is False
    assert "the application got None, socket state ESTABLISHED" in result.parts[2].evidence


def test_c40_without_the_retries2_run_is_judged_on_three_parts() -> None:
    result = retransmission.judge_c40(TIMED, None, [])
    assert holds(result) == [True, True, False]
    assert result.expected == {}
    assert "tcp_retries2_run" not in result.observed


def test_c40_observed_keeps_its_shape() -> None:
    result = retransmission.judge_c40(TIMED, LIMITED, [])
    observed = result.observed
    assert list(observed) == [
        "user_timeout_ms", "sysctl", "samples", "total_retrans_before_abort",
        "retransmissions_seen", "retransmit_gaps_ms", "transmit_times_ms", "counters", "error",
        "abort_after_ms", "abort_after_first_send_ms", "segments_after_abort", "state_after",
        "rst_sent", "tcp_retries2_run",
    ]  # fmt: skip
    assert observed["samples"][1] == {"total_retrans": 3, "backoff": 2, "rto_ms": 816.0,
                                      "unacked": 1}  # fmt: skip
    limited = observed["tcp_retries2_run"]
    assert list(limited)[-1] == "model" and limited["user_timeout_ms"] is None
    assert limited["model"] == {
        "measured_rto_ms": 200.0,
        "timer_resends_ms": [200.0, 600.0, 1400.0],
        "abort_ms": 3000.0,
        "resends_match_model": True,
        "abort_matches_model": True,
    }
    [model] = result.expected.values()
    assert model == {"resends_ms": [200.0, 600.0, 1400.0], "abort_ms": 3000.0}


def test_model_check_counts_the_probe_apart_from_the_timer() -> None:
    probed = replace(
        LIMITED,
        transmit_times_ms=[0.0, 200.0, 400.0, 800.0, 1600.0],
        counters={**LIMITED.counters, "TcpExt.TCPLossProbes": 1},
        abort_after_first_send_ms=3200.0,
    )
    check = retransmission.model_check(probed)
    assert check.timer_resends_ms == [400.0, 800.0, 1600.0] and check.measured_rto_ms == 200.0
    assert check.resends_match_model and check.abort_matches_model
    assert not retransmission.model_check(replace(probed, abort_after_first_send_ms=None)).abort_ms


def test_without_root_it_is_skipped_with_the_reason() -> None:
    [claim] = retransmission.run(RunContext(root=False))
    assert claim.verdict is Verdict.SKIPPED and "root" in claim.summary
