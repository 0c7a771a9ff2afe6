"""C08, C09, C10, C14: the handshake, the teardown, and every TCP state.

Every state of the state machine is made to last long enough to be read,
on loopback and without privileges, from TCP_INFO (our end) or
/proc/net/tcp (an end with no descriptor left, or the server's half of a
handshake):
- CLOSE: a socket not connected yet (and one whose connection has ended).
- LISTEN: a listener.
- SYN_SENT: a connect() to a listener whose accept queue is full: the
  kernel drops the SYN, the client waits to retransmit it.
- SYN_RECV: a listener with TCP_DEFER_ACCEPT: the handshake's last ACK
  carries no data, so the server keeps the connection half-open.
- ESTABLISHED.
- FIN_WAIT1 and LAST_ACK: a FIN cannot leave while data queued before it
  is stuck behind a peer's full receive window, so the closer waits in
  FIN_WAIT1 (active close) or LAST_ACK (passive close) until the peer reads.
- FIN_WAIT2, CLOSE_WAIT, TIME_WAIT: an orderly close, step by step.
- CLOSING (simultaneous close): both sides shut down with data queued; one
  reads everything, and receives the other's FIN while its own is still
  unacknowledged.
As root, a capture of one ordinary connection gives the segments: the
three-way handshake (C09), the teardown's FIN/ACK pairs (C10), the TCP
header lengths and where the MSS option appears (C14). C08 is probed with
hand-made SYNs (a raw socket): one whose header is 60 bytes with an option
in its last bytes, one with the same option just past the 60th byte.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import struct
import time
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.ladder import event_line, with_events
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts, skipped
from framelab.lab.capture import Capture
from framelab.lab.kernel import endpoint_state, sysctl, tcp_state
from framelab.lab.packets import SYN, Packet, tcp_segment
from framelab.lab.sockets import (
    Pair,
    SocketOptions,
    address_of,
    connect_to,
    drain,
    fill_send_queue,
    listening_socket,
)
from framelab.lab.traces import short_trace
from framelab.lab.waiting import poll

NAME = "states"
#: every state include/net/tcp_states.h has, as /proc/net/tcp names them
ALL_STATES = (
    "CLOSE",
    "LISTEN",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "CLOSE_WAIT",
    "CLOSING",
    "LAST_ACK",
    "TIME_WAIT",
)
SMALL_BUFFER = 16 * 1024  # send/receive buffers that fill after little data
#: the data-offset field is 4 bits, counting 32-bit words
MAX_TCP_HEADER = 15 * 4
LOOPBACK = "127.0.0.1"
#: source ports of the hand-made SYNs (nobody listens on them)
PROBE_PORTS = (40808, 40809, 40810, 40811)


def run(ctx: RunContext) -> list[ClaimResult]:
    walk = StateWalk()
    walk.run()
    if not ctx.can_capture:
        why = "needs root: packet capture (AF_PACKET) on lo"
        results = [judge_c10(walk, None)]
        results += [skipped(NAME, claim, why) for claim in ("C08", "C09", "C14")]
        return sorted(results, key=lambda r: r.claim)
    segments, trace = capture_connections()
    packets = segments["prompt"] + segments["later"]
    results = [judge_c10(walk, {name: teardown_flags(p) for name, p in segments.items()})]
    results[0].trace = trace
    probes, probe_trace = probe_long_headers()
    results += [
        judge_c08(packets, probes, probe_trace),
        judge_c09(segments["prompt"], trace),
    ]
    results += [judge_c14(packets, trace)]
    return sorted(results, key=lambda r: r.claim)


# -- C10: the states ------------------------------------------------------------
class StateWalk:
    """Makes each state observable and records where it was seen and how."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}  # state -> how it was observed
        self.active: list[str] = []  # the active closer's states, in order
        self.passive: list[str] = []  # the passive closer's states, in order
        self.simultaneous: list[str] = []

    def note(self, state: str | None, how: str, path: list[str] | None = None) -> None:
        if state is None:
            return
        self.seen.setdefault(state, how)
        if path is not None and (not path or path[-1] != state):
            path.append(state)

    def run(self) -> None:
        with contextlib.ExitStack() as stack:
            fresh = stack.enter_context(socket.socket())
            self.note(tcp_state(fresh), "a new socket, not connected (TCP_INFO)")
            self.syn_sent(stack)
            self.syn_recv(stack)
        self.orderly_close_with_waits()
        self.simultaneous_close()

    def syn_sent(self, stack: contextlib.ExitStack) -> None:
        listener = stack.enter_context(listening_socket(backlog=0))
        self.note(tcp_state(listener), "a listener (TCP_INFO)")
        # listen(0) queues one connection; this one is never accepted: the queue is full
        stack.enter_context(socket.create_connection(address_of(listener), timeout=2))
        client = stack.enter_context(socket.socket())
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            client.connect(address_of(listener))
        state = poll(lambda: tcp_state(client), "SYN_SENT", timeout=0.5)
        self.note(state, "connect() to a listener with a full accept queue (TCP_INFO)")

    def syn_recv(self, stack: contextlib.ExitStack) -> None:
        listener = stack.enter_context(listening_socket())
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
        client = stack.enter_context(socket.create_connection(address_of(listener), timeout=2))
        self.note(tcp_state(client), "the client once connect() returned (TCP_INFO)")
        server_end = poll(
            lambda: endpoint_state(address_of(listener), address_of(client)), "SYN_RECV"
        )
        self.note(server_end, "the server's end under TCP_DEFER_ACCEPT (/proc/net/tcp)")

    def orderly_close_with_waits(self) -> None:
        """Client closes first with data queued; then the server, likewise."""
        listener = listening_socket(options=SocketOptions(rcvbuf=SMALL_BUFFER))
        try:
            with connect_to(listener, client=SocketOptions(sndbuf=SMALL_BUFFER)) as pair:
                self._orderly_close(pair)
        finally:
            listener.close()

    def _orderly_close(self, pair: Pair) -> None:
        client, server = pair.client, pair.server
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        self.note(tcp_state(client), "both ends of a connected pair (TCP_INFO)", self.active)
        self.note(tcp_state(server), "both ends of a connected pair (TCP_INFO)", self.passive)
        fill_send_queue(client)  # the server does not read yet: the window closes
        client.shutdown(socket.SHUT_WR)  # FIN queued behind unsent data
        how = "shutdown(SHUT_WR) with data stuck behind a full window (TCP_INFO)"
        self.note(tcp_state(client), how, self.active)
        drain(server, timeout=1.0)  # reads the data, then the FIN
        self.note(tcp_state(server), "after reading the peer's FIN (TCP_INFO)", self.passive)
        state = poll(lambda: tcp_state(client), "FIN_WAIT2")
        self.note(state, "the closer once its FIN was acknowledged (TCP_INFO)", self.active)
        fill_send_queue(server)  # the client does not read: its window closes
        server.shutdown(socket.SHUT_WR)
        how = "the passive closer's shutdown with data stuck behind a full window (TCP_INFO)"
        self.note(tcp_state(server), how, self.passive)
        drain(client, timeout=1.0)  # the client reads it all, and the FIN
        state = poll(lambda: endpoint_state(pair.client_address, pair.server_address), "TIME_WAIT")
        self.note(state, "the active closer after the last ACK (/proc/net/tcp)", self.active)
        state = poll(lambda: tcp_state(server), "CLOSE")
        self.note(
            state, "the passive closer once its FIN was acknowledged (TCP_INFO)", self.passive
        )

    def simultaneous_close(self) -> None:
        """Both ends shut down with data queued; a reads first, and gets b's FIN
        while its own is still unsent: CLOSING."""
        listener = listening_socket(options=SocketOptions(rcvbuf=SMALL_BUFFER))
        try:
            with connect_to(listener, client=SocketOptions(sndbuf=SMALL_BUFFER)) as pair:
                a, b = pair.client, pair.server
                b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
                a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
                fill_send_queue(a)
                fill_send_queue(b)
                a.shutdown(socket.SHUT_WR)
                b.shutdown(socket.SHUT_WR)
                self.note(tcp_state(a), "", self.simultaneous)
                drain(a, timeout=1.0)  # b's data, then b's FIN; a's FIN is still queued
                how = "the FINs crossed: FIN received while ours was unacknowledged (TCP_INFO)"
                self.note(poll(lambda: tcp_state(a), "CLOSING"), how, self.simultaneous)
                drain(b, timeout=1.0)
                state = poll(
                    lambda: endpoint_state(pair.client_address, pair.server_address), "TIME_WAIT"
                )
                self.note(state, "after a simultaneous close (/proc/net/tcp)", self.simultaneous)
        finally:
            listener.close()


