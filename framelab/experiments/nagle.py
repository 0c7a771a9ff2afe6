"""Nagle's algorithm and TCP_NODELAY on loopback (claims C18, C36).

A request is a 10-byte header written, then a 100-byte body written; the
server answers only once the whole request is in (as a framed server does).
With Nagle on, the body waits in the client's kernel until the header is
ACKed, and the server delays that ACK (Linux: at least 40 ms) because it has
nothing to send yet: every round trip stalls. The cases, each on a fresh
connection, timed as the median of several rounds after warm-up rounds (a new
connection ACKs at once for its first segments, "quick ACK mode"):

- nagle:     TCP_NODELAY 0 (the kernel's default), write, write, read
- nodelay:   TCP_NODELAY 1, write, write, read
- one_write: Nagle on, header and body in one write
- quickack:  Nagle on, the server sets TCP_QUICKACK before each recv()
- cork:      Nagle on, TCP_CORK around the two writes, cleared after them
- three writes (10 + 50 + 50) with and without Nagle: how many data
  segments left (TCP_INFO's data segment counter, no root needed) shows
  whether the held-back writes were combined.

asyncio and uvloop set TCP_NODELAY on their TCP transports; both the
accepted and the connected transport's socket are read back, and clearing
the option through `transport.get_extra_info("socket")` is shown to bring
the stall back in asyncio code. As root, a capture of one Nagle round shows
the body leaving only after the server's ACK of the header, and a scripted
peer in a namespace (nagle_scripted.py) sends that ACK at chosen times: the
body leaves the moment it arrives, and with TCP_NODELAY without it.

Cost: about 20 stalled round trips of ~40 ms, under 2 s in all.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.nagle_scripted import (
    HeaderAckRun,
    c18_scripted_part,
    c36_scripted_part,
    scripted_header_ack,
)
from framelab.experiments.registry import Chart, Drawing, Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts
from framelab.lab.capture import Capture
from framelab.lab.kernel import data_segments_out, segments_since, tcp_info, unsent_bytes
from framelab.lab.loops import close_writer, on_each_loop
from framelab.lab.packets import format_trace
from framelab.lab.sockets import (
    LOOPBACK,
    SocketOptions,
    connected_pair,
    corked,
    nodelay,
    recv_exactly,
    set_quickack,
)
from framelab.lab.timing import median_ms
from framelab.lab.traces import maybe_capture, titled

NAME = "nagle"
HEADER = b"h" * 10
BODY = b"b" * 100
REQUEST_SIZE = len(HEADER) + len(BODY)
REPLY = b"r" * 10
#: first rounds of a connection are ACKed at once (quick ACK mode): not timed
WARMUP_ROUNDS = 2
#: rounds for cases that do not stall are cheap: this many times ctx's rounds
FAST_ROUNDS_FACTOR = 10
#: Nagle counts as having held the body back when its round trip is this many times slower
STALL_RATIO = 10
#: ...and at least this slow in absolute terms (the kernel's delayed ACK is 40 ms)
STALL_FLOOR_MS = 5.0
TIMEOUT = 5.0

Pattern = Callable[[socket.socket, "WriteLog"], None]


@dataclass
class WriteLog:
    """Per later write of a request: was data in flight before it, was it held after it?

    `in_flight`: TCP_INFO's unacked segments just before the write; `held`:
    SIOCOUTQNSD just after it. Nagle may hold a write only when data is in
    flight; a write that leaves at once leaves nothing unsent.
    """

    in_flight_rounds: int = 0
    held_rounds: int = 0
    writes: int = 0

    def write(self, sock: socket.socket, chunk: bytes) -> None:
        in_flight = tcp_info(sock)["unacked"] > 0
        sock.sendall(chunk)
        held = unsent_bytes(sock) > 0
        self.writes += 1
        self.in_flight_rounds += in_flight
        self.held_rounds += held

    def summary(self) -> dict[str, int]:
        return {
            "later_writes": self.writes,
            "with_data_in_flight": self.in_flight_rounds,
            "held_in_the_kernel": self.held_rounds,
        }


def writes_of(*chunks: bytes) -> Callable[[socket.socket, WriteLog], None]:
    """A request as these writes; every write after the first is logged."""

    def pattern(sock: socket.socket, log: WriteLog) -> None:
        sock.sendall(chunks[0])
        for chunk in chunks[1:]:
            log.write(sock, chunk)

    return pattern


two_writes = writes_of(HEADER, BODY)
one_write = writes_of(HEADER + BODY)
three_writes = writes_of(HEADER, BODY[:50], BODY[50:])


def corked_writes(sock: socket.socket, log: WriteLog) -> None:
    with corked(sock):  # clearing TCP_CORK sends what is queued at once
        two_writes(sock, log)


@dataclass(frozen=True)
class Case:
    """One way to send a request: the client's Nagle setting, the server's ACK policy."""

    name: str
    pattern: Pattern
    nodelay: bool = False
    quickack: bool = False
    stalls: bool = False  # expected to cost ~40 ms per round: give it few rounds


CASES = (
    Case("nagle", two_writes, stalls=True),
    Case("nodelay", two_writes, nodelay=True),
    Case("one_write", one_write),
    Case("quickack", two_writes, quickack=True),
    Case("cork", corked_writes),
    Case("nagle_3_writes", three_writes, stalls=True),
    Case("nodelay_3_writes", three_writes, nodelay=True),
)


class ReplyServer(threading.Thread):
    """Answers every complete request of REQUEST_SIZE bytes with REPLY, until EOF.

    With `quickack`, TCP_QUICKACK is set before every recv(): the kernel
    clears it again on its own, so it has to be re-armed each time.
    """

    def __init__(self, sock: socket.socket, quickack: bool) -> None:
        super().__init__(name="nagle-server", daemon=True)
        self.sock = sock
        self.quickack = quickack
        self.error: BaseException | None = None

    def run(self) -> None:
        pending = 0
        try:
            while True:
                if self.quickack:
                    set_quickack(self.sock)
                data = self.sock.recv(65536)
                if not data:
                    return
                pending += len(data)
                while pending >= REQUEST_SIZE:
                    pending -= REQUEST_SIZE
                    self.sock.sendall(REPLY)
        except OSError as exc:
            self.error = exc


def round_trip(sock: socket.socket, pattern: Pattern, log: WriteLog | None = None) -> float:
    """Seconds from the first write of a request to the end of its reply."""
    started = time.perf_counter()
    pattern(sock, log if log is not None else WriteLog())
    recv_exactly(sock, len(REPLY))
    return time.perf_counter() - started


@dataclass
class Timing:
    median_ms: float
    rounds: int
    segments_per_request: float | None
    client_port: int
    server_port: int
    writes: WriteLog = field(default_factory=WriteLog)

    def summary(self) -> dict[str, Any]:
        return {
            "median_ms": self.median_ms,
            "rounds": self.rounds,
            "data_segments_per_request": self.segments_per_request,
            "writes": self.writes.summary(),
        }


def time_case(case: Case, rounds: int, cap: Capture | None = None) -> Timing:
    client, server, listener = connected_pair(
        client=SocketOptions(nodelay=case.nodelay), timeout=TIMEOUT, io_timeout=TIMEOUT
    )
    listener.close()  # one connection is all this case needs
    replier = ReplyServer(server, case.quickack)
    replier.start()
    try:
        if cap is not None:
            cap.add_port(server.getsockname()[1])
        for _ in range(WARMUP_ROUNDS):
            round_trip(client, case.pattern)
        before = data_segments_out(client)
        log = WriteLog()
        samples = [round_trip(client, case.pattern, log) for _ in range(rounds)]
        sent = segments_since(client, before)
        per_request = None if sent is None else sent / rounds
        timing = Timing(
            median_ms(samples),
            rounds,
            per_request,
            client.getsockname()[1],
            server.getsockname()[1],
            log,
        )
    finally:
        client.close()
        replier.join(TIMEOUT)
        server.close()
    if replier.error is not None:  # pragma: no cover - only a broken server gets here
        raise replier.error
    return timing


def held_back_evidence(cap: Capture, timing: Timing) -> tuple[dict[str, Any], list[str]]:
    """From the last captured Nagle round: did the body leave only after the header's ACK?"""
    # the client's FIN comes last: once it is in, the capture holds the whole connection
    cap.wait_for(lambda p: p.sport == timing.client_port and p.has("F"), TIMEOUT)
    packets = [
        p for p in cap.tcp(timing.server_port) if p.payload_len or p.sport == timing.server_port
    ]
    bodies = [
        i
        for i, p in enumerate(packets)
        if p.sport == timing.client_port and p.payload_len == len(BODY)
    ]
    if not bodies:
        return {"body_segment_seen": False}, []
    body_at = bodies[-1]
    headers = [
        i
        for i, p in enumerate(packets[:body_at])
        if p.sport == timing.client_port and p.payload_len == len(HEADER)
    ]
    if not headers:
        return {"body_segment_seen": True, "header_segment_seen": False}, []
    header_at = headers[-1]
    header = packets[header_at]
    acked = header.seq + len(HEADER)
    acks = [
        p
        for p in packets[header_at + 1 : body_at]
        if p.sport == timing.server_port and p.payload_len == 0 and p.ack == acked
    ]
    body = packets[body_at]
    evidence = {
        "header_ack_before_body": bool(acks),
        "body_held_ms": round((body.time - header.time) * 1000, 1),
        "ack_delay_ms": round((acks[0].time - header.time) * 1000, 1) if acks else None,
    }
    lines = format_trace(packets[header_at : body_at + 3], cap.started)
    return evidence, titled("one Nagle round: header, delayed ACK, body, ACK, reply", lines)


