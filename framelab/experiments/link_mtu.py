"""C01-C04, C07, C19: the link MTU, IP's limits and fragmentation, part by part.

Loopback has a 65536-byte MTU and no Ethernet, so the link claims run
between two hosts in network namespaces joined by a veth pair (MTU 1500
unless the run sets another) with segmentation offloads off, captured on
a's end and on b's (lab/wire.py). Every size is derived from the route's
MTU (IP_MTU), not typed in:
- C19: one send() of several MSS leaves as segments of at most the MSS,
  all full but the last, carrying the whole send.
- C01: a fresh veth's MTU (the kernel's Ethernet default); the largest frame
  captured, 14 + MTU. That preamble, SFD and FCS are stripped before the
  capture point is not observable on a veth, which has none of them.
- C02: frames shorter than 60 bytes are captured at their size; the padding a
  real NIC's driver adds is not observable on a veth (b receives them unpadded).
- C07: UDP with DF (IP_PMTUDISC_DO): MTU - 28 bytes go out in one frame, one
  more fails with EMSGSIZE; the "1472 on Ethernet" part is probed on a link of
  MTU 1500 (a second one when --mtu asks for another).
- C04: a datagram of two MTUs and more without DF leaves as fragments
  sharing one IP id and is delivered whole; one sent raw without its middle
  fragment is never delivered: b gives up when the reassembly timer (set to
  1 s in b) fires, counts ReasmFails and says so with an ICMP time exceeded.
On loopback, for everyone:
- C03: the largest UDP payload is 65535 - 20 - 8 = 65507 bytes (65508:
  EMSGSIZE); IP options make the header longer, up to 60 bytes (40 bytes of
  options accepted, 44 refused) and the payload shorter by as much; as root
  the capture shows the header lengths and a total length of 65535.
Each run observes into frozen dataclasses; the judge_cNN functions are pure.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts, skipped
from framelab.lab.capture import Capture
from framelab.lab.kernel import errno_name, netstat_counters, selected_delta, sysctl
from framelab.lab.netns import VethLink, socket_in
from framelab.lab.packets import (
    ETHERNET_HEADER,
    IPV4_HEADER,
    UDP_HEADER,
    Packet,
    format_trace,
    udp_fragments,
)
from framelab.lab.sockets import address_of
from framelab.lab.traces import maybe_capture
from framelab.lab.wire import (
    DEFAULT_MTU,
    IP_MTU,
    IP_MTU_DISCOVER,
    IP_PMTUDISC_DO,
    IP_PMTUDISC_DONT,
    TimestampPair,
    Wire,
    fresh_veth_mtu,
    route_mtu,
    transfers_with_and_without_timestamps,
    watched_link,
)

NAME = "link_mtu"
ETHERNET_MIN_FRAME = 60  # without the FCS
ETHERNET_MTU = 1500
TCP_PORT, TCP_NO_TS_PORT = 7012, 7013
UDP_PORT, FRAG_PORT = 7007, 7004
RAW_SOURCE_PORT = 40000
MARKER = b"after the fragments"
RAW_ID = 0x4242  # the IP id of the fragments sent raw
LARGEST_UDP = 65535 - IPV4_HEADER - UDP_HEADER
NETNS_CLAIMS = ("C01", "C02", "C04", "C07", "C19")
REASSEMBLY = ("Ip.ReasmReqds", "Ip.ReasmOKs", "Ip.ReasmFails", "Ip.ReasmTimeout")


def big_datagram(mtu: int) -> int:
    """A UDP payload that needs three fragments at this MTU (4000 bytes on Ethernet)."""
    return min(2 * mtu + 1000, LARGEST_UDP)


def fragment_data(mtu: int) -> int:
    """Data bytes per fragment: the MTU less the IP header, a multiple of 8 (offsets)."""
    return (mtu - IPV4_HEADER) // 8 * 8


def run(ctx: RunContext) -> list[ClaimResult]:
    if ctx.root:
        link = observe_link(ctx.mtu or DEFAULT_MTU)
        results = [
            judge_c01(link),
            judge_c02(link),
            judge_c04(link),
            judge_c07(link),
            judge_c19(link),
        ]
    else:
        why = "needs root: two hosts in network namespaces joined by a veth"
        results = [skipped(NAME, claim, why) for claim in NETNS_CLAIMS]
    results.append(judge_c03(observe_ip_limits(ctx)))
    return sorted(results, key=lambda r: r.claim)


# -- what the run observes -------------------------------------------------------------
@dataclass(frozen=True)
class DatagramWithDf:
    """C07: UDP with DF set, at the route's largest payload and one byte more."""

    ip_mtu: int
    largest_payload: int
    send_largest: str | None  # "ok", or the errno's name
    send_one_more: str | None
    received_sizes: tuple[int, ...]
    frame_of_largest: int | None
    df_set: bool | None
    largest_was_fragmented: bool | None


