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
from dataclasses import dataclass
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.rawpeer import STRANGER, RawPeer, timestamp_option, timestamps_of
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
    sysctls,
)
from framelab.lab.netns import VethLink
from framelab.lab.packets import ACK, FIN, SYN
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


def timer_reading(entry: ProcTcpEntry | None, started: float) -> dict[str, Any]:
    """A row's state and timer, and the full length it implies (timer + age)."""
    if entry is None:
        return {"state": None}
    age = time.monotonic() - started
    return {
        "state": entry.state,
        "timer_type": entry.timer,
        "timer_seconds": entry.timer_seconds,
        "length_seconds": round(entry.timer_seconds + age, 2),
    }


def fresh_time_wait(netns: str | None) -> dict[str, Any]:
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


def orphaned_fin_wait2(netns: str | None) -> dict[str, Any]:
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


def in_namespace_with_short_fin_timeout() -> dict[str, Any]:
    """Both timers again where tcp_fin_timeout is not 60 s: which one follows it?"""
    with VethLink() as link:
        host = link.a
        host.set_sysctl("net.ipv4.tcp_fin_timeout", PROBE_FIN_TIMEOUT_S)
        return {
            "net.ipv4.tcp_fin_timeout": sysctl("net.ipv4.tcp_fin_timeout", host.netns),
            "time_wait": fresh_time_wait(host.netns),
            "orphaned_fin_wait2": orphaned_fin_wait2(host.netns),
        }


def lasts_two_practical_msl(reading: dict[str, Any]) -> bool:
    length = reading.get("length_seconds")
    return (
        reading.get("timer_type") == TIMER_TIME_WAIT
        and length is not None
        and abs(length - 2 * PRACTICAL_MSL_S) <= TIMER_TOLERANCE_S
    )


def check_c11(ctx: RunContext, scripted: dict[str, Any] | None = None) -> ClaimResult:
    time_wait = fresh_time_wait(None)
    fin_wait2 = orphaned_fin_wait2(None)
    observed: dict[str, Any] = {
        "time_wait": time_wait,
        "orphaned_fin_wait2": fin_wait2,
        **sysctls(["net.ipv4.tcp_fin_timeout"]),
    }
    readings = [time_wait]
    evidence = (
        f"a fresh TIME_WAIT row's timer implies {time_wait.get('length_seconds')} s"
        f" (timer type {time_wait.get('timer_type')}); tcp_fin_timeout"
        f" ({observed['net.ipv4.tcp_fin_timeout']} s) matched the orphaned FIN_WAIT2 timer"
        f" ({fin_wait2.get('timer_seconds')} s) instead"
    )
    if ctx.root:
        namespace = in_namespace_with_short_fin_timeout()
        observed["namespace"] = namespace
        readings.append(namespace["time_wait"])
        evidence += (
            f"; in a namespace with tcp_fin_timeout={namespace['net.ipv4.tcp_fin_timeout']}"
            f" FIN_WAIT2 read {namespace['orphaned_fin_wait2'].get('timer_seconds')} s and"
            f" TIME_WAIT {namespace['time_wait'].get('length_seconds')} s"
        )
    part = Part(
        f"TIME_WAIT lasts 2 x MSL, with the practical MSL of about {PRACTICAL_MSL_S} s",
        all(lasts_two_practical_msl(r) for r in readings),
        evidence,
    )
    if scripted is not None:
        observed["scripted_server_time_wait"] = scripted
    parts = [part, refin_part(scripted)]
    expected = {
        "2 x MSL with RFC 793's MSL of 2 min (s)": 2 * RFC_MSL_S,
        f"2 x MSL with an MSL of {PRACTICAL_MSL_S} s (s)": 2 * PRACTICAL_MSL_S,
        "Linux": "TCP_TIMEWAIT_LEN, a constant of 60 s in include/net/tcp.h",
    }
    return judge_parts(NAME, "C11", parts, observed, expected=expected)


