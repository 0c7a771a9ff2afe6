"""SO_LINGER on Linux: what close() sends, and how long it blocks (claim C29).

The notes say: with SO_LINGER on and a timeout, close() tries to send what is
buffered within the timeout and then closes normally; if it could not, it
resets; with timeout 0 it resets at once. Four loopback cases, one listener:

(a) default close(): FIN, the active closer ends in TIME_WAIT, the peer reads EOF.
(b) SO_LINGER(1, 0): RST at once, no TIME_WAIT, the peer's recv fails ECONNRESET.
(c) SO_LINGER(1, N) with data the peer is not reading (its window is full):
    how long close() blocks on a non-blocking socket, what it returns, and
    whether anything is reset at the timeout. The peer then reads: if the data
    still arrives, followed by EOF, nothing was reset.
(d) SO_LINGER(1, N) with a peer that reads: close() returns once data and FIN
    are acknowledged, long before N seconds.

The "if it could not, it resets" part is what (c) checks; the verdict follows
what is seen (a capture when root, the peer's recv and /proc/net/tcp always).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts
from framelab.lab.capture import Capture
from framelab.lab.kernel import counter_delta, endpoint_state, netstat_counters, sysctls, tcp_entry
from framelab.lab.sockets import (
    Pair,
    SocketOptions,
    address_of,
    connect_to,
    drain,
    fill_send_queue,
    listening_socket,
    recv_outcome,
    set_linger,
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
from framelab.lab.waiting import wait_for_state

NAME = "linger"
#: small buffers so that filling the peer's window takes a few hundred KiB, not MiBs
BUFFER_BYTES = 65536
#: how long a recv may wait for an event that should come at once (seconds)
EVENT_TIMEOUT = 2.0
#: how long after close() returned an RST would still count as "sent at the timeout"
RST_GRACE = 0.2


@dataclass(frozen=True)
class DefaultClose:
    """(a) close() with no linger."""

    peer_recv: str
    closer_state_after_fin_acked: str | None
    peer_state_after_close: str | None
    closer_state_after_peer_close: str | None
    client_sent_fin: bool | None  # None: not captured
    client_sent_rst: bool | None


@dataclass(frozen=True)
class LingerZero:
    """(b) SO_LINGER(1, 0)."""

    closer_state_after_close: str | None
    peer_recv: str
    peer_state_after_recv: str | None
    client_sent_fin: bool | None
    client_sent_rst: bool | None


@dataclass(frozen=True)
class LingerStuck:
    """(c) SO_LINGER(1, N) with data the peer does not read."""

    nonblocking_socket: bool
    linger_s: int
    bytes_queued: int
    close_raised: str | None
    closer_state_after_close: str | None
    rst_at_timeout: bool | None  # None: not captured
    fin_sent_by_timeout: bool | None
    peer_bytes_read_later: int
    peer_read_end: str


@dataclass(frozen=True)
class LingerReads:
    """(d) SO_LINGER(1, N) with a peer that reads."""

    linger_s: int
    closer_state_after_close: str | None
    all_bytes_read: bool
    peer_read_end: str
    client_sent_fin: bool | None
    client_sent_rst: bool | None


Facts = TypeVar("Facts", DefaultClose, LingerZero, LingerStuck, LingerReads)


@dataclass
class CaseRun(Generic[Facts]):
    """One round of one case: facts that every round should repeat, details
    that may vary (first round kept), close()'s duration, and the trace."""

    facts: Facts
    close_s: float
    details: dict[str, Any] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Case(Generic[Facts]):
    """A case over its rounds: the first round's facts and details, the median close()."""

    facts: Facts
    close_ms_median: float
    rounds: int = 1
    same_every_round: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self.facts),
            **self.details,
            "close_ms_median": self.close_ms_median,
            "rounds": self.rounds,
            "same_every_round": self.same_every_round,
        }


def client_sent(cap: Capture | None, pair: Pair, since: float) -> tuple[bool | None, bool | None]:
    """(FIN sent, RST sent) by the client after `since` (None: not captured)."""
    sent = fin_rst_sent(cap, pair.client_port, pair.server_port, since)
    return sent["fin"], sent["rst"]


