"""TIME_WAIT on Linux: which side holds it, for how long, and the knobs around it.

C32  K connections closed server-first leave K TIME_WAIT rows on the server's
     port in /proc/net/tcp; closed client-first, the rows move to the clients'
     ephemeral ports. While such rows hold the server's port, a new listener
     needs SO_REUSEADDR to bind it (and the old listener must have had it too).
C11  How long: the timer of a fresh TIME_WAIT row (type 3) shows Linux's fixed
     TCP_TIMEWAIT_LEN, compared with 2*MSL for an MSL of 2 min or of 30 s.
     tcp_fin_timeout is shown to be the orphaned FIN_WAIT2 timer instead; as
     root a namespace with another tcp_fin_timeout proves TIME_WAIT ignores it.
C33  tcp_tw_recycle: whether the sysctl exists at all (removed in Linux 4.12).
C34  tcp_tw_reuse: whether connect() may take a local port whose 4-tuple is
     in TIME_WAIT. A socket option (IP_LOCAL_PORT_RANGE, Linux 6.3+) narrows
     the kernel's port choice to that one port, so the sysctl is what decides.
     As root, namespaces compare 0 / 1 / 2, timestamps off, an explicit bind()
     and a SYN arriving at the server's TIME_WAIT, without touching the host.
C35  tcp_max_tw_buckets: in a namespace capped at a few buckets, more active
     closes leave at most the cap in TIME_WAIT; TcpExt.TCPTimeWaitOverflow
     counts the surplus the kernel destroyed.

TIME_WAIT is observed, never waited out: every check reads the timer and moves on.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts, skipped
from framelab.lab.capture import Capture
from framelab.lab.kernel import (
    ProcTcpEntry,
    errno_name,
    netstat_counters,
    proc_net_tcp,
    selected_delta,
    sysctl,
)
from framelab.lab.netns import VethLink
from framelab.lab.packets import ACK, FIN, SYN
from framelab.lab.rawpeer import STRANGER, RawPeer, timestamp_option, timestamps_of
from framelab.lab.sockets import (
    LOOPBACK,
    Address,
    SocketOptions,
    address_of,
    client_socket,
    close_all,
    connect_to,
    listening_socket,
    recv_outcome,
    set_linger,
)
from framelab.lab.traces import maybe_capture, short_trace
from framelab.lab.waiting import poll_until, wait_for_entry

NAME = "time_wait"

#: /proc/net/tcp timer type of a TIME_WAIT (and orphaned FIN_WAIT2) row
TIMER_TIME_WAIT = 3
#: the claim's two readings of MSL, seconds
RFC_MSL_S = 120
PRACTICAL_MSL_S = 30
#: how far a timer may be from the expected length (jiffies, slow /proc reads)
TIMER_TOLERANCE_S = 2.0
#: tcp_fin_timeout given to a namespace, different from the default 60 s
PROBE_FIN_TIMEOUT_S = 7
#: IP_LOCAL_PORT_RANGE from linux/in.h (not in Python's socket module)
IP_LOCAL_PORT_RANGE = 51
#: TIME_WAIT bucket cap given to a namespace for C35
TIME_WAIT_CAP = 5
ROOMY_CAP = 1000
CAPPED_CONNECTIONS = 20
RECYCLE_PATH = "/proc/sys/net/ipv4/tcp_tw_recycle"
OVERFLOW = "TcpExt.TCPTimeWaitOverflow"


# --- small socket moves ------------------------------------------------------------


def close_first(active: socket.socket, passive: socket.socket) -> str:
    """The active side closes, the passive side reads the FIN and closes too."""
    active.close()
    outcome = recv_outcome(passive, timeout=2.0)
    passive.close()
    return outcome


def time_wait_row(
    local: Address, remote: Address, netns: str | None = None, timeout: float = 1.0
) -> ProcTcpEntry | None:
    """The TIME_WAIT row of exactly this 4-tuple, once the kernel shows it."""
    return wait_for_entry(
        lambda e: e.state == "TIME_WAIT" and e.local == local and e.remote == remote,
        timeout,
        netns,
    )


def try_listen(port: int, reuse_address: bool) -> str:
    """Bind and listen on 127.0.0.1:`port`: "ok" or the errno name."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        sock.listen(1)
    except OSError as exc:
        return errno_name(exc) or type(exc).__name__
    finally:
        sock.close()
    return "ok"


# --- C32: who holds TIME_WAIT ------------------------------------------------------


@dataclass
class CloseOrder:
    """Where the TIME_WAIT rows of K connections closed in one order ended up."""

    server_port: int
    client_ports: list[int]
    on_server_port: int = 0
    on_client_ports: int = 0
    passive_reads: str = ""
    #: TIME_WAITs the kernel destroyed at once (TcpExt.TCPTimeWaitOverflow): the bucket cap
    overflowed: int = 0

    def observed(self) -> dict[str, Any]:
        return {
            "time_wait_on_server_port": self.on_server_port,
            "time_wait_on_client_ports": self.on_client_ports,
            "destroyed_by_tcp_max_tw_buckets": self.overflowed,
            "passive_side_read": self.passive_reads,
        }


def count_time_wait(order: CloseOrder) -> tuple[int, int]:
    """TIME_WAIT rows local to the server's port vs local to the clients' ports."""
    clients = set(order.client_ports)
    on_server = on_clients = 0
    for entry in proc_net_tcp():
        if entry.state != "TIME_WAIT":
            continue
        if entry.local[1] == order.server_port and entry.remote[1] in clients:
            on_server += 1
        elif entry.local[1] in clients and entry.remote[1] == order.server_port:
            on_clients += 1
    return on_server, on_clients


