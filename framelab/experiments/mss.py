"""C12, C13: the MSS, against the route's MTU and against RFC 879's 536, part by part.

Across a veth between two namespace hosts (MTU 1500 unless the run sets
another; lab/wire.py), as root:
- C12: the MSS option in the SYN against the MTU less 40; a full data
  segment's IP + TCP header (options included) + data against the MTU, with
  timestamps on and off (a's tcp_timestamps, a per-namespace setting).
- C13: a handshake scripted from a raw socket (lab/rawpeer.py) whose
  SYN carries no options at all: b falls back to 536, the RFC 879 default,
  and cuts its data to it while still announcing its own MSS.
On loopback, for everyone:
- C13: the MSS a Linux connection uses is derived from the route's MTU
  (loopback's 65536, capped at the IP limit and half the peer's window),
  not 536; TCP_MAXSEG set before connect() lowers it. As root, a capture
  shows the SYNs' MSS options.
Each run observes into frozen dataclasses; the judge_cNN functions are pure.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts, skipped
from framelab.lab.kernel import data_segments_out, segments_since, sysctls, tcp_info
from framelab.lab.packets import ACK, IPV4_HEADER, SYN, TCP_HEADER
from framelab.lab.rawpeer import RawPeer
from framelab.lab.sockets import (
    SocketOptions,
    address_of,
    connect_to,
    listening_socket,
    recv_exactly,
    set_linger,
)
from framelab.lab.traces import maybe_capture
from framelab.lab.wire import (
    DEFAULT_MTU,
    TcpTransfer,
    TimestampPair,
    Wire,
    route_mtu,
    transfers_with_and_without_timestamps,
    watched_link,
)

NAME = "mss"
TIMESTAMP_OPTION = 12  # 10 bytes and 2 NOPs, in every segment once both agreed
RFC_DEFAULT_MSS = 536
TCP_PORT, TCP_NO_TS_PORT, NO_MSS_PORT = 7012, 7013, 7536
PEER_PORT = 40000
PEER_ISN = 1000
NO_MSS_SEND = 1200
LOWERED_MSS = 1000
LOWERED_SEND = 4000
NETNS_CLAIMS = ("C12",)


def run(ctx: RunContext) -> list[ClaimResult]:
    veth: VethMss | None = None
    if ctx.root:
        veth = observe_veth(ctx.mtu or DEFAULT_MTU)
        first = judge_c12(veth)
    else:
        first = skipped(NAME, "C12", "needs root: two hosts in network namespaces joined by a veth")
    return [first, judge_c13(observe_loopback(ctx), veth)]


# -- across a veth --------------------------------------------------------------------
@dataclass(frozen=True)
class NoMssPeer:
    """C13: what b did for a peer whose SYN had no MSS option (None: that step never came)."""

    b_syn_ack_mss_option: int | None
    b_tcp_maxseg: int | None
    b_sent_in_one_send: int
    b_segments: tuple[int, ...]
    problem: str | None = None


@dataclass(frozen=True)
class VethMss:
    """One veth run: the capture at a's end, two transfers a -> b, the optionless peer."""

    mtu: int
    wire: Wire
    tcp: TimestampPair
    no_mss: NoMssPeer


def observe_veth(mtu: int = DEFAULT_MTU) -> VethMss:
    ports = [TCP_PORT, TCP_NO_TS_PORT, NO_MSS_PORT, PEER_PORT]
    with watched_link(mtu, ports) as (link, cap, _):
        route = route_mtu(link)
        tcp = transfers_with_and_without_timestamps(link, (TCP_PORT, TCP_NO_TS_PORT), route)
        listener = listening_socket(link.b.address, 1, netns=link.b.netns, port=NO_MSS_PORT)
        with listener:
            no_mss = peer_without_mss_option(RawPeer.reach(link, PEER_PORT, cap), listener)
    return VethMss(route, Wire.of(cap), tcp, no_mss)


def peer_without_mss_option(peer: RawPeer, listener: socket.socket) -> NoMssPeer:
    """A handshake whose SYN has no options at all: which MSS does b use, and send?"""
    sent = peer.send(NO_MSS_PORT, PEER_ISN, 0, SYN)
    synack = peer.expect(sent, lambda p: p.flags == "S.")
    if synack is None:
        return NoMssPeer(None, None, NO_MSS_SEND, (), "b sent no SYN-ACK")
    peer.send(NO_MSS_PORT, PEER_ISN + 1, (synack.seq + 1) & 0xFFFFFFFF, ACK)
    listener.settimeout(2)
    try:
        server, _ = listener.accept()
    except TimeoutError:
        return NoMssPeer(synack.mss_option, None, NO_MSS_SEND, (), "accept() timed out")
    with server:
        maxseg = server.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        mark = len(peer.capture.packets) - 1
        server.send(bytes(NO_MSS_SEND))

        def carried(_: object) -> bool:
            return sum(p.payload_len for p in peer.answers(mark)) >= NO_MSS_SEND

        peer.expect(mark, carried)
        segments = tuple(p.payload_len for p in peer.answers(mark) if p.payload_len)
        set_linger(server, True, 0)  # never acknowledged: reset rather than retransmit
    return NoMssPeer(synack.mss_option, maxseg, NO_MSS_SEND, segments)