def default_close(listener: socket.socket, cap: Capture | None) -> CaseRun[DefaultClose]:
    """(a) close() with no linger: FIN, peer EOF, active closer in TIME_WAIT."""
    pair = connect_to(listener)
    try:
        started = time.monotonic()
        with Stopwatch() as sw:
            pair.client.close()
        peer_recv = recv_outcome(pair.server, EVENT_TIMEOUT)
        fin_acked = wait_for_state(
            pair.server_port, {"FIN_WAIT2"}, EVENT_TIMEOUT, local_port=pair.client_port
        )
        peer_state = endpoint_state(pair.server_address, pair.client_address)
        pair.server.close()  # the passive close completes the four-segment close
        time_wait = wait_for_state(
            pair.server_port, {"TIME_WAIT"}, EVENT_TIMEOUT, local_port=pair.client_port
        )
        wait_for_flag(cap, pair.client_port, "F", EVENT_TIMEOUT, started)
        facts = DefaultClose(
            peer_recv,
            fin_acked.state if fin_acked else None,
            peer_state,
            time_wait.state if time_wait else None,
            *client_sent(cap, pair, started),
        )
        details = {"time_wait_timer_s": round(time_wait.timer_seconds) if time_wait else None}
        trace = short_trace(cap, pair.client_port, started, 6)
        return CaseRun(facts, sw.seconds, details, trace)
    finally:
        pair.close()


def linger_zero(listener: socket.socket, cap: Capture | None) -> CaseRun[LingerZero]:
    """(b) SO_LINGER(1, 0): close() aborts with RST; nothing lingers in TIME_WAIT."""
    pair = connect_to(listener)
    try:
        set_linger(pair.client, True, 0)
        started = time.monotonic()
        with Stopwatch() as sw:
            pair.client.close()
        wait_for_flag(cap, pair.client_port, "R", EVENT_TIMEOUT, started)
        closer_state = endpoint_state(pair.client_address, pair.server_address)
        peer_recv = recv_outcome(pair.server, EVENT_TIMEOUT)
        facts = LingerZero(
            closer_state,
            peer_recv,
            endpoint_state(pair.server_address, pair.client_address),
            *client_sent(cap, pair, started),
        )
        return CaseRun(facts, sw.seconds, trace=short_trace(cap, pair.client_port, started, 3))
    finally:
        pair.close()


def linger_timeout_unsent(
    listener: socket.socket, cap: Capture | None, seconds: int
) -> CaseRun[LingerStuck]:
    """(c) SO_LINGER(1, N) while the peer reads nothing: data cannot leave in time."""
    pair = connect_to(listener, client=SocketOptions(sndbuf=BUFFER_BYTES))
    try:
        queued = fill_send_queue(pair.client)
        before = tcp_entry(pair.client_address, pair.server_address)
        set_linger(pair.client, True, seconds)
        pair.client.setblocking(False)
        counters = netstat_counters()
        started = time.monotonic()
        close_error: str | None = None
        with Stopwatch() as sw:
            try:
                pair.client.close()
            except OSError as exc:  # pragma: no cover - Linux returns 0
                close_error = type(exc).__name__
        # An RST at the timeout would leave right away: give it a short grace.
        rst = wait_for_flag(cap, pair.client_port, "R", RST_GRACE, started)
        resets = counter_delta(counters, netstat_counters())
        sent_by_timeout = flags_sent(cap, pair.client_port, pair.server_port, started)
        orphan = tcp_entry(pair.client_address, pair.server_address)
        peer_bytes, peer_end = drain(pair.server, EVENT_TIMEOUT)
        facts = LingerStuck(
            nonblocking_socket=True,
            linger_s=seconds,
            bytes_queued=queued,
            close_raised=close_error,
            closer_state_after_close=orphan.state if orphan else None,
            rst_at_timeout=None if cap is None else rst is not None,
            fin_sent_by_timeout=None
            if sent_by_timeout is None
            else any("F" in f for f in sent_by_timeout),
            peer_bytes_read_later=peer_bytes,
            peer_read_end=peer_end,
        )
        details = {
            "queued_bytes_at_close": before.tx_queue if before else None,
            "queued_bytes_after_close": orphan.tx_queue if orphan else None,
            "client_flags_by_timeout": sent_by_timeout,
            # machine-wide counters: other traffic may add to them, never subtract
            "reset_counters_delta": {
                k: v for k, v in resets.items() if k == "Tcp.OutRsts" or "Abort" in k
            },
        }
        trace = short_trace(cap, pair.client_port, started, 10)
        return CaseRun(facts, sw.seconds, details, trace)
    finally:
        pair.close()