def close_connections(listener: socket.socket, count: int, server_first: bool) -> CloseOrder:
    """Open and close `count` connections, the server or the client closing first."""
    order = CloseOrder(address_of(listener)[1], [])
    reads = set()
    before = netstat_counters()
    for _ in range(count):
        client, server, _ = connect_to(listener, io_timeout=2.0)
        order.client_ports.append(address_of(client)[1])
        active, passive = (server, client) if server_first else (client, server)
        reads.add(close_first(active, passive))
    order.passive_reads = ",".join(sorted(reads))
    order.overflowed = selected_delta(before, netstat_counters(), [OVERFLOW])[OVERFLOW]

    def all_counted() -> tuple[int, int] | None:
        counts = count_time_wait(order)
        return counts if sum(counts) + order.overflowed >= count else None

    order.on_server_port, order.on_client_ports = poll_until(all_counted, 2.0) or count_time_wait(
        order
    )
    return order


def rebind_while_time_wait(port: int) -> dict[str, str]:
    """A new listener on a port whose old connections are in TIME_WAIT."""
    return {
        "without SO_REUSEADDR": try_listen(port, reuse_address=False),
        "with SO_REUSEADDR": try_listen(port, reuse_address=True),
    }


def rebind_after_listener_without_reuse() -> dict[str, str]:
    """The same, when the old listener (so its TIME_WAIT rows) lacked SO_REUSEADDR."""
    listener = listening_socket(LOOPBACK, 1, reuse_address=False)
    port = address_of(listener)[1]
    try:
        client, server, _ = connect_to(listener, io_timeout=2.0)
        local, remote = address_of(server), address_of(client)
        close_first(server, client)
    finally:
        listener.close()
    time_wait_row(local, remote)
    return rebind_while_time_wait(port)


def check_c32(ctx: RunContext) -> ClaimResult:
    count = 8 if ctx.quick else 20
    server_first_listener = listening_socket(LOOPBACK, count)
    client_first_listener = listening_socket(LOOPBACK, count)
    listeners = [server_first_listener, client_first_listener]
    try:
        ports = [address_of(sock)[1] for sock in listeners]
        with maybe_capture(ctx.can_capture, ports) as cap:
            server_first = close_connections(server_first_listener, count, server_first=True)
            client_first = close_connections(client_first_listener, count, server_first=False)
        server_first_listener.close()
        rebind = {
            "old listener had SO_REUSEADDR": rebind_while_time_wait(server_first.server_port),
            "old listener lacked SO_REUSEADDR": rebind_after_listener_without_reuse(),
        }
    finally:
        close_all(listeners)
    trace = [
        *short_trace(cap, server_first.client_ports[0])[:12],
        *short_trace(cap, client_first.client_ports[0])[:12],
    ]
    observed = {
        "connections": count,
        "server_closes_first": server_first.observed(),
        "client_closes_first": client_first.observed(),
        "rebind_while_server_port_in_time_wait": rebind,
    }
    return judge_parts(NAME, "C32", judge_c32(count, server_first, client_first), observed,
                       trace=trace)  # fmt: skip


def where_it_went(order: CloseOrder, count: int) -> str:
    text = (
        f"{order.on_server_port} TIME_WAIT rows on the server's port, {order.on_client_ports} on"
        f" the clients' ports (of {count})"
    )
    if order.overflowed:
        text += f", {order.overflowed} destroyed by the bucket cap (TCPTimeWaitOverflow)"
    return text


def judge_c32(count: int, server_first: CloseOrder, client_first: CloseOrder) -> list[Part]:
    """Rows the bucket cap destroyed still count for the side that made them."""
    server_holds = server_first.on_client_ports == 0 and (
        server_first.on_server_port + server_first.overflowed == count
    )
    client_holds = client_first.on_server_port == 0 and (
        client_first.on_client_ports + client_first.overflowed == count
    )
    return [
        Part(
            "TIME_WAIT is held by the side that closes first",
            server_holds and client_holds,
            f"server closing first: {where_it_went(server_first, count)}; client closing"
            f" first: {where_it_went(client_first, count)}",
        ),
        Part(
            "a server that closes first piles up TIME_WAIT",
            server_holds and server_first.on_server_port > 0,
            f"{count} server-first closes: {where_it_went(server_first, count)}",
        ),
        Part(
            "letting clients close first moves it off the server",
            client_holds,
            f"{count} client-first closes: {where_it_went(client_first, count)}",
        ),
    ]


# --- C11: how long -----------------------------------------------------------------


FIN_TIMEOUT = "net.ipv4.tcp_fin_timeout"


@dataclass(frozen=True, slots=True)
class TimerReading:
    """A close's row in /proc/net/tcp: its state and timer, and the full length they imply."""

    state: str | None  # None: no such row showed up
    timer_type: int | None = None
    timer_seconds: float | None = None
    length_seconds: float | None = None  # timer + the row's age when read

    def observed(self) -> dict[str, Any]:
        if self.state is None:
            return {"state": None}
        return {
            "state": self.state,
            "timer_type": self.timer_type,
            "timer_seconds": self.timer_seconds,
            "length_seconds": self.length_seconds,
        }


@dataclass(frozen=True, slots=True)
class ClosingTimers:
    """The timers two kinds of close leave behind, read in one place (host or namespace)."""

    time_wait: TimerReading
    orphaned_fin_wait2: TimerReading

    def observed(self) -> dict[str, Any]:
        return {
            "time_wait": self.time_wait.observed(),
            "orphaned_fin_wait2": self.orphaned_fin_wait2.observed(),
        }


@dataclass(frozen=True, slots=True)
class ShortFinTimeout:
    """The same timers where tcp_fin_timeout was changed: which one follows it?"""

    fin_timeout: str | None
    timers: ClosingTimers

    def observed(self) -> dict[str, Any]:
        return {FIN_TIMEOUT: self.fin_timeout, **self.timers.observed()}