@dataclass(frozen=True)
class SegmentLayout:
    ip_header: int
    tcp_header: int
    data: int
    ip_total: int

    @property
    def text(self) -> str:
        return f"{self.ip_header} + {self.tcp_header} + {self.data} = {self.ip_total}"


@dataclass(frozen=True)
class Handshake:
    """One connection a -> b as C12 reads it from the capture and the socket."""

    syn_mss_option: int | None
    timestamps_agreed: bool
    tcp_maxseg_after_connect: int
    data_segments: tuple[int, ...]
    full_segment: SegmentLayout | None


def handshake(wire: Wire, transfer: TcpTransfer) -> Handshake:
    port = transfer.port
    syn, synack = wire.first(port, "S"), wire.first(port, "S.")
    data = [p for p in wire.on(port) if p.dport == port and p.payload_len]
    biggest = max(data, key=lambda p: p.payload_len, default=None)
    return Handshake(
        syn.mss_option if syn else None,
        bool(synack and any(o.startswith("TS") for o in synack.options)),
        transfer.tcp_maxseg,
        tuple(p.payload_len for p in data),
        None
        if biggest is None
        else SegmentLayout(
            biggest.ip_header_len, biggest.tcp_header_len, biggest.payload_len, biggest.ip_total_len
        ),
    )


def judge_c12(seen: VethMss) -> ClaimResult:
    on, off = handshake(seen.wire, seen.tcp.on), handshake(seen.wire, seen.tcp.off)
    mss = seen.mtu - IPV4_HEADER - TCP_HEADER

    def fills(full: SegmentLayout | None) -> bool:
        return full is not None and full.ip_header + full.tcp_header + full.data == seen.mtu

    def layout(full: SegmentLayout | None) -> str:
        return full.text if full else "no data segment seen"

    parts = [
        Part(
            "the MSS a host announces is its MTU less 20 (IP) and 20 (TCP)",
            on.syn_mss_option == off.syn_mss_option == mss,
            f"SYNs announced MSS {on.syn_mss_option} and {off.syn_mss_option} on a route"
            f" of MTU {seen.mtu}",
        ),
        Part(
            "a full segment is IP header + TCP header + data = MTU",
            fills(on.full_segment) and fills(off.full_segment),
            f"with timestamps {layout(on.full_segment)} (TCP_MAXSEG"
            f" {on.tcp_maxseg_after_connect}: {TIMESTAMP_OPTION} bytes of options per"
            f" segment come out of the MSS); without {layout(off.full_segment)}",
        ),
    ]
    observed = {
        "mtu": seen.mtu,
        "timestamps_on": asdict(on),
        "timestamps_off": asdict(off),
        "tcp_timestamps_sysctl": {
            "default": seen.tcp.tcp_timestamps_default,
            "second connection": seen.tcp.tcp_timestamps_second,
        },
    }
    shown = [p for port in (TCP_PORT, TCP_NO_TS_PORT) for p in seen.wire.on(port) if p.has("S")]
    return judge_parts(NAME, "C12", parts, observed, trace=seen.wire.trace(shown, limit=4))


# -- on loopback ------------------------------------------------------------------
@dataclass(frozen=True)
class LoopbackMss:
    """C13 on loopback: the MSS Linux picks by itself, and with TCP_MAXSEG set first."""

    loopback_mtu: int
    loopback_tcp_maxseg: int
    loopback_tcp_info: dict[str, int]
    maxseg_1000_before_connect: int
    peer_maxseg: int
    segments_for_4000_bytes: int | None
    #: from a capture (root); None without one
    loopback_syn_mss: int | None
    loopback_syn_ack_window: int | None
    syn_mss_after_maxseg_1000: int | None
    sysctl: dict[str, str | None]