def refin_part(scripted: dict[str, Any] | None) -> Part:
    """The notes' reason for 2 MSL: a FIN sent again reaches TIME_WAIT, which ACKs it again."""
    name = "so that a FIN sent again (its ACK lost) is still ACKed, the wait starting over"
    if scripted is None:
        return Part(name, None, "not observable without root: it needs a scripted peer")
    fin = scripted.get("retransmitted_fin")
    if fin is None:
        return Part(name, False, f"the scripted close did not reach TIME_WAIT: {scripted}")
    return Part(
        name,
        fin["acked_again"] and fin["timer_restarted"],
        f"a scripted peer sent its FIN again into the server's TIME_WAIT: it was"
        f" {'ACKed again' if fin['acked_again'] else 'not answered'}, and the timer went from"
        f" {fin['timer_before_s']} s to {fin['timer_after_s']} s",
    )


# --- C33: tcp_tw_recycle -----------------------------------------------------------


def check_c33(ctx: RunContext) -> ClaimResult:
    exists = os.path.exists(RECYCLE_PATH)
    observed = {
        "kernel": os.uname().release,
        "tcp_tw_recycle_exists": exists,
        **sysctls(["net.ipv4.tcp_tw_recycle", "net.ipv4.tcp_timestamps"]),
    }
    presence = "exists" if exists else "does not exist"
    where = f"net.ipv4.tcp_tw_recycle {presence} on {observed['kernel']}"
    parts = [
        Part(
            "tcp_tw_recycle with tcp_timestamps recycles TIME_WAIT quickly",
            None if exists else False,
            f"{where}" + (f" (value {observed['net.ipv4.tcp_tw_recycle']}), not measured here"
                          if exists else ": nothing can be recycled through it"),
        ),
        Part(
            "and breaks clients behind NAT",
            None,
            f"not observable here because {where}" + ("" if not exists else
                                                      " and no NAT is built for it"),
        ),
    ]  # fmt: skip
    expected = {
        "tcp_tw_recycle": "removed in Linux 4.12 (commit 4396e46187ca) for the NAT breakage"
    }
    return judge_parts(NAME, "C33", parts, observed, expected=expected)


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


ROOT_REUSE_CASES = [
    ReuseCase("tw_reuse=0", 0),
    ReuseCase("tw_reuse=1", 1),
    ReuseCase("tw_reuse=1, timestamps=0", 1, timestamps=0),
    ReuseCase("tw_reuse=2 over veth", 2),
    ReuseCase("tw_reuse=2 over loopback", 2, over_veth=False),
    ReuseCase("tw_reuse=0, explicit bind() with SO_REUSEADDR", 0, explicit_bind=True),
    ReuseCase("tw_reuse=0, TIME_WAIT on the server (incoming SYN)", 0, server_closes_first=True),
]


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
) -> dict[str, Any]:
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
        return {
            "server_port": remote[1],
            "time_wait_held_before": held,
            "time_wait_side": "server" if case.server_closes_first else "client",
            "first_attempt": attempts[0],
            "outcome": attempts[-1],
            "attempts": len(attempts),
            "same_4_tuple": again is not None and address_of(again) == local,
            "connected_after_ms": round(reused_after * 1000, 1) if again is not None else None,
        }
    finally:
        close_all(opened)


def host_reuse(ctx: RunContext) -> tuple[dict[str, Any], list[str]]:
    """On this host's loopback, with its own settings (no sysctl written)."""
    settings = sysctls(
        ["net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_tw_reuse_delay", "net.ipv4.tcp_timestamps"]
    )
    delay_ms = int(settings["net.ipv4.tcp_tw_reuse_delay"] or 1000)
    where = Endpoints(None, None, LOOPBACK)
    # port 0 matches nothing: the capture keeps only the ports the trial adds
    with maybe_capture(ctx.can_capture, [0]) as cap:
        port_choice = reuse_trial(
            where, ReuseCase("host", None), retry_for=delay_ms / 1000 + 1.0, cap=cap
        )
    explicit = reuse_trial(where, ReuseCase("host explicit bind", None, explicit_bind=True))
    observed = {
        **settings,
        "kernel_port_choice": port_choice,
        "explicit_bind_with_SO_REUSEADDR": explicit,
    }
    return observed, short_trace(cap, port_choice["server_port"])