FOUR_WAY = ["client [F.]", "server [.]", "server [F.]", "client [.]"]
ACTIVE_PATH = ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
PASSIVE_PATH = ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"]


def judge_c10(walk: StateWalk, teardowns: dict[str, list[str]] | None) -> ClaimResult:
    """C10 part by part: the segments (captured), each closer's path, every state."""
    missing = [s for s in ALL_STATES if s not in walk.seen]
    observed: dict[str, Any] = {
        "states_seen": {s: walk.seen[s] for s in ALL_STATES if s in walk.seen},
        "states_missing": missing,
        "active_closer": walk.active,
        "passive_closer": walk.passive,
        "simultaneous_close": walk.simultaneous,
        "teardown": teardowns,
    }
    if teardowns is None:
        wire = Part("a connection closes with four segments: FIN, ACK, FIN, ACK", None,
                    "not observed: the teardown is captured only as root (AF_PACKET)")  # fmt: skip
    else:
        later, prompt = teardowns["later"], teardowns["prompt"]
        wire = Part(
            "a connection closes with four segments: FIN, ACK, FIN, ACK",
            later == FOUR_WAY,
            f"{len(later)} segments when the passive side closes later ({', '.join(later)}); "
            f"{len(prompt)} when it closes at once ({', '.join(prompt)}: its ACK rides on its FIN)",
        )
    parts = [
        wire,
        Part(
            "the active closer passes FIN_WAIT1, FIN_WAIT2, TIME_WAIT",
            walk.active == ACTIVE_PATH,
            f"the active closer was seen in {' > '.join(walk.active) or 'no state'}",
        ),
        Part(
            "the passive closer passes CLOSE_WAIT, LAST_ACK, CLOSED",
            walk.passive == PASSIVE_PATH,
            f"the passive closer was seen in {' > '.join(walk.passive) or 'no state'}"
            " (Linux calls CLOSED 'CLOSE')",
        ),
        Part(
            "every state of the TCP state machine can be observed",
            not missing,
            f"{len(ALL_STATES) - len(missing)} of {len(ALL_STATES)} states observed"
            + (f"; not seen: {', '.join(missing)}" if missing else "")
            + f"; simultaneous close {' > '.join(walk.simultaneous) or 'not seen'}",
        ),
    ]
    return judge_parts(NAME, "C10", parts, observed)