@dataclass(frozen=True, slots=True)
class TimeWaitLength:
    """C11's readings: this host's timers, and (as root) those under a short FIN timeout."""

    host: ClosingTimers
    host_fin_timeout: str | None
    namespace: ShortFinTimeout | None

    def observed(self) -> dict[str, Any]:
        seen = {**self.host.observed(), FIN_TIMEOUT: self.host_fin_timeout}
        if self.namespace is not None:
            seen["namespace"] = self.namespace.observed()
        return seen


def timer_reading(entry: ProcTcpEntry | None, started: float) -> TimerReading:
    """A row's state and timer, and the full length it implies (timer + age)."""
    if entry is None:
        return TimerReading(None)
    age = time.monotonic() - started
    return TimerReading(
        entry.state, entry.timer, entry.timer_seconds, round(entry.timer_seconds + age, 2)
    )


def fresh_time_wait(netns: str | None) -> TimerReading:
    """The timer of a TIME_WAIT row read right after the active close."""
    listener = listening_socket(LOOPBACK, 1, netns=netns)
    try:
        client, server, _ = connect_to(listener, netns=netns, io_timeout=2.0)
        local, remote = address_of(client), address_of(server)
        closed_at = time.monotonic()
        close_first(client, server)
        return timer_reading(time_wait_row(local, remote, netns), closed_at)
    finally:
        listener.close()


def orphaned_fin_wait2(netns: str | None) -> TimerReading:
    """The timer of a FIN_WAIT2 whose owner closed while the peer never closes."""
    listener = listening_socket(LOOPBACK, 1, netns=netns)
    client: socket.socket | None = None
    try:
        client, server, _ = connect_to(listener, netns=netns, io_timeout=2.0)
        local, remote = address_of(server), address_of(client)
        closed_at = time.monotonic()
        server.close()
        entry = wait_for_entry(
            lambda e: e.state == "FIN_WAIT2" and e.local == local and e.remote == remote,
            1.0,
            netns,
        )
        return timer_reading(entry, closed_at)
    finally:
        if client is not None:
            set_linger(client, True, 0)  # RST: the orphan goes away now, not in 60 s
            client.close()
        listener.close()


def closing_timers(netns: str | None) -> ClosingTimers:
    return ClosingTimers(fresh_time_wait(netns), orphaned_fin_wait2(netns))


def in_namespace_with_short_fin_timeout() -> ShortFinTimeout:
    """Both timers again where tcp_fin_timeout is not 60 s: which one follows it?"""
    with VethLink() as link:
        host = link.a
        host.set_sysctl(FIN_TIMEOUT, PROBE_FIN_TIMEOUT_S)
        return ShortFinTimeout(sysctl(FIN_TIMEOUT, host.netns), closing_timers(host.netns))


def lasts_two_practical_msl(reading: TimerReading) -> bool:
    length = reading.length_seconds
    return (
        reading.timer_type == TIMER_TIME_WAIT
        and length is not None
        and abs(length - 2 * PRACTICAL_MSL_S) <= TIMER_TOLERANCE_S
    )


def check_c11(ctx: RunContext, scripted: ScriptedServerTimeWait | None = None) -> ClaimResult:
    length = TimeWaitLength(
        closing_timers(None),
        sysctl(FIN_TIMEOUT),
        in_namespace_with_short_fin_timeout() if ctx.root else None,
    )
    observed = length.observed()
    if scripted is not None:
        observed[SCRIPTED] = scripted.observed()
    expected = {
        "2 x MSL with RFC 793's MSL of 2 min (s)": 2 * RFC_MSL_S,
        f"2 x MSL with an MSL of {PRACTICAL_MSL_S} s (s)": 2 * PRACTICAL_MSL_S,
        "Linux": "TCP_TIMEWAIT_LEN, a constant of 60 s in include/net/tcp.h",
    }
    return judge_parts(NAME, "C11", judge_c11(length, scripted), observed, expected=expected)


def judge_c11(length: TimeWaitLength, scripted: ScriptedServerTimeWait | None) -> list[Part]:
    """TIME_WAIT's length from its timer; tcp_fin_timeout is shown to set another timer."""
    host, namespace = length.host, length.namespace
    readings = [host.time_wait]
    evidence = (
        f"a fresh TIME_WAIT row's timer implies {host.time_wait.length_seconds} s"
        f" (timer type {host.time_wait.timer_type}); tcp_fin_timeout"
        f" ({length.host_fin_timeout} s) matched the orphaned FIN_WAIT2 timer"
        f" ({host.orphaned_fin_wait2.timer_seconds} s) instead"
    )
    if namespace is not None:
        readings.append(namespace.timers.time_wait)
        evidence += (
            f"; in a namespace with tcp_fin_timeout={namespace.fin_timeout}"
            f" FIN_WAIT2 read {namespace.timers.orphaned_fin_wait2.timer_seconds} s and"
            f" TIME_WAIT {namespace.timers.time_wait.length_seconds} s"
        )
    part = Part(
        f"TIME_WAIT lasts 2 x MSL, with the practical MSL of about {PRACTICAL_MSL_S} s",
        all(lasts_two_practical_msl(r) for r in readings),
        evidence,
    )
    return [part, refin_part(scripted)]


def refin_part(scripted: ScriptedServerTimeWait | None) -> Part:
    """The notes' reason for 2 MSL: a FIN sent again reaches TIME_WAIT, which ACKs it again."""
    name = "so that a FIN sent again (its ACK lost) is still ACKed, the wait starting over"
    if scripted is None:
        return Part(name, None, "not observable without root: it needs a scripted peer")
    fin = scripted.retransmitted_fin
    if fin is None:
        return Part(
            name, False, f"the scripted close did not reach TIME_WAIT: {scripted.observed()}"
        )
    return Part(
        name,
        fin.acked_again and fin.timer_restarted,
        f"a scripted peer sent its FIN again into the server's TIME_WAIT: it was"
        f" {'ACKed again' if fin.acked_again else 'not answered'}, and the timer went from"
        f" {fin.timer_before_s} s to {fin.timer_after_s} s",
    )