def namespace_reuse() -> dict[str, Any]:
    """Every ReuseCase in two fresh namespaces, sysctls set there only."""
    results: dict[str, Any] = {}
    with VethLink() as link:
        for host in (link.a, link.b):
            host.set_sysctl("net.ipv4.tcp_tw_reuse_delay", 1)
        for case in ROOT_REUSE_CASES:
            for host in (link.a, link.b):
                host.set_sysctl("net.ipv4.tcp_tw_reuse", case.tw_reuse or 0)
                host.set_sysctl("net.ipv4.tcp_timestamps", case.timestamps)
            server = link.b if case.over_veth else link.a
            server_host = server.address if case.over_veth else LOOPBACK
            where = Endpoints(link.a.netns, server.netns, server_host)
            results[case.label] = reuse_trial(where, case)
    return results


def reused(trial: dict[str, Any]) -> bool:
    return bool(trial["time_wait_held_before"] and trial["same_4_tuple"])


def trial_text(trial: dict[str, Any]) -> str:
    """'EADDRNOTAVAIL' or 'connected on the same 4-tuple after 12 ms' (as observed)."""
    if not trial["time_wait_held_before"]:
        return f"{trial['outcome']} (but no TIME_WAIT row was seen first)"
    if trial["outcome"] != "connected":
        return str(trial["outcome"])
    same = "on the same 4-tuple" if trial["same_4_tuple"] else "on another 4-tuple"
    after = trial["connected_after_ms"]
    return f"connected {same}" + (f" after {after} ms" if after is not None else "")


def judge_c34(cases: dict[str, dict[str, Any]] | None, host: dict[str, Any]) -> list[Part]:
    """From trials in fresh namespaces only; the host's own setting is context."""
    context = (
        f"this host's loopback (tcp_tw_reuse={host['net.ipv4.tcp_tw_reuse']}, context only):"
        f" {trial_text(host['kernel_port_choice'])}"
    )
    if cases is None:
        why = f"not observable without root: it needs namespaces at tcp_tw_reuse 0 and 1; {context}"
        return [
            Part("tcp_tw_reuse lets connect() reuse a 4-tuple in TIME_WAIT", None, why),
            Part("timestamps only make the reuse more likely", None, why),
        ]
    off, on = cases["tw_reuse=0"], cases["tw_reuse=1"]
    no_stamps = cases["tw_reuse=1, timestamps=0"]
    loopback_only = cases["tw_reuse=2 over veth"], cases["tw_reuse=2 over loopback"]
    return [
        Part(
            "tcp_tw_reuse lets connect() reuse a 4-tuple in TIME_WAIT",
            reused(on) and not reused(off) and off["time_wait_held_before"],
            f"fresh namespaces: tcp_tw_reuse=0 -> {trial_text(off)}, 1 -> {trial_text(on)};"
            f" 2 -> {trial_text(loopback_only[0])} over a veth,"
            f" {trial_text(loopback_only[1])} over loopback",
        ),
        Part(
            "timestamps only make the reuse more likely (it works without them)",
            reused(no_stamps),
            f"tcp_tw_reuse=1 with tcp_timestamps=0 -> {trial_text(no_stamps)}",
        ),
    ]


