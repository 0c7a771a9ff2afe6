"""C01-C04, C07, C12, C13, C19: MTU, MSS, IP limits and fragmentation, part by part.

Loopback has a 65536-byte MTU and no Ethernet, so the link claims run
between two hosts in network namespaces joined by a veth pair (MTU 1500
unless the run sets another) with segmentation offloads off
(experiments/netns.py), captured on a's end (and on b's, to see what
arrived). Every size is derived from the route's MTU (IP_MTU), not typed in:
- C12: the MSS option in the SYN against the MTU less 40; a full data
  segment's IP + TCP header (options included) + data against the MTU, with
  timestamps on and off (a's tcp_timestamps).
- C19: one send() of several MSS leaves as several segments <= MSS.
- C01: a fresh veth's MTU (the kernel's Ethernet default); the largest frame
  captured, 14 + MTU. That preamble, SFD and FCS are stripped before the
  capture point is not observable on a veth, which has none of them.
- C02: frames shorter than 60 bytes are captured at their size; the padding a
  real NIC's driver adds is not observable on a veth (b receives them unpadded).
- C07: UDP with DF (IP_PMTUDISC_DO): MTU - 28 bytes go out in one frame, one
  more fails with EMSGSIZE; the "1472" part is observable only at MTU 1500.
- C04: a datagram of two MTUs and more without DF leaves as fragments
  sharing one IP id and is delivered whole; one sent raw without its middle
  fragment is never delivered: b gives up when the reassembly timer (set to
  1 s in b) fires, counts ReasmFails and says so with an ICMP time exceeded.
- C13 (as root): a SYN built by hand without an MSS option gets 536, the
  RFC 879 default; it comes from an address no namespace owns (b reaches it
  by a static neighbour entry), so no kernel answers b's SYN-ACK with a RST.
On loopback, for everyone:
- C03: the largest UDP payload is 65535 - 20 - 8 = 65507 bytes (65508:
  EMSGSIZE); IP options make the header longer, up to 60 bytes (40 bytes of
  options accepted, 44 refused) and the payload shorter by as much; as root
  the capture shows the header lengths and a total length of 65535.
- C13: the MSS a Linux connection uses is derived from the route's MTU
  (loopback and veth), not 536; TCP_MAXSEG set before connect lowers it.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge, judge_parts, skipped
from framelab.lab.capture import Capture
from framelab.lab.kernel import (
    data_segments_out,
    errno_name,
    netstat_counters,
    segments_since,
    selected_delta,
    sysctl,
    sysctls,
    tcp_info,
)
from framelab.lab.netns import VethLink, socket_in
from framelab.lab.packets import (
    ACK,
    DONT_FRAGMENT,
    ETHERNET_HEADER,
    IPV4_HEADER,
    SYN,
    TCP_HEADER,
    UDP_HEADER,
    Packet,
    format_trace,
    ipv4_header,
    tcp_segment,
    udp_fragments,
)
from framelab.lab.sockets import (
    SocketOptions,
    address_of,
    connect_to,
    listening_socket,
    recv_exactly,
    set_linger,
)
from framelab.lab.traces import maybe_capture, truncate_lines

NAME = "mss_mtu"
# linux/in.h (the socket module of Python 3.11 lacks them)
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
IP_PMTUDISC_DO = 2
IP_MTU = 14
ETHERNET_MIN_FRAME = 60  # without the FCS
ETHERNET_MTU = 1500
#: the link MTU the veth gets unless the run asks for another (Ethernet's)
DEFAULT_MTU = 1500
TIMESTAMP_OPTION = 12  # 10 bytes and 2 NOPs, in every segment once both agreed
RFC_DEFAULT_MSS = 536
TCP_PORT, TCP_NO_TS_PORT, NO_MSS_PORT = 7012, 7013, 7536
UDP_PORT, FRAG_PORT = 7007, 7004
NO_MSS_SEND = 1200
LOWERED_SEND = 4000
STRANGER = "10.231.0.3"  # on the link's subnet, owned by no namespace
STRANGER_PORT = 40000
MARKER = b"after the fragments"
RAW_ID = 0x4242  # the IP id of the fragments sent raw
NETNS_CLAIMS = ("C01", "C02", "C04", "C07", "C12", "C19")
REASSEMBLY = ("Ip.ReasmReqds", "Ip.ReasmOKs", "Ip.ReasmFails", "Ip.ReasmTimeout")


def send_size(mtu: int) -> int:
    """One send() that needs several segments at this MTU (10 000 bytes on Ethernet)."""
    return max(10_000, 3 * mtu)


def big_datagram(mtu: int) -> int:
    """A UDP payload that needs three fragments at this MTU (4000 bytes on Ethernet)."""
    return 2 * mtu + 1000


def fragment_data(mtu: int) -> int:
    """Data bytes per fragment: the MTU less the IP header, a multiple of 8 (offsets)."""
    return (mtu - IPV4_HEADER) // 8 * 8


def run(ctx: RunContext) -> list[ClaimResult]:
    wire: Wire | None = None
    if ctx.root:
        wire = observe_veth(ctx.mtu or DEFAULT_MTU)
        results = [
            judge_c01(wire),
            judge_c02(wire),
            judge_c04(wire),
            judge_c07(wire),
            judge_c12(wire),
            judge_c19(wire),
        ]
    else:
        why = "needs root: two hosts in network namespaces joined by a veth"
        results = [skipped(NAME, claim, why) for claim in NETNS_CLAIMS]
    results += [check_c03(ctx), check_c13(ctx, wire)]
    return sorted(results, key=lambda r: r.claim)


# -- across a veth --------------------------------------------------------------------
@dataclass
class Wire:
    """What the sockets said and what crossed the veth (seen at a's end; at b's too)."""

    packets: list[Packet]
    at_b: list[Packet]
    started: float
    sockets: dict[str, dict[str, Any]]
    sysctl: dict[str, str | None]
    mtu: int  # what the route to b says (IP_MTU of a connected socket)
    link_mtu_default: int | None  # a fresh veth's MTU before the lab sets one
    _lines: dict[int, str] = field(default_factory=dict)

    def on(self, port: int, proto: str = "tcp") -> list[Packet]:
        return [p for p in self.packets if p.proto == proto and port in (p.sport, p.dport)]

    def data_to(self, port: int) -> list[int]:
        """Payload sizes of the TCP segments sent to `port`, in order."""
        return [p.payload_len for p in self.on(port) if p.dport == port and p.payload_len]

    def data_from(self, port: int) -> list[int]:
        return [p.payload_len for p in self.on(port) if p.sport == port and p.payload_len]

    def first(self, port: int, flags: str) -> Packet | None:
        return next((p for p in self.on(port) if p.flags == flags), None)

    def bare_ack(self, port: int) -> int | None:
        """Frame length of a bare ACK (no data, no SYN/FIN) on `port`'s connection."""
        sizes = [p.frame_len for p in self.on(port) if p.flags == "." and not p.payload_len]
        return min(sizes, default=None)

    def trace(self, packets: list[Packet], limit: int = 16) -> list[str]:
        """tcpdump-like lines for `packets`, numbered against the whole capture."""
        if not self._lines:
            whole = format_trace(self.packets, self.started)
            self._lines = {id(p): line for p, line in zip(self.packets, whole, strict=True)}
        return truncate_lines([self._lines[id(p)] for p in packets], limit)