# -- asyncio and uvloop ---------------------------------------------------------------------
async def asyncio_nagle(rounds: int) -> dict[str, Any]:
    """TCP_NODELAY on both transports by default; clearing it brings the stall back."""
    accepted_nodelay: list[bool | None] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted_nodelay.append(nodelay(writer.get_extra_info("socket")))
        try:
            while True:
                await reader.readexactly(REQUEST_SIZE)
                writer.write(REPLY)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    sock = writer.get_extra_info("socket")

    async def timed() -> float:
        for _ in range(WARMUP_ROUNDS):
            await asyncio_round_trip(reader, writer)
        return median_ms([await asyncio_round_trip(reader, writer) for _ in range(rounds)])

    try:
        connected_nodelay = nodelay(sock)
        default_ms = await timed()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        nagle_ms = await timed()
    finally:
        await close_writer(writer)
        server.close()
        await server.wait_closed()
    return {
        "connected_nodelay": connected_nodelay,
        "accepted_nodelay": accepted_nodelay[0] if accepted_nodelay else None,
        "default_median_ms": default_ms,
        "nodelay_cleared_median_ms": nagle_ms,
        "rounds": rounds,
    }


async def asyncio_round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    started = time.perf_counter()
    writer.write(HEADER)  # the buffer is empty: each write() is a send() right away
    writer.write(BODY)
    await reader.readexactly(len(REPLY))
    return time.perf_counter() - started


