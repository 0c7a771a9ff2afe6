"""C01-C04, C07, C12, C13, C19 on this kernel: MTU and MSS across a 1500-byte
veth, IP limits and MSS on loopback, fragmentation and a lost fragment."""

from __future__ import annotations

import pytest

from framelab.experiments import mss_mtu
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict
from framelab.lab.netns import leftover_namespaces


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in mss_mtu.run(RunContext(rounds=1, quick=True))}


@pytest.mark.kernel
def test_ip_datagram_and_header_limits_on_loopback(results: dict[str, ClaimResult]) -> None:
    c03 = results["C03"].observed
    assert c03["udp_65507"] == "ok" and c03["udp_65508"] == "EMSGSIZE"
    assert c03["ip_options_40"] == "ok" and c03["ip_options_44"] == "EINVAL"
    # 40 bytes of options come out of the same 65535: the payload limit drops by 40
    assert c03["udp_65467_with_40_option_bytes"] == "ok"
    assert c03["udp_65468_with_40_option_bytes"] == "EMSGSIZE"
    assert results["C03"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
def test_the_mss_follows_the_mtu_not_536(results: dict[str, ClaimResult]) -> None:
    c13 = results["C13"]
    default = next(p for p in c13.parts if "by default" in p.part)
    assert default.holds is False and "32741" in default.evidence
    assert c13.observed["loopback_mtu"] == 65536
    assert c13.observed["loopback_tcp_maxseg"] > 536
    # TCP_MAXSEG before connect caps the MSS (less 12 bytes of timestamps) ...
    assert c13.observed["maxseg_1000_before_connect"] in (988, 1000)
    assert c13.observed["peer_maxseg"] == c13.observed["maxseg_1000_before_connect"]
    # ... so 4000 bytes need at least 5 segments (loopback's GSO hides them from a capture)
    assert c13.observed["segments_for_4000_bytes"] >= 5


@pytest.mark.kernel
@pytest.mark.root
def test_loopback_advertises_its_mtu_less_40_and_536_is_only_a_fallback(
    results: dict[str, ClaimResult],
) -> None:
    c13 = results["C13"].observed
    assert c13["loopback_syn_mss"] == 65535 - 40  # the MTU (65536) exceeds the IP limit
    assert c13["syn_mss_after_maxseg_1000"] == 1000
    assert c13["veth_syn_mss"] == 1460
    no_option = c13["peer_without_mss_option"]
    assert no_option["b_syn_ack_mss_option"] == 1460  # b still advertises its own
    assert no_option["b_tcp_maxseg"] == 536
    assert no_option["b_segments"] == [536, 536, 1200 - 2 * 536]
    # 536 is the default where RFC 879 puts it (no option), not what Linux announces: partly
    assert [p.holds for p in results["C13"].parts] == [True, False]
    assert results["C13"].verdict is Verdict.PARTLY


@pytest.mark.kernel
@pytest.mark.root
def test_mss_is_the_mtu_less_the_ip_and_tcp_headers(results: dict[str, ClaimResult]) -> None:
    c12 = results["C12"].observed
    with_ts, without_ts = c12["timestamps_on"], c12["timestamps_off"]
    assert with_ts["syn_mss_option"] == without_ts["syn_mss_option"] == 1500 - 20 - 20
    assert with_ts["timestamps_agreed"] and not without_ts["timestamps_agreed"]
    assert with_ts["tcp_maxseg_after_connect"] == 1448  # 12 bytes of timestamps per segment
    assert without_ts["tcp_maxseg_after_connect"] == 1460
    assert without_ts["data_segments"] == [1460, 1460]
    assert with_ts["full_segment"] == {"ip_header": 20, "tcp_header": 32, "data": 1448,
                                       "ip_total": 1500}  # fmt: skip
    assert results["C12"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
@pytest.mark.root
def test_frame_sizes_largest_1514_and_unpadded_small_ones(
    results: dict[str, ClaimResult],
) -> None:
    c01 = results["C01"].observed
    assert c01["largest_frame"] == c01["largest_tcp_frame"] == c01["largest_udp_frame"] == 1514
    c02 = results["C02"].observed
    assert c02["udp_1_byte_sent"] == 14 + 20 + 8 + 1
    assert c02["udp_1_byte_received_at_b"] == 43  # a veth adds no padding either
    assert c02["bare_ack_without_timestamps"] == 14 + 20 + 20
    assert c02["bare_ack"] == 14 + 20 + 20 + 12
    assert results["C01"].observed["fresh_veth_mtu"] == 1500
    # what a veth cannot show (stripping, padding) is not observed, never passed
    assert [p.holds for p in results["C01"].parts] == [True, True, None]
    assert [p.holds for p in results["C02"].parts] == [True, None]
    assert results["C01"].verdict is results["C02"].verdict is Verdict.PARTLY
    assert results["C03"].observed["captured"] == {
        "plain_header": 20,
        "header_with_options": 60,
        "largest_total_length": 65535,
    }


@pytest.mark.kernel
@pytest.mark.root
def test_a_large_send_is_split_into_mss_sized_segments(results: dict[str, ClaimResult]) -> None:
    c19 = results["C19"].observed
    assert c19["received"] == c19["one_send"] == sum(c19["segments"]) == 10_000
    assert c19["segments"] == [1448] * 6 + [10_000 - 6 * 1448]
    assert results["C19"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
@pytest.mark.root
def test_udp_with_df_stops_at_1472(results: dict[str, ClaimResult]) -> None:
    c07 = results["C07"].observed
    assert (c07["send_largest"], c07["send_one_more"], c07["ip_mtu"]) == ("ok", "EMSGSIZE", 1500)
    assert c07["largest_payload"] == 1472
    assert c07["df_set"] is True and c07["frame_of_largest"] == 1514
    assert c07["received_sizes"] == [1472, 1]
    assert results["C07"].verdict is Verdict.CONFIRMED


@pytest.mark.kernel
@pytest.mark.root
def test_fragments_share_one_id_and_one_lost_fragment_loses_the_datagram(
    results: dict[str, ClaimResult],
) -> None:
    whole = results["C04"].observed["whole"]
    assert [f["offset"] for f in whole["fragments"]] == [0, 1480, 2960]
    assert [f["more"] for f in whole["fragments"]] == [True, True, False]
    assert [f["bytes"] for f in whole["fragments"]] == [1480, 1480, 4008 - 2960]
    assert len(whole["ids"]) == 1 and whole["received_whole"] == 4000
    assert whole["counters_at_b"]["Ip.ReasmOKs"] == 1
    lost = results["C04"].observed["middle_fragment_lost"]
    assert lost["delivered"] == ["the marker"]
    assert lost["counters_at_b"]["Ip.ReasmOKs"] == 0
    assert lost["counters_at_b"]["Ip.ReasmFails"] >= 1
    assert lost["icmp_from_b"] is not None
    assert results["C04"].verdict is Verdict.CONFIRMED
    assert leftover_namespaces() == []


def test_without_root_the_link_claims_are_skipped() -> None:
    by_claim = {r.claim: r for r in mss_mtu.run(RunContext(root=False))}
    skipped = {c for c, r in by_claim.items() if r.verdict is Verdict.SKIPPED}
    assert skipped == set(mss_mtu.NETNS_CLAIMS)
    assert all("needs root" in by_claim[c].summary for c in skipped)
    assert by_claim["C03"].verdict is Verdict.CONFIRMED
    assert by_claim["C13"].verdict is Verdict.DIFFERS  # the fallback part is not observable
    assert by_claim["C13"].parts[0].holds is None
    assert "captured" not in by_claim["C03"].observed
