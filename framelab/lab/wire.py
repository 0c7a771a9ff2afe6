"""What crosses a veth between two namespace hosts, and the TCP moves that put it there.

Loopback has a 65536-byte MTU and no Ethernet header, so the link MTU and
MSS experiments both run between hosts a and b of a VethLink (lab/netns.py)
with offloads off and a capture on a's end. This module holds what they
share, once: the link with its captures (`watched_link`), the route's MTU
as a connected socket reads it (IP_MTU: every size is derived from it, none
typed in), TCP transfers over the link with timestamps on and then off, and
`Wire`, a finished capture read by port. It knows nothing about any claim.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from framelab.lab.capture import Capture
from framelab.lab.kernel import sysctl
from framelab.lab.netns import VethLink
from framelab.lab.packets import IPV4_HEADER, TCP_HEADER, Packet, format_trace
from framelab.lab.sockets import connect_to, listening_socket, recv_exactly
from framelab.lab.traces import truncate_lines

# linux/in.h (the socket module of Python 3.11 lacks them)
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
IP_PMTUDISC_DO = 2
IP_MTU = 14
#: the link MTU a veth gets unless the run asks for another (Ethernet's)
DEFAULT_MTU = 1500
#: a port nothing listens on, for a datagram socket that only reads its route
_PROBE_PORT = 9


@dataclass(frozen=True)
class Wire:
    """A finished capture: its packets in capture order, and when it started."""

    packets: tuple[Packet, ...]
    started: float

    @classmethod
    def of(cls, capture: Capture) -> Wire:
        return cls(tuple(capture.packets), capture.started)

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

    def trace(self, packets: Sequence[Packet], limit: int = 16) -> list[str]:
        """tcpdump-like lines for `packets`, times and sequence numbers as in the whole capture."""
        wanted = {id(p) for p in packets}
        whole = format_trace(list(self.packets), self.started)
        lines = [line for p, line in zip(self.packets, whole, strict=True) if id(p) in wanted]
        return truncate_lines(lines, limit)


@contextlib.contextmanager
def watched_link(
    mtu: int, ports: Collection[int], ports_at_b: Collection[int] = ()
) -> Iterator[tuple[VethLink, Capture, Capture | None]]:
    """A fresh link of `mtu`, a capture of `ports` on a's end and of `ports_at_b` on b's."""
    with VethLink(mtu=mtu) as link, Capture(link.a.ifname, ports=ports, netns=link.a.netns) as cap:
        if not ports_at_b:
            yield link, cap, None
            return
        with Capture(link.b.ifname, ports=ports_at_b, netns=link.b.netns) as at_b:
            yield link, cap, at_b


def route_mtu(link: VethLink) -> int:
    """The MTU of a's route to b, as a connected socket reads it (IP_MTU)."""
    with link.a.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((link.b.address, _PROBE_PORT))
        mtu: int = probe.getsockopt(socket.IPPROTO_IP, IP_MTU)
        return mtu


def fresh_veth_mtu() -> int | None:
    """The MTU the kernel gives a new veth (an Ethernet-type device) before anyone sets one."""
    with VethLink(mtu=None) as link:
        text = link.a.run("cat", f"/sys/class/net/{link.a.ifname}/mtu", check=False).stdout
    return int(text) if text.strip().isdigit() else None


def several_segments(mtu: int) -> int:
    """Bytes for one send() that needs several segments at this MTU (10 000 on Ethernet)."""
    return max(10_000, 3 * mtu)


@dataclass(frozen=True)
class TcpTransfer:
    """One connection a -> b on `port`: the MSS a's socket uses, one send() and what b got."""

    port: int
    tcp_maxseg: int  # TCP_MAXSEG read right after connect()
    sent_in_one_send: int
    received: int


def tcp_transfer(link: VethLink, port: int, size: int) -> TcpTransfer:
    """Connect a to b:`port`, read TCP_MAXSEG, send `size` bytes in one send(), b reads them."""
    listener = listening_socket(link.b.address, 1, netns=link.b.netns, port=port)
    with listener, connect_to(listener, netns=link.a.netns, io_timeout=2) as pair:
        maxseg = pair.client.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        sent = pair.client.send(bytes(size))
        received = sum(map(len, recv_exactly(pair.server, sent)))
    return TcpTransfer(port, maxseg, sent, received)


@dataclass(frozen=True)
class TimestampPair:
    """The same transfer twice: a's tcp_timestamps as it came, then set to 0 in a."""

    on: TcpTransfer
    off: TcpTransfer
    tcp_timestamps_default: str | None
    tcp_timestamps_second: str | None


def transfers_with_and_without_timestamps(
    link: VethLink, ports: tuple[int, int], mtu: int
) -> TimestampPair:
    """Several segments with timestamps (a's default), then two full ones without (set 0 in a).

    Sizes follow `mtu`: the second transfer is exactly two MSS of MTU - 40.
    """
    default = sysctl("net.ipv4.tcp_timestamps", link.a.netns)
    on = tcp_transfer(link, ports[0], several_segments(mtu))
    link.a.set_sysctl("net.ipv4.tcp_timestamps", 0)
    off = tcp_transfer(link, ports[1], 2 * (mtu - IPV4_HEADER - TCP_HEADER))
    return TimestampPair(on, off, default, sysctl("net.ipv4.tcp_timestamps", link.a.netns))
