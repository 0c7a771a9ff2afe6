"""C12, C13 on this kernel: the MSS follows the route's MTU, 536 only for a peer that
announces none; and the judges on synthetic observations."""

from __future__ import annotations

import dataclasses

import pytest

from framelab.experiments import mss
from framelab.experiments.context import RunContext
from framelab.experiments.result import ClaimResult, Verdict
from framelab.lab.netns import leftover_namespaces
from framelab.lab.packets import ACK, SYN, Packet
from framelab.lab.wire import TcpTransfer, TimestampPair, Wire


@pytest.fixture(scope="module")
def results() -> dict[str, ClaimResult]:
    return {r.claim: r for r in mss.run(RunContext(rounds=1, quick=True))}


@pytest.mark.kernel
def test_the_mss_follows_the_mtu_not_536(results: dict[str, ClaimResult]) -> None:
    c13 = results["C13"]
    default = next(p for p in c13.parts if "by default" in p.part)
    assert default.holds is False and str(c13.observed["loopback_tcp_maxseg"]) in default.evidence
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
    assert no_option["b_segments"] == (536, 536, 1200 - 2 * 536)
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
    assert without_ts["data_segments"] == (1460, 1460)
    assert with_ts["full_segment"] == {"ip_header": 20, "tcp_header": 32, "data": 1448,
                                       "ip_total": 1500}  # fmt: skip
    assert results["C12"].verdict is Verdict.CONFIRMED
    assert leftover_namespaces() == []


def test_without_root_c12_is_skipped_and_the_fallback_not_observed() -> None:
    by_claim = {r.claim: r for r in mss.run(RunContext(root=False))}
    assert by_claim["C12"].verdict is Verdict.SKIPPED
    assert "needs root" in by_claim["C12"].summary
    assert by_claim["C13"].verdict is Verdict.DIFFERS  # the fallback part is not observable
    assert by_claim["C13"].parts[0].holds is None


# --- the judges, on observations made up here ----------------------------------------
def segment(
    port: int,
    flags: int,
    *,
    mss_option: int | None = None,
    data: int = 0,
    tcp_header: int = 20,
    timestamps: bool = False,
    to_b: bool = True,
) -> Packet:
    options = ([f"mss {mss_option}"] if mss_option else []) + (
        ["TS val 1 ecr 0"] if timestamps else []
    )
    sport, dport = (50_000, port) if to_b else (port, 50_000)
    return Packet(0.0, 14 + 20 + tcp_header + data, "10.231.0.1", "10.231.0.2", "tcp", 20,
                  20 + tcp_header + data, 0, True, False, 0, sport=sport, dport=dport,
                  tcp_flags=flags, tcp_header_len=tcp_header, payload_len=data,
                  mss_option=mss_option, options=options)  # fmt: skip


def veth(mtu: int, announced: int, segments_on: list[int], segments_off: list[int]) -> mss.VethMss:
    """Two handshakes at `mtu` announcing `announced`, then data as given, and a 536 fallback."""
    on, off = mss.TCP_PORT, mss.TCP_NO_TS_PORT
    packets = [
        segment(on, SYN, mss_option=announced, tcp_header=40, timestamps=True),
        segment(on, SYN | ACK, mss_option=announced, tcp_header=40, timestamps=True, to_b=False),
        *(segment(on, ACK, data=size, tcp_header=32) for size in segments_on),
        segment(off, SYN, mss_option=announced, tcp_header=24),
        segment(off, SYN | ACK, mss_option=announced, tcp_header=24, to_b=False),
        *(segment(off, ACK, data=size) for size in segments_off),
    ]
    pair = TimestampPair(
        TcpTransfer(on, mtu - 52, sum(segments_on), sum(segments_on)),
        TcpTransfer(off, mtu - 40, sum(segments_off), sum(segments_off)),
        "1",
        "0",
    )
    return mss.VethMss(
        mtu, Wire(tuple(packets), 0.0), pair, mss.NoMssPeer(1460, 536, 1200, (536, 536, 128))
    )


@pytest.mark.parametrize("mtu", [1280, 1500, 9000])
def test_c12_follows_the_mtu_it_was_run_at(mtu: int) -> None:
    seen = veth(mtu, mtu - 40, [mtu - 52, 100], [mtu - 40, mtu - 40])
    c12 = mss.judge_c12(seen)
    assert [p.holds for p in c12.parts] == [True, True]
    assert f"MTU {mtu}" in c12.parts[0].evidence
    assert f"20 + 32 + {mtu - 52} = {mtu}" in c12.parts[1].evidence


def test_c12_fails_part_by_part() -> None:
    # an MSS clamped below the MTU's (a middlebox's rewrite): the announcement fails
    clamped = mss.judge_c12(veth(1500, 1400, [1388, 100], [1400, 1400]))
    assert [p.holds for p in clamped.parts] == [False, False]
    # announcements right, but the data never filled a segment
    small = mss.judge_c12(veth(1500, 1460, [100], [100]))
    assert [p.holds for p in small.parts] == [True, False]
    assert small.verdict is Verdict.PARTLY


def loopback(maxseg: int, syn_mss: int | None) -> mss.LoopbackMss:
    info = {"pmtu": 65536, "advmss": 65483, "snd_mss": maxseg}
    return mss.LoopbackMss(65536, maxseg, info, 988, 988, 5, syn_mss, 65483, 1000, {})


def test_c13_is_partly_where_536_is_only_the_fallback() -> None:
    seen = veth(1500, 1460, [1448], [1460, 1460])
    c13 = mss.judge_c13(loopback(32741, 65495), seen)
    assert [p.holds for p in c13.parts] == [True, False]
    assert "veth SYN 1460" in c13.parts[1].evidence
    # a kernel whose connections all used 536 would confirm the claim
    everywhere = veth(1500, 536, [524], [536, 536])
    assert mss.judge_c13(loopback(536, 536), everywhere).verdict is Verdict.CONFIRMED
    # and one that ignores a missing option (keeps its own MSS) fails the fallback
    ignored = dataclasses.replace(seen, no_mss=mss.NoMssPeer(1460, 1460, 1200, (1200,)))
    assert mss.judge_c13(loopback(32741, 65495), ignored).parts[0].holds is False
    broken = dataclasses.replace(seen, no_mss=mss.NoMssPeer(None, None, 1200, (), "no SYN-ACK"))
    assert "no SYN-ACK" in mss.judge_c13(loopback(32741, None), broken).parts[0].evidence
