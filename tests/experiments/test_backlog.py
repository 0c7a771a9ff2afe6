"""C15, C16 on this kernel: the accept queue, the SYN queue, and their overflows."""

from __future__ import annotations

import pytest

from framelab.experiments import backlog
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
    unjudged = backlog.judge_c16(host, None)
    assert all(p.holds is None and "context only" in p.evidence for p in unjudged)


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