# -- the claims -----------------------------------------------------------------------------
def stalled(slow: Timing | float, fast: Timing | float) -> bool:
    """Is `slow` at least STALL_RATIO times `fast` and over STALL_FLOOR_MS?"""
    slow_ms = slow.median_ms if isinstance(slow, Timing) else slow
    fast_ms = fast.median_ms if isinstance(fast, Timing) else fast
    return slow_ms >= STALL_FLOOR_MS and slow_ms >= STALL_RATIO * max(fast_ms, 0.001)


def run(ctx: RunContext) -> list[ClaimResult]:
    slow_rounds = ctx.timing_rounds(quick_rounds=3)
    fast_rounds = max(slow_rounds, ctx.rounds) * FAST_ROUNDS_FACTOR
    timings: dict[str, Timing] = {}
    evidence: dict[str, Any] = {}
    trace: list[str] = []
    for case in CASES:
        rounds = slow_rounds if case.stalls else fast_rounds
        if case.name == "nagle":
            with maybe_capture(ctx.can_capture, ports=()) as cap:
                timings[case.name] = time_case(case, rounds, cap)
                if cap is not None:
                    evidence, trace = held_back_evidence(cap, timings[case.name])
        else:
            timings[case.name] = time_case(case, rounds)
    loops = on_each_loop(lambda: asyncio_nagle(slow_rounds))
    scripted: list[HeaderAckRun] | None = None
    if ctx.can_capture:
        scripted, scripted_trace = scripted_header_ack()
        trace += titled("scripted peer: the header's ACK at a chosen time", scripted_trace)
    return [judge_c18(timings, evidence, trace, scripted), judge_c36(timings, loops, scripted)]