# -- C08, C09, C14: one connection on the wire -------------------------------------
def capture_connections() -> tuple[dict[str, list[Packet]], list[str]]:
    """Two connections on the wire, each: connect, a little data, the client
    closes first. "prompt": the server closes as soon as it reads the FIN;
    "later": only once the client's FIN was acknowledged on its own."""
    segments: dict[str, list[Packet]] = {}
    events: list[str] = []  # each call as it returned, each state as read: for the ladder
    with listening_socket() as listener, Capture("lo", ports=[address_of(listener)[1]]) as cap:

        def saw(end: tuple[str, int], kind: str, text: str | None) -> None:
            events.append(event_line(time.monotonic(), cap.started, end, kind, str(text)))

        for name in ("prompt", "later"):
            with connect_to(listener) as pair:
                client, server = pair.client_address, pair.server_address
                saw(client, "CALL", "connect() returned")
                pair.client.sendall(b"ping")
                saw(client, "CALL", "send(4) returned")
                pair.server.recv(16)
                saw(server, "CALL", "recv(): 4 bytes")
                pair.server.sendall(b"pong")
                saw(server, "CALL", "send(4) returned")
                pair.client.recv(16)
                saw(client, "CALL", "recv(): 4 bytes")
                pair.client.shutdown(socket.SHUT_WR)
                saw(client, "CALL", "shutdown(SHUT_WR) returned")
                drain(pair.server, timeout=1.0)
                saw(server, "CALL", "recv(): EOF")
                saw(server, "STATE", tcp_state(pair.server))
                if name == "later":
                    state = poll(functools.partial(tcp_state, pair.client), "FIN_WAIT2")
                    saw(client, "STATE", state)
                pair.server.shutdown(socket.SHUT_WR)
                saw(server, "CALL", "shutdown(SHUT_WR) returned")
                saw(server, "STATE", tcp_state(pair.server))
                drain(pair.client, timeout=1.0)
                saw(client, "CALL", "recv(): EOF")
                wait_for_last_ack(cap, pair)
                segments[name] = [p for p in cap.tcp(pair.client_port)]
        cap.stop()
        trace = short_trace(cap, address_of(listener)[1], limit=40)
        return segments, with_events(trace, events)