# --- C33: tcp_tw_recycle -----------------------------------------------------------

TW_RECYCLE = "net.ipv4.tcp_tw_recycle"
TIMESTAMPS = "net.ipv4.tcp_timestamps"


@dataclass(frozen=True, slots=True)
class RecycleSysctl:
    """Whether this kernel still has tcp_tw_recycle, and the settings it would act with."""

    kernel: str
    exists: bool
    tw_recycle: str | None
    timestamps: str | None

    def observed(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "tcp_tw_recycle_exists": self.exists,
            TW_RECYCLE: self.tw_recycle,
            TIMESTAMPS: self.timestamps,
        }


def check_c33(ctx: RunContext) -> ClaimResult:
    seen = RecycleSysctl(
        os.uname().release, os.path.exists(RECYCLE_PATH), sysctl(TW_RECYCLE), sysctl(TIMESTAMPS)
    )
    expected = {
        "tcp_tw_recycle": "removed in Linux 4.12 (commit 4396e46187ca) for the NAT breakage"
    }
    return judge_parts(NAME, "C33", judge_c33(seen), seen.observed(), expected=expected)


def judge_c33(seen: RecycleSysctl) -> list[Part]:
    """Nothing is measured: a sysctl that is gone fails the claim, one that exists is not tested."""
    presence = "exists" if seen.exists else "does not exist"
    where = f"net.ipv4.tcp_tw_recycle {presence} on {seen.kernel}"
    return [
        Part(
            "tcp_tw_recycle with tcp_timestamps recycles TIME_WAIT quickly",
            None if seen.exists else False,
            f"{where}" + (f" (value {seen.tw_recycle}), not measured here"
                          if seen.exists else ": nothing can be recycled through it"),
        ),
        Part(
            "and breaks clients behind NAT",
            None,
            f"not observable here because {where}" + ("" if not seen.exists else
                                                      " and no NAT is built for it"),
        ),
    ]  # fmt: skip


# --- C34: tcp_tw_reuse -------------------------------------------------------------


def pin_local_port(sock: socket.socket, port: int) -> None:
    """Let the kernel's ephemeral-port choice at connect() pick only `port`."""
    sock.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, struct.pack("I", port << 16 | port))


@dataclass(frozen=True)
class ReuseCase:
    """One way of connecting again to a 4-tuple that is in TIME_WAIT."""

    label: str
    tw_reuse: int | None  # None: leave the namespace's setting alone
    timestamps: int = 1
    over_veth: bool = True
    explicit_bind: bool = False
    server_closes_first: bool = False


REUSE_OFF = ReuseCase("tw_reuse=0", 0)
REUSE_ON = ReuseCase("tw_reuse=1", 1)
REUSE_WITHOUT_TIMESTAMPS = ReuseCase("tw_reuse=1, timestamps=0", 1, timestamps=0)
LOOPBACK_ONLY_OVER_VETH = ReuseCase("tw_reuse=2 over veth", 2)
LOOPBACK_ONLY_OVER_LOOPBACK = ReuseCase("tw_reuse=2 over loopback", 2, over_veth=False)
ROOT_REUSE_CASES = [
    REUSE_OFF,
    REUSE_ON,
    REUSE_WITHOUT_TIMESTAMPS,
    LOOPBACK_ONLY_OVER_VETH,
    LOOPBACK_ONLY_OVER_LOOPBACK,
    ReuseCase("tw_reuse=0, explicit bind() with SO_REUSEADDR", 0, explicit_bind=True),
    ReuseCase("tw_reuse=0, TIME_WAIT on the server (incoming SYN)", 0, server_closes_first=True),
]
TW_REUSE = "net.ipv4.tcp_tw_reuse"
TW_REUSE_DELAY = "net.ipv4.tcp_tw_reuse_delay"


@dataclass(frozen=True, slots=True)
class ReuseTrial:
    """A connection closed into TIME_WAIT, then connect() again on the same 4-tuple."""

    server_port: int
    time_wait_held_before: bool
    time_wait_side: str
    first_attempt: str  # "connected" or the errno name
    outcome: str  # of the last attempt
    attempts: int
    same_4_tuple: bool
    connected_after_ms: float | None  # None: never connected

    def observed(self) -> dict[str, Any]:
        return {
            "server_port": self.server_port,
            "time_wait_held_before": self.time_wait_held_before,
            "time_wait_side": self.time_wait_side,
            "first_attempt": self.first_attempt,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "same_4_tuple": self.same_4_tuple,
            "connected_after_ms": self.connected_after_ms,
        }


@dataclass(frozen=True, slots=True)
class HostReuse:
    """Reuse trials on this host's loopback under its own settings: context, not evidence."""

    tw_reuse: str | None
    tw_reuse_delay: str | None
    timestamps: str | None
    kernel_port_choice: ReuseTrial
    explicit_bind: ReuseTrial

    def observed(self) -> dict[str, Any]:
        return {
            TW_REUSE: self.tw_reuse,
            TW_REUSE_DELAY: self.tw_reuse_delay,
            TIMESTAMPS: self.timestamps,
            "kernel_port_choice": self.kernel_port_choice.observed(),
            "explicit_bind_with_SO_REUSEADDR": self.explicit_bind.observed(),
        }


