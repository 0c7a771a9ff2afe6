"""C01-C04, C07, C19 on this kernel: frame sizes, DF, segments and fragments across
a 1500-byte veth, IP limits on loopback; and the judges on synthetic observations."""

from __future__ import annotations

import dataclasses

import pytest

from framelab.experiments import link_mtu
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict
from framelab.lab.netns import leftover_namespaces
from framelab.lab.packets import Packet
from framelab.lab.wire import TcpTransfer, TimestampPair, Wire


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in link_mtu.run(RunContext(rounds=1, quick=True))}


@pytest.mark.kernel
def test_ip_datagram_and_header_limits_on_loopback(results: dict[str, ClaimResult]) -> None:
    c03 = results["C03"].observed
    assert c03["udp_largest"] == "ok" and c03["udp_one_more"] == "EMSGSIZE"
    assert c03["ip_options_40"] == "ok" and c03["ip_options_44"] == "EINVAL"
    # 40 bytes of options come out of the same 65535: the payload limit drops by 40
    assert c03["udp_largest_with_40_option_bytes"] == "ok"
    assert c03["udp_one_more_with_40_option_bytes"] == "EMSGSIZE"
    assert "65507" in results["C03"].summary and "65468 -> EMSGSIZE" in results["C03"].summary
    assert results["C03"].verdict is Verdict.CONFIRMED


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
    c19 = results["C19"]
    assert c19.observed["received"] == c19.observed["one_send"] == 10_000
    assert c19.observed["segments"] == [1448] * 6 + [10_000 - 6 * 1448]
    assert [p.holds for p in c19.parts] == [True, True, True]
    assert c19.verdict is Verdict.CONFIRMED


@pytest.mark.kernel
@pytest.mark.root
def test_udp_with_df_stops_at_1472(results: dict[str, ClaimResult]) -> None:
    c07 = results["C07"].observed
    assert (c07["send_largest"], c07["send_one_more"], c07["ip_mtu"]) == ("ok", "EMSGSIZE", 1500)
    assert c07["largest_payload"] == 1472
    assert c07["df_set"] is True and c07["frame_of_largest"] == 1514
    assert c07["received_sizes"] == (1472, 1)
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
    assert lost["delivered"] == ("the marker",)
    assert lost["counters_at_b"]["Ip.ReasmOKs"] == 0
    assert lost["counters_at_b"]["Ip.ReasmFails"] >= 1
    assert lost["icmp_from_b"] is not None
    assert results["C04"].verdict is Verdict.CONFIRMED
    assert leftover_namespaces() == []


def test_without_root_the_link_claims_are_skipped() -> None:
    by_claim = {r.claim: r for r in link_mtu.run(RunContext(root=False))}
    skipped = {c for c, r in by_claim.items() if r.verdict is Verdict.SKIPPED}
    assert skipped == set(link_mtu.NETNS_CLAIMS)
    assert all("needs root" in by_claim[c].summary for c in skipped)
    assert by_claim["C03"].verdict is Verdict.CONFIRMED
    assert "captured" not in by_claim["C03"].observed


# --- the judges, on observations made up here ----------------------------------------
def udp_packet(payload: int, frame: int, at: float = 0.0) -> Packet:
    return Packet(at, frame, "10.231.0.1", "10.231.0.2", "udp", 20, frame - 14, 1, True, False, 0,
                  sport=5000, dport=link_mtu.UDP_PORT, payload_len=payload)  # fmt: skip


def tcp_packet(payload: int, mss: int, at: float = 0.0) -> Packet:
    return Packet(at, 14 + 20 + 32 + payload, "10.231.0.1", "10.231.0.2", "tcp", 20,
                  20 + 32 + payload, 2, True, False, 0, sport=5001, dport=link_mtu.TCP_PORT,
                  tcp_flags=0x18, tcp_header_len=32, payload_len=payload)  # fmt: skip