def observe_veth(mtu: int = DEFAULT_MTU) -> Wire:
    ports = [TCP_PORT, TCP_NO_TS_PORT, NO_MSS_PORT, UDP_PORT, FRAG_PORT]
    with (
        VethLink(mtu=mtu) as link,
        Capture(link.a.ifname, ports=ports, netns=link.a.netns) as cap,
        Capture(link.b.ifname, ports=[UDP_PORT], netns=link.b.netns) as at_b,
    ):
        settings = sysctls(["net.ipv4.tcp_timestamps", "net.ipv4.ip_no_pmtu_disc"], link.a.netns)
        route_mtu = route_mtu_to(link)
        sockets = {
            "tcp": tcp_over_veth(link, TCP_PORT, send_size(route_mtu)),
            "tcp_no_timestamps": tcp_without_timestamps(link, route_mtu),
            "udp_df": udp_with_df(link, cap, route_mtu),
            "fragments": fragmentation(link, cap, route_mtu),
            "lost_fragment": lost_middle_fragment(link, cap, route_mtu),
            "no_mss_option": peer_without_mss_option(link, cap),
        }
        at_b.wait_for(lambda p: p.proto == "udp" and p.payload_len == 1, timeout=1.0)
    return Wire(
        list(cap.packets),
        list(at_b.packets),
        cap.started,
        sockets,
        settings,
        route_mtu,
        fresh_veth_mtu(),
    )


def route_mtu_to(link: VethLink) -> int:
    """The MTU of a's route to b, as a connected socket reads it (IP_MTU)."""
    with link.a.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((link.b.address, UDP_PORT))
        mtu: int = probe.getsockopt(socket.IPPROTO_IP, IP_MTU)
        return mtu


def fresh_veth_mtu() -> int | None:
    """The MTU the kernel gives a new veth (an Ethernet-type device) before anyone sets one."""
    with VethLink(mtu=None) as link:
        text = link.a.run("cat", f"/sys/class/net/{link.a.ifname}/mtu", check=False).stdout
    return int(text) if text.strip().isdigit() else None


