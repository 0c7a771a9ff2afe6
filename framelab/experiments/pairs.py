"""Loopback socket moves shared by the experiments on closing and resetting.

Several experiments need the same few steps: a connected TCP pair on 127.0.0.1
with an ephemeral port, the kernel's state of one end read from /proc/net/tcp,
a recv that says *how* it ended (data, EOF, timeout or the errno name), a send
queue filled until the peer's window is shut, and an optional packet capture
that is simply absent without root. They live here once and know nothing about
any particular claim, so other experiments can import them too.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import statistics
import struct
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from types import TracebackType

from framelab.experiments.capture import Capture
from framelab.experiments.context import RunContext
from framelab.experiments.observe import ProcTcpEntry, errno_name, proc_net_tcp
from framelab.experiments.packets import Packet, format_trace
from framelab.experiments.queues import LOOPBACK as LOOPBACK  # re-exported: the experiments' names
from framelab.experiments.queues import Address as Address
from framelab.experiments.queues import address_of as address_of
from framelab.experiments.queues import listener_in

#: how often /proc/net/tcp is re-read while waiting for a state (seconds)
POLL_INTERVAL = 0.005
#: longest trace kept in a ClaimResult
TRACE_LIMIT = 30


@dataclass
class Pair:
    """Both ends of one loopback connection, plus the listener that made it.

    Iterates as (client, server, listener), so `client, server, listener =
    connected_pair()` works. The addresses are read once at creation, so they
    still name the 4-tuple after the sockets are closed. `close()` (or the end
    of a `with`) closes both ends, and the listener too when the pair owns it.
    """

    client: socket.socket
    server: socket.socket
    listener: socket.socket
    owns_listener: bool = True
    client_address: Address = field(init=False)
    server_address: Address = field(init=False)

    def __post_init__(self) -> None:
        self.client_address = address_of(self.client)
        self.server_address = address_of(self.server)

    @property
    def client_port(self) -> int:
        return self.client_address[1]

    @property
    def server_port(self) -> int:
        return self.server_address[1]

    def __iter__(self) -> Iterator[socket.socket]:
        return iter((self.client, self.server, self.listener))

    def close(self) -> None:
        self.client.close()
        self.server.close()
        if self.owns_listener:
            self.listener.close()

    def __enter__(self) -> Pair:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def listening_socket(
    host: str = LOOPBACK, backlog: int = 16, rcvbuf: int | None = None
) -> socket.socket:
    """A listener of ours on an ephemeral port; `rcvbuf` is inherited by accepted sockets."""
    return listener_in(None, host, backlog, rcvbuf=rcvbuf)


def connect_to(listener: socket.socket, timeout: float = 2.0, sndbuf: int | None = None) -> Pair:
    """A new connection to a listener the caller keeps (and closes) itself.

    Both ends are blocking; `sndbuf` sets the client's send buffer before connect.
    """
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if sndbuf is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        client.settimeout(timeout)
        client.connect(address_of(listener))
        client.settimeout(None)
        listener.settimeout(timeout)
        server, _ = listener.accept()
        server.settimeout(None)
    except BaseException:
        client.close()
        raise
    return Pair(client, server, listener, owns_listener=False)


def connected_pair(
    host: str = LOOPBACK, *, rcvbuf: int | None = None, sndbuf: int | None = None
) -> Pair:
    """A fresh connection on loopback: server side buffers `rcvbuf`, client `sndbuf`.

    To run several connections under one capture, make one `listening_socket()`
    and call `connect_to()` on it instead.
    """
    listener = listening_socket(host, rcvbuf=rcvbuf)
    try:
        pair = connect_to(listener, sndbuf=sndbuf)
    except BaseException:
        listener.close()
        raise
    pair.owns_listener = True
    return pair


def unused_port(kind: int = socket.SOCK_STREAM, host: str = LOOPBACK) -> int:
    """A port nothing is bound to right now (the kernel's pick, released at once)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        return address_of(probe)[1]


def reserved_port(host: str = LOOPBACK) -> socket.socket:
    """A TCP socket bound to an ephemeral port but not listening.

    While it is open no other socket takes the port, yet the kernel treats the
    port as having no listener: connections to it are refused.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


# --- socket options -----------------------------------------------------------------


def set_linger(sock: socket.socket, enabled: bool, seconds: int = 0) -> None:
    """SO_LINGER: struct linger {int l_onoff; int l_linger;}."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", int(enabled), seconds))


# --- what a recv says ---------------------------------------------------------------


