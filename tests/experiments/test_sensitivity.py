"""Sensitivity: each sysctl-dependent experiment in fresh namespaces at two or more
settings; its figures and verdicts must follow the setting, never the host's value."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from framelab.experiments import backlog, link_mtu, mss, nagle, retransmission, time_wait
from framelab.experiments.context import RunContext
from framelab.experiments.result import Verdict
from framelab.lab.netns import SettingError, fresh_namespace, leftover_namespaces

pytestmark = pytest.mark.root
QUICK = RunContext(rounds=2, quick=True)


@pytest.mark.parametrize("somaxconn", [1, 4096])
def test_somaxconn_caps_the_accept_queue(somaxconn: int) -> None:
    with fresh_namespace({"net.core.somaxconn": str(somaxconn)}):
        cap = backlog.somaxconn_cap()
    assert cap.queue_limit == min(backlog.HUGE_BACKLOG, somaxconn)
    assert cap.somaxconn == str(somaxconn)


@pytest.mark.parametrize(("cookies", "half_open"), [("0", 3), ("1", 3), ("2", 0)])
def test_syncookies_decide_whether_the_syn_queue_holds_anything(
    cookies: str, half_open: int
) -> None:
    """listen(2) with TCP_DEFER_ACCEPT: the SYN queue keeps backlog+1 entries and
    cookies let the surplus connect (1); with 2 every SYN gets a cookie, no entry is
    kept, and the completed handshakes fill the accept queue (backlog+1) instead."""
    with fresh_namespace({"net.ipv4.tcp_syncookies": cookies}):
        seen = backlog.fill_syn_queue(None, 2, 6)
    assert seen.syn_recv_rows == half_open
    connected = seen.client_states.get("ESTABLISHED", 0)
    assert connected == (6 if cookies == "1" else 3)
    assert (seen.counters["TcpExt.SyncookiesSent"] > 0) is (cookies != "0")


@pytest.mark.parametrize(("max_syn_backlog", "kept"), [(8, 7), (256, 12)])
def test_tcp_max_syn_backlog_binds_only_when_small(max_syn_backlog: int, kept: int) -> None:
    seen = backlog.namespace_syn_queue(0, max_syn_backlog)
    assert seen.syn_recv_rows == kept


@pytest.mark.parametrize("host_tw_reuse", ["0", "1"])
def test_c34_verdict_does_not_follow_the_run_namespaces_tw_reuse(host_tw_reuse: str) -> None:
    with fresh_namespace({"net.ipv4.tcp_tw_reuse": host_tw_reuse}):
        result = time_wait.check_c34(QUICK)
    assert result.context["host net.ipv4.tcp_tw_reuse"] == host_tw_reuse
    assert [p.holds for p in result.parts][:2] == [True, False]
    assert result.verdict is Verdict.PARTLY
    assert "None" not in result.summary


def test_c32_holds_when_the_bucket_cap_destroys_time_waits() -> None:
    with fresh_namespace({"net.ipv4.tcp_max_tw_buckets": "3"}):
        result = time_wait.check_c32(QUICK)
    seen = result.observed["server_closes_first"]
    assert seen["time_wait_on_server_port"] <= 3
    assert seen["destroyed_by_tcp_max_tw_buckets"] >= result.observed["connections"] - 3
    assert result.verdict is Verdict.CONFIRMED


def test_tcp_retries2_moves_the_abort_as_the_kernel_model_says() -> None:
    seen, _ = retransmission.observe_abort(retries2=1)
    check = retransmission.model_check(seen)
    assert seen.sysctl["net.ipv4.tcp_retries2"] == "1"
    assert check.resends_match_model and check.abort_matches_model
    assert seen.error == "ETIMEDOUT" and not seen.rst_sent


@pytest.mark.parametrize("mtu", [1400, 1500, 9000])
def test_link_sizes_follow_the_mtu(mtu: int) -> None:
    ctx = dataclasses.replace(QUICK, mtu=mtu)
    results = {r.claim: r for experiment in (link_mtu, mss) for r in experiment.run(ctx)}
    assert results["C01"].observed["largest_frame"] == 14 + mtu
    assert results["C07"].observed["largest_payload"] == mtu - 28
    assert results["C07"].observed["send_one_more"] == "EMSGSIZE"
    assert results["C12"].observed["timestamps_off"]["syn_mss_option"] == mtu - 40
    assert results["C04"].observed["whole"]["received_whole"] == 2 * mtu + 1000
    assert results["C19"].observed["segments"][0] == results["C19"].observed["mss"]
    assert results["C12"].verdict is results["C04"].verdict is Verdict.CONFIRMED
    assert results["C19"].verdict is Verdict.CONFIRMED
    # the Ethernet part is probed on a link of 1500 whatever the run's MTU
    assert results["C07"].parts[1].holds is True
    assert results["C07"].verdict is Verdict.CONFIRMED
    assert leftover_namespaces() == []


def test_without_delayed_acks_nagle_is_not_refuted() -> None:
    """A quickack route: the header's ACK is back before the body is written."""
    with fresh_namespace():
        subprocess.run(
            ["ip", "route", "replace", "local", "127.0.0.1", "dev", "lo", "table", "local",
             "proto", "kernel", "scope", "host", "src", "127.0.0.1", "quickack", "1"],
            check=True,
        )  # fmt: skip
        results = {r.claim: r for r in nagle.run(QUICK)}
    assert results["C18"].verdict is not Verdict.DIFFERS
    assert results["C36"].parts[0].holds is True  # NODELAY still sends every write at once
    assert results["C36"].verdict is not Verdict.DIFFERS


def test_an_unknown_setting_is_refused_by_name() -> None:
    with (
        pytest.raises(SettingError, match=r"net\.ipv4\.no_such_knob"),
        fresh_namespace({"net.ipv4.no_such_knob": "1"}),
    ):
        pass
    assert leftover_namespaces() == []
