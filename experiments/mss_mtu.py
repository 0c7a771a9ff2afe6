"""C01-C04, C07, C12, C13, C19: MTU, MSS, IP limits and fragmentation.

Loopback has a 65536-byte MTU and no Ethernet, so the Ethernet claims run
between two hosts in network namespaces joined by a veth pair with MTU 1500
and segmentation offloads off (experiments/netns.py), captured on a's end:
- C12: the MSS option in the SYN and TCP_MAXSEG after connect, against the
  MTU minus the IP and TCP headers (timestamps take 12 more bytes).
- C19: one send() of SEND_SIZE bytes leaves as several segments <= MSS.
- C01: the largest frame captured (a full segment): 14 + 1500 bytes.
- C02: the smallest frames (a bare ACK, a 1-byte UDP datagram): shorter
  than Ethernet's 60-byte minimum, since padding happens after the capture
  point (a veth never pads at all).
- C07: UDP with DF (IP_PMTUDISC_DO): 1472 bytes go out in one frame, 1473
  fail with EMSGSIZE; IP_MTU says 1500.
- C04: a 4000-byte datagram without DF leaves as fragments sharing one IP
  id and is delivered whole; a datagram whose first fragment alone arrives
  (sent raw) is never delivered (ReasmReqds counts it, ReasmOKs does not).
On loopback, for everyone:
- C03: the largest UDP payload is 65535 - 20 - 8 = 65507 bytes (65508:
  EMSGSIZE); IP options make the header longer, up to 60 bytes (40 bytes of
  options accepted, 44 refused), and as root the capture shows IHL 15.
- C13: the MSS in use is derived from the route's MTU (loopback and veth),
  not 536, which is only the fallback when a peer sends no MSS option;
  TCP_MAXSEG set before connect lowers what is advertised.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

from experiments.capture import Capture, Packet, format_trace
from experiments.context import RunContext
from experiments.netns import Host, VethLink, socket_in
from experiments.observe import counter_delta, errno_name, netstat_counters, sysctls
from experiments.pairs import (
    address_of,
    connect_to,
    listening_socket,
    maybe_capture,
    short_trace,
)
from experiments.registry import Experiment
from experiments.result import ClaimResult, judge, skipped

NAME = "mss_mtu"
# linux/in.h (the socket module of Python 3.11 lacks them)
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
IP_PMTUDISC_DO = 2
IP_MTU = 14
ETHERNET_HEADER = 14
ETHERNET_MIN_FRAME = 60  # without the FCS
MTU = 1500
TCP_PORT, UDP_PORT, FRAG_PORT = 7012, 7007, 7004
SEND_SIZE = 10_000
BIG_DATAGRAM = 4000
NETNS_CLAIMS = ("C01", "C02", "C04", "C07", "C12", "C19")


def run(ctx: RunContext) -> list[ClaimResult]:
    if ctx.root:
        wire, trace = observe_veth()
        results = judge_veth(wire, trace)
    else:
        wire, trace = {}, []
        why = "needs root: two hosts in network namespaces (veth, MTU 1500)"
        results = [skipped(NAME, claim, why) for claim in NETNS_CLAIMS]
    results += [check_ip_limits(ctx), check_default_mss(ctx, wire)]
    return sorted(results, key=lambda r: r.claim)


# -- across a veth with MTU 1500 ----------------------------------------------------
def observe_veth() -> tuple[dict[str, Any], list[str]]:
    with VethLink(mtu=MTU) as link:
        ports = [TCP_PORT, UDP_PORT, FRAG_PORT]
        with Capture(link.a.ifname, ports=ports, netns=link.a.netns) as cap:
            tcp = tcp_over_veth(link)
            udp = udp_with_df(link, cap)
            frag = fragmentation(link, cap)
            cap.stop()
        packets = list(cap.packets)
        data = [p for p in packets if p.proto == "tcp" and p.sport != TCP_PORT and p.payload_len]
        syn = next((p for p in packets if p.proto == "tcp" and p.flags == "S"), None)
        wire = {
            "tcp": tcp,
            "udp_df": udp,
            "fragments": frag,
            "syn_mss_option": syn.mss_option if syn else None,
            "data_segments": [p.payload_len for p in data],
            "largest_frame": max(p.frame_len for p in packets),
            "smallest_frames": sorted({p.frame_len for p in packets})[:3],
            "smallest_frame_kinds": smallest_kinds(packets),
            "sysctl": sysctls(
                ["net.ipv4.tcp_timestamps", "net.ipv4.ip_no_pmtu_disc"], link.a.netns
            ),
        }
        trace = short_trace(cap, TCP_PORT, limit=16) + fragment_lines(cap)
    return wire, trace


def tcp_over_veth(link: VethLink) -> dict[str, Any]:
    listener = link.b.socket()
    client = link.a.socket()
    with listener, client:
        listener.bind((link.b.address, TCP_PORT))
        listener.listen(1)
        client.settimeout(2)
        client.connect((link.b.address, TCP_PORT))
        server, _ = listener.accept()
        with server:
            maxseg = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
            sent = client.send(bytes(SEND_SIZE))
            received = 0
            server.settimeout(2)
            while received < sent:
                received += len(server.recv(65536))
    return {"tcp_maxseg_after_connect": maxseg, "sent_in_one_send": sent, "received": received}


def udp_with_df(link: VethLink, cap: Capture) -> dict[str, Any]:
    receiver = link.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = link.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((link.b.address, UDP_PORT))
        sender.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        sender.connect((link.b.address, UDP_PORT))
        results: dict[str, Any] = {"ip_mtu": sender.getsockopt(socket.IPPROTO_IP, IP_MTU)}
        for size in (1472, 1473):
            try:
                sender.send(bytes(size))
                results[f"send_{size}"] = "ok"
            except OSError as exc:
                results[f"send_{size}"] = errno_name(exc)
        sender.send(b"x")  # the smallest datagram: 43 bytes on the wire
        receiver.settimeout(1)
        results["received_sizes"] = [len(receiver.recv(65536)) for _ in range(2)]
        frame = cap.wait_for(lambda p: p.proto == "udp" and p.payload_len == 1472)
        results["frame_of_1472"] = frame.frame_len if frame else None
        results["df_set"] = frame.dont_fragment if frame else None
    return results


def fragmentation(link: VethLink, cap: Capture) -> dict[str, Any]:
    receiver = link.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = link.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((link.b.address, FRAG_PORT))
        receiver.settimeout(1)
        sender.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        before = netstat_counters(link.b.netns)
        sender.sendto(bytes(BIG_DATAGRAM), (link.b.address, FRAG_PORT))
        whole = len(receiver.recv(65536))
        cap.wait_for(lambda p: p.proto == "ip-fragment" and not p.more_fragments)
        pieces = [p for p in list(cap.packets) if p.more_fragments or p.proto == "ip-fragment"]
        after_whole = netstat_counters(link.b.netns)
        send_first_fragment_only(link.a, link.b.address)
        try:
            lone = f"delivered {len(receiver.recv(65536))} bytes"
        except TimeoutError:
            lone = "nothing delivered"
        after_lone = netstat_counters(link.b.netns)
    reasm = ("Ip.ReasmReqds", "Ip.ReasmOKs", "Ip.FragCreates", "Ip.ReasmFails")
    return {
        "datagram": BIG_DATAGRAM,
        "received_whole": whole,
        "fragments": [
            {
                "id": p.ip_id,
                "offset": p.fragment_offset,
                "more": p.more_fragments,
                "bytes": p.ip_total_len - p.ip_header_len,
                "frame": p.frame_len,
            }
            for p in pieces
        ],
        "ids": sorted({p.ip_id for p in pieces}),
        "counters_whole": pick(counter_delta(before, after_whole), reasm),
        "lone_first_fragment": lone,
        "counters_lone": pick(counter_delta(after_whole, after_lone), reasm),
    }


def send_first_fragment_only(host: Host, destination: str) -> None:
    """The first of a datagram's fragments, alone (IP_HDRINCL): the rest is "lost"."""
    udp = struct.pack("!HHHH", 40000, FRAG_PORT, 8 + BIG_DATAGRAM, 0) + bytes(1472)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(udp), 0x4242, 0x2000,  # more fragments, offset 0
        64, socket.IPPROTO_UDP, 0, socket.inet_aton(host.address), socket.inet_aton(destination),
    )  # fmt: skip
    with socket_in(host.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(header + udp, (destination, 0))


def pick(counters: dict[str, int], names: tuple[str, ...]) -> dict[str, int]:
    return {name: counters.get(name, 0) for name in names}


def smallest_kinds(packets: list[Packet]) -> dict[int, str]:
    kinds: dict[int, str] = {}
    for p in sorted(packets, key=lambda p: p.frame_len)[:20]:
        label = f"tcp [{p.flags}]" if p.proto == "tcp" else f"{p.proto} {p.payload_len} B"
        kinds.setdefault(p.frame_len, label)
    return dict(list(kinds.items())[:3])


def fragment_lines(cap: Capture) -> list[str]:
    pieces = [p for p in list(cap.packets) if p.proto in ("udp", "ip-fragment")]
    return ["# UDP and fragments", *format_trace(pieces, cap.started)[:12]]


def judge_veth(wire: dict[str, Any], trace: list[str]) -> list[ClaimResult]:
    tcp, udp, frag = wire["tcp"], wire["udp_df"], wire["fragments"]
    mss_option, maxseg, segments = (
        wire["syn_mss_option"],
        tcp["tcp_maxseg_after_connect"],
        wire["data_segments"],
    )
    stamps = wire["sysctl"]["net.ipv4.tcp_timestamps"] not in (None, "0")
    headers = 20 + 20 + (12 if stamps else 0)
    return [
        judge(
            NAME, "C01", wire["largest_frame"] == ETHERNET_HEADER + MTU,
            {k: wire[k] for k in ("largest_frame", "data_segments")},
            confirmed=f"largest captured frame {wire['largest_frame']} bytes = 14 + MTU {MTU}",
            differs=f"largest captured frame {wire['largest_frame']} bytes, not {14 + MTU}",
            trace=trace,
        ),
        judge(
            NAME, "C02", min(wire["smallest_frames"]) < ETHERNET_MIN_FRAME,
            {k: wire[k] for k in ("smallest_frames", "smallest_frame_kinds")},
            confirmed=(
                f"frames of {wire['smallest_frames']} bytes captured, under the 60-byte "
                "minimum: capture sees frames before padding (and a veth does not pad)"
            ),
            differs=f"no frame under 60 bytes captured: {wire['smallest_frames']}",
        ),
        judge(
            NAME, "C04",
            len(frag["fragments"]) >= 3 and len(frag["ids"]) == 1
            and frag["received_whole"] == BIG_DATAGRAM
            and frag["lone_first_fragment"] == "nothing delivered",
            frag,
            confirmed=(
                f"{BIG_DATAGRAM} bytes left as {len(frag['fragments'])} fragments, all with IP id "
                f"{frag['ids']}, delivered whole; a datagram missing its later fragments was "
                f"never delivered (ReasmReqds +{frag['counters_lone']['Ip.ReasmReqds']}, "
                f"ReasmOKs +{frag['counters_lone']['Ip.ReasmOKs']})"
            ),
            differs=(
                f"fragments {frag['fragments']}, received {frag['received_whole']}, "
                f"lone first fragment: {frag['lone_first_fragment']}"
            ),
            trace=trace,
        ),
        judge(
            NAME, "C07",
            udp["send_1472"] == "ok" and udp["send_1473"] == "EMSGSIZE"
            and udp["frame_of_1472"] == ETHERNET_HEADER + MTU,
            udp,
            confirmed=(
                f"with DF, 1472 bytes went out in one {udp['frame_of_1472']}-byte frame and "
                f"1473 failed with {udp['send_1473']} (IP_MTU {udp['ip_mtu']})"
            ),
            differs=f"with DF: 1472 -> {udp['send_1472']}, 1473 -> {udp['send_1473']}",
        ),
        judge(
            NAME, "C12", mss_option == MTU - 40 and maxseg == MTU - headers,
            {"syn_mss_option": mss_option, "tcp_maxseg_after_connect": maxseg, "mtu": MTU,
             "timestamps": stamps},
            confirmed=(
                f"MSS option {mss_option} = {MTU} - 20 (IP) - 20 (TCP); TCP_MAXSEG {maxseg} "
                f"once timestamps take 12 bytes of every segment"
            ),
            differs=f"MSS option {mss_option}, TCP_MAXSEG {maxseg} with MTU {MTU}",
            trace=trace,
        ),
        judge(
            NAME, "C19",
            len(segments) > 1 and max(segments) <= maxseg and sum(segments) == SEND_SIZE,
            {"one_send": SEND_SIZE, "segments": segments, "mss": maxseg, **tcp},
            confirmed=(
                f"one send() of {SEND_SIZE} bytes left as {len(segments)} segments of at most "
                f"{max(segments, default=0)} bytes (MSS {maxseg})"
            ),
            differs=f"one send() of {SEND_SIZE} bytes left as segments {segments}",
            trace=trace,
        ),
    ]  # fmt: skip


# -- on loopback ------------------------------------------------------------------
def check_ip_limits(ctx: RunContext) -> ClaimResult:
    observed: dict[str, Any] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        target = address_of(receiver)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for size in (65507, 65508):
                try:
                    sender.sendto(bytes(size), target)
                    observed[f"udp_{size}"] = "ok"
                except OSError as exc:
                    observed[f"udp_{size}"] = errno_name(exc)
            for size in (40, 44):
                try:
                    sender.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, ip_options(size))
                    observed[f"ip_options_{size}"] = "ok"
                except OSError as exc:
                    observed[f"ip_options_{size}"] = errno_name(exc)
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, ip_options(40))
            with maybe_capture(ctx.can_capture, [target[1]]) as cap:
                sender.sendto(b"options", target)
                if cap is not None:
                    pkt = cap.wait_for(lambda p: p.proto == "udp" and p.payload_len == 7)
                    observed["captured_ip_header_len"] = pkt.ip_header_len if pkt else None
    header_ok = observed["ip_options_40"] == "ok" and observed["ip_options_44"] != "ok"
    if "captured_ip_header_len" in observed:
        header_ok = header_ok and observed["captured_ip_header_len"] == 60
    holds = observed["udp_65507"] == "ok" and observed["udp_65508"] == "EMSGSIZE" and header_ok
    seen = observed.get("captured_ip_header_len")
    return judge(
        NAME,
        "C03",
        holds,
        observed,
        confirmed=(
            "a UDP payload of 65507 bytes (65535 - 20 - 8) is sent, 65508 fails with "
            f"{observed['udp_65508']}; 40 bytes of IP options are accepted, 44 refused"
            + (f"; the header captured is {seen} bytes" if seen else "")
        ),
        differs=f"limits seen: {observed}",
    )