@dataclass(frozen=True, slots=True)
class NamespaceReuse:
    """Each ReuseCase's trial in fresh namespaces whose sysctls the case set."""

    trials: dict[ReuseCase, ReuseTrial]

    def observed(self) -> dict[str, Any]:
        return {case.label: trial.observed() for case, trial in self.trials.items()}


@dataclass
class Endpoints:
    """Where a reuse trial runs: client and server namespaces, server address."""

    client_netns: str | None
    server_netns: str | None
    server_host: str


def connect_again(
    where: Endpoints, local: Address, remote: Address, explicit_bind: bool
) -> tuple[socket.socket | None, str]:
    """A second connection from `local` to `remote`: (socket, "connected") or (None, errno)."""
    sock = client_socket(where.client_netns)
    try:
        sock.settimeout(2.0)
        if explicit_bind:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(local)
        else:
            pin_local_port(sock, local[1])
        sock.connect(remote)
    except OSError as exc:
        sock.close()
        return None, errno_name(exc) or type(exc).__name__
    return sock, "connected"


def reuse_trial(
    where: Endpoints, case: ReuseCase, retry_for: float = 0.0, cap: Capture | None = None
) -> ReuseTrial:
    """Close a connection (leaving TIME_WAIT), then connect again on the same 4-tuple.

    `retry_for`: keep trying (a new socket each time) for that many seconds.
    """
    listener = listening_socket(where.server_host, 4, netns=where.server_netns)
    opened: list[socket.socket] = [listener]
    if cap is not None:
        cap.add_port(address_of(listener)[1])
    try:
        # with explicit_bind, a port of its own: connect() may pick one that other
        # connections' TIME_WAITs also hold, and theirs (no SO_REUSEADDR) fail bind() again
        first, server, _ = connect_to(
            listener,
            netns=where.client_netns,
            client=SocketOptions(reuse_address=case.explicit_bind),
            bind=("", 0) if case.explicit_bind else None,
            io_timeout=2.0,
        )
        opened += [first, server]
        local, remote = address_of(first), address_of(listener)
        active, passive = (server, first) if case.server_closes_first else (first, server)
        close_first(active, passive)
        closed_at = time.monotonic()
        holder = (
            (remote, local, where.server_netns)
            if case.server_closes_first
            else (local, remote, where.client_netns)
        )
        held = time_wait_row(*holder) is not None
        attempts: list[str] = []

        def attempt() -> socket.socket | None:
            sock, outcome = connect_again(where, local, remote, case.explicit_bind)
            attempts.append(outcome)
            return sock

        again = poll_until(attempt, retry_for)
        reused_after = time.monotonic() - closed_at
        if again is not None:
            opened.append(again)
        return ReuseTrial(
            server_port=remote[1],
            time_wait_held_before=held,
            time_wait_side="server" if case.server_closes_first else "client",
            first_attempt=attempts[0],
            outcome=attempts[-1],
            attempts=len(attempts),
            same_4_tuple=again is not None and address_of(again) == local,
            connected_after_ms=round(reused_after * 1000, 1) if again is not None else None,
        )
    finally:
        close_all(opened)


def host_reuse(ctx: RunContext) -> tuple[HostReuse, list[str]]:
    """On this host's loopback, with its own settings (no sysctl written)."""
    tw_reuse, delay, timestamps = sysctl(TW_REUSE), sysctl(TW_REUSE_DELAY), sysctl(TIMESTAMPS)
    delay_ms = int(delay or 1000)
    where = Endpoints(None, None, LOOPBACK)
    # port 0 matches nothing: the capture keeps only the ports the trial adds
    with maybe_capture(ctx.can_capture, [0]) as cap:
        port_choice = reuse_trial(
            where, ReuseCase("host", None), retry_for=delay_ms / 1000 + 1.0, cap=cap
        )
    explicit = reuse_trial(where, ReuseCase("host explicit bind", None, explicit_bind=True))
    host = HostReuse(tw_reuse, delay, timestamps, port_choice, explicit)
    return host, short_trace(cap, port_choice.server_port)


def namespace_reuse() -> NamespaceReuse:
    """Every ReuseCase in two fresh namespaces, sysctls set there only."""
    trials: dict[ReuseCase, ReuseTrial] = {}
    with VethLink() as link:
        for host in (link.a, link.b):
            host.set_sysctl(TW_REUSE_DELAY, 1)
        for case in ROOT_REUSE_CASES:
            for host in (link.a, link.b):
                host.set_sysctl(TW_REUSE, case.tw_reuse or 0)
                host.set_sysctl(TIMESTAMPS, case.timestamps)
            server = link.b if case.over_veth else link.a
            server_host = server.address if case.over_veth else LOOPBACK
            where = Endpoints(link.a.netns, server.netns, server_host)
            trials[case] = reuse_trial(where, case)
    return NamespaceReuse(trials)


def reused(trial: ReuseTrial) -> bool:
    return trial.time_wait_held_before and trial.same_4_tuple


def trial_text(trial: ReuseTrial) -> str:
    """'EADDRNOTAVAIL' or 'connected on the same 4-tuple after 12 ms' (as observed)."""
    if not trial.time_wait_held_before:
        return f"{trial.outcome} (but no TIME_WAIT row was seen first)"
    if trial.outcome != "connected":
        return trial.outcome
    same = "on the same 4-tuple" if trial.same_4_tuple else "on another 4-tuple"
    after = trial.connected_after_ms
    return f"connected {same}" + (f" after {after} ms" if after is not None else "")