def judge_c18(
    timings: dict[str, Timing],
    evidence: dict[str, Any],
    trace: list[str],
    scripted: list[HeaderAckRun] | None = None,
) -> ClaimResult:
    """Held back and combined, judged from the kernel's send queue, not from the stall.

    The stall is what a delayed ACK makes of Nagle; without one (a quickack
    route, a peer that ACKs at once) the ACK may return before the next write,
    and then there is nothing to hold: not observable, never "differs".
    """
    nagle, fast, three = timings["nagle"], timings["nodelay"], timings["nagle_3_writes"]
    observed: dict[str, Any] = {
        "nagle": nagle.summary(),
        "nodelay": fast.summary(),
        "ratio": round(nagle.median_ms / max(fast.median_ms, 0.001)),
        "three_writes_nagle_segments": three.segments_per_request,
        "three_writes_nodelay_segments": timings["nodelay_3_writes"].segments_per_request,
        "three_writes_nagle": three.summary(),
    }
    if evidence:
        observed["capture"] = evidence
    log = nagle.writes
    captured = evidence.get("header_ack_before_body")
    stall = (
        f"write-write-read took {nagle.median_ms:g} ms per round trip vs {fast.median_ms:g} ms"
        " with TCP_NODELAY"
    )
    seen = (
        f"{log.held_rounds} of {log.writes} bodies stayed unsent in the kernel after their"
        f" write, {log.in_flight_rounds} were written with the header still unacknowledged"
    )
    if captured is not None:
        seen += (
            f"; captured: the body left {evidence.get('body_held_ms')} ms after the header,"
            f" {'after' if captured else 'before'} the header's ACK"
        )
    waited_on_wire = bool(captured) and evidence.get("body_held_ms", 0) >= STALL_FLOOR_MS
    if log.held_rounds or waited_on_wire:
        held: bool | None = True
    elif log.in_flight_rounds == 0:
        held = None
        seen = (
            f"not observable in this run because every header was acknowledged before the"
            f" body was written ({seen}): nothing was in flight for Nagle to wait on"
        )
    else:
        held = False
    three_log = three.writes
    combined_evidence = (
        f"three writes (10 + 50 + 50 bytes) left as {three.segments_per_request:g} data segments"
        f" per request with Nagle, {timings['nodelay_3_writes'].segments_per_request} without"
        if three.segments_per_request is not None
        else "no segment count (TCP_INFO without tcpi_data_segs_out)"
    )
    if three.segments_per_request is None:
        combined: bool | None = None
    elif three.segments_per_request < 3:
        combined = True
    elif three_log.in_flight_rounds == 0:
        combined = None
        combined_evidence = (
            f"not observable in this run because each write found nothing in flight"
            f" ({combined_evidence})"
        )
    else:
        combined = False
    parts = [
        Part("with Nagle on, a small write may be held back", held, f"{seen}; {stall}"),
        Part("to be combined with later data", combined, combined_evidence),
        c18_scripted_part(scripted),
    ]
    if scripted is not None:
        observed["scripted_header_ack"] = [asdict(r) for r in scripted]
    return judge_parts(
        NAME,
        "C18",
        parts,
        observed,
        trace=trace,
        context={"delayed ACK stall": stalled(nagle, fast)},
    )