def wait_for_last_ack(cap: Capture, pair: Pair) -> None:
    """Until the client's ACK of the server's FIN is captured (the capture
    thread runs slightly behind the kernel)."""
    fin = cap.wait_for(lambda p: p.sport == pair.server_port and p.has("F"))
    if fin is not None:
        last = (fin.seq + 1) & 0xFFFFFFFF
        cap.wait_for(lambda p: p.sport == pair.client_port and p.flags == "." and p.ack == last)


#: the TSval our hand-made SYNs carry, to be found echoed in the SYN-ACK
PROBE_TSVAL = 0x0C08C08
TIMESTAMP_OPTION = struct.pack("!BBII", 8, 10, PROBE_TSVAL, 0)
#: a window-scale option: the SYN-ACK carries one only if our SYN did
WSCALE_OPTION = struct.pack("!BBB", 3, 3, 7)
#: witness -> (the option placed last, the knob that makes the SYN-ACK answer
#: it, how the answer shows in the SYN-ACK's options)
WITNESSES: dict[str, tuple[bytes, str, str]] = {
    "timestamp": (TIMESTAMP_OPTION, "net.ipv4.tcp_timestamps", f"ecr {PROBE_TSVAL}"),
    "window scale": (WSCALE_OPTION, "net.ipv4.tcp_window_scaling", "wscale "),
}


def is_reply_to(port: int, flags: str, packet: Packet) -> bool:
    return packet.dport == port and packet.flags == flags


def is_from(port: int, flags: str, packet: Packet) -> bool:
    return packet.sport == port and packet.flags == flags


def probe_long_headers() -> tuple[dict[str, Any], list[str]]:
    """SYNs built by hand to a listener on lo, as a packetdrill script would.

    For each witness option (a timestamp, whose TSval the SYN-ACK echoes; a
    window scale, which the SYN-ACK answers with its own): "sixty" has data
    offset 15 (a 60-byte header) with NOPs and the witness in the header's
    last bytes, answered only if the kernel read the header to its 60th byte;
    "past_sixty" has 40 NOPs and the witness right after them, in the
    payload, which must not be answered. Two witnesses, because either knob
    may be off in the namespace the run is in (then that witness says
    nothing). The SYN-ACKs go to a port nobody holds: our kernel resets them.
    """
    results: dict[str, Any] = {}
    with listening_socket() as listener, contextlib.ExitStack() as stack:
        port = address_of(listener)[1]
        cap = stack.enter_context(Capture("lo", ports=[port]))
        raw = stack.enter_context(
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        )
        index = 0
        for witness, (option, knob, answer) in WITNESSES.items():
            probes = {
                "sixty": (b"\x01" * (40 - len(option)) + option, b""),
                "past_sixty": (b"\x01" * 40, option),
            }
            for name, (options, payload) in probes.items():
                source = (LOOPBACK, PROBE_PORTS[index])
                index += 1
                segment = tcp_segment(
                    source, (LOOPBACK, port), 1000, 0, SYN, payload, options=options
                )
                raw.sendto(segment, (LOOPBACK, port))
                synack = cap.wait_for(functools.partial(is_reply_to, source[1], "S."), 1.0)
                sent = cap.wait_for(functools.partial(is_from, source[1], "S"), 0.5)
                results[f"{name} ({witness})"] = {
                    "witness": witness,
                    knob: sysctl(knob),
                    "syn_header_length": sent.tcp_header_len if sent else None,
                    "syn_payload": sent.payload_len if sent else None,
                    "syn_ack": synack is not None,
                    "syn_ack_options": synack.options if synack else None,
                    "answered": bool(synack and any(answer in o for o in synack.options)),
                }
        cap.stop()
        trace = short_trace(cap, port, limit=8)
    return results, trace


