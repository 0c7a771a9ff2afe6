"""Who answers with RST (or ICMP), and what the program sees (C27, C30, C38, C39).

- C27/C38: connect() to a loopback port where nothing listens is answered
  with RST at once: ECONNREFUSED. For UDP the kernel answers a datagram to an
  unbound port with ICMP port unreachable; only a *connected* UDP socket hears
  about it (ECONNREFUSED on its next call), an unconnected one sees nothing.
- C30: a selector watching the server side reports "readable" both when the
  peer closes (FIN: recv returns b"") and when it aborts (RST: recv fails
  ECONNRESET): readability says "look", the read says which. A recv() and a
  poll() already asleep in the kernel when the RST comes are woken too
  (lab/blocked.py: what the notes' question Q1 asks).
- C39 (root): a segment that belongs to no connection, forged with a raw
  socket (our own checksum over the pseudo-header), is answered with RST.

Counters from /proc/net/snmp (Tcp.OutRsts, Icmp.OutDestUnreachs, Udp.NoPorts)
are evidence without root; with root the capture shows the segments.
"""

from __future__ import annotations

import random
import selectors
import socket
from dataclasses import asdict, dataclass
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts, skipped
from framelab.lab.blocked import BlockedOnReset, blocked_reader_on_reset
from framelab.lab.capture import Capture
from framelab.lab.kernel import counter_delta, errno_name, netstat_counters
from framelab.lab.packets import ACK, PSH, Packet, tcp_segment
from framelab.lab.sockets import (
    LOOPBACK,
    address_of,
    connect_to,
    listening_socket,
    recv_outcome,
    reserved_port,
    send_error,
    set_linger,
    unused_port,
)
from framelab.lab.timing import Stopwatch, median_ms
from framelab.lab.traces import (
    fin_rst_sent,
    flags_sent,
    maybe_capture,
    short_trace,
    titled,
    wait_for_flag,
)

NAME = "reset"
#: how long to wait for an event that should come at once (seconds)
EVENT_TIMEOUT = 2.0


# --- C27 / C38 (TCP): connect() to a port without a listener --------------------------


def refused_connect(port: int) -> tuple[str | None, float, int]:
    """One connect() to `port`: (errno name or None, seconds taken, our port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        client.settimeout(EVENT_TIMEOUT * 2)
        error: str | None = None
        with Stopwatch() as sw:
            try:
                client.connect((LOOPBACK, port))
            except OSError as exc:
                error = errno_name(exc) or type(exc).__name__
        return error, sw.seconds, address_of(client)[1]


@dataclass(frozen=True)
class TcpRefused:
    """connect() to a bound port that is not listening, over several rounds."""

    errors: list[str]
    connect_ms_median: float
    rounds: int
    client_sent: list[str] | None  # flags; None: not captured
    port_answered: list[str] | None
    tcp_out_rsts_delta: int
    tcp_attempt_fails_delta: int


def connection_refused(cap: Capture | None, port: int, rounds: int) -> TcpRefused:
    """connect() to a bound port that is not listening, `rounds` times."""
    before = netstat_counters()
    runs = [refused_connect(port) for _ in range(rounds)]
    wait_for_flag(cap, port, "R", EVENT_TIMEOUT)
    delta = counter_delta(before, netstat_counters())
    first_port = runs[0][2]
    return TcpRefused(
        errors=sorted({error or "connected" for error, _, _ in runs}),
        connect_ms_median=median_ms([seconds for _, seconds, _ in runs]),
        rounds=rounds,
        client_sent=flags_sent(cap, first_port, port),
        port_answered=flags_sent(cap, port, first_port),
        tcp_out_rsts_delta=delta.get("Tcp.OutRsts", 0),
        tcp_attempt_fails_delta=delta.get("Tcp.AttemptFails", 0),
    )


def rst_part(tcp: TcpRefused, text: str) -> Part:
    """The SYN to a port without a listener is answered with RST: the capture,
    or without one the kernel's own count of RSTs it sent."""
    answered = tcp.port_answered
    if answered is not None:
        flags = ", ".join(f"[{f}]" for f in answered) or "nothing"
        return Part(
            text, any("R" in f for f in answered), f"the port answered the SYN with {flags}"
        )
    return Part(
        text,
        tcp.tcp_out_rsts_delta >= tcp.rounds,
        f"not captured (needs root): Tcp.OutRsts +{tcp.tcp_out_rsts_delta} over "
        f"{tcp.rounds} connect()s",
    )