def recv_outcome(sock: socket.socket, timeout: float = 1.0, size: int = 65536) -> str:
    """How one recv ends: "data", "EOF" (FIN), "timeout", or the errno name.

    The socket's own timeout is restored afterwards.
    """
    outcome, _ = _recv_once(sock, timeout, size)
    return outcome


def drain(sock: socket.socket, timeout: float = 1.0) -> tuple[int, str]:
    """Read until something other than data happens: (bytes read, final outcome).

    `timeout` bounds each wait for more, not the whole drain.
    """
    total = 0
    while True:
        outcome, count = _recv_once(sock, timeout, 1 << 20)
        if outcome != "data":
            return total, outcome
        total += count


def _recv_once(sock: socket.socket, timeout: float, size: int) -> tuple[str, int]:
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        data = sock.recv(size)
    except TimeoutError:
        return "timeout", 0
    except OSError as exc:
        return errno_name(exc) or type(exc).__name__, 0
    finally:
        if sock.fileno() != -1:
            sock.settimeout(previous)
    return ("data" if data else "EOF"), len(data)


def send_error(sock: socket.socket, data: bytes = b"x") -> str | None:
    """The errno name a send() fails with, or None when it succeeds."""
    try:
        sock.send(data)
    except OSError as exc:
        return errno_name(exc) or type(exc).__name__
    return None


def fill_send_queue(sock: socket.socket, chunk: int = 65536) -> int:
    """Send without blocking until the kernel refuses more; bytes accepted.

    With a peer that does not read, this fills the peer's receive window and
    then our own send buffer: what is left in the queue cannot be sent.
    """
    previous = sock.gettimeout()
    sock.setblocking(False)
    payload = b"q" * chunk
    total = 0
    try:
        while True:
            try:
                total += sock.send(payload)
            except BlockingIOError:
                return total
    finally:
        sock.settimeout(previous)


# --- kernel state from /proc/net/tcp ------------------------------------------------


def tcp_entry(local: Address, remote: Address, netns: str | None = None) -> ProcTcpEntry | None:
    """The socket with exactly this 4-tuple (TIME_WAIT ones included), if any."""
    for entry in proc_net_tcp(netns):
        if entry.local == local and entry.remote == remote:
            return entry
    return None


def endpoint_state(local: Address, remote: Address, netns: str | None = None) -> str | None:
    """The state of one end of a connection; None once the kernel forgot it."""
    entry = tcp_entry(local, remote, netns)
    return entry.state if entry else None


#: states a socket passes through while waiting for the peer's next segment
TRANSIENT_STATES = frozenset({"SYN_SENT", "SYN_RECV", "FIN_WAIT1", "CLOSING", "LAST_ACK"})


def poll(read: Callable[[], str | None], want: str, timeout: float = 1.0) -> str | None:
    """Read a state until it is `want` or the time is up; the last value read.
    (The kernel sends no event for a state change, so this polls /proc or TCP_INFO.)"""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = read()
        except OSError:
            state = None
        if state == want or time.monotonic() >= deadline:
            return state
        time.sleep(POLL_INTERVAL)


def settled_state(
    local: Address, remote: Address, timeout: float = 0.5, netns: str | None = None
) -> str | None:
    """One end's state once it left the states that wait for an ACK (None: gone).

    Right after a FIN the closer may still be FIN_WAIT1 or already FIN_WAIT2,
    depending on when the ACK was processed; this reads past that race.
    """
    deadline = time.monotonic() + timeout
    while True:
        state = endpoint_state(local, remote, netns)
        if state not in TRANSIENT_STATES or time.monotonic() >= deadline:
            return state
        time.sleep(POLL_INTERVAL)


def wait_for_entry(
    predicate: Callable[[ProcTcpEntry], bool], timeout: float = 1.0, netns: str | None = None
) -> ProcTcpEntry | None:
    """Poll /proc/net/tcp until a socket matches (no event exists for this)."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in proc_net_tcp(netns):
            if predicate(entry):
                return entry
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_INTERVAL)


def wait_for_state(
    port: int,
    states: Collection[str],
    timeout: float = 1.0,
    *,
    local_port: int | None = None,
    netns: str | None = None,
) -> ProcTcpEntry | None:
    """A socket on `port` (either end) in one of `states`, within `timeout`.

    With `local_port`, only the end bound to that port counts, which on
    loopback picks one side of a connection.
    """

    def matches(entry: ProcTcpEntry) -> bool:
        if port not in (entry.local[1], entry.remote[1]):
            return False
        if local_port is not None and entry.local[1] != local_port:
            return False
        return entry.state in states

    return wait_for_entry(matches, timeout, netns)


def wait_for_queues(
    local: Address,
    remote: Address,
    predicate: Callable[[ProcTcpEntry], bool],
    timeout: float = 1.0,
    netns: str | None = None,
) -> ProcTcpEntry | None:
    """Wait until one end's entry (tx_queue, rx_queue, state...) satisfies `predicate`."""
    return wait_for_entry(
        lambda e: e.local == local and e.remote == remote and predicate(e), timeout, netns
    )