def witness_on(probe: dict[str, Any]) -> bool:
    """Whether the knob that makes the SYN-ACK answer this witness was on."""
    knob = WITNESSES[probe["witness"]][1]
    return probe.get(knob) not in (None, "0")


def judge_c08(packets: list[Packet], probes: dict[str, Any], trace: list[str]) -> ClaimResult:
    lengths = sorted({p.tcp_header_len for p in packets})
    observed = {
        "header_lengths_seen": lengths,
        "syn_header_length": next((p.tcp_header_len for p in packets if p.flags == "S"), None),
        "field_maximum": MAX_TCP_HEADER,
        "segments": len(packets),
        "probes": probes,
    }
    sixty = [p for name, p in probes.items() if name.startswith("sixty") and witness_on(p)]
    past = [p for name, p in probes.items() if name.startswith("past_sixty") and witness_on(p)]
    off = sorted({p["witness"] for p in probes.values() if not witness_on(p)})
    why_off = f" ({', '.join(off)} not answerable: its knob is 0 here)" if off else ""

    def said(p: dict[str, Any]) -> str:
        return (
            f"{p['witness']} in a {p['syn_header_length']}-byte header"
            f" ({p['syn_payload']} payload bytes): SYN-ACK"
            f" {'answered' if p['answered'] else 'did not answer'} it ({p['syn_ack_options']})"
        )

    if sixty:
        first = Part(
            "a TCP header may be 60 bytes long (40 bytes of options)",
            all(p["syn_header_length"] == MAX_TCP_HEADER and p["answered"] for p in sixty),
            "; ".join(said(p) for p in sixty) + why_off,
        )
        second = Part(
            "and no longer: bytes past the 60th are not header",
            all(p["syn_ack"] and not p["answered"] for p in past),
            "the same option after a 60-byte header: "
            + "; ".join(said(p) for p in past)
            + f"; the kernel's own segments had headers of {lengths}",
        )
    else:
        why = f"not observable: no witness option can be answered here{why_off}"
        first = Part("a TCP header may be 60 bytes long (40 bytes of options)", None, why)
        second = Part("and no longer: bytes past the 60th are not header", None, why)
    return judge_parts(NAME, "C08", [first, second], observed, trace=trace)


def judge_c09(packets: list[Packet], trace: list[str]) -> ClaimResult:
    first = [p.flags for p in packets[:3]]
    carried = [p.payload_len for p in packets[:3]]
    observed = {"first_three_segments": first, "payload_in_handshake": carried}
    part = Part(
        "a connection opens with a three-way handshake: SYN, SYN+ACK, ACK",
        first == ["S", "S.", "."] and not any(carried),
        f"the connection opened with {', '.join(f'[{f}]' for f in first)}, carrying "
        f"{sum(carried)} data bytes",
    )
    return judge_parts(NAME, "C09", [part], observed, trace=trace)


def judge_c14(packets: list[Packet], trace: list[str]) -> ClaimResult:
    with_mss = [p.flags for p in packets if p.mss_option is not None]
    syns = [p for p in packets if p.has("S")]
    observed = {
        "segments_with_mss_option": with_mss,
        "mss_values": [p.mss_option for p in syns],
        "segments_without": len(packets) - len(with_mss),
    }
    parts = [
        Part(
            "SYN segments carry the MSS option",
            bool(syns) and all(p.mss_option is not None for p in syns),
            f"{sum(p.mss_option is not None for p in syns)} of {len(syns)} SYN segments "
            f"carried it ({observed['mss_values']})",
        ),
        Part(
            "no other segment does",
            all("S" in f for f in with_mss),
            f"{sum('S' not in f for f in with_mss)} of the {len(packets) - len(syns)} other "
            "segments did",
        ),
    ]
    return judge_parts(NAME, "C14", parts, observed, trace=trace)


def teardown_flags(packets: list[Packet]) -> list[str]:
    """The segments from the first FIN on, as 'client [F.]' / 'server [.]'."""
    start = next((i for i, p in enumerate(packets) if p.has("F")), len(packets))
    if start == len(packets):
        return []
    client_port = packets[start].sport
    return [
        f"{'client' if p.sport == client_port else 'server'} [{p.flags}]" for p in packets[start:]
    ]


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C08", "C09", "C10", "C14"),
    needs_root="partly",
    description="every TCP state made to last (incl. CLOSING); handshake and teardown on the wire",
    run=run,
)