def refused_part(tcp: TcpRefused) -> Part:
    return Part(
        'connect() fails with "connection refused"',
        tcp.errors == ["ECONNREFUSED"],
        f"connect() gave {', '.join(tcp.errors)} in {tcp.connect_ms_median} ms (median of "
        f"{tcp.rounds})",
    )


def judge_c27(tcp: TcpRefused, trace: list[str]) -> ClaimResult:
    parts = [rst_part(tcp, "a SYN to a port where nothing listens gets an RST"), refused_part(tcp)]
    return judge_parts(NAME, "C27", parts, asdict(tcp), trace=trace)


# --- C38 (UDP): ICMP port unreachable --------------------------------------------------


@dataclass(frozen=True)
class UdpUnreachable:
    """Datagrams to an unbound port: what each socket was told, the ICMP, the counters."""

    connected_recv: str
    connected_next_send: str
    unconnected_recvfrom: str
    icmp_to_connected: str | None  # None: not captured
    icmp_to_unconnected: str | None
    icmp_out_dest_unreachs_delta: int
    udp_no_ports_delta: int


def udp_to_unbound_port(cap: Capture | None, port: int, quiet: float) -> UdpUnreachable:
    """Datagrams to a port nothing is bound to, from a connected and an unconnected socket."""
    before = netstat_counters()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as connected:
        connected.connect((LOOPBACK, port))
        connected.send(b"anyone there?")
        icmp = _wait_for_icmp(cap, address_of(connected)[1])
        recv_error = recv_outcome(connected, EVENT_TIMEOUT, 2048)
        connected.send(b"and now?")
        _wait_for_icmp(cap, address_of(connected)[1], after=icmp)
        next_send = send_error(connected, b"third") or "sent"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unconnected:
        unconnected.bind((LOOPBACK, 0))
        unconnected.sendto(b"anyone there?", (LOOPBACK, port))
        unconnected_icmp = _wait_for_icmp(cap, address_of(unconnected)[1])
        unconnected_error = recv_outcome(unconnected, quiet, 2048)
    delta = counter_delta(before, netstat_counters())
    return UdpUnreachable(
        connected_recv=recv_error,
        connected_next_send=next_send,
        unconnected_recvfrom=unconnected_error,
        icmp_to_connected=_icmp_text(icmp, cap),
        icmp_to_unconnected=_icmp_text(unconnected_icmp, cap),
        icmp_out_dest_unreachs_delta=delta.get("Icmp.OutDestUnreachs", 0),
        udp_no_ports_delta=delta.get("Udp.NoPorts", 0),
    )


def _wait_for_icmp(
    cap: Capture | None, src_port: int, after: Packet | None = None
) -> Packet | None:
    """The ICMP error quoting a datagram from `src_port` (a later one than `after`)."""
    if cap is None:
        return None
    return cap.wait_for(
        lambda p: (
            p.proto == "icmp"
            and p.sport == src_port
            and p is not after
            and (after is None or p.time >= after.time)
        ),
        EVENT_TIMEOUT,
    )


def _icmp_text(pkt: Packet | None, cap: Capture | None) -> str | None:
    if cap is None:
        return None
    if pkt is None:
        return "none captured"
    return f"type {pkt.icmp_type} code {pkt.icmp_code}"


def judge_c38(tcp: TcpRefused, udp: UdpUnreachable, trace: list[str]) -> ClaimResult:
    if udp.icmp_to_connected is not None:
        icmp_holds = udp.icmp_to_connected == "type 3 code 3"
        icmp = f"captured ICMP {udp.icmp_to_connected} (port unreachable is type 3 code 3)"
    else:
        icmp_holds = udp.icmp_out_dest_unreachs_delta >= 1 and udp.udp_no_ports_delta >= 1
        icmp = (
            f"not captured (needs root): Icmp.OutDestUnreachs +{udp.icmp_out_dest_unreachs_delta},"
            f" Udp.NoPorts +{udp.udp_no_ports_delta}"
        )
    parts = [
        rst_part(tcp, "TCP: a connection request to a port without a listener gets an RST"),
        Part(
            "UDP: a datagram to a port without a socket gets ICMP port unreachable",
            icmp_holds,
            f"{icmp}; a connected socket heard of it (recv: {udp.connected_recv}, next send: "
            f"{udp.connected_next_send}), an unconnected one did not (recvfrom: "
            f"{udp.unconnected_recvfrom})",
        ),
    ]
    observed = {"tcp": asdict(tcp), "udp": asdict(udp)}
    return judge_parts(NAME, "C38", parts, observed, trace=trace)