def server_reuse_parts(scripted: dict[str, Any] | None) -> list[Part]:
    """The notes' two conditions for a server to reuse its TIME_WAIT for a new SYN."""
    names = (
        "a SYN with a higher sequence number than the old connection's reuses the server's"
        " TIME_WAIT",
        "with timestamps, a SYN with a newer timestamp reuses it",
        "either condition alone suffices",
    )
    probes = None if scripted is None else scripted.get("with_timestamps")
    if scripted is None or probes is None:
        why = (
            "not observable without root: it needs a scripted peer"
            if scripted is None
            else f"the scripted close did not reach TIME_WAIT: {scripted}"
        )
        return [Part(name, None if scripted is None else False, why) for name in names]
    by_label = {p["probe"]: p for p in [*probes, *scripted["without_timestamps"]]}

    def told(*labels: str) -> str:
        return "; ".join(f"{label} -> {by_label[label]['answer']}" for label in labels)

    plain, stamped = (
        ("lower seq", "higher seq"),
        (
            "lower seq, older timestamp",
            "lower seq, newer timestamp",
        ),
    )
    mixed = "higher seq, older timestamp"
    return [
        Part(
            names[0],
            by_label["higher seq"]["reused"] and not by_label["lower seq"]["reused"],
            f"no timestamps on the connection: {told(*plain)}",
        ),
        Part(
            names[1],
            by_label[stamped[1]]["reused"] and not by_label[stamped[0]]["reused"],
            f"timestamps on the connection: {told(*stamped)}",
        ),
        Part(
            names[2],
            by_label[mixed]["reused"],
            f"timestamps on the connection: {told(mixed, 'lower seq, no timestamp')}",
        ),
    ]


def check_c34(ctx: RunContext, scripted: dict[str, Any] | None = None) -> ClaimResult:
    host, trace = host_reuse(ctx)
    observed: dict[str, Any] = {"host_loopback": host}
    cases = namespace_reuse() if ctx.root else None
    if cases is not None:
        observed["namespaces"] = cases
    if scripted is not None:
        observed["scripted_server_time_wait"] = scripted
        trace = [
            *trace,
            "-- a scripted peer and the server's TIME_WAIT --",
            *scripted.get("trace", []),
        ]
    return judge_parts(
        NAME,
        "C34",
        [*judge_c34(cases, host), *server_reuse_parts(scripted)],
        observed,
        trace=trace,
        context={"host net.ipv4.tcp_tw_reuse": host["net.ipv4.tcp_tw_reuse"]},
    )


# --- C35: tcp_max_tw_buckets -------------------------------------------------------


def capped_time_wait(cap: int, count: int) -> dict[str, Any]:
    """Close `count` connections actively in a namespace allowing `cap` TIME_WAIT buckets."""
    with VethLink() as link:
        closer, peer = link.a, link.b
        closer.set_sysctl("net.ipv4.tcp_max_tw_buckets", cap)
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
        return {
            "net.ipv4.tcp_max_tw_buckets": sysctl("net.ipv4.tcp_max_tw_buckets", closer.netns),
            "active_closes": count,
            "time_wait_rows": len(rows),
            "counters": selected_delta(before, after, ["TcpExt.TW", "TcpExt.TCPTimeWaitOverflow"]),
        }


def check_c35(ctx: RunContext) -> ClaimResult:
    if not ctx.root:
        return skipped(NAME, "C35", "needs root: network namespaces with their own cap")
    capped = capped_time_wait(TIME_WAIT_CAP, CAPPED_CONNECTIONS)
    roomy = capped_time_wait(ROOMY_CAP, CAPPED_CONNECTIONS)
    observed = {
        **capped,
        f"tcp_max_tw_buckets={ROOMY_CAP}": roomy,
        "host_tcp_max_tw_buckets": sysctl("net.ipv4.tcp_max_tw_buckets"),
    }
    return judge_parts(NAME, "C35", judge_c35(capped, roomy), observed)