def tcp_over_veth(link: VethLink, port: int, size: int) -> dict[str, Any]:
    """Connect a to b, read TCP_MAXSEG, and send `size` bytes in one send()."""
    listener = listening_socket(link.b.address, 1, netns=link.b.netns, port=port)
    with listener, connect_to(listener, netns=link.a.netns, io_timeout=2) as pair:
        maxseg = pair.client.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        sent = pair.client.send(bytes(size))
        received = sum(map(len, recv_exactly(pair.server, sent)))
    return {"tcp_maxseg_after_connect": maxseg, "sent_in_one_send": sent, "received": received}


def tcp_without_timestamps(link: VethLink, mtu: int) -> dict[str, Any]:
    """The same, with a's net.ipv4.tcp_timestamps 0 (a per-namespace setting)."""
    link.a.set_sysctl("net.ipv4.tcp_timestamps", 0)
    result = tcp_over_veth(link, TCP_NO_TS_PORT, 2 * (mtu - IPV4_HEADER - TCP_HEADER))
    return {"tcp_timestamps": sysctl("net.ipv4.tcp_timestamps", link.a.netns), **result}


def udp_with_df(link: VethLink, cap: Capture, mtu: int) -> dict[str, Any]:
    """With DF: the largest payload the route allows, and one byte more."""
    largest = mtu - IPV4_HEADER - UDP_HEADER
    receiver = link.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = link.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((link.b.address, UDP_PORT))
        sender.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        sender.connect((link.b.address, UDP_PORT))
        results: dict[str, Any] = {"ip_mtu": sender.getsockopt(socket.IPPROTO_IP, IP_MTU)}
        results["largest_payload"] = largest
        for key, size in (("send_largest", largest), ("send_one_more", largest + 1)):
            try:
                sender.send(bytes(size))
                results[key] = "ok"
            except OSError as exc:
                results[key] = errno_name(exc)
        sender.send(b"x")  # the smallest datagram: 14 + 20 + 8 + 1 = 43 bytes on the wire
        receiver.settimeout(1)
        results["received_sizes"] = [len(receiver.recv(65536)) for _ in range(2)]
        frame = cap.wait_for(lambda p: p.proto == "udp" and p.payload_len == largest)
        results["frame_of_largest"] = frame.frame_len if frame else None
        results["df_set"] = frame.dont_fragment if frame else None
        results["largest_was_fragmented"] = frame.more_fragments if frame else None
    return results


def fragmentation(link: VethLink, cap: Capture, mtu: int) -> dict[str, Any]:
    """A datagram of big_datagram(mtu) bytes, DF off: the kernel fragments it, b reassembles it."""
    receiver = link.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = link.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((link.b.address, FRAG_PORT))
        receiver.settimeout(1)
        sender.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        before = netstat_counters(link.b.netns)
        sender.sendto(bytes(big_datagram(mtu)), (link.b.address, FRAG_PORT))
        whole = len(receiver.recv(65536))
        after = netstat_counters(link.b.netns)
        cap.wait_for(lambda p: p.proto == "ip-fragment" and not p.more_fragments)
    return {
        "datagram": big_datagram(mtu),
        "received_whole": whole,
        "counters_at_b": selected_delta(before, after, REASSEMBLY),
    }