def ip_options(size: int) -> bytes:
    """`size` bytes of IP options: NOPs, then end-of-options."""
    return b"\x01" * (size - 1) + b"\x00"


def check_default_mss(ctx: RunContext, wire: dict[str, Any]) -> ClaimResult:
    lo_mtu = int(Path("/sys/class/net/lo/mtu").read_text())
    observed: dict[str, Any] = {"loopback_mtu": lo_mtu}
    with (
        listening_socket() as listener,
        maybe_capture(ctx.can_capture, [address_of(listener)[1]]) as cap,
    ):
        with connect_to(listener) as pair:
            observed["loopback_tcp_maxseg"] = pair.client.getsockopt(
                socket.IPPROTO_TCP, socket.TCP_MAXSEG
            )
        lowered = socket.socket()
        with lowered:
            lowered.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1000)
            lowered.connect(address_of(listener))
            server, _ = listener.accept()
            with server:
                observed["maxseg_1000_before_connect"] = lowered.getsockopt(
                    socket.IPPROTO_TCP, socket.TCP_MAXSEG
                )
                observed["peer_maxseg"] = server.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        if cap is not None:
            cap.wait_for(lambda p: p.flags == "S." and p.mss_option is not None)
            observed["loopback_syn_mss"] = [p.mss_option for p in cap.tcp() if p.flags == "S"]
    if wire:
        observed["veth_syn_mss"] = wire["syn_mss_option"]
    observed["sysctl"] = sysctls(["net.ipv4.tcp_base_mss", "net.ipv4.route.min_adv_mss"])
    used = [observed["loopback_tcp_maxseg"], observed.get("veth_syn_mss")]
    holds = all(mss in (None, 536) for mss in used)
    return judge(
        NAME,
        "C13",
        holds,
        observed,
        confirmed="the MSS in use was 536",
        differs=(
            f"the MSS follows the route's MTU: loopback (MTU {lo_mtu}) uses "
            f"{observed['loopback_tcp_maxseg']}"
            + (f", a 1500-MTU veth advertises {wire['syn_mss_option']}" if wire else "")
            + "; 536 is only the fallback for a peer that sends no MSS option; TCP_MAXSEG "
            f"1000 before connect gave {observed['maxseg_1000_before_connect']} "
            f"(peer {observed['peer_maxseg']})"
        ),
    )


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C01", "C02", "C03", "C04", "C07", "C12", "C13", "C19"),
    needs_root="partly",
    description="MTU and MSS on a 1500-byte veth and on loopback; IP limits; fragmentation",
    run=run,
)