def observation(mtu: int, segments: list[int], sent: int, maxseg: int) -> link_mtu.LinkObservation:
    """A run at `mtu` where DF stopped at MTU - 28 and the big send left as `segments`."""
    largest = mtu - 28
    packets = [udp_packet(largest, 14 + mtu)] + [
        tcp_packet(size, maxseg, 0.001 * (i + 1)) for i, size in enumerate(segments)
    ]
    udp = link_mtu.DatagramWithDf(mtu, largest, "ok", "EMSGSIZE", (largest,), 14 + mtu, True, False)
    transfer = TcpTransfer(link_mtu.TCP_PORT, maxseg, sent, sum(segments))
    no_ts = TcpTransfer(link_mtu.TCP_NO_TS_PORT, mtu - 40, 2 * (mtu - 40), 2 * (mtu - 40))
    counters = {name: 0 for name in link_mtu.REASSEMBLY}
    return link_mtu.LinkObservation(
        mtu=mtu,
        fresh_veth_mtu=1500,
        wire=Wire(tuple(packets), 0.0),
        at_b=Wire((), 0.0),
        tcp=TimestampPair(transfer, no_ts, "1", "0"),
        udp=udp,
        whole=link_mtu.Reassembled(2 * mtu + 1000, None, (), counters),
        lost=link_mtu.LostFragment(3, (0, 2960), (), "30", 1, False, counters),
        ip_no_pmtu_disc="0",
    )


def probe_at(mtu: int, send_largest: str = "ok") -> link_mtu.DatagramWithDf:
    return link_mtu.DatagramWithDf(
        mtu, mtu - 28, send_largest, "EMSGSIZE", (mtu - 28,), 14 + mtu, True, False
    )


@pytest.mark.parametrize("mtu", [1280, 1400, 9000])
def test_on_another_mtu_the_1472_part_is_judged_on_a_link_of_1500(mtu: int) -> None:
    run = observation(mtu, [100], 100, mtu - 52)
    c07 = link_mtu.judge_c07(dataclasses.replace(run, on_ethernet=probe_at(1500)))
    assert [p.holds for p in c07.parts] == [True, True]
    assert "1472 bytes -> ok (one 1514-byte frame), 1473 -> EMSGSIZE" in c07.parts[1].evidence
    assert c07.observed["on_ethernet"]["ip_mtu"] == 1500
    unprobed = link_mtu.judge_c07(run)
    assert [p.holds for p in unprobed.parts] == [True, None]
    assert "not observable" in unprobed.parts[1].evidence
    assert unprobed.verdict is Verdict.PARTLY


def test_the_1472_part_holds_on_ethernet_and_fails_when_the_route_allows_less() -> None:
    run = observation(1500, [100], 100, 1448)
    c07 = link_mtu.judge_c07(dataclasses.replace(run, on_ethernet=run.udp))
    assert [p.holds for p in c07.parts] == [True, True]
    refused = dataclasses.replace(run, udp=probe_at(1500, "EMSGSIZE"))
    refused = dataclasses.replace(refused, on_ethernet=refused.udp)
    assert [p.holds for p in link_mtu.judge_c07(refused).parts] == [False, False]


def test_c19_is_judged_part_by_part() -> None:
    full = link_mtu.judge_c19(observation(1500, [1448] * 6 + [1312], 10_000, 1448))
    assert [p.holds for p in full.parts] == [True, True, True]
    assert full.verdict is Verdict.CONFIRMED
    # one segment larger than the MSS (as a GSO-sized capture would show): split, but not to size
    oversized = link_mtu.judge_c19(observation(1500, [2896, 2896, 2896, 1312], 10_000, 1448))
    assert [p.holds for p in oversized.parts] == [True, False, True]
    assert oversized.verdict is Verdict.PARTLY
    # the capture lost a segment: the pieces no longer add up to the send
    short = link_mtu.judge_c19(observation(1500, [1448] * 5 + [1312], 10_000, 1448))
    assert [p.holds for p in short.parts] == [True, True, False]
    # a send that fits one segment is not split, and the claim is not shown
    small = link_mtu.judge_c19(observation(1500, [1000], 1000, 1448))
    assert small.parts[0].holds is False


def test_fragment_sizes_follow_the_mtu() -> None:
    assert link_mtu.fragment_data(1500) == 1480
    assert link_mtu.fragment_data(1400) == 1376  # 1380 rounded down to 8-byte units
    assert link_mtu.big_datagram(9000) == 19_000
    assert link_mtu.big_datagram(65_535) == link_mtu.LARGEST_UDP  # never over IP's limit