def lost_middle_fragment(link: VethLink, cap: Capture, mtu: int) -> dict[str, Any]:
    """A big datagram's fragments sent raw, all but the middle one: is anything delivered?

    Without netem or a firewall nothing on the path can drop a fragment, so
    the sender leaves it out. A datagram sent after them shows they have been
    taken in; b's reassembly timer (1 s here, 30 s by default) decides the rest.
    """
    default_wait = sysctl("net.ipv4.ipfrag_time", link.b.netns)
    link.b.set_sysctl("net.ipv4.ipfrag_time", 1)
    receiver = link.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = link.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw = socket_in(link.a.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with receiver, sender, raw:
        receiver.bind((link.b.address, FRAG_PORT))
        receiver.settimeout(2)
        before = netstat_counters(link.b.netns)
        pieces = udp_fragments(
            (link.a.address, STRANGER_PORT),
            (link.b.address, FRAG_PORT),
            bytes(big_datagram(mtu)),
            RAW_ID,
            mtu,
        )
        for piece in (pieces[0], pieces[-1]):
            raw.sendto(piece, (link.b.address, 0))
        sender.sendto(MARKER, (link.b.address, FRAG_PORT))
        delivered = []
        with contextlib.suppress(TimeoutError):
            delivered.append(receiver.recv(65536))
        expired = cap.wait_for(
            lambda p: p.proto == "icmp" and p.icmp_type == 11 and p.icmp_code == 1, timeout=3.0
        )
        receiver.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                delivered.append(receiver.recv(65536))
        after = netstat_counters(link.b.netns)
    return {
        "fragments_sent": f"first and last of {len(pieces)}",
        "offsets_sent": [0, fragment_data(mtu) * (len(pieces) - 1)],
        "delivered": ["the marker" if d == MARKER else f"{len(d)} bytes" for d in delivered],
        "ipfrag_time": {"default": default_wait, "set in b": 1},
        "icmp_from_b": "time exceeded: fragment reassembly" if expired else None,
        "counters_at_b": selected_delta(before, after, REASSEMBLY),
    }


def peer_without_mss_option(link: VethLink, cap: Capture) -> dict[str, Any]:
    """A handshake whose SYN has no options at all: which MSS does b use, and send?

    The SYN and the ACK are built by hand and come from STRANGER, which b
    reaches through a static neighbour entry (a's MAC): a's kernel drops b's
    replies (not its address, no forwarding) instead of resetting them.
    """
    mac = link.a.run("cat", f"/sys/class/net/{link.a.ifname}/address").stdout.strip()
    link.b.run("ip", "neigh", "replace", STRANGER, "lladdr", mac, "dev", link.b.ifname)
    listener = link.b.socket()
    raw = socket_in(link.a.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with listener, raw:
        listener.bind((link.b.address, NO_MSS_PORT))
        listener.listen(1)
        listener.settimeout(2)
        isn = 1000
        raw.sendto(segment_to(link.b.address, isn, 0, SYN), (link.b.address, 0))
        synack = cap.wait_for(lambda p: p.sport == NO_MSS_PORT and p.flags == "S.")
        if synack is None:
            return {"syn_ack": None}
        ack = (synack.seq + 1) & 0xFFFFFFFF
        raw.sendto(segment_to(link.b.address, isn + 1, ack, ACK), (link.b.address, 0))
        try:
            server, _ = listener.accept()
        except TimeoutError:
            return {"b_syn_ack_mss_option": synack.mss_option, "accept": "timed out"}
        with server:
            maxseg = server.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
            server.send(bytes(NO_MSS_SEND))
            cap.wait_for(lambda p: p.sport == NO_MSS_PORT and p.has("P"))
            set_linger(server, True, 0)  # never acknowledged: reset rather than retransmit
    return {
        "syn_options": "none",
        "b_syn_ack_mss_option": synack.mss_option,
        "b_tcp_maxseg": maxseg,
        "b_sent_in_one_send": NO_MSS_SEND,
    }


def segment_to(dst: str, seq: int, ack: int, flags: int) -> bytes:
    """A bare TCP segment from STRANGER, without options (so without an MSS option)."""
    segment = tcp_segment((STRANGER, STRANGER_PORT), (dst, NO_MSS_PORT), seq, ack, flags)
    return ipv4_header(STRANGER, dst, socket.IPPROTO_TCP, len(segment), 0, DONT_FRAGMENT) + segment


def judge_c01(wire: Wire) -> ClaimResult:
    largest = max(p.frame_len for p in wire.packets)
    by_kind = {
        "tcp": max((p.frame_len for p in wire.packets if p.proto == "tcp"), default=None),
        "udp": max((p.frame_len for p in wire.packets if p.proto == "udp"), default=None),
    }
    full = [p for p in wire.packets if p.frame_len == largest]
    default = wire.link_mtu_default
    parts = [
        Part(
            "an Ethernet link's MTU is 1500",
            None if default is None else default == ETHERNET_MTU,
            f"a veth made without an MTU got {default} from the kernel"
            f" (this run's link: {wire.mtu})",
        ),
        Part(
            "the largest captured frame is 6 + 6 + 2 + MTU",
            largest == ETHERNET_HEADER + wire.mtu,
            f"largest captured frame {largest} bytes with MTU {wire.mtu}"
            f" (TCP {by_kind['tcp']}, UDP {by_kind['udp']})",
        ),
        Part(
            "because preamble, SFD and FCS are removed before the capture point",
            None,
            "not observable on a veth because it has no physical layer: there is no"
            " preamble, SFD or FCS to remove, so the frame size says nothing about them",
        ),
    ]
    observed = {
        "mtu": wire.mtu,
        "fresh_veth_mtu": default,
        "largest_frame": largest,
        "largest_tcp_frame": by_kind["tcp"],
        "largest_udp_frame": by_kind["udp"],
        "frames_of_that_size": len(full),
    }
    return judge_parts(NAME, "C01", parts, observed, trace=wire.trace(full, limit=4))


def judge_c02(wire: Wire) -> ClaimResult:
    def udp_1_byte(packets: list[Packet]) -> int | None:
        return next((p.frame_len for p in packets if p.proto == "udp" and p.payload_len == 1), None)

    observed = {
        "ethernet_minimum": ETHERNET_MIN_FRAME,
        "udp_1_byte_sent": udp_1_byte(wire.packets),
        "udp_1_byte_received_at_b": udp_1_byte(wire.at_b),
        "bare_ack": wire.bare_ack(TCP_PORT),
        "bare_ack_without_timestamps": wire.bare_ack(TCP_NO_TS_PORT),
    }
    sizes = [v for k, v in observed.items() if k != "ethernet_minimum" and v is not None]
    small = sorted({s for s in sizes if s < ETHERNET_MIN_FRAME})
    sent, got = observed["udp_1_byte_sent"], observed["udp_1_byte_received_at_b"]
    examples = [p for p in wire.packets if p.proto == "udp" and p.payload_len == 1][:1]
    examples += [p for p in wire.on(TCP_NO_TS_PORT) if p.flags == "." and not p.payload_len][:1]
    examples.sort(key=lambda p: p.time)
    parts = [
        Part(
            "a capture taken before padding shows short frames at their original size",
            bool(small),
            f"frames of {small} bytes captured at a's end, under the {ETHERNET_MIN_FRAME}-byte"
            f" minimum (1-byte UDP: {sent}, bare ACK: {observed['bare_ack_without_timestamps']},"
            f" with timestamps {observed['bare_ack']})",
        ),
        Part(
            "the driver pads frames under 46 bytes of payload",
            None,
            f"not observable on a veth because it is not an Ethernet wire: b received the"
            f" 1-byte datagram's frame as {got} bytes (sent {sent}); no driver here pads",
        ),
    ]
    return judge_parts(NAME, "C02", parts, observed, trace=wire.trace(examples, limit=4))


def judge_c04(wire: Wire) -> ClaimResult:
    frag, lost = wire.sockets["fragments"], wire.sockets["lost_fragment"]
    kernel_made = [
        p
        for p in wire.packets
        if p.ip_id != RAW_ID and (p.more_fragments or p.proto == "ip-fragment")
    ]
    ids = sorted({p.ip_id for p in kernel_made})
    frag = {
        **frag,
        "fragments": [
            {"id": p.ip_id, "offset": p.fragment_offset, "more": p.more_fragments,
             "bytes": p.ip_total_len - p.ip_header_len, "frame": p.frame_len}
            for p in kernel_made
        ],
        "ids": ids,
    }  # fmt: skip
    size = frag["datagram"]
    largest_fragment = max((p.ip_total_len for p in kernel_made), default=None)
    told = ", and said so with an ICMP time exceeded" if lost["icmp_from_b"] else ""
    parts = [
        Part(
            "a datagram larger than the link MTU is fragmented",
            len(kernel_made) > 1 and largest_fragment is not None and largest_fragment <= wire.mtu,
            f"{size} bytes over MTU {wire.mtu} left as {len(kernel_made)} fragments of at most"
            f" {largest_fragment} bytes",
        ),
        Part(
            "every fragment carries the same identification",
            len(kernel_made) > 1 and len(ids) == 1,
            f"IP ids seen on the fragments: {ids}",
        ),
        Part(
            "the receiver reassembles them",
            frag["received_whole"] == size and frag["counters_at_b"]["Ip.ReasmOKs"] >= 1,
            f"b received {frag['received_whole']} bytes in one datagram"
            f" (ReasmOKs +{frag['counters_at_b']['Ip.ReasmOKs']})",
        ),
        Part(
            "losing one fragment loses the datagram",
            lost["delivered"] == ["the marker"] and lost["counters_at_b"]["Ip.ReasmOKs"] == 0,
            f"without its middle fragment b delivered {lost['delivered']}; the reassembly"
            f" timed out (ReasmFails +{lost['counters_at_b']['Ip.ReasmFails']}){told}",
        ),
    ]
    raw = [p for p in wire.packets if p.ip_id == RAW_ID or p.proto == "icmp"]
    return judge_parts(
        NAME,
        "C04",
        parts,
        {"mtu": wire.mtu, "whole": frag, "middle_fragment_lost": lost},
        trace=wire.trace(kernel_made + raw, limit=10),
    )


def judge_c07(wire: Wire) -> ClaimResult:
    udp = wire.sockets["udp_df"]
    largest = udp["largest_payload"]
    fits = (
        udp["send_largest"] == "ok"
        and udp["send_one_more"] == "EMSGSIZE"
        and udp["frame_of_largest"] == ETHERNET_HEADER + wire.mtu
        and udp["largest_was_fragmented"] is False
    )
    parts = [
        Part(
            "a UDP payload of at most MTU - 20 - 8 bytes goes out unfragmented",
            fits,
            f"with DF on a route of MTU {udp['ip_mtu']}: {largest} bytes -> {udp['send_largest']}"
            f" (one {udp['frame_of_largest']}-byte frame), {largest + 1} ->"
            f" {udp['send_one_more']}",
        ),
        Part(
            "on Ethernet (MTU 1500) that is 1472 bytes",
            (fits and largest == ETHERNET_MTU - IPV4_HEADER - UDP_HEADER)
            if wire.mtu == ETHERNET_MTU
            else None,
            f"the largest payload seen was {largest} on MTU {wire.mtu}"
            + ("" if wire.mtu == ETHERNET_MTU else ": not observable, this run's link is not 1500"),
        ),
    ]
    return judge_parts(
        NAME,
        "C07",
        parts,
        {**udp, "ip_no_pmtu_disc": wire.sysctl["net.ipv4.ip_no_pmtu_disc"]},
        trace=wire.trace(wire.on(UDP_PORT, "udp"), limit=4),
    )


def judge_c12(wire: Wire) -> ClaimResult:
    seen: dict[str, Any] = {"mtu": wire.mtu}
    handshakes: list[Packet] = []
    connections = (
        ("timestamps_on", TCP_PORT, "tcp"),
        ("timestamps_off", TCP_NO_TS_PORT, "tcp_no_timestamps"),
    )
    for label, port, key in connections:
        syn, synack = wire.first(port, "S"), wire.first(port, "S.")
        stamps = bool(synack and any(o.startswith("TS") for o in synack.options))
        full = [p for p in wire.on(port) if p.dport == port and p.payload_len]
        biggest = max(full, key=lambda p: p.payload_len, default=None)
        seen[label] = {
            "syn_mss_option": syn.mss_option if syn else None,
            "timestamps_agreed": stamps,
            "tcp_maxseg_after_connect": wire.sockets[key]["tcp_maxseg_after_connect"],
            "data_segments": wire.data_to(port),
            "full_segment": None
            if biggest is None
            else {
                "ip_header": biggest.ip_header_len,
                "tcp_header": biggest.tcp_header_len,
                "data": biggest.payload_len,
                "ip_total": biggest.ip_total_len,
            },
        }
        handshakes += [p for p in (syn, synack) if p is not None]
    seen["tcp_timestamps_sysctl"] = {
        "default": wire.sysctl["net.ipv4.tcp_timestamps"],
        "second connection": wire.sockets["tcp_no_timestamps"]["tcp_timestamps"],
    }
    on, off = seen["timestamps_on"], seen["timestamps_off"]
    mss = wire.mtu - IPV4_HEADER - TCP_HEADER

    def fills(full: dict[str, int] | None) -> bool:
        return full is not None and full["ip_header"] + full["tcp_header"] + full["data"] == (
            wire.mtu
        )

    def layout(full: dict[str, int] | None) -> str:
        if full is None:
            return "no data segment seen"
        return f"{full['ip_header']} + {full['tcp_header']} + {full['data']} = {full['ip_total']}"

    parts = [
        Part(
            "the MSS a host announces is its MTU less 20 (IP) and 20 (TCP)",
            on["syn_mss_option"] == off["syn_mss_option"] == mss,
            f"SYNs announced MSS {on['syn_mss_option']} and {off['syn_mss_option']} on a route"
            f" of MTU {wire.mtu}",
        ),
        Part(
            "a full segment is IP header + TCP header + data = MTU",
            fills(on["full_segment"]) and fills(off["full_segment"]),
            f"with timestamps {layout(on['full_segment'])} (TCP_MAXSEG"
            f" {on['tcp_maxseg_after_connect']}: {TIMESTAMP_OPTION} bytes of options per"
            f" segment come out of the MSS); without {layout(off['full_segment'])}",
        ),
    ]
    return judge_parts(NAME, "C12", parts, seen, trace=wire.trace(handshakes, limit=4))


def judge_c19(wire: Wire) -> ClaimResult:
    tcp = wire.sockets["tcp"]
    segments = wire.data_to(TCP_PORT)
    mss = tcp["tcp_maxseg_after_connect"]
    size = tcp["sent_in_one_send"]
    data = [p for p in wire.on(TCP_PORT) if p.sport != TCP_PORT and p.payload_len]
    return judge(
        NAME,
        "C19",
        len(segments) > 1 and max(segments) <= mss and sum(segments) == size == tcp["received"],
        {"one_send": size, "segments": segments, "mss": mss, **tcp},
        confirmed=(
            f"one send() of {size} bytes left as {len(segments)} segments of at most "
            f"{max(segments, default=0)} bytes (MSS {mss}); b received {tcp['received']}"
        ),
        differs=f"one send() of {size} bytes left as segments {segments} (MSS {mss})",
        trace=wire.trace(data, limit=10),
    )


# -- on loopback ------------------------------------------------------------------
def check_c03(ctx: RunContext) -> ClaimResult:
    observed: dict[str, Any] = {}
    trace: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        target = address_of(receiver)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
            maybe_capture(ctx.can_capture, [target[1]]) as cap,
        ):
            try_sizes(sender, target, (65507, 65508), observed, "udp_{}")
            for size in (40, 44):
                try:
                    sender.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, ip_options(size))
                    observed[f"ip_options_{size}"] = "ok"
                except OSError as exc:
                    observed[f"ip_options_{size}"] = errno_name(exc)
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, ip_options(40))
            try_sizes(sender, target, (65467, 65468), observed, "udp_{}_with_40_option_bytes")
            if cap is not None:
                trace = captured_headers(cap, observed)
    seen = observed.get("captured")
    header_part = Part(
        "the IP header is at most 60 bytes (a 4-bit length in 32-bit words)",
        observed["ip_options_40"] == "ok"
        and observed["ip_options_44"] != "ok"
        and (seen is None or seen["header_with_options"] == 60),
        f"40 bytes of IP options accepted ({observed['ip_options_40']}), 44 refused"
        f" ({observed['ip_options_44']})"
        + (f"; captured headers of {seen['plain_header']} and {seen['header_with_options']}"
           " bytes" if seen else ""),
    )  # fmt: skip
    datagram_part = Part(
        "an IP datagram is at most 64 KiB (a 16-bit total length)",
        observed["udp_65507"] == "ok"
        and observed["udp_65508"] == "EMSGSIZE"
        and observed["udp_65467_with_40_option_bytes"] == "ok"
        and observed["udp_65468_with_40_option_bytes"] == "EMSGSIZE"
        and (seen is None or seen["largest_total_length"] == 65535),
        f"UDP payload 65507 (65535 - 20 - 8) -> {observed['udp_65507']}, 65508 ->"
        f" {observed['udp_65508']}; with 40 option bytes 65467 ->"
        f" {observed['udp_65467_with_40_option_bytes']}, 65468 ->"
        f" {observed['udp_65468_with_40_option_bytes']}"
        + (f"; largest total length captured {seen['largest_total_length']}" if seen else ""),
    )
    return judge_parts(NAME, "C03", [header_part, datagram_part], observed, trace=trace)


