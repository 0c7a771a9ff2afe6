"""A scripted TCP peer, in the spirit of packetdrill: segments built by hand, answers asserted.

The peer speaks from STRANGER, an address on a VethLink's subnet that no
namespace owns: host b reaches it through a static neighbour entry pointing
at a's interface, so b's answers cross the veth (a capture on a's end sees
them) and a's kernel drops them as not its own instead of resetting them.
The script alone decides what b sees next, and when. Needs root.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from framelab.lab.capture import Capture
from framelab.lab.netns import VethLink, socket_in
from framelab.lab.packets import DONT_FRAGMENT, Packet, ipv4_header, tcp_segment

STRANGER = "10.231.0.3"
_TS = re.compile(r"TS val (\d+) ecr (\d+)")


def timestamps_of(packet: Packet) -> tuple[int, int] | None:
    """(TSval, TSecr) of a captured segment, or None when it carries no timestamp option."""
    for option in packet.options:
        match = _TS.fullmatch(option)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def timestamp_option(value: int, echo: int) -> bytes:
    """NOP, NOP, TS: the layout Linux itself sends (12 bytes)."""
    return b"\x01\x01" + struct.pack("!BBII", 8, 10, value & 0xFFFFFFFF, echo & 0xFFFFFFFF)


@dataclass
class RawPeer:
    """One scripted endpoint, STRANGER:`port`, talking to host b of `link`."""

    link: VethLink
    port: int
    capture: Capture

    @classmethod
    def reach(cls, link: VethLink, port: int, capture: Capture) -> RawPeer:
        mac = link.a.run("cat", f"/sys/class/net/{link.a.ifname}/address").stdout.strip()
        link.b.run("ip", "neigh", "replace", STRANGER, "lladdr", mac, "dev", link.b.ifname)
        return cls(link, port, capture)

    def send(
        self, to_port: int, seq: int, ack: int, flags: int, options: bytes = b"", data: bytes = b""
    ) -> int:
        """One segment to b:`to_port`; a mark for `expect()`: where it sits in the capture.

        Packets are ordered by the capture, not by clocks: b may answer within
        microseconds, before sendto() returns, and timestamps that close can
        be out of order.
        """
        target = self.link.b.address
        seq &= 0xFFFFFFFF
        segment = tcp_segment(
            (STRANGER, self.port), (target, to_port), seq, ack, flags, data, options=options
        )
        packet = ipv4_header(STRANGER, target, socket.IPPROTO_TCP, len(segment), 0, DONT_FRAGMENT)
        with socket_in(
            self.link.a.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW
        ) as raw:
            raw.sendto(packet + segment, (target, 0))
        ours = self.capture.wait_for(
            lambda p: p.sport == self.port and p.seq == seq and p.tcp_flags == flags, 1.0
        )
        packets = list(self.capture.packets)
        return next(
            (i for i in range(len(packets) - 1, -1, -1) if packets[i] is ours), len(packets)
        )

    def answers(self, mark: int) -> list[Packet]:
        """What b sent to the peer after the segment at `mark`, in capture order."""
        return [p for p in list(self.capture.packets)[mark + 1 :] if p.dport == self.port]

    def expect(
        self, mark: int, predicate: Callable[[Packet], bool], timeout: float = 1.0
    ) -> Packet | None:
        """b's first segment to the peer after `mark` that matches, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((p for p in self.answers(mark) if predicate(p)), None)
            left = deadline - time.monotonic()
            if found is not None or left <= 0:
                return found
            self.capture.wait_for(lambda p: p.dport == self.port, min(left, 0.05))