# --- timing -------------------------------------------------------------------------


def timing_rounds(ctx: RunContext, quick_rounds: int = 2) -> int:
    """How many times to repeat a timed step: ctx.rounds, fewer in quick mode."""
    return max(1, min(ctx.rounds, quick_rounds) if ctx.quick else ctx.rounds)


def median_ms(samples_s: list[float]) -> float:
    """The median of durations given in seconds, in ms rounded to 0.001."""
    return round(statistics.median(samples_s) * 1000, 3)


class Stopwatch:
    """`with Stopwatch() as sw: ...` then sw.seconds / sw.ms."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started

    @property
    def ms(self) -> float:
        return round(self.seconds * 1000, 3)


# --- capture when root --------------------------------------------------------------


@contextlib.contextmanager
def maybe_capture(
    enabled: bool, ports: Collection[int], interface: str = "lo"
) -> Iterator[Capture | None]:
    """A Capture on `ports` when `enabled` (root), else None: one code path for both."""
    if not enabled:
        yield None
        return
    with Capture(interface, ports=ports) as cap:
        yield cap


def flags_sent(
    cap: Capture | None, src_port: int, dst_port: int | None = None, since: float = 0.0
) -> list[str] | None:
    """Flags of the TCP segments sent from `src_port` (to `dst_port`) after `since`.

    None without a capture, so "not captured" never looks like "nothing sent".
    """
    if cap is None:
        return None
    return [
        p.flags
        for p in cap.tcp(src_port)
        if p.sport == src_port and (dst_port is None or p.dport == dst_port) and p.time >= since
    ]


def fin_rst_sent(
    cap: Capture | None, src_port: int, dst_port: int | None = None, since: float = 0.0
) -> dict[str, bool | None]:
    """{"fin": ..., "rst": ...}: did `src_port` send a FIN / an RST (None: not captured)?"""
    flags = flags_sent(cap, src_port, dst_port, since)
    if flags is None:
        return {"fin": None, "rst": None}
    return {"fin": any("F" in f for f in flags), "rst": any("R" in f for f in flags)}


def wait_for_flag(
    cap: Capture | None,
    src_port: int,
    letters: str,
    timeout: float = 1.0,
    since: float = 0.0,
) -> Packet | None:
    """The first segment from `src_port` carrying any flag of `letters` ("F", "R", "FR").

    Wait for it before reading flags: the capture thread runs slightly behind
    the kernel. (Packet times are when the capture saw them, so `since` is a
    coarse filter: use it to exclude packets, not to order them.)
    """
    if cap is None:
        return None
    return cap.wait_for(
        lambda p: (
            p.proto == "tcp"
            and p.sport == src_port
            and any(p.has(letter) for letter in letters)
            and p.time >= since
        ),
        timeout,
    )


def short_trace(
    cap: Capture | None, port: int, since: float = 0.0, limit: int = TRACE_LIMIT
) -> list[str]:
    """tcpdump-like lines of one port's traffic after `since`, at most `limit` of them."""
    if cap is None:
        return []
    packets = [p for p in list(cap.packets) if port in (p.sport, p.dport) and p.time >= since]
    return truncate_lines(format_trace(packets, cap.started), limit)


def truncate_lines(lines: list[str], limit: int) -> list[str]:
    """At most `limit` lines, the last saying how many were left out."""
    if len(lines) <= limit:
        return lines
    return [*lines[: limit - 1], f"... {len(lines) - limit + 1} more lines"]


def gaps_ms(times: list[float]) -> list[float]:
    """ms between successive times (seconds), to 0.1 ms: a back-off made visible."""
    return [round((b - a) * 1000, 1) for a, b in itertools.pairwise(times)]


def titled(title: str, lines: list[str]) -> list[str]:
    """A trace section: '# title' then the lines; nothing when there are none."""
    return [f"# {title}", *lines] if lines else []