# --- C30: selector readable on FIN and on RST ------------------------------------------


def selector_on_close(
    listener: socket.socket, cap: Capture | None, abort: bool
) -> tuple[dict[str, Any], list[str]]:
    """The peer closes (FIN) or aborts (linger 0 -> RST) while we select() for read."""
    pair = connect_to(listener)
    with selectors.DefaultSelector() as selector, pair:
        pair.server.setblocking(False)
        selector.register(pair.server, selectors.EVENT_READ)
        if abort:
            set_linger(pair.client, True, 0)
        pair.client.close()
        with Stopwatch() as sw:
            events = selector.select(EVENT_TIMEOUT)
        readable = any(
            key.fileobj is pair.server and mask & selectors.EVENT_READ for key, mask in events
        )
        try:
            outcome = "EOF" if pair.server.recv(1024) == b"" else "data"
        except BlockingIOError:
            outcome = "nothing to read"
        except OSError as exc:
            outcome = errno_name(exc) or type(exc).__name__
        # the client's port is this pair's alone: no time filter, which a FIN
        # stamped with the socket's cached TCP clock could fall before
        wait_for_flag(cap, pair.client_port, "RF", EVENT_TIMEOUT)
        observed = {
            "selector": type(selector).__name__,
            "readable": readable,
            "select_ms": sw.ms,
            "recv": outcome,
            "peer_sent": fin_rst_sent(cap, pair.client_port, pair.server_port),
        }
        return observed, short_trace(cap, pair.client_port, limit=6)  # the whole connection


def check_c30(listener: socket.socket, cap: Capture | None) -> ClaimResult:
    aborted, t_aborted = selector_on_close(listener, cap, abort=True)
    closed, t_closed = selector_on_close(listener, cap, abort=False)
    blocked = blocked_reader_on_reset()
    trace = [*titled("peer aborts (SO_LINGER 0)", t_aborted), *titled("peer closes", t_closed)]
    return judge_c30(aborted, closed, blocked, trace)


def judge_c30(
    aborted: dict[str, Any], closed: dict[str, Any], blocked: BlockedOnReset, trace: list[str]
) -> ClaimResult:
    """C30 part by part: the selector's answer, the read's, and calls already asleep."""
    rst = aborted["peer_sent"].get("rst") if aborted.get("peer_sent") else None
    sent = (
        "the peer's RST on the wire"
        if rst
        else ("no RST captured" if rst is False else "not captured (needs root)")
    )
    parts = [
        Part(
            "the server's selector reports the socket readable when the peer aborts",
            bool(aborted["readable"]),
            f"{aborted['selector']}.select() returned readable={aborted['readable']} after "
            f"{aborted['select_ms']} ms ({sent}); on a graceful close readable="
            f"{closed['readable']}",
        ),
        Part(
            "and the read fails",
            aborted["recv"] == "ECONNRESET",
            f"recv() after the abort: {aborted['recv']}; after a graceful close: {closed['recv']}"
            " (readability says look, the read says which)",
        ),
        Part(
            "a reader already blocked in recv() is woken by the reset, and its read fails",
            (blocked.recv == "ECONNRESET") if blocked.both_blocked_first else None,
            (
                f"recv() asleep in the kernel returned {blocked.recv} "
                f"{blocked.recv_woke_ms} ms after the RST was sent"
                if not blocked.woken_by_shutdown
                else "recv() was not woken by the RST (ended with shutdown())"
            )
            if blocked.both_blocked_first
            else "not observed: the threads were not seen asleep in recv()/poll() in time",
        ),
        Part(
            "a poll() already waiting reports it readable",
            ("POLLIN" in blocked.poll_revents) if blocked.both_blocked_first else None,
            f"poll() woke {blocked.poll_woke_ms} ms after the RST with revents "
            f"{' | '.join(blocked.poll_revents) or 'none'}",
        ),
    ]
    observed = {"peer_aborts": aborted, "peer_closes": closed, "blocked_calls": asdict(blocked)}
    return judge_parts(NAME, "C30", parts, observed, trace=trace)


# --- C39: a segment for no connection ---------------------------------------------------


@dataclass
class Forged:
    """What we sent with the raw socket and what came back."""

    description: str
    seq: int
    ack: int
    flags: int
    payload: bytes


@dataclass(frozen=True)
class ForgedReply:
    """One forged segment, described, and the kernel's answer to it."""

    sent: str  # Forged.description
    reply_flags: str | None  # None: no answer within the wait
    reply_seq_is_our_ack: bool | None  # RFC 793: an RST's seq is the ACK it answers