def judge_c36(
    timings: dict[str, Timing],
    loops: dict[str, dict[str, Any]],
    scripted: list[HeaderAckRun] | None = None,
) -> ClaimResult:
    """Each write at once (send queue, segment count); the latency gain only where Nagle stalled."""
    nagle, fast = timings["nagle"], timings["nodelay"]
    fast3 = timings["nodelay_3_writes"]
    each_at_once = (
        fast.segments_per_request == 2
        and fast3.segments_per_request == 3
        and fast.writes.held_rounds == 0
        and fast3.writes.held_rounds == 0
    )
    remedies = {
        name: not stalled(timings[name], fast) and stalled(nagle, timings[name])
        for name in ("one_write", "quickack", "cork")
    }
    loops_nodelay = {
        name: bool(seen["connected_nodelay"] and seen["accepted_nodelay"])
        for name, seen in loops.items()
    }
    loops_stall_back = {
        name: stalled(seen["nodelay_cleared_median_ms"], seen["default_median_ms"])
        for name, seen in loops.items()
    }
    observed: dict[str, Any] = {
        name: timings[name].summary() for name in ("nodelay", "nagle", *remedies)
    }
    observed["nodelay_3_writes"] = fast3.summary()
    observed["other_remedies_avoid_stall"] = remedies
    observed["event_loops"] = loops
    observed["event_loops_nodelay_by_default"] = loops_nodelay
    observed["event_loops_stall_when_cleared"] = loops_stall_back
    if stalled(nagle, fast):
        latency: bool | None = True
        latency_evidence = (
            f"{fast.median_ms:g} ms per write-write-read with TCP_NODELAY vs {nagle.median_ms:g}"
            " ms with Nagle; also without the stall: "
            + ", ".join(f"{name} {timings[name].median_ms:g} ms" for name in remedies)
        )
    elif nagle.writes.held_rounds == 0:
        latency = None
        latency_evidence = (
            f"not observable in this run because Nagle held nothing back here (Nagle"
            f" {nagle.median_ms:g} ms, TCP_NODELAY {fast.median_ms:g} ms): no wait to remove"
        )
    else:
        latency = bool(nagle.median_ms > fast.median_ms)
        latency_evidence = (
            f"Nagle held {nagle.writes.held_rounds} bodies but cost {nagle.median_ms:g} ms vs"
            f" {fast.median_ms:g} ms with TCP_NODELAY: the peer acknowledged at once"
        )
    parts = [
        Part(
            "TCP_NODELAY turns Nagle off: small writes go out at once",
            each_at_once,
            f"with TCP_NODELAY 2 writes left as {fast.segments_per_request} segments and 3 as"
            f" {fast3.segments_per_request}; {fast.writes.held_rounds + fast3.writes.held_rounds}"
            f" of {fast.writes.writes + fast3.writes.writes} later writes stayed unsent after"
            " the call",
        ),
        c36_scripted_part(scripted),
        Part("so set it when latency matters", latency, latency_evidence),
    ]
    loop_note = ", ".join(
        f"{name}: TCP_NODELAY {'on' if loops_nodelay[name] else 'off'} by default,"
        f" {seen['default_median_ms']:g} ms -> {seen['nodelay_cleared_median_ms']:g} ms"
        " with it cleared"
        for name, seen in loops.items()
    )
    return judge_parts(NAME, "C36", parts, observed, context={"event loops": loop_note})


# --- the chart -------------------------------------------------------------------------

#: a round trip this slow was held back by Nagle and a delayed ACK
STALL_MS = 10.0
STALL_COLOUR, PROMPT_COLOUR = "#d62728", "#2ca02c"
#: (key in C36's observed, label), in the order drawn
CHART_MODES = (
    ("nagle", "Nagle on: write, write, read"),
    ("nodelay", "TCP_NODELAY"),
    ("one_write", "Nagle on, one write"),
    ("quickack", "Nagle on, peer TCP_QUICKACK"),
    ("cork", "TCP_CORK, then uncork"),
)


def chart_rows(seen: dict[str, Any]) -> list[tuple[str, float]]:
    """(label, median round trip in ms) for every mode the run measured."""
    rows = [(label, seen[key]["median_ms"]) for key, label in CHART_MODES if key in seen]
    for loop, data in seen.get("event_loops", {}).items():
        rows.append((f"{loop}, its default", data["default_median_ms"]))
        rows.append((f"{loop}, TCP_NODELAY cleared", data["nodelay_cleared_median_ms"]))
    return rows


def round_trip_bars(results: Sequence[ClaimResult]) -> Drawing | None:
    """C36's round trips, Nagle on next to each remedy, on a log scale."""
    seen = next((r.observed for r in results if r.claim == "C36"), None)
    rows = chart_rows(seen) if seen else []
    if not rows:
        return None

    def draw(ax: Any) -> None:
        labels = [label for label, _ in rows][::-1]
        values = [max(ms, 1e-3) for _, ms in rows][::-1]
        colours = [STALL_COLOUR if ms >= STALL_MS else PROMPT_COLOUR for ms in values]
        ax.barh(labels, values, color=colours)
        for y, ms in enumerate(values):
            ax.text(ms * 1.15, y, f"{ms:g} ms", va="center", fontsize="small")
        ax.set_xscale("log")
        ax.set_xlim(right=max(values) * 12)
        ax.set_xlabel("median round trip, ms (log scale)")
        ax.set_title(
            "write, write, read on loopback: Nagle and the delayed ACK (C18, C36)", loc="right"
        )
        ax.grid(True, axis="x", which="both", alpha=0.3)

    return draw


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C18", "C36"),
    needs_root="partly",
    description=(
        "write-write-read stalls ~40 ms with Nagle on (delayed ACK); TCP_NODELAY, one write,"
        " TCP_QUICKACK and TCP_CORK avoid it; asyncio and uvloop set TCP_NODELAY"
    ),
    run=run,
    charts=(Chart("nagle.png", round_trip_bars),),
)