def linger_peer_reads(
    listener: socket.socket, cap: Capture | None, seconds: int
) -> CaseRun[LingerReads]:
    """(d) SO_LINGER(1, N) with queued data and a peer that starts reading."""
    pair = connect_to(listener, client=SocketOptions(sndbuf=BUFFER_BYTES))
    received: list[tuple[int, str]] = []
    reader = threading.Thread(target=lambda: received.append(drain(pair.server, EVENT_TIMEOUT)))
    try:
        queued = fill_send_queue(pair.client)
        set_linger(pair.client, True, seconds)
        before = tcp_entry(pair.client_address, pair.server_address)
        reader.start()
        started = time.monotonic()
        with Stopwatch() as sw:
            pair.client.close()
        after_close = endpoint_state(pair.client_address, pair.server_address)
        reader.join(EVENT_TIMEOUT * 3)
        peer_bytes, peer_end = received[0] if received else (0, "no result")
        facts = LingerReads(
            seconds, after_close, peer_bytes == queued, peer_end, *client_sent(cap, pair, started)
        )
        details = {
            "bytes_queued": queued,
            "queued_bytes_when_peer_started_reading": before.tx_queue if before else None,
        }
        trace = short_trace(cap, pair.client_port, started, 4)
        return CaseRun(facts, sw.seconds, details, trace)
    finally:
        if reader.is_alive():
            pair.server.shutdown(socket.SHUT_RDWR)
            reader.join()
        pair.close()


def repeat(case: Callable[[], CaseRun[Facts]], rounds: int) -> tuple[Case[Facts], list[str]]:
    """Run a case `rounds` times: first round's facts, median close() time, consistency."""
    runs = [case() for _ in range(rounds)]
    seen = Case(
        runs[0].facts,
        median_ms([r.close_s for r in runs]),
        rounds,
        all(r.facts == runs[0].facts for r in runs),
        runs[0].details,
    )
    return seen, runs[0].trace


def _rst_not_fin(sent_rst: bool | None, sent_fin: bool | None) -> bool:
    """The capture shows an RST and no FIN from the closer (True without a capture)."""
    return sent_rst in (True, None) and sent_fin in (False, None)


def reset_at_timeout(stuck: LingerStuck) -> bool | None:
    """An RST in the capture; uncaptured, a peer read that failed ECONNRESET says
    yes, a peer that later read every byte says no, anything else is unknown."""
    if stuck.rst_at_timeout is not None:
        return stuck.rst_at_timeout
    if stuck.peer_read_end == "ECONNRESET":
        return True
    return False if stuck.peer_bytes_read_later == stuck.bytes_queued else None


def wire(sent_fin: bool | None, sent_rst: bool | None) -> str:
    if sent_fin is None:
        return "not captured"
    return (
        f"the closer sent {'FIN' if sent_fin else 'no FIN'} and {'RST' if sent_rst else 'no RST'}"
    )