def judge_c34(
    host: HostReuse,
    namespaces: NamespaceReuse | None,
    scripted: ScriptedServerTimeWait | None,
) -> list[Part]:
    """From trials in fresh namespaces only; the host's own setting is context."""
    context = (
        f"this host's loopback (tcp_tw_reuse={host.tw_reuse}, context only):"
        f" {trial_text(host.kernel_port_choice)}"
    )
    if namespaces is None:
        why = f"not observable without root: it needs namespaces at tcp_tw_reuse 0 and 1; {context}"
        return [
            Part("tcp_tw_reuse lets connect() reuse a 4-tuple in TIME_WAIT", None, why),
            Part("timestamps only make the reuse more likely", None, why),
            *server_reuse_parts(scripted),
        ]
    cases = namespaces.trials
    off, on = cases[REUSE_OFF], cases[REUSE_ON]
    no_stamps = cases[REUSE_WITHOUT_TIMESTAMPS]
    loopback_only = cases[LOOPBACK_ONLY_OVER_VETH], cases[LOOPBACK_ONLY_OVER_LOOPBACK]
    return [
        Part(
            "tcp_tw_reuse lets connect() reuse a 4-tuple in TIME_WAIT",
            reused(on) and not reused(off) and off.time_wait_held_before,
            f"fresh namespaces: tcp_tw_reuse=0 -> {trial_text(off)}, 1 -> {trial_text(on)};"
            f" 2 -> {trial_text(loopback_only[0])} over a veth,"
            f" {trial_text(loopback_only[1])} over loopback",
        ),
        Part(
            "timestamps only make the reuse more likely (it works without them)",
            reused(no_stamps),
            f"tcp_tw_reuse=1 with tcp_timestamps=0 -> {trial_text(no_stamps)}",
        ),
        *server_reuse_parts(scripted),
    ]


def server_reuse_parts(scripted: ScriptedServerTimeWait | None) -> list[Part]:
    """The notes' two conditions for a server to reuse its TIME_WAIT for a new SYN."""
    names = (
        "a SYN with a higher sequence number than the old connection's reuses the server's"
        " TIME_WAIT",
        "with timestamps, a SYN with a newer timestamp reuses it",
        "either condition alone suffices",
    )
    if scripted is None or not scripted.time_wait_held:
        why = (
            "not observable without root: it needs a scripted peer"
            if scripted is None
            else f"the scripted close did not reach TIME_WAIT: {scripted.observed()}"
        )
        return [Part(name, None if scripted is None else False, why) for name in names]
    by_label = {p.probe: p for p in [*scripted.with_timestamps, *scripted.without_timestamps]}

    def told(*labels: str) -> str:
        return "; ".join(f"{label} -> {by_label[label].answer}" for label in labels)

    plain, stamped = (
        (LOWER_SEQ, HIGHER_SEQ),
        (LOWER_SEQ_OLDER_TS, LOWER_SEQ_NEWER_TS),
    )
    return [
        Part(
            names[0],
            by_label[HIGHER_SEQ].reused and not by_label[LOWER_SEQ].reused,
            f"no timestamps on the connection: {told(*plain)}",
        ),
        Part(
            names[1],
            by_label[stamped[1]].reused and not by_label[stamped[0]].reused,
            f"timestamps on the connection: {told(*stamped)}",
        ),
        Part(
            names[2],
            by_label[HIGHER_SEQ_OLDER_TS].reused,
            f"timestamps on the connection: {told(HIGHER_SEQ_OLDER_TS, LOWER_SEQ_NO_TS)}",
        ),
    ]


def check_c34(ctx: RunContext, scripted: ScriptedServerTimeWait | None = None) -> ClaimResult:
    host, trace = host_reuse(ctx)
    observed: dict[str, Any] = {"host_loopback": host.observed()}
    namespaces = namespace_reuse() if ctx.root else None
    if namespaces is not None:
        observed["namespaces"] = namespaces.observed()
    if scripted is not None:
        observed[SCRIPTED] = scripted.observed()
        trace = [*trace, "-- a scripted peer and the server's TIME_WAIT --", *scripted.trace]
    return judge_parts(
        NAME,
        "C34",
        judge_c34(host, namespaces, scripted),
        observed,
        trace=trace,
        context={"host net.ipv4.tcp_tw_reuse": host.tw_reuse},
    )


# --- C35: tcp_max_tw_buckets -------------------------------------------------------

MAX_TW_BUCKETS = "net.ipv4.tcp_max_tw_buckets"


@dataclass(frozen=True, slots=True)
class CappedTimeWait:
    """Active closes in a namespace with its own TIME_WAIT bucket cap, and what they left."""

    max_tw_buckets: str | None
    active_closes: int
    time_wait_rows: int
    counters: dict[str, int]  # TcpExt.TW and TcpExt.TCPTimeWaitOverflow, deltas

    def observed(self) -> dict[str, Any]:
        return {
            MAX_TW_BUCKETS: self.max_tw_buckets,
            "active_closes": self.active_closes,
            "time_wait_rows": self.time_wait_rows,
            "counters": self.counters,
        }


def capped_time_wait(cap: int, count: int) -> CappedTimeWait:
    """Close `count` connections actively in a namespace allowing `cap` TIME_WAIT buckets."""
    with VethLink() as link:
        closer, peer = link.a, link.b
        closer.set_sysctl(MAX_TW_BUCKETS, cap)
        listener = listening_socket(peer.address, count, netns=peer.netns)
        try:
            before = netstat_counters(closer.netns)
            for _ in range(count):
                client, server, _ = connect_to(listener, netns=closer.netns, io_timeout=2.0)
                client.shutdown(socket.SHUT_WR)  # FIN first: the client is the active closer
                close_first(server, client)  # its TIME_WAIT starts at the server's FIN
            after = netstat_counters(closer.netns)
        finally:
            listener.close()
        rows = [e for e in proc_net_tcp(closer.netns) if e.state == "TIME_WAIT"]
        return CappedTimeWait(
            max_tw_buckets=sysctl(MAX_TW_BUCKETS, closer.netns),
            active_closes=count,
            time_wait_rows=len(rows),
            counters=selected_delta(before, after, ["TcpExt.TW", OVERFLOW]),
        )