def observe_loopback(ctx: RunContext) -> LoopbackMss:
    lo_mtu = int(Path("/sys/class/net/lo/mtu").read_text())
    with (
        listening_socket() as listener,
        maybe_capture(ctx.can_capture, [address_of(listener)[1]]) as cap,
    ):
        with connect_to(listener) as pair:
            info = tcp_info(pair.client)
            maxseg = pair.client.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
            client_port = pair.client_port
        lowered = SocketOptions(maxseg=LOWERED_MSS)
        with connect_to(listener, client=lowered, io_timeout=2) as pair:
            lowered_maxseg = pair.client.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
            peer_maxseg = pair.server.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
            before = data_segments_out(pair.client)
            pair.client.sendall(bytes(LOWERED_SEND))
            recv_exactly(pair.server, LOWERED_SEND)
            segments = segments_since(pair.client, before)
            lowered_port = pair.client_port
        syn_mss = synack_window = lowered_syn_mss = None
        if cap is not None:
            cap.wait_for(lambda p: p.dport == lowered_port and p.has("F"))
            syns = {p.sport: p for p in cap.tcp() if p.flags == "S"}
            synack = next(
                (p for p in cap.tcp() if p.flags == "S." and p.dport == client_port), None
            )
            syn_mss = syns[client_port].mss_option if client_port in syns else None
            synack_window = synack.window if synack else None
            lowered_syn_mss = syns[lowered_port].mss_option if lowered_port in syns else None
    return LoopbackMss(
        lo_mtu,
        maxseg,
        {k: info[k] for k in ("pmtu", "advmss", "snd_mss")},
        lowered_maxseg,
        peer_maxseg,
        segments,
        syn_mss,
        synack_window,
        lowered_syn_mss,
        sysctls(["net.ipv4.tcp_base_mss", "net.ipv4.route.min_adv_mss"]),
    )


def judge_c13(lo: LoopbackMss, veth: VethMss | None) -> ClaimResult:
    observed: dict[str, Any] = asdict(lo)
    trace: list[str] = []
    if veth is not None:
        syn = veth.wire.first(TCP_PORT, "S")
        observed["veth_syn_mss"] = syn.mss_option if syn else None
        observed["peer_without_mss_option"] = {"syn_options": "none", **asdict(veth.no_mss)}
        trace = veth.wire.trace(veth.wire.on(NO_MSS_PORT), limit=8)
    parts = [fallback_part(veth.no_mss if veth else None), default_part(lo, veth)]
    return judge_parts(NAME, "C13", parts, observed, trace=trace)


def fallback_part(no_mss: NoMssPeer | None) -> Part:
    """536 where RFC 879 puts it: the MSS assumed for a peer whose SYN has no MSS option."""
    name = f"{RFC_DEFAULT_MSS} is the MSS used when the peer announces none"
    if no_mss is None:
        return Part(name, None, "not observable without root: it needs a raw SYN without options")
    if no_mss.problem is not None:
        return Part(name, False, f"the optionless handshake did not complete: {no_mss.problem}")
    segments = list(no_mss.b_segments)
    return Part(
        name,
        no_mss.b_tcp_maxseg == RFC_DEFAULT_MSS
        and bool(segments)
        and max(segments) == RFC_DEFAULT_MSS,
        f"for a SYN without options b used TCP_MAXSEG {no_mss.b_tcp_maxseg} and sent"
        f" {no_mss.b_sent_in_one_send} bytes as segments {segments}, while announcing"
        f" {no_mss.b_syn_ack_mss_option} itself",
    )


def default_part(lo: LoopbackMss, veth: VethMss | None) -> Part:
    """What Linux's own connections use when nobody sets TCP_MAXSEG."""
    used = {"loopback TCP_MAXSEG": lo.loopback_tcp_maxseg}
    if lo.loopback_syn_mss is not None:
        used["loopback SYN"] = lo.loopback_syn_mss
    syn = veth.wire.first(TCP_PORT, "S") if veth else None
    if syn is not None and syn.mss_option is not None:
        used["veth SYN"] = syn.mss_option
    evidence = ", ".join(f"{k} {v}" for k, v in used.items())
    evidence += f" (loopback MTU {lo.loopback_mtu}"
    window = lo.loopback_syn_ack_window
    if window and lo.loopback_tcp_maxseg == window // 2:
        evidence += f"; capped at half the peer's window, {window}"
    evidence += (
        f"); TCP_MAXSEG {LOWERED_MSS} set before connect: {lo.maxseg_1000_before_connect} in"
        f" use, {LOWERED_SEND} bytes left as {lo.segments_for_4000_bytes} segments"
    )
    return Part(
        f"a connection uses {RFC_DEFAULT_MSS} by default (both ends announce their MSS)",
        all(mss == RFC_DEFAULT_MSS for mss in used.values()),
        evidence,
    )


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C12", "C13"),
    needs_root="partly",
    description=(
        "the MSS against the route's MTU on a veth (1500 or --mtu), with timestamps on and off;"
        " 536 for a scripted SYN without options; loopback's MSS and TCP_MAXSEG"
    ),
    run=run,
)