@dataclass(frozen=True)
class Fragment:
    ip_id: int
    offset: int
    more: bool
    bytes: int
    frame: int


@dataclass(frozen=True)
class Reassembled:
    """C04: a datagram over the MTU without DF, as it left a and as b delivered it."""

    datagram: int
    received_whole: int | None
    fragments: tuple[Fragment, ...]
    counters_at_b: dict[str, int]


@dataclass(frozen=True)
class LostFragment:
    """C04: the same datagram sent raw without its middle fragment, then a marker datagram."""

    fragments_made: int
    offsets_sent: tuple[int, ...]
    delivered: tuple[str, ...]
    ipfrag_time_default: str | None
    ipfrag_time_set: int
    icmp_time_exceeded: bool
    counters_at_b: dict[str, int]


@dataclass(frozen=True)
class LinkObservation:
    """Everything one veth run saw: captures at both ends and the sockets' own readings."""

    mtu: int  # what the route to b says (IP_MTU of a connected socket)
    fresh_veth_mtu: int | None  # a new veth's MTU before the lab sets one
    wire: Wire  # captured at a's end
    at_b: Wire  # captured at b's end (UDP only)
    tcp: TimestampPair
    udp: DatagramWithDf
    whole: Reassembled
    lost: LostFragment
    ip_no_pmtu_disc: str | None
    #: C07's "1472 on Ethernet": the same DF probe on a link of MTU 1500 (the
    #: run's own when it is 1500, else a second link made for it; None: not made)
    on_ethernet: DatagramWithDf | None = None


def observe_link(mtu: int = DEFAULT_MTU) -> LinkObservation:
    ports = [TCP_PORT, TCP_NO_TS_PORT, UDP_PORT, FRAG_PORT]
    with watched_link(mtu, ports, [UDP_PORT]) as (link, cap, at_b):
        assert at_b is not None
        no_pmtu_disc = sysctl("net.ipv4.ip_no_pmtu_disc", link.a.netns)
        route = route_mtu(link)
        tcp = transfers_with_and_without_timestamps(link, (TCP_PORT, TCP_NO_TS_PORT), route)
        udp = udp_with_df(link, cap, route)
        whole = fragmentation(link, cap, route)
        lost = lost_middle_fragment(link, cap, route)
        at_b.wait_for(lambda p: p.proto == "udp" and p.payload_len == 1, timeout=1.0)
    on_ethernet = udp if route == ETHERNET_MTU else ethernet_datagram_with_df()
    return LinkObservation(
        route,
        fresh_veth_mtu(),
        Wire.of(cap),
        Wire.of(at_b),
        tcp,
        udp,
        whole,
        lost,
        no_pmtu_disc,
        on_ethernet,
    )


def ethernet_datagram_with_df() -> DatagramWithDf:
    """C07's Ethernet part when the run's links have another MTU: the DF
    probe once more on a link of 1500 made for it (the claim is about
    Ethernet whatever --mtu says)."""
    with watched_link(ETHERNET_MTU, [UDP_PORT]) as (link, cap, _):
        return udp_with_df(link, cap, route_mtu(link))


def received(sock: socket.socket, count: int) -> list[bytes]:
    """Up to `count` datagrams, each within the socket's timeout: what came, never a hang."""
    got: list[bytes] = []
    with contextlib.suppress(TimeoutError):
        while len(got) < count:
            got.append(sock.recv(65536))
    return got