def c29_parts(
    default: Case[DefaultClose],
    zero: Case[LingerZero],
    stuck: Case[LingerStuck],
    reads: Case[LingerReads],
) -> list[Part]:
    """C29's four statements, each from its own case; the default close is their baseline."""
    n = stuck.facts.linger_s
    r, z, st = reads.facts, zero.facts, stuck.facts
    reset = reset_at_timeout(st)
    outcome = "returned normally" if st.close_raised is None else f"raised {st.close_raised}"
    return [
        Part(
            "with a timeout, close() sends what is buffered and then closes normally",
            r.all_bytes_read
            and r.peer_read_end == "EOF"
            and r.client_sent_rst is not True
            and reads.close_ms_median < n * 1000 / 2,
            f"linger {n} s, a reading peer: close() returned after {reads.close_ms_median} ms, "
            f"the peer read {'every byte' if r.all_bytes_read else 'not every byte'} then "
            f"{r.peer_read_end}; {wire(r.client_sent_fin, r.client_sent_rst)}; the closer was "
            f"{r.closer_state_after_close}",
        ),
        Part(
            "if it cannot, close() gives up when the timeout ends",
            stuck.close_ms_median >= n * 1000 * 0.8,
            f"linger {n} s, a peer not reading {st.bytes_queued} bytes: close() blocked "
            f"{stuck.close_ms_median:.0f} ms (the socket was "
            f"{'non-blocking' if st.nonblocking_socket else 'blocking'}) and {outcome}",
        ),
        Part(
            "and resets the connection",
            reset,
            (
                f"at the timeout {'an RST was' if reset else 'no RST was'} sent"
                if st.rst_at_timeout is not None
                else "uncaptured: judged by the peer's reads"
            )
            + f"; the socket stayed {st.closer_state_after_close} with "
            f"{stuck.details.get('queued_bytes_after_close')} bytes queued; the peer later read "
            f"{st.peer_bytes_read_later} of {st.bytes_queued} bytes, then {st.peer_read_end}",
        ),
        Part(
            "timeout 0: close() sends RST at once",
            z.peer_recv == "ECONNRESET"
            and z.closer_state_after_close is None
            and zero.close_ms_median < 100
            and _rst_not_fin(z.client_sent_rst, z.client_sent_fin),
            f"close() returned in {zero.close_ms_median} ms, "
            f"{wire(z.client_sent_fin, z.client_sent_rst)}, the peer's recv(): {z.peer_recv}, "
            "the closer's socket "
            f"{z.closer_state_after_close or 'gone (no TIME_WAIT)'}; without linger the peer got "
            f"{default.facts.peer_recv} and the closer went to "
            f"{default.facts.closer_state_after_peer_close}",
        ),
    ]


def judge_c29(
    default: Case[DefaultClose],
    zero: Case[LingerZero],
    stuck: Case[LingerStuck],
    reads: Case[LingerReads],
    context: dict[str, Any],
    trace: list[str],
) -> ClaimResult:
    """C29 from the four cases alone; `context` (capture, sysctls) is reported with them."""
    observed = {
        "default_close": default.to_json(),
        "linger_0": zero.to_json(),
        "linger_n_unsendable": stuck.to_json(),
        "linger_n_peer_reads": reads.to_json(),
        **context,
    }
    parts = c29_parts(default, zero, stuck, reads)
    return judge_parts(NAME, "C29", parts, observed, trace=trace)


def run(ctx: RunContext) -> list[ClaimResult]:
    rounds = ctx.timing_rounds()
    seconds = 1 if ctx.quick else 2
    listener = listening_socket(options=SocketOptions(rcvbuf=BUFFER_BYTES))
    try:
        with maybe_capture(ctx.can_capture, [address_of(listener)[1]]) as cap:
            default, t_default = repeat(lambda: default_close(listener, cap), rounds)
            zero, t_zero = repeat(lambda: linger_zero(listener, cap), rounds)
            stuck, t_stuck = repeat(lambda: linger_timeout_unsent(listener, cap, seconds), 1)
            reads, t_reads = repeat(lambda: linger_peer_reads(listener, cap, seconds), rounds)
    finally:
        listener.close()
    context = {
        "captured": ctx.can_capture,
        "sysctls": sysctls(["net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_orphan_retries"]),
    }
    trace = [
        *titled("(a) default close()", t_default),
        *titled("(b) SO_LINGER(1, 0)", t_zero),
        *titled(f"(c) SO_LINGER(1, {seconds}), peer not reading", t_stuck),
        *titled(f"(d) SO_LINGER(1, {seconds}), peer reading", t_reads),
    ]
    return [judge_c29(default, zero, stuck, reads, context, trace)]


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C29",),
    needs_root="no",
    description="SO_LINGER: default close, linger 0 (RST), linger N with stuck and with read data",
    run=run,
)
