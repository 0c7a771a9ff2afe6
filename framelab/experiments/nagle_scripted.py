"""C18 segment by segment: the header's ACK sent by a scripted peer at a chosen time.

On loopback the lab can only watch Nagle wait for a delayed ACK whose timing
the kernel picks. Here the peer is scripted (lab/rawpeer.py, in the
spirit of packetdrill): it opens a connection to a listener in host b, b
writes a 10-byte header and then a 100-byte body with Nagle on, and the peer
withholds its ACK of the header for a delay it chooses, then sends it. The
capture on the veth stamps every segment, so the lab sees:

- whether the body stays in b's send queue (SIOCOUTQNSD) and off the wire
  while the header is unacknowledged;
- how long after the injected ACK the body leaves (it should be at once);
- for two delays, so that the body follows the ACK and not some timer of b's.

With TCP_NODELAY the same writes leave back to back without any ACK. The
delays stay under 200 ms, the floor of b's retransmission timer and of its
tail loss probe with one segment in flight: a probe would send the body
without the ACK and is detected (the header sent twice) rather than assumed
away. Needs root (namespaces, raw sockets, a capture).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from framelab.experiments.result import Part
from framelab.lab.capture import Capture
from framelab.lab.kernel import unsent_bytes
from framelab.lab.netns import VethLink
from framelab.lab.packets import ACK, RST, SYN, Packet
from framelab.lab.rawpeer import RawPeer
from framelab.lab.sockets import address_of, listening_socket

HEADER = b"h" * 10
BODY = b"b" * 100
#: the chosen delays before the header's ACK (s): both under b's 200 ms timers
ACK_DELAYS_S = (0.04, 0.12)
#: the body counts as leaving "at once" after the ACK within this (ms)
AT_ONCE_MS = 5.0
#: an MSS option for the peer's SYN (1460), so b has no reason to cut segments
MSS_OPTION = b"\x02\x04\x05\xb4"
FIRST_PEER_PORT = 40300


@dataclass(frozen=True)
class HeaderAckRun:
    """One connection: when the header, the injected ACK and the body were on the wire."""

    nodelay: bool
    ack_delay_ms: float | None  # None: no ACK was withheld (the TCP_NODELAY run)
    header_ms: float | None  # capture times, ms after the capture started
    ack_ms: float | None
    body_ms: float | None
    #: SIOCOUTQNSD right after the body's write: the kernel held that many bytes back
    unsent_after_write: int
    header_sends: int  # > 1: b retransmitted or probed before the ACK: a confounder

    @property
    def body_after_header_ms(self) -> float | None:
        if self.body_ms is None or self.header_ms is None:
            return None
        return round(self.body_ms - self.header_ms, 3)

    @property
    def body_after_ack_ms(self) -> float | None:
        if self.body_ms is None or self.ack_ms is None:
            return None
        return round(self.body_ms - self.ack_ms, 3)


def one_connection(
    peer: RawPeer, listener: socket.socket, nodelay: bool, delay: float | None
) -> HeaderAckRun | None:
    """Handshake from the peer, b writes header then body, the peer ACKs after `delay`."""
    port = address_of(listener)[1]
    cap = peer.capture
    isn = 5000
    sent = peer.send(port, isn, 0, SYN, MSS_OPTION)
    synack = peer.expect(sent, lambda p: p.flags == "S.")
    if synack is None:
        return None
    b_seq = (synack.seq + 1) & 0xFFFFFFFF
    peer.send(port, isn + 1, b_seq, ACK)
    listener.settimeout(2.0)
    conn, _ = listener.accept()
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
        mark = len(cap.packets) - 1

        def from_b(length: int) -> Packet | None:
            return peer.expect(mark, lambda p: p.payload_len == length, timeout=1.0)

        conn.send(HEADER)  # write, write: as a client sending a framed request does
        conn.send(BODY)
        unsent = unsent_bytes(conn)
        header = from_b(len(HEADER))
        header_end = (b_seq + len(HEADER)) & 0xFFFFFFFF
        ack: Packet | None = None
        if delay is not None and header is not None:
            # the body must NOT come while the header is unacknowledged: wait for it
            # until the chosen moment, then inject the ACK
            left = header.time + delay - time.monotonic()
            if left > 0:
                peer.expect(mark, lambda p: p.payload_len == len(BODY), timeout=left)
            peer.send(port, isn + 1, header_end, ACK)
            ack = cap.wait_for(
                lambda p: p.sport == peer.port and p.ack == header_end and not p.payload_len, 1.0
            )
        body = from_b(len(BODY))
        headers = [p for p in peer.answers(mark) if p.payload_len == len(HEADER)]
        total = (b_seq + len(HEADER) + len(BODY)) & 0xFFFFFFFF
        peer.send(port, isn + 1, total, RST | ACK)  # done: no teardown to wait for

    def at(packet: Packet | None) -> float | None:
        return None if packet is None else round((packet.time - cap.started) * 1000, 3)

    return HeaderAckRun(
        nodelay=nodelay,
        ack_delay_ms=None if delay is None else delay * 1000,
        header_ms=at(header),
        ack_ms=at(ack),
        body_ms=at(body),
        unsent_after_write=unsent,
        header_sends=len(headers),
    )


def scripted_header_ack() -> tuple[list[HeaderAckRun], list[str]]:
    """Nagle on with each chosen ACK delay, then TCP_NODELAY; the capture's lines."""
    with VethLink() as link:
        listener = listening_socket(link.b.address, 8, netns=link.b.netns)
        port = address_of(listener)[1]
        runs: list[HeaderAckRun] = []
        with listener, Capture(link.a.ifname, ports=[port], netns=link.a.netns) as cap:
            cases = [(False, d) for d in ACK_DELAYS_S] + [(True, None)]
            for i, (nodelay, delay) in enumerate(cases):
                peer_port = FIRST_PEER_PORT + i
                peer = (
                    RawPeer.reach(link, peer_port, cap) if i == 0 else RawPeer(link, peer_port, cap)
                )
                run = one_connection(peer, listener, nodelay, delay)
                if run is not None:
                    runs.append(run)
            lines = cap.lines()[:40]
        return runs, lines