@dataclass(frozen=True)
class StraySegments:
    """C39: segments of no known connection, their answers, and the RSTs counted."""

    cases: list[ForgedReply]
    tcp_out_rsts_delta: int


def send_forged(cap: Capture, src_port: int, dst_port: int, forged: Forged) -> ForgedReply:
    """Send one made-up segment to 127.0.0.1:dst_port and await the kernel's answer."""
    segment = tcp_segment(
        (LOOPBACK, src_port),
        (LOOPBACK, dst_port),
        forged.seq,
        forged.ack,
        forged.flags,
        forged.payload,
        window=1024,
    )
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP) as raw:
        raw.sendto(segment, (LOOPBACK, 0))
    reply = cap.wait_for(
        lambda p: p.proto == "tcp" and p.sport == dst_port and p.dport == src_port,
        EVENT_TIMEOUT,
    )
    return ForgedReply(
        sent=forged.description,
        reply_flags=reply.flags if reply else None,
        reply_seq_is_our_ack=reply.seq == forged.ack if reply else None,
    )


def check_c39(ctx: RunContext, listener: socket.socket) -> ClaimResult:
    if not ctx.can_capture:
        return skipped(
            NAME, "C39", "needs root: a raw socket to forge the segment, a capture to see the RST"
        )
    listen_port = address_of(listener)[1]
    source = reserved_port()  # our made-up sender: bound, so no one else uses the port
    closed = reserved_port()  # a port with a socket that neither listens nor connects
    try:
        src_port, closed_port = address_of(source)[1], address_of(closed)[1]
        rng = random.Random()
        before = netstat_counters()
        with Capture("lo", ports=[src_port]) as cap:
            bare_ack = Forged(
                "bare ACK to a listening port, no connection",
                rng.getrandbits(32),
                rng.getrandbits(32),
                ACK,
                b"",
            )
            data = Forged(
                "data segment to a port with no listener",
                rng.getrandbits(32),
                rng.getrandbits(32),
                PSH | ACK,
                b"hello",
            )
            to_listener = send_forged(cap, src_port, listen_port, bare_ack)
            to_closed = send_forged(cap, src_port, closed_port, data)
            trace = short_trace(cap, src_port)
        delta = counter_delta(before, netstat_counters())
    finally:
        source.close()
        closed.close()
    seen = StraySegments([to_listener, to_closed], delta.get("Tcp.OutRsts", 0))
    return judge_c39(seen, trace)


def judge_c39(seen: StraySegments, trace: list[str]) -> ClaimResult:
    """One part per forged segment: an RST back, with the seq RFC 793 gives it."""
    parts = [
        Part(
            f"a segment of no known connection ({case.sent}) is answered with RST",
            case.reply_flags is not None and "R" in case.reply_flags,
            f"answered with [{case.reply_flags}]"
            + (
                "; the RST's seq is the ACK number we sent"
                if case.reply_seq_is_our_ack
                else ("" if case.reply_flags is None else "; its seq is not our ACK number")
            )
            if case.reply_flags is not None
            else "no answer within the wait",
        )
        for case in seen.cases
    ]
    return judge_parts(NAME, "C39", parts, asdict(seen), trace=trace)


def run(ctx: RunContext) -> list[ClaimResult]:
    rounds = ctx.timing_rounds()
    quiet = ctx.quiet
    listener = listening_socket()
    closed_tcp = reserved_port()
    udp_port = unused_port(socket.SOCK_DGRAM)
    tcp_port = address_of(closed_tcp)[1]
    ports = [address_of(listener)[1], tcp_port, udp_port]
    try:
        with maybe_capture(ctx.can_capture, ports) as cap:
            tcp = connection_refused(cap, tcp_port, rounds)
            tcp_lines = short_trace(cap, tcp_port, limit=6)
            tcp_trace = titled("connect() to a port without a listener", tcp_lines)
            udp = udp_to_unbound_port(cap, udp_port, quiet)
            udp_trace = titled("UDP to an unbound port", short_trace(cap, udp_port, limit=6))
            results = [
                judge_c27(tcp, tcp_trace),
                judge_c38(tcp, udp, tcp_trace + udp_trace),
                check_c30(listener, cap),
            ]
        results.append(check_c39(ctx, listener))
    finally:
        listener.close()
        closed_tcp.close()
    return results


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C27", "C30", "C38", "C39"),
    needs_root="partly",
    description="RST for closed ports, ICMP for UDP, selector on abort, RST for stray segments",
    run=run,
)
