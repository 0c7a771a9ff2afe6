"""C15, C16 on this kernel: the accept queue, the SYN queue, and their overflows."""

from __future__ import annotations

from dataclasses import replace

import pytest

from framelab.experiments import backlog
from framelab.experiments.backlog import (
    AbortOnOverflow,
    ControlledSynQueue,
    GiveUpClient,
    OverflowRun,
    SomaxconnCap,
    SynQueueRun,
    SynRetries,
    UnansweredSynAck,
)
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in backlog.run(RunContext(rounds=2, quick=True))}


@pytest.mark.kernel
def test_c15_accept_queue_holds_backlog_plus_one(results: dict[str, ClaimResult]) -> None:
    queue = results["C15"].observed["accept_queue"]
    n = queue["backlog"]
    assert queue["listener_tcp_info"] == {"tcpi_unacked (queue)": n + 1, "tcpi_sacked (limit)": n}
    assert queue["listener_proc_rx_queue"] == n + 1
    assert queue["client_states"] == {"ESTABLISHED": n + 1, "SYN_SENT": queue["clients"] - n - 1}
    assert queue["server_side_rows"] == {"ESTABLISHED": n + 1}
    assert queue["established_on_client_only"] == 0


@pytest.mark.kernel
def test_c15_overflowing_syns_are_dropped_silently_and_retried(
    results: dict[str, ClaimResult],
) -> None:
    queue = results["C15"].observed["accept_queue"]
    retry = queue["dropped_clients_retry"]
    assert retry["still_syn_sent"] == retry["clients"] > 0
    assert min(retry["syn_retransmits_each"]) >= 1
    assert retry["rst_seen"] in (None, False)  # None: not captured (no root)
    give_up = queue["give_up_client"]
    assert give_up["connect_error"] == "ETIMEDOUT"
    assert give_up["syn_retransmits"] >= 1
    assert give_up["after_ms"] >= backlog.GIVE_UP_AFTER_MS * 0.9
    assert queue["counters"]["TcpExt.ListenOverflows"] >= retry["clients"] + 1
    assert results["C15"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_c15_somaxconn_caps_the_backlog(results: dict[str, ClaimResult]) -> None:
    cap = results["C15"].observed["somaxconn_cap"]
    assert cap["queue_limit"] == min(backlog.HUGE_BACKLOG, int(cap["net.core.somaxconn"]))


@pytest.mark.kernel
def test_c15_an_ack_into_a_full_queue_is_dropped_until_accept_makes_room(
    results: dict[str, ClaimResult],
) -> None:
    late = results["C15"].observed["ack_into_full_queue"]
    if late["abort_on_overflow"] != "0":
        pytest.skip("tcp_abort_on_overflow is set on this host")
    assert late["client_state"] == "ESTABLISHED"
    assert late["server_state"] == "SYN_RECV"
    assert late["client_unacked_segments"] == 1
    assert late["counters"]["TcpExt.ListenOverflows"] >= 1
    assert late["after_one_accept"]["client_data_acked"]


@pytest.mark.kernel
@pytest.mark.root
def test_c15_abort_on_overflow_answers_with_rst(results: dict[str, ClaimResult]) -> None:
    abort = results["C15"].observed["tcp_abort_on_overflow=1 (namespace)"]
    assert abort["abort_on_overflow"] == "1"
    assert abort["client_recv"] == "ECONNRESET"
    assert abort["rst_to_client"]


@pytest.mark.kernel
def test_c16_without_namespaces_nothing_is_judged_from_the_host(
    results: dict[str, ClaimResult],
) -> None:
    host = results["C16"].observed["host_loopback"]
    assert host["syn_queue (SYN_RECV rows)"] == host["backlog"] + 1


def syn_queue(
    kept: int, clients: int = 12, connected: int = 0, cookies_sent: int = 0, cookies: str = "1"
) -> SynQueueRun:
    return SynQueueRun(
        backlog=64,
        clients=clients,
        syn_recv_rows=kept,
        accept_queue=0,
        client_states={"ESTABLISHED": connected, "SYN_SENT": clients - connected},
        counters={"TcpExt.SyncookiesSent": cookies_sent},
        syncookies=cookies,
        max_syn_backlog="8",
        somaxconn="4096",
    )


def synack(retries: int, sent: int, lived_s: float) -> UnansweredSynAck:
    return UnansweredSynAck(str(retries), sent, [1000.0] * (sent - 1), lived_s)


def linux_syn_queue() -> ControlledSynQueue:
    """What Linux shows: the knob binds only without cookies, cookies let a flood connect."""
    return ControlledSynQueue(
        no_cookies_small_max=syn_queue(7, cookies="0"),
        no_cookies_large_max=syn_queue(12, cookies="0"),
        cookies_small_max=syn_queue(12),
        no_cookies_full=syn_queue(3, clients=6, connected=3, cookies="0"),
        cookies_full=syn_queue(3, clients=6, connected=6, cookies_sent=3),
        no_synack_retries=synack(0, 1, 1.02),
        one_synack_retry=synack(1, 2, 3.01),
    )


def test_c16_judge_without_namespaces_tells_the_host_as_context_only() -> None:
    unjudged = backlog.judge_c16(syn_queue(5, clients=6), None)
    assert all(p.holds is None and "context only" in p.evidence for p in unjudged)
    assert "listen(64) kept 5 of 6 handshakes with tcp_syncookies=1" in unjudged[0].evidence


def test_c16_judge_on_what_linux_shows() -> None:
    parts = backlog.judge_c16(syn_queue(5), linux_syn_queue())
    assert [p.holds for p in parts] == [True, False, True, True]
    knob_off, knob_on, cookies, retries = (p.evidence for p in parts)
    assert "kept 7 of 12 half-open" in knob_off and "kept 12 of 12 half-open" in knob_off
    assert "kept 12 of 12 half-open with listen(64), tcp_max_syn_backlog=8" in knob_on
    assert "with syncookies=1 6 connected (SyncookiesSent +3), with syncookies=0 3" in cookies
    assert "tcp_synack_retries=0 -> 1 SYN-ACK(s), entry gone after 1.02 s" in retries
    assert "1 -> 2 SYN-ACKs [1000.0] ms apart, gone after 3.01 s" in retries


def test_c16_judge_fails_each_part_its_own_way() -> None:
    unbound = replace(linux_syn_queue(), no_cookies_small_max=syn_queue(12, cookies="0"))
    assert backlog.judge_c16(syn_queue(5), unbound)[0].holds is False
    bound = replace(linux_syn_queue(), cookies_small_max=syn_queue(7))
    assert backlog.judge_c16(syn_queue(5), bound)[1].holds is True
    no_cookie = replace(linux_syn_queue(), cookies_full=syn_queue(3, clients=6, connected=6))
    flood = backlog.judge_c16(syn_queue(5), no_cookie)[2]
    assert flood.holds is False and "SyncookiesSent +0" in flood.evidence
    same_life = replace(linux_syn_queue(), no_synack_retries=synack(0, 2, 3.05))
    retries = backlog.judge_c16(syn_queue(5), same_life)[3]
    assert retries.holds is False and "2 SYN-ACK(s), entry gone after 3.05 s" in retries.evidence


@pytest.mark.kernel
@pytest.mark.root
def test_c16_each_statement_from_its_own_namespaces(results: dict[str, ClaimResult]) -> None:
    runs = results["C16"].observed["namespaces"]
    rows = {k: v.get("syn_queue (SYN_RECV rows)") for k, v in runs.items()}
    # syncookies off: the knob binds when small (3/4 of 8 -> 7 kept), not when large
    assert rows["cookies=0, small"] == backlog.SMALL_MAX_SYN_BACKLOG - 1
    assert rows["cookies=0, large"] == backlog.SYN_QUEUE_CLIENTS
    assert rows["cookies=1, small"] == backlog.SYN_QUEUE_CLIENTS  # ignored with cookies on
    assert runs["cookies=1, full"]["client_states"] == {"ESTABLISHED": 6}
    assert runs["cookies=0, full"]["client_states"]["SYN_SENT"] == 3
    fast, slow = runs["synack_retries=0"], runs["synack_retries=1"]
    assert (fast["syn_acks_sent"], slow["syn_acks_sent"]) == (1, 2)
    assert 0.9 <= fast["half_open_lived_s"] < 2.0
    assert 2.8 <= slow["half_open_lived_s"] < 4.0
    assert [p.holds for p in results["C16"].parts] == [True, False, True, True]
    assert results["C16"].verdict is Verdict.PARTLY


def overflow(
    queued: int = 3, still: int = 5, retransmits: int = 2, error: str = "ETIMEDOUT"
) -> OverflowRun:
    """listen(2) with 8 clients: what Linux shows unless told otherwise."""
    return OverflowRun(
        backlog=2,
        clients=8,
        queue_length=queued,
        queue_limit=2,
        listener_proc_rx_queue=queued,
        client_states={"ESTABLISHED": queued, "SYN_SENT": 8 - queued},
        server_side_rows={"ESTABLISHED": queued},
        retries=SynRetries(5, still, [retransmits], 4000, [1003.2, 2010.5], False),
        give_up=GiveUpClient(backlog.GIVE_UP_AFTER_MS, error, 1502.3, 3),
        counters={"TcpExt.ListenOverflows": 12},
    )


SOMAXCONN_CAP = SomaxconnCap(backlog.HUGE_BACKLOG, 4096, "4096")


def test_c15_judge_on_what_linux_shows() -> None:
    half_open, accept_queue, dropped = backlog.judge_c15(
        overflow(), SOMAXCONN_CAP, syn_queue(3, clients=6, cookies_sent=3), None
    )
    assert (half_open.holds, accept_queue.holds, dropped.holds) == (True, True, True)
    assert half_open.evidence.startswith("3 SYN_RECV entries for 6 handshakes")
    assert "SyncookiesSent +3" in half_open.evidence
    assert "3 of 8 connections queued (backlog+1)" in accept_queue.evidence
    assert "got a limit of 4096 (somaxconn=4096)" in accept_queue.evidence
    assert "5 of 5 later clients stayed SYN_SENT" in dropped.evidence
    assert "retransmitted [2] times ([1003.2, 2010.5] ms apart)" in dropped.evidence
    assert dropped.evidence.endswith("TCP_USER_TIMEOUT failed with ETIMEDOUT")


def test_c15_judge_fails_each_part_its_own_way() -> None:
    empty = backlog.judge_c15(overflow(), SOMAXCONN_CAP, syn_queue(0, clients=6), None)[0]
    assert empty.holds is False and empty.evidence.startswith("0 SYN_RECV entries")
    too_many = backlog.judge_c15(overflow(queued=5), SOMAXCONN_CAP, syn_queue(3), None)[1]
    assert too_many.holds is False and "5 of 8 connections queued (backlog+3)" in too_many.evidence
    uncapped = SomaxconnCap(backlog.HUGE_BACKLOG, backlog.HUGE_BACKLOG, "4096")
    assert backlog.judge_c15(overflow(), uncapped, syn_queue(3), None)[1].holds is False
    for run in (overflow(still=4), overflow(retransmits=0), overflow(error="ECONNREFUSED")):
        dropped = backlog.judge_c15(run, SOMAXCONN_CAP, syn_queue(3), None)[2]
        assert dropped.holds is False
        assert f"{run.retries.still_syn_sent} of 5 later clients" in dropped.evidence
        assert f"failed with {run.give_up.connect_error}" in dropped.evidence


def test_c15_judge_tells_what_abort_on_overflow_did() -> None:
    abort = AbortOnOverflow({"abort_on_overflow": "1", "client_recv": "ECONNRESET"}, True)
    dropped = backlog.judge_c15(overflow(), SOMAXCONN_CAP, syn_queue(3), abort)[2]
    assert dropped.holds is True
    assert dropped.evidence.endswith("got ECONNRESET instead (an RST was captured)")


def test_which_rules_apply_follows_the_settings() -> None:
    settings: dict[str, str | None] = {
        "net.core.somaxconn": "4096",
        "net.ipv4.tcp_syncookies": "0",
        "net.ipv4.tcp_abort_on_overflow": "1",
        "net.ipv4.tcp_max_syn_backlog": "128",
        "net.ipv4.tcp_synack_retries": "2",
    }
    rules = backlog.which_rules_apply(settings)
    assert rules["syn_queue_full"] == "SYN dropped"
    assert "128" in rules["tcp_max_syn_backlog"]
    assert rules["accept_queue_full"].endswith("answered with RST")
    assert rules["half_open_lifetime_s"] == 7