NOT_RUN = "not observed: needs root (namespaces, a raw-socket peer, a capture)"


def c18_scripted_part(runs: list[HeaderAckRun] | None) -> Part:
    """The body waits for the header's ACK, and leaves the moment it comes, for each delay."""
    text = "the held data leaves as soon as the earlier data is acknowledged (ACK at a chosen time)"
    held = [r for r in runs or [] if not r.nodelay]
    if runs is None:
        return Part(text, None, NOT_RUN)
    if not held:
        return Part(text, None, "not observed: the scripted connections did not complete")
    if any(r.header_sends > 1 for r in held):
        return Part(text, None, "inconclusive: b sent the header again before the ACK (a probe)")
    ok = all(
        r.unsent_after_write == len(BODY)
        and r.body_after_ack_ms is not None
        and 0 <= r.body_after_ack_ms < AT_ONCE_MS
        and r.body_after_header_ms is not None
        and r.ack_delay_ms is not None
        and r.body_after_header_ms >= r.ack_delay_ms - 1.0
        for r in held
    )
    evidence = "; ".join(
        f"ACK withheld {r.ack_delay_ms:g} ms: {r.unsent_after_write} body bytes held after the"
        f" write, the body left {r.body_after_header_ms} ms after the header and "
        f"{r.body_after_ack_ms} ms after the injected ACK"
        for r in held
    )
    return Part(text, ok, evidence)


def c36_scripted_part(runs: list[HeaderAckRun] | None) -> Part:
    """With TCP_NODELAY the body leaves while the header is still unacknowledged."""
    text = "with TCP_NODELAY the second write leaves with the first still unacknowledged"
    if runs is None:
        return Part(text, None, NOT_RUN)
    fast = next((r for r in runs if r.nodelay), None)
    if fast is None or fast.body_after_header_ms is None:
        return Part(text, None, "not observed: the scripted connection did not complete")
    return Part(
        text,
        fast.unsent_after_write == 0 and fast.body_after_header_ms < AT_ONCE_MS,
        f"no ACK sent: the body left {fast.body_after_header_ms} ms after the header, "
        f"{fast.unsent_after_write} bytes held after the write",
    )