def check_c35(ctx: RunContext) -> ClaimResult:
    if not ctx.root:
        return skipped(NAME, "C35", "needs root: network namespaces with their own cap")
    capped = capped_time_wait(TIME_WAIT_CAP, CAPPED_CONNECTIONS)
    roomy = capped_time_wait(ROOMY_CAP, CAPPED_CONNECTIONS)
    observed = {
        **capped.observed(),
        f"tcp_max_tw_buckets={ROOMY_CAP}": roomy.observed(),
        "host_tcp_max_tw_buckets": sysctl(MAX_TW_BUCKETS),
    }
    return judge_parts(NAME, "C35", judge_c35(capped, roomy), observed)


def judge_c35(capped: CappedTimeWait, roomy: CappedTimeWait) -> list[Part]:
    """The cap binds when set below the closes and not when above: a controlled pair."""

    def seen(run: CappedTimeWait) -> str:
        return (
            f"tcp_max_tw_buckets={run.max_tw_buckets}: {run.active_closes}"
            f" active closes left {run.time_wait_rows} TIME_WAIT rows,"
            f" TCPTimeWaitOverflow +{run.counters[OVERFLOW]}"
        )

    cap = int(capped.max_tw_buckets or 0)
    rows, closes = capped.time_wait_rows, capped.active_closes
    unbound = roomy.time_wait_rows == roomy.active_closes and not roomy.counters[OVERFLOW]
    return [
        Part(
            "tcp_max_tw_buckets caps the number of TIME_WAIT sockets",
            0 < rows <= cap and unbound,
            f"{seen(capped)}; {seen(roomy)} (fresh namespaces)",
        ),
        Part(
            "the surplus are destroyed",
            capped.counters[OVERFLOW] == closes - rows > 0,
            f"{closes - rows} closes found no bucket; TCPTimeWaitOverflow counted"
            f" {capped.counters[OVERFLOW]}: the kernel skipped TIME_WAIT for them",
        ),
    ]


def run(ctx: RunContext) -> list[ClaimResult]:
    scripted = scripted_server_time_wait() if ctx.root else None
    return [
        check_c11(ctx, scripted),
        check_c32(ctx),
        check_c33(ctx),
        check_c34(ctx, scripted),
        check_c35(ctx),
    ]


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C11", "C32", "C33", "C34", "C35"),
    needs_root="partly",
    description=(
        "TIME_WAIT: the side closing first holds it, for a fixed 60 s; rebinding needs"
        " SO_REUSEADDR; tcp_tw_reuse, tcp_tw_recycle (gone) and tcp_max_tw_buckets measured"
    ),
    run=run,
)


# --- the server's TIME_WAIT, driven by a scripted peer (root) -------------------------

#: how far a re-armed timer must have come back up (seconds)
TIMER_RESTART_MIN_S = 0.5
NOTES_PORT_TS, NOTES_PORT_PLAIN = 40100, 40101
FLAG_NAMES = {".": "ACK", "R": "RST", "R.": "RST"}


@dataclass
class ScriptedClose:
    """A connection the peer opened and b (the server) closed first: b now holds TIME_WAIT."""

    peer: RawPeer
    server_port: int
    seq: int  # the peer's next sequence number
    ack: int  # what the peer acknowledges of b
    ts: int | None  # the peer's last TSval, None when the connection has no timestamps
    b_ts: int = 0

    def options(self, ts: int | None = None) -> bytes:
        if self.ts is None and ts is None:
            return b""
        return timestamp_option(ts if ts is not None else self.ts or 0, self.b_ts)


def server_closes_first(
    peer: RawPeer, listener: socket.socket, isn: int, ts: int | None
) -> ScriptedClose | None:
    """Handshake from the peer, b's close(), the peer's FIN+ACK: b ends in TIME_WAIT."""
    port = address_of(listener)[1]
    syn_options = timestamp_option(ts, 0) if ts is not None else b""
    sent = peer.send(port, isn, 0, SYN, syn_options)
    synack = peer.expect(sent, lambda p: p.flags == "S.")
    if synack is None:
        return None
    stamps = timestamps_of(synack)
    state = ScriptedClose(peer, port, isn + 1, (synack.seq + 1) & 0xFFFFFFFF, ts)
    state.b_ts = stamps[0] if stamps else 0
    peer.send(port, state.seq, state.ack, ACK, state.options())
    listener.settimeout(2.0)
    server, _ = listener.accept()
    mark = len(peer.capture.packets) - 1
    server.close()  # b's FIN leaves in this call
    fin = peer.expect(mark, lambda p: p.has("F"))
    if fin is None:
        return None
    stamps = timestamps_of(fin)
    state.b_ts = stamps[0] if stamps else state.b_ts
    state.ack = (fin.seq + 1) & 0xFFFFFFFF
    if ts is not None:
        state.ts = ts + 1
    peer.send(port, state.seq, state.ack, FIN | ACK, state.options())
    state.seq += 1
    return state


SCRIPTED = "scripted_server_time_wait"
#: the SYN probes into the server's TIME_WAIT, by how they compare with the old connection
LOWER_SEQ_NO_TS = "lower seq, no timestamp"
LOWER_SEQ_OLDER_TS = "lower seq, older timestamp"
HIGHER_SEQ_OLDER_TS = "higher seq, older timestamp"
LOWER_SEQ_NEWER_TS = "lower seq, newer timestamp"
LOWER_SEQ = "lower seq"
HIGHER_SEQ = "higher seq"