def try_sizes(
    sender: socket.socket,
    target: tuple[str, int],
    sizes: tuple[int, ...],
    observed: dict[str, Any],
    key: str,
) -> None:
    for size in sizes:
        try:
            sender.sendto(bytes(size), target)
            observed[key.format(size)] = "ok"
        except OSError as exc:
            observed[key.format(size)] = errno_name(exc)


def captured_headers(cap: Capture, observed: dict[str, Any]) -> list[str]:
    """IP header and total lengths of the datagrams that went out, as captured."""
    cap.wait_for(lambda p: p.proto == "udp" and p.payload_len == 65467)
    packets = [p for p in list(cap.packets) if p.proto == "udp"]
    if not packets:
        return []
    observed["captured"] = {
        "plain_header": min(p.ip_header_len for p in packets),
        "header_with_options": max(p.ip_header_len for p in packets),
        "largest_total_length": max(p.ip_total_len for p in packets),
    }
    lines = format_trace(packets, cap.started)
    return [
        f"{line} (IP header {p.ip_header_len}, total length {p.ip_total_len})"
        for p, line in zip(packets, lines, strict=True)
    ]


def ip_options(size: int) -> bytes:
    """`size` bytes of IP options: NOPs, then end-of-options."""
    return b"\x01" * (size - 1) + b"\x00"