def send_outcome(sock: socket.socket, size: int) -> str | None:
    try:
        sock.send(bytes(size))
    except OSError as exc:
        return errno_name(exc)
    return "ok"


def udp_with_df(link: VethLink, cap: Capture, mtu: int) -> DatagramWithDf:
    """With DF: the largest payload the route allows, and one byte more."""
    largest = mtu - IPV4_HEADER - UDP_HEADER
    receiver = link.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = link.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((link.b.address, UDP_PORT))
        sender.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        sender.connect((link.b.address, UDP_PORT))
        ip_mtu = sender.getsockopt(socket.IPPROTO_IP, IP_MTU)
        send_largest = send_outcome(sender, largest)
        send_one_more = send_outcome(sender, largest + 1)
        sender.send(b"x")  # the smallest datagram: 14 + 20 + 8 + 1 = 43 bytes on the wire
        receiver.settimeout(1)
        sizes = tuple(len(d) for d in received(receiver, 2))
        frame = cap.wait_for(lambda p: p.proto == "udp" and p.payload_len == largest)
    return DatagramWithDf(
        ip_mtu,
        largest,
        send_largest,
        send_one_more,
        sizes,
        frame.frame_len if frame else None,
        frame.dont_fragment if frame else None,
        frame.more_fragments if frame else None,
    )


def fragmentation(link: VethLink, cap: Capture, mtu: int) -> Reassembled:
    """A datagram of big_datagram(mtu) bytes, DF off: the kernel fragments it, b reassembles it."""
    receiver = link.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = link.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((link.b.address, FRAG_PORT))
        receiver.settimeout(1)
        sender.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        before = netstat_counters(link.b.netns)
        sender.sendto(bytes(big_datagram(mtu)), (link.b.address, FRAG_PORT))
        whole = received(receiver, 1)
        after = netstat_counters(link.b.netns)
        cap.wait_for(lambda p: p.proto == "ip-fragment" and not p.more_fragments)
    kernel_made = [
        Fragment(p.ip_id, p.fragment_offset, p.more_fragments,
                 p.ip_total_len - p.ip_header_len, p.frame_len)
        for p in list(cap.packets)
        if p.ip_id != RAW_ID and (p.more_fragments or p.proto == "ip-fragment")
    ]  # fmt: skip
    return Reassembled(
        big_datagram(mtu),
        len(whole[0]) if whole else None,
        tuple(kernel_made),
        selected_delta(before, after, REASSEMBLY),
    )


def lost_middle_fragment(link: VethLink, cap: Capture, mtu: int) -> LostFragment:
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
            (link.a.address, RAW_SOURCE_PORT),
            (link.b.address, FRAG_PORT),
            bytes(big_datagram(mtu)),
            RAW_ID,
            mtu,
        )
        for piece in (pieces[0], pieces[-1]):
            raw.sendto(piece, (link.b.address, 0))
        sender.sendto(MARKER, (link.b.address, FRAG_PORT))
        delivered = received(receiver, 1)
        expired = cap.wait_for(
            lambda p: p.proto == "icmp" and p.icmp_type == 11 and p.icmp_code == 1, timeout=3.0
        )
        receiver.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                delivered.append(receiver.recv(65536))
        after = netstat_counters(link.b.netns)
    return LostFragment(
        fragments_made=len(pieces),
        offsets_sent=(0, fragment_data(mtu) * (len(pieces) - 1)),
        delivered=tuple("the marker" if d == MARKER else f"{len(d)} bytes" for d in delivered),
        ipfrag_time_default=default_wait,
        ipfrag_time_set=1,
        icmp_time_exceeded=expired is not None,
        counters_at_b=selected_delta(before, after, REASSEMBLY),
    )