@dataclass(frozen=True, slots=True)
class SynProbe:
    """A SYN sent on the 4-tuple of the server's TIME_WAIT, and how the server answered."""

    probe: str
    seq_vs_old: str
    timestamp_vs_old: str | None  # None: the SYN carried no timestamp
    answer: str
    reused: bool

    def observed(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "seq_vs_old": self.seq_vs_old,
            "timestamp_vs_old": self.timestamp_vs_old,
            "answer": self.answer,
            "reused": self.reused,
        }


@dataclass(frozen=True, slots=True)
class FinResent:
    """The peer's FIN sent again into the server's TIME_WAIT: re-ACKed, timer re-armed?"""

    timer_before_s: float | None
    acked_again: bool
    timer_after_s: float | None
    timer_restarted: bool

    def observed(self) -> dict[str, Any]:
        return {
            "timer_before_s": self.timer_before_s,
            "acked_again": self.acked_again,
            "timer_after_s": self.timer_after_s,
            "timer_restarted": self.timer_restarted,
        }


@dataclass(frozen=True, slots=True)
class ScriptedServerTimeWait:
    """What a scripted peer saw of the server's TIME_WAIT; `failure` when it never got there."""

    failure: str | None = None
    time_wait_held: bool = False
    retransmitted_fin: FinResent | None = None
    with_timestamps: list[SynProbe] = field(default_factory=list)
    without_timestamps: list[SynProbe] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)

    def observed(self) -> dict[str, Any]:
        if self.failure is not None:
            return {"scripted": self.failure}
        seen: dict[str, Any] = {"time_wait_held": self.time_wait_held}
        if not self.time_wait_held or self.retransmitted_fin is None:
            return seen
        return {
            **seen,
            "retransmitted_fin": self.retransmitted_fin.observed(),
            "with_timestamps": [p.observed() for p in self.with_timestamps],
            "without_timestamps": [p.observed() for p in self.without_timestamps],
            "trace": self.trace,
        }


def syn_probe(state: ScriptedClose, label: str, seq: int, ts: int | None) -> SynProbe:
    """A SYN on the TIME_WAIT's 4-tuple: does b open a new connection (SYN-ACK) or refuse it?"""
    options = timestamp_option(ts, 0) if ts is not None else b""
    sent = state.peer.send(state.server_port, seq & 0xFFFFFFFF, 0, SYN, options)
    synack = state.peer.expect(sent, lambda p: p.flags == "S.", timeout=0.5)
    others = [p.flags for p in state.peer.answers(sent) if p.flags != "S."]
    return SynProbe(
        probe=label,
        seq_vs_old="higher" if seq > state.seq else "lower",
        timestamp_vs_old=None if ts is None else ("newer" if ts > (state.ts or 0) else "older"),
        answer="SYN-ACK: reused"
        if synack
        else (f"{FLAG_NAMES.get(others[0], others[0])}: refused" if others else "no answer"),
        reused=synack is not None,
    )


def b_time_wait(link: VethLink, state: ScriptedClose) -> ProcTcpEntry | None:
    local, remote = (link.b.address, state.server_port), (STRANGER, state.peer.port)
    return time_wait_row(local, remote, link.b.netns)


def scripted_server_time_wait() -> ScriptedServerTimeWait:
    """The notes' TIME_WAIT mechanics on a server, segment by segment (like packetdrill)."""
    with VethLink() as link:
        listener = listening_socket(link.b.address, 8, netns=link.b.netns)
        port = address_of(listener)[1]
        with listener, Capture(link.a.ifname, ports=[port], netns=link.a.netns) as cap:
            stamped = server_closes_first(
                RawPeer.reach(link, NOTES_PORT_TS, cap), listener, 1000, 500
            )
            plain = server_closes_first(RawPeer(link, NOTES_PORT_PLAIN, cap), listener, 9000, None)
            if stamped is None or plain is None:
                return ScriptedServerTimeWait(failure="the handshake or b's FIN did not come")
            if b_time_wait(link, stamped) is None:
                return ScriptedServerTimeWait(time_wait_held=False)
            fin = retransmitted_fin(link, stamped)
            old, ts = stamped.seq, stamped.ts or 0
            with_timestamps = [
                syn_probe(stamped, LOWER_SEQ_NO_TS, old - 100_000, None),
                syn_probe(stamped, LOWER_SEQ_OLDER_TS, old - 100_000, ts - 50),
                syn_probe(stamped, HIGHER_SEQ_OLDER_TS, old + 100_000, ts - 50),
                syn_probe(stamped, LOWER_SEQ_NEWER_TS, old - 100_000, ts + 1000),
            ]
            old = plain.seq
            without_timestamps = [
                syn_probe(plain, LOWER_SEQ, old - 100_000, None),
                syn_probe(plain, HIGHER_SEQ, old + 100_000, None),
            ]
            return ScriptedServerTimeWait(
                time_wait_held=True,
                retransmitted_fin=fin,
                with_timestamps=with_timestamps,
                without_timestamps=without_timestamps,
                trace=short_trace(cap, port, limit=24),
            )


def retransmitted_fin(link: VethLink, state: ScriptedClose) -> FinResent:
    """The peer sends its FIN again, as if b's last ACK were lost: b must ACK it and re-arm 60 s."""

    def aged() -> float | None:
        row = b_time_wait(link, state)
        return (
            row.timer_seconds if row and row.timer_seconds <= 60 - 2 * TIMER_RESTART_MIN_S else None
        )

    before = poll_until(aged, 3.0)
    sent = state.peer.send(state.server_port, state.seq - 1, state.ack, FIN | ACK, state.options())
    reack = state.peer.expect(sent, lambda p: p.flags == "." and p.ack == state.seq)
    row = b_time_wait(link, state)
    after = row.timer_seconds if row else None
    return FinResent(
        timer_before_s=before,
        acked_again=reack is not None,
        timer_after_s=after,
        timer_restarted=before is not None
        and after is not None
        and after >= before + TIMER_RESTART_MIN_S,
    )
