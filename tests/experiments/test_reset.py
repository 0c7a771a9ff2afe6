"""C27, C30, C38, C39 on this kernel: refused connections, ICMP for UDP, the
selector on abort, and RST for a forged segment."""

from __future__ import annotations

from dataclasses import replace

import pytest

from framelab.experiments import reset
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict
from framelab.lab.blocked import BlockedOnReset


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in reset.run(RunContext(rounds=2, quick=True))}


@pytest.mark.kernel
def test_c27_connect_to_a_port_without_listener_is_refused_at_once(
    results: dict[str, ClaimResult],
) -> None:
    seen = results["C27"].observed
    assert seen["errors"] == ["ECONNREFUSED"]
    assert seen["connect_ms_median"] < 100
    assert seen["tcp_out_rsts_delta"] >= seen["rounds"]
    assert results["C27"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_c38_udp_icmp_reaches_only_a_connected_socket(results: dict[str, ClaimResult]) -> None:
    udp = results["C38"].observed["udp"]
    assert udp["connected_recv"] == "ECONNREFUSED"
    assert udp["connected_next_send"] == "ECONNREFUSED"
    assert udp["unconnected_recvfrom"] == "timeout"
    assert udp["icmp_out_dest_unreachs_delta"] >= 3  # one per datagram, told or not
    assert udp["udp_no_ports_delta"] >= 3
    assert results["C38"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_c30_selector_is_readable_on_abort_and_recv_fails(results: dict[str, ClaimResult]) -> None:
    aborted = results["C30"].observed["peer_aborts"]
    closed = results["C30"].observed["peer_closes"]
    assert aborted["readable"] and aborted["recv"] == "ECONNRESET"
    assert closed["readable"] and closed["recv"] == "EOF"
    blocked = results["C30"].observed["blocked_calls"]
    assert blocked["both_blocked_first"] and blocked["recv"] == "ECONNRESET"
    # POLLERR too, unless the woken recv() consumed the error first
    assert "POLLIN" in blocked["poll_revents"] and "POLLHUP" in blocked["poll_revents"]
    assert [p.holds for p in results["C30"].parts] == [True, True, True, True]
    assert results["C30"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
@pytest.mark.root
def test_c39_forged_segments_are_answered_with_rst(results: dict[str, ClaimResult]) -> None:
    cases = results["C39"].observed["cases"]
    assert [c["reply_flags"] for c in cases] == ["R", "R"]
    assert all(c["reply_seq_is_our_ack"] for c in cases)
    assert results["C39"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
@pytest.mark.root
def test_capture_shows_rst_for_syn_and_icmp_3_3(results: dict[str, ClaimResult]) -> None:
    tcp = results["C27"].observed
    assert tcp["client_sent"] == ["S"]  # the first round's connection: SYN ...
    assert tcp["port_answered"] == ["R."]  # ... answered by RST+ACK
    udp = results["C38"].observed["udp"]
    assert udp["icmp_to_connected"] == udp["icmp_to_unconnected"] == "type 3 code 3"
    assert results["C30"].observed["peer_aborts"]["peer_sent"] == {"fin": False, "rst": True}
    assert results["C30"].observed["peer_closes"]["peer_sent"] == {"fin": True, "rst": False}
    assert any("ICMP type 3 code 3" in line for line in results["C38"].trace)


def test_without_root_c39_is_skipped_and_the_rest_runs() -> None:
    results = {r.claim: r for r in reset.run(RunContext(rounds=1, quick=True, root=False))}
    assert results["C39"].verdict is Verdict.SKIPPED
    assert results["C39"].summary.startswith("needs root")
    assert all(results[c].verdict is Verdict.CONFIRMED for c in ("C27", "C30", "C38"))
    assert results["C38"].observed["udp"]["icmp_to_connected"] is None


# --- the judges, on synthetic observations ---------------------------------------------

REFUSED = reset.TcpRefused(["ECONNREFUSED"], 0.02, 5, ["S"], ["R."], 5, 5)
UNREACHABLE = reset.UdpUnreachable(
    "ECONNREFUSED", "ECONNREFUSED", "timeout", "type 3 code 3", "type 3 code 3", 3, 3
)


def test_c27_judge_needs_both_the_errno_and_an_rst() -> None:
    assert reset.judge_c27(REFUSED, []).verdict is Verdict.CONFIRMED
    assert "answered the SYN with [R.]" in reset.judge_c27(REFUSED, []).summary
    no_rst = replace(REFUSED, port_answered=["S."])
    assert [p.holds for p in reset.judge_c27(no_rst, []).parts] == [False, True]
    uncaptured = replace(REFUSED, client_sent=None, port_answered=None)
    assert reset.judge_c27(uncaptured, []).verdict is Verdict.CONFIRMED  # Tcp.OutRsts +5
    assert "not captured" in reset.judge_c27(uncaptured, []).summary
    neither = replace(uncaptured, tcp_out_rsts_delta=0, errors=["ETIMEDOUT"])
    assert reset.judge_c27(neither, []).verdict is Verdict.DIFFERS


def test_c38_judge_needs_the_rst_and_the_port_unreachable() -> None:
    assert reset.judge_c38(REFUSED, UNREACHABLE, []).verdict is Verdict.CONFIRMED
    other_icmp = replace(UNREACHABLE, icmp_to_connected="type 3 code 1")
    assert [p.holds for p in reset.judge_c38(REFUSED, other_icmp, []).parts] == [True, False]
    uncaptured = replace(UNREACHABLE, icmp_to_connected=None, icmp_to_unconnected=None)
    assert reset.judge_c38(REFUSED, uncaptured, []).verdict is Verdict.CONFIRMED
    silent = replace(uncaptured, icmp_out_dest_unreachs_delta=0)
    assert [p.holds for p in reset.judge_c38(REFUSED, silent, []).parts] == [True, False]


ABORTED = {"selector": "EpollSelector", "readable": True, "select_ms": 0.1,
           "recv": "ECONNRESET", "peer_sent": {"fin": False, "rst": True}}  # fmt: skip
CLOSED = {**ABORTED, "recv": "EOF", "peer_sent": {"fin": True, "rst": False}}
WOKE = BlockedOnReset(True, "ECONNRESET", 0.3, ["POLLIN", "POLLERR", "POLLHUP"], 0.1)


def test_c30_judged_part_by_part_on_synthetic_observations() -> None:
    def holds(aborted: dict[str, object], blocked: BlockedOnReset) -> list[bool | None]:
        return [p.holds for p in reset.judge_c30(aborted, CLOSED, blocked, []).parts]

    assert holds(ABORTED, WOKE) == [True, True, True, True]
    assert reset.judge_c30(ABORTED, CLOSED, WOKE, []).verdict is Verdict.CONFIRMED
    silent = {**ABORTED, "readable": False, "recv": "nothing to read"}
    assert holds(silent, WOKE) == [False, False, True, True]
    asleep = replace(WOKE, recv=None, woken_by_shutdown=True, poll_revents=[])
    assert holds(ABORTED, asleep) == [True, True, False, False]
    unseen = replace(WOKE, both_blocked_first=False)
    result = reset.judge_c30(ABORTED, CLOSED, unseen, [])
    assert [p.holds for p in result.parts] == [True, True, None, None]
    assert result.verdict is Verdict.PARTLY
    assert "not observed" in result.summary


ACK_CASE = reset.ForgedReply("bare ACK to a listening port, no connection", "R", True)
DATA_CASE = reset.ForgedReply("data segment to a port with no listener", "R", True)
STRAY = reset.StraySegments([ACK_CASE, DATA_CASE], 2)


def test_c39_judged_per_forged_segment_on_synthetic_observations() -> None:
    result = reset.judge_c39(STRAY, [])
    assert [p.holds for p in result.parts] == [True, True]
    assert result.verdict is Verdict.CONFIRMED
    assert result.parts[0].part == (
        "a segment of no known connection (bare ACK to a listening port, no connection) is "
        "answered with RST"
    )
    assert result.parts[1].evidence == "answered with [R]; the RST's seq is the ACK number we sent"
    assert result.observed == {
        "cases": [
            {"sent": ACK_CASE.sent, "reply_flags": "R", "reply_seq_is_our_ack": True},
            {"sent": DATA_CASE.sent, "reply_flags": "R", "reply_seq_is_our_ack": True},
        ],
        "tcp_out_rsts_delta": 2,
    }


def test_c39_judge_fails_a_segment_without_an_rst() -> None:
    unanswered = replace(DATA_CASE, reply_flags=None, reply_seq_is_our_ack=None)
    result = reset.judge_c39(replace(STRAY, cases=[ACK_CASE, unanswered]), [])
    assert [p.holds for p in result.parts] == [True, False]
    assert result.verdict is Verdict.PARTLY
    assert result.parts[1].evidence == "no answer within the wait"
    synack = replace(ACK_CASE, reply_flags="S.", reply_seq_is_our_ack=False)
    result = reset.judge_c39(replace(STRAY, cases=[synack, unanswered]), [])
    assert [p.holds for p in result.parts] == [False, False]
    assert result.verdict is Verdict.DIFFERS
    assert result.parts[0].evidence == "answered with [S.]; its seq is not our ACK number"
    other_seq = replace(ACK_CASE, reply_seq_is_our_ack=False)
    result = reset.judge_c39(replace(STRAY, cases=[other_seq]), [])
    assert [p.holds for p in result.parts] == [True]
    assert result.parts[0].evidence == "answered with [R]; its seq is not our ACK number"