def judge_c35(capped: dict[str, Any], roomy: dict[str, Any]) -> list[Part]:
    """The cap binds when set below the closes and not when above: a controlled pair."""

    def seen(run: dict[str, Any]) -> str:
        return (
            f"tcp_max_tw_buckets={run['net.ipv4.tcp_max_tw_buckets']}: {run['active_closes']}"
            f" active closes left {run['time_wait_rows']} TIME_WAIT rows,"
            f" TCPTimeWaitOverflow +{run['counters'][OVERFLOW]}"
        )

    cap = int(capped["net.ipv4.tcp_max_tw_buckets"] or 0)
    rows, closes = capped["time_wait_rows"], capped["active_closes"]
    unbound = roomy["time_wait_rows"] == roomy["active_closes"] and not roomy["counters"][OVERFLOW]
    return [
        Part(
            "tcp_max_tw_buckets caps the number of TIME_WAIT sockets",
            0 < rows <= cap and unbound,
            f"{seen(capped)}; {seen(roomy)} (fresh namespaces)",
        ),
        Part(
            "the surplus are destroyed",
            capped["counters"][OVERFLOW] == closes - rows > 0,
            f"{closes - rows} closes found no bucket; TCPTimeWaitOverflow counted"
            f" {capped['counters'][OVERFLOW]}: the kernel skipped TIME_WAIT for them",
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


def syn_probe(state: ScriptedClose, label: str, seq: int, ts: int | None) -> dict[str, Any]:
    """A SYN on the TIME_WAIT's 4-tuple: does b open a new connection (SYN-ACK) or refuse it?"""
    options = timestamp_option(ts, 0) if ts is not None else b""
    sent = state.peer.send(state.server_port, seq & 0xFFFFFFFF, 0, SYN, options)
    synack = state.peer.expect(sent, lambda p: p.flags == "S.", timeout=0.5)
    others = [p.flags for p in state.peer.answers(sent) if p.flags != "S."]
    return {
        "probe": label,
        "seq_vs_old": "higher" if seq > state.seq else "lower",
        "timestamp_vs_old": None if ts is None else ("newer" if ts > (state.ts or 0) else "older"),
        "answer": "SYN-ACK: reused"
        if synack
        else (f"{FLAG_NAMES.get(others[0], others[0])}: refused" if others else "no answer"),
        "reused": synack is not None,
    }


def b_time_wait(link: VethLink, state: ScriptedClose) -> ProcTcpEntry | None:
    local, remote = (link.b.address, state.server_port), (STRANGER, state.peer.port)
    return time_wait_row(local, remote, link.b.netns)


def scripted_server_time_wait() -> dict[str, Any]:
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
                return {"scripted": "the handshake or b's FIN did not come"}
            row = b_time_wait(link, stamped)
            seen: dict[str, Any] = {"time_wait_held": row is not None}
            if row is None:
                return seen
            seen["retransmitted_fin"] = retransmitted_fin(link, stamped)
            old, ts = stamped.seq, stamped.ts or 0
            seen["with_timestamps"] = [
                syn_probe(stamped, "lower seq, no timestamp", old - 100_000, None),
                syn_probe(stamped, "lower seq, older timestamp", old - 100_000, ts - 50),
                syn_probe(stamped, "higher seq, older timestamp", old + 100_000, ts - 50),
                syn_probe(stamped, "lower seq, newer timestamp", old - 100_000, ts + 1000),
            ]
            old = plain.seq
            seen["without_timestamps"] = [
                syn_probe(plain, "lower seq", old - 100_000, None),
                syn_probe(plain, "higher seq", old + 100_000, None),
            ]
            seen["trace"] = short_trace(cap, port, limit=24)
            return seen


def retransmitted_fin(link: VethLink, state: ScriptedClose) -> dict[str, Any]:
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
    return {
        "timer_before_s": before,
        "acked_again": reack is not None,
        "timer_after_s": after,
        "timer_restarted": before is not None
        and after is not None
        and after >= before + TIMER_RESTART_MIN_S,
    }