# -- the judges: pure functions of what was observed -----------------------------------
def judge_c01(seen: LinkObservation) -> ClaimResult:
    wire = seen.wire
    largest = max((p.frame_len for p in wire.packets), default=0)
    by_kind = {
        kind: max((p.frame_len for p in wire.packets if p.proto == kind), default=None)
        for kind in ("tcp", "udp")
    }
    full = [p for p in wire.packets if p.frame_len == largest]
    default = seen.fresh_veth_mtu
    parts = [
        Part(
            "an Ethernet link's MTU is 1500",
            None if default is None else default == ETHERNET_MTU,
            f"a veth made without an MTU got {default} from the kernel"
            f" (this run's link: {seen.mtu})",
        ),
        Part(
            "the largest captured frame is 6 + 6 + 2 + MTU",
            largest == ETHERNET_HEADER + seen.mtu,
            f"largest captured frame {largest} bytes with MTU {seen.mtu}"
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
        "mtu": seen.mtu,
        "fresh_veth_mtu": default,
        "largest_frame": largest,
        "largest_tcp_frame": by_kind["tcp"],
        "largest_udp_frame": by_kind["udp"],
        "frames_of_that_size": len(full),
    }
    return judge_parts(NAME, "C01", parts, observed, trace=wire.trace(full, limit=4))


def judge_c02(seen: LinkObservation) -> ClaimResult:
    def udp_1_byte(wire: Wire) -> Packet | None:
        return next((p for p in wire.packets if p.proto == "udp" and p.payload_len == 1), None)

    sent_packet, got_packet = udp_1_byte(seen.wire), udp_1_byte(seen.at_b)
    sent = sent_packet.frame_len if sent_packet else None
    got = got_packet.frame_len if got_packet else None
    observed = {
        "ethernet_minimum": ETHERNET_MIN_FRAME,
        "udp_1_byte_sent": sent,
        "udp_1_byte_received_at_b": got,
        "bare_ack": seen.wire.bare_ack(TCP_PORT),
        "bare_ack_without_timestamps": seen.wire.bare_ack(TCP_NO_TS_PORT),
    }
    sizes = [v for k, v in observed.items() if k != "ethernet_minimum" and v is not None]
    small = sorted({s for s in sizes if s < ETHERNET_MIN_FRAME})
    examples = [sent_packet] if sent_packet else []
    examples += [p for p in seen.wire.on(TCP_NO_TS_PORT) if p.flags == "." and not p.payload_len][
        :1
    ]
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
    return judge_parts(NAME, "C02", parts, observed, trace=seen.wire.trace(examples, limit=4))


def judge_c04(seen: LinkObservation) -> ClaimResult:
    whole, lost = seen.whole, seen.lost
    ids = sorted({f.ip_id for f in whole.fragments})
    largest_fragment = max((f.bytes + IPV4_HEADER for f in whole.fragments), default=None)
    told = ", and said so with an ICMP time exceeded" if lost.icmp_time_exceeded else ""
    parts = [
        Part(
            "a datagram larger than the link MTU is fragmented",
            len(whole.fragments) > 1
            and largest_fragment is not None
            and largest_fragment <= seen.mtu,
            f"{whole.datagram} bytes over MTU {seen.mtu} left as {len(whole.fragments)}"
            f" fragments of at most {largest_fragment} bytes",
        ),
        Part(
            "every fragment carries the same identification",
            len(whole.fragments) > 1 and len(ids) == 1,
            f"IP ids seen on the fragments: {ids}",
        ),
        Part(
            "the receiver reassembles them",
            whole.received_whole == whole.datagram and whole.counters_at_b["Ip.ReasmOKs"] >= 1,
            f"b received {whole.received_whole} bytes in one datagram"
            f" (ReasmOKs +{whole.counters_at_b['Ip.ReasmOKs']})",
        ),
        Part(
            "losing one fragment loses the datagram",
            lost.delivered == ("the marker",) and lost.counters_at_b["Ip.ReasmOKs"] == 0,
            f"without its middle fragment b delivered {list(lost.delivered)}; the reassembly"
            f" timed out (ReasmFails +{lost.counters_at_b['Ip.ReasmFails']}){told}",
        ),
    ]
    shown = [
        p
        for p in seen.wire.packets
        if p.more_fragments or p.proto in ("ip-fragment", "icmp") or p.ip_id == RAW_ID
    ]
    observed = {
        "mtu": seen.mtu,
        "whole": {**asdict(whole), "ids": ids},
        "middle_fragment_lost": {
            **asdict(lost),
            "icmp_from_b": "time exceeded: reassembly" if lost.icmp_time_exceeded else None,
            "ipfrag_time": {"default": lost.ipfrag_time_default, "set in b": lost.ipfrag_time_set},
        },
    }
    return judge_parts(NAME, "C04", parts, observed, trace=seen.wire.trace(shown, limit=10))


def ethernet_part(probe: DatagramWithDf | None) -> Part:
    name = "on Ethernet (MTU 1500) that is 1472 bytes"
    if probe is None or probe.ip_mtu != ETHERNET_MTU:
        mtu = "none" if probe is None else probe.ip_mtu
        return Part(name, None, f"not observable: no link of MTU 1500 was probed (route: {mtu})")
    largest = probe.largest_payload
    holds = (
        probe.send_largest == "ok"
        and probe.send_one_more == "EMSGSIZE"
        and largest == ETHERNET_MTU - IPV4_HEADER - UDP_HEADER
        and probe.frame_of_largest == ETHERNET_HEADER + ETHERNET_MTU
    )
    return Part(
        name,
        holds,
        f"on a link of MTU 1500 with DF: {largest} bytes -> {probe.send_largest}"
        f" (one {probe.frame_of_largest}-byte frame), {largest + 1} -> {probe.send_one_more}",
    )


def judge_c07(seen: LinkObservation) -> ClaimResult:
    udp = seen.udp
    largest = udp.largest_payload
    fits = (
        udp.send_largest == "ok"
        and udp.send_one_more == "EMSGSIZE"
        and udp.frame_of_largest == ETHERNET_HEADER + seen.mtu
        and udp.largest_was_fragmented is False
    )
    parts = [
        Part(
            "a UDP payload of at most MTU - 20 - 8 bytes goes out unfragmented",
            fits,
            f"with DF on a route of MTU {udp.ip_mtu}: {largest} bytes -> {udp.send_largest}"
            f" (one {udp.frame_of_largest}-byte frame), {largest + 1} -> {udp.send_one_more}",
        ),
        ethernet_part(seen.on_ethernet),
    ]
    observed = {**asdict(udp), "ip_no_pmtu_disc": seen.ip_no_pmtu_disc}
    if seen.on_ethernet is not None and seen.on_ethernet is not udp:
        observed["on_ethernet"] = asdict(seen.on_ethernet)
    return judge_parts(
        NAME, "C07", parts, observed, trace=seen.wire.trace(seen.wire.on(UDP_PORT, "udp"), 4)
    )


def judge_c19(seen: LinkObservation) -> ClaimResult:
    tcp = seen.tcp.on
    segments = seen.wire.data_to(TCP_PORT)
    mss, size = tcp.tcp_maxseg, tcp.sent_in_one_send
    largest = max(segments, default=0)
    parts = [
        Part(
            "data larger than the MSS is split into several segments",
            size > mss and len(segments) > 1,
            f"one send() of {size} bytes (MSS {mss}) left as {len(segments)} segments",
        ),
        Part(
            "of at most the MSS each, all full but the last",
            bool(segments) and largest <= mss and all(s == mss for s in segments[:-1]),
            f"segments {segments[:3]}{' ...' if len(segments) > 3 else ''} of at most"
            f" {largest} bytes, the last {segments[-1] if segments else None} (TCP_MAXSEG {mss})",
        ),
        Part(
            "which together carry the whole send",
            sum(segments) == size == tcp.received,
            f"{sum(segments)} bytes in the segments, {tcp.received} received by b",
        ),
    ]
    observed = {"one_send": size, "segments": segments, "mss": mss, **asdict(tcp)}
    data = [p for p in seen.wire.on(TCP_PORT) if p.dport == TCP_PORT and p.payload_len]
    return judge_parts(NAME, "C19", parts, observed, trace=seen.wire.trace(data, limit=10))


# -- on loopback ------------------------------------------------------------------
@dataclass(frozen=True)
class CapturedHeaders:
    """C03 as root: the IP header lengths and the largest total length that went out."""

    plain_header: int
    header_with_options: int
    largest_total_length: int


@dataclass(frozen=True)
class IpLimits:
    """C03: sendto() outcomes at the datagram limit, with and without 40 bytes of IP options."""

    udp_largest: str | None  # LARGEST_UDP bytes
    udp_one_more: str | None
    ip_options_40: str | None
    ip_options_44: str | None
    udp_largest_with_40_option_bytes: str | None
    udp_one_more_with_40_option_bytes: str | None
    captured: CapturedHeaders | None
    trace: tuple[str, ...]


def outcome(action: Callable[[], object]) -> str | None:
    """'ok' when `action()` returns, else the errno's name."""
    try:
        action()
    except OSError as exc:
        return errno_name(exc)
    return "ok"


def observe_ip_limits(ctx: RunContext) -> IpLimits:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        target = address_of(receiver)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
            maybe_capture(ctx.can_capture, [target[1]]) as cap,
        ):

            def send(size: int) -> str | None:
                return outcome(lambda: sender.sendto(bytes(size), target))

            def options(size: int) -> str | None:
                option = ip_options(size)
                return outcome(
                    lambda: sender.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, option)
                )

            plain = (send(LARGEST_UDP), send(LARGEST_UDP + 1))
            accepted = (options(40), options(44))
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, ip_options(40))
            shorter = (send(LARGEST_UDP - 40), send(LARGEST_UDP - 40 + 1))
            captured, trace = captured_headers(cap) if cap is not None else (None, [])
    return IpLimits(*plain, *accepted, *shorter, captured, tuple(trace))


