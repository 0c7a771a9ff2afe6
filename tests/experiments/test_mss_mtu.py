"""C01-C04, C07, C12, C13, C19 on this kernel: MTU and MSS across a 1500-byte
veth, IP limits and MSS on loopback, fragmentation."""

from __future__ import annotations

import pytest
from conftest import requires_root

from experiments import mss_mtu
from experiments.context import RunContext
from experiments.netns import leftover_namespaces
from experiments.result import ClaimResult, Verdict


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in mss_mtu.run(RunContext(rounds=1, quick=True))}


def test_ip_datagram_and_header_limits_on_loopback(results: dict[str, ClaimResult]) -> None:
    c03 = results["C03"].observed
    assert c03["udp_65507"] == "ok" and c03["udp_65508"] == "EMSGSIZE"
    assert c03["ip_options_40"] == "ok" and c03["ip_options_44"] == "EINVAL"


def test_the_mss_follows_the_mtu_not_536(results: dict[str, ClaimResult]) -> None:
    c13 = results["C13"]
    assert c13.verdict is Verdict.DIFFERS
    assert c13.observed["loopback_tcp_maxseg"] > 536
    assert c13.observed["maxseg_1000_before_connect"] <= 1000  # less the timestamp option


@requires_root
def test_mss_and_mtu_across_a_1500_byte_link(results: dict[str, ClaimResult]) -> None:
    c12 = results["C12"].observed
    assert c12["syn_mss_option"] == 1460
    assert c12["tcp_maxseg_after_connect"] == (1448 if c12["timestamps"] else 1460)
    assert results["C01"].observed["largest_frame"] == 1514
    assert min(results["C02"].observed["smallest_frames"]) == 43  # 14 + 20 + 8 + 1
    assert results["C03"].observed["captured_ip_header_len"] == 60
    assert results["C13"].observed["veth_syn_mss"] == 1460


@requires_root
def test_a_large_send_is_split_into_mss_sized_segments(results: dict[str, ClaimResult]) -> None:
    c19 = results["C19"].observed
    assert c19["received"] == c19["one_send"] == sum(c19["segments"])
    assert len(c19["segments"]) >= 7 and max(c19["segments"]) == c19["mss"]


@requires_root
def test_udp_with_df_and_fragmentation(results: dict[str, ClaimResult]) -> None:
    c07 = results["C07"].observed
    assert (c07["send_1472"], c07["send_1473"], c07["ip_mtu"]) == ("ok", "EMSGSIZE", 1500)
    assert c07["df_set"] is True
    c04 = results["C04"].observed
    assert [f["offset"] for f in c04["fragments"]] == [0, 1480, 2960]
    assert [f["more"] for f in c04["fragments"]] == [True, True, False]
    assert len(c04["ids"]) == 1 and c04["received_whole"] == 4000
    assert c04["lone_first_fragment"] == "nothing delivered"
    assert c04["counters_lone"]["Ip.ReasmReqds"] >= 1 and c04["counters_lone"]["Ip.ReasmOKs"] == 0
    assert all(r.verdict is Verdict.CONFIRMED for c, r in results.items() if c != "C13")
    assert leftover_namespaces() == []


def test_without_root_the_link_claims_are_skipped() -> None:
    by_claim = {r.claim: r for r in mss_mtu.run(RunContext(root=False))}
    skipped = {c for c, r in by_claim.items() if r.verdict is Verdict.SKIPPED}
    assert skipped == set(mss_mtu.NETNS_CLAIMS)
    assert "root" in by_claim["C01"].summary