@contextlib.contextmanager
def lowered_mss_connection(
    listener: socket.socket, mss: int
) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connection whose client set TCP_MAXSEG before connect()."""
    with connect_to(listener, client=SocketOptions(maxseg=mss), io_timeout=2) as pair:
        yield pair.client, pair.server


def check_c13(ctx: RunContext, wire: Wire | None) -> ClaimResult:
    lo_mtu = int(Path("/sys/class/net/lo/mtu").read_text())
    observed: dict[str, Any] = {"loopback_mtu": lo_mtu}
    with (
        listening_socket() as listener,
        maybe_capture(ctx.can_capture, [address_of(listener)[1]]) as cap,
    ):
        with connect_to(listener) as pair:
            info = tcp_info(pair.client)
            observed["loopback_tcp_maxseg"] = pair.client.getsockopt(
                socket.IPPROTO_TCP, socket.TCP_MAXSEG
            )
            observed["loopback_tcp_info"] = {k: info[k] for k in ("pmtu", "advmss", "snd_mss")}
            client_port = pair.client_port
        with lowered_mss_connection(listener, 1000) as (lowered, server):
            observed["maxseg_1000_before_connect"] = lowered.getsockopt(
                socket.IPPROTO_TCP, socket.TCP_MAXSEG
            )
            observed["peer_maxseg"] = server.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
            before = data_segments_out(lowered)
            lowered.sendall(bytes(LOWERED_SEND))
            recv_exactly(server, LOWERED_SEND)
            observed["segments_for_4000_bytes"] = segments_since(lowered, before)
            lowered_port = address_of(lowered)[1]
        if cap is not None:
            cap.wait_for(lambda p: p.dport == lowered_port and p.has("F"))
            syns = {p.sport: p for p in cap.tcp() if p.flags == "S"}
            synack = next(
                (p for p in cap.tcp() if p.flags == "S." and p.dport == client_port), None
            )
            observed["loopback_syn_mss"] = syns[client_port].mss_option
            observed["loopback_syn_ack_window"] = synack.window if synack else None
            observed["syn_mss_after_maxseg_1000"] = syns[lowered_port].mss_option
    if wire is not None:
        syn = wire.first(TCP_PORT, "S")
        observed["veth_syn_mss"] = syn.mss_option if syn else None
        observed["peer_without_mss_option"] = {
            **wire.sockets["no_mss_option"],
            "b_segments": wire.data_from(NO_MSS_PORT),
        }
    observed["sysctl"] = sysctls(["net.ipv4.tcp_base_mss", "net.ipv4.route.min_adv_mss"])
    return judge_parts(
        NAME,
        "C13",
        [fallback_part(observed), default_part(observed)],
        observed,
        trace=wire.trace(wire.on(NO_MSS_PORT), limit=8) if wire else [],
    )


def fallback_part(seen: dict[str, Any]) -> Part:
    """536 where RFC 879 puts it: the MSS assumed for a peer whose SYN has no MSS option."""
    name = f"{RFC_DEFAULT_MSS} is the MSS used when the peer announces none"
    no_mss = seen.get("peer_without_mss_option")
    if no_mss is None:
        return Part(name, None, "not observable without root: it needs a raw SYN without options")
    if "b_tcp_maxseg" not in no_mss:
        return Part(name, False, f"the optionless handshake did not complete: {no_mss}")
    segments = no_mss["b_segments"]
    return Part(
        name,
        no_mss["b_tcp_maxseg"] == RFC_DEFAULT_MSS
        and bool(segments)
        and max(segments) == RFC_DEFAULT_MSS,
        f"for a SYN without options b used TCP_MAXSEG {no_mss['b_tcp_maxseg']} and sent"
        f" {no_mss['b_sent_in_one_send']} bytes as segments {segments}, while announcing"
        f" {no_mss['b_syn_ack_mss_option']} itself",
    )


def default_part(seen: dict[str, Any]) -> Part:
    """What Linux's own connections use when nobody sets TCP_MAXSEG."""
    used = {"loopback TCP_MAXSEG": seen["loopback_tcp_maxseg"]}
    if "loopback_syn_mss" in seen:
        used["loopback SYN"] = seen["loopback_syn_mss"]
    if seen.get("veth_syn_mss") is not None:
        used["veth SYN"] = seen["veth_syn_mss"]
    evidence = ", ".join(f"{k} {v}" for k, v in used.items())
    evidence += f" (loopback MTU {seen['loopback_mtu']}"
    window = seen.get("loopback_syn_ack_window")
    if window and seen["loopback_tcp_maxseg"] == window // 2:
        evidence += f"; capped at half the peer's window, {window}"
    evidence += (
        f"); TCP_MAXSEG 1000 set before connect: {seen['maxseg_1000_before_connect']} in use,"
        f" {LOWERED_SEND} bytes left as {seen['segments_for_4000_bytes']} segments"
    )
    return Part(
        f"a connection uses {RFC_DEFAULT_MSS} by default (both ends announce their MSS)",
        all(mss == RFC_DEFAULT_MSS for mss in used.values()),
        evidence,
    )


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C01", "C02", "C03", "C04", "C07", "C12", "C13", "C19"),
    needs_root="partly",
    description="MTU and MSS on a 1500-byte veth and on loopback; IP limits; fragmentation",
    run=run,
)