def captured_headers(cap: Capture) -> tuple[CapturedHeaders | None, list[str]]:
    """IP header and total lengths of the datagrams that went out, as captured."""
    cap.wait_for(lambda p: p.proto == "udp" and p.payload_len == LARGEST_UDP - 40)
    packets = [p for p in list(cap.packets) if p.proto == "udp"]
    if not packets:
        return None, []
    headers = CapturedHeaders(
        min(p.ip_header_len for p in packets),
        max(p.ip_header_len for p in packets),
        max(p.ip_total_len for p in packets),
    )
    lines = format_trace(packets, cap.started)
    return headers, [
        f"{line} (IP header {p.ip_header_len}, total length {p.ip_total_len})"
        for p, line in zip(packets, lines, strict=True)
    ]


def ip_options(size: int) -> bytes:
    """`size` bytes of IP options: NOPs, then end-of-options."""
    return b"\x01" * (size - 1) + b"\x00"


def judge_c03(seen: IpLimits) -> ClaimResult:
    headers = seen.captured
    shorter = LARGEST_UDP - 40
    header_part = Part(
        "the IP header is at most 60 bytes (a 4-bit length in 32-bit words)",
        seen.ip_options_40 == "ok"
        and seen.ip_options_44 != "ok"
        and (headers is None or headers.header_with_options == 60),
        f"40 bytes of IP options accepted ({seen.ip_options_40}), 44 refused"
        f" ({seen.ip_options_44})"
        + (f"; captured headers of {headers.plain_header} and {headers.header_with_options}"
           " bytes" if headers else ""),
    )  # fmt: skip
    datagram_part = Part(
        "an IP datagram is at most 64 KiB (a 16-bit total length)",
        seen.udp_largest == "ok"
        and seen.udp_one_more == "EMSGSIZE"
        and seen.udp_largest_with_40_option_bytes == "ok"
        and seen.udp_one_more_with_40_option_bytes == "EMSGSIZE"
        and (headers is None or headers.largest_total_length == 65535),
        f"UDP payload {LARGEST_UDP} (65535 - 20 - 8) -> {seen.udp_largest}, {LARGEST_UDP + 1}"
        f" -> {seen.udp_one_more}; with 40 option bytes {shorter} ->"
        f" {seen.udp_largest_with_40_option_bytes}, {shorter + 1} ->"
        f" {seen.udp_one_more_with_40_option_bytes}"
        + (f"; largest total length captured {headers.largest_total_length}" if headers else ""),
    )
    observed = asdict(seen)
    del observed["trace"]
    if headers is None:
        del observed["captured"]
    return judge_parts(NAME, "C03", [header_part, datagram_part], observed, trace=list(seen.trace))


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C01", "C02", "C03", "C04", "C07", "C19"),
    needs_root="partly",
    description=(
        "the link MTU on a veth (1500 or --mtu): frame sizes, DF, segments of a large send,"
        " fragments and a lost one; IP's header and datagram limits on loopback"
    ),
    run=run,
)
