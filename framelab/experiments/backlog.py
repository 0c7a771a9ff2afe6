"""The listen backlog on Linux: SYN queue, accept queue, and what an overflow does.

C15  listen(N) and never accept(): of N+6 non-blocking clients, the accept
     queue takes min(N, somaxconn)+1 (TCP_INFO on the listener: tcpi_unacked is
     the queue, tcpi_sacked its limit); the others stay SYN_SENT because their
     SYNs are dropped silently, and they retransmit them (TCP_INFO; a capture
     as root). A client with TCP_USER_TIMEOUT gives up with ETIMEDOUT, so the
     run never waits for the default SYN retries. listen(100000) shows the
     somaxconn cap. TCP_DEFER_ACCEPT holds a handshake in the SYN queue until
     the client sends data, which lets the final ACK arrive while the accept
     queue is full: the client is ESTABLISHED, the server still SYN_RECV,
     until accept() makes room. As root, a namespace with
     tcp_abort_on_overflow=1 answers that ACK with RST instead.
C16  What bounds the SYN queue (SYN_RECV rows, again held by TCP_DEFER_ACCEPT):
     the listen backlog, with SYN cookies taking over beyond it when
     tcp_syncookies is on; as root, namespaces with tcp_syncookies=0/1 show
     when tcp_max_syn_backlog applies at all.

No SYN flood: a handful of connections per step, all on loopback.
"""

from __future__ import annotations

import select
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from framelab.experiments.capture import Capture
from framelab.experiments.context import RunContext
from framelab.experiments.netns import VethLink
from framelab.experiments.observe import (
    connections_on_port,
    errno_name,
    netstat_counters,
    selected_delta,
    sysctl,
    sysctls,
    tcp_info,
)
from framelab.experiments.pairs import gaps_ms, maybe_capture, recv_outcome, short_trace
from framelab.experiments.queues import (
    LOOPBACK,
    address_of,
    close_all,
    listener_in,
    poll_until,
    start_connect,
)
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, judge

NAME = "backlog"
SETTINGS = [
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_synack_retries",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_syn_linear_timeouts",
]
QUEUE_COUNTERS = [
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPSynRetrans",
    "TcpExt.SyncookiesSent",
    "TcpExt.SyncookiesRecv",
    "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.TCPReqQFullDrop",
]
#: clients beyond the backlog in the accept-queue step
EXTRA_CLIENTS = 6
#: how long completed handshakes are waited for: loopback completes them at once
HANDSHAKE_WAIT_S = 0.2
#: TCP_USER_TIMEOUT of the client that gives up instead of retrying for a minute
GIVE_UP_AFTER_MS = 1500
#: TCP_DEFER_ACCEPT (seconds): keeps completed handshakes in the SYN queue meanwhile
DEFER_ACCEPT_S = 5
#: a listen() backlog larger than any somaxconn default
HUGE_BACKLOG = 100_000
#: the namespace settings under which tcp_max_syn_backlog is compared
SMALL_MAX_SYN_BACKLOG = 8
LARGE_BACKLOG = 64
SYN_QUEUE_CLIENTS = 12


# --- observation helpers -----------------------------------------------------------


def queue_of(listener: socket.socket) -> dict[str, int]:
    """The accept queue as TCP_INFO tells it for a listener: length and limit."""
    info = tcp_info(listener)
    return {"length": info["unacked"], "limit": info["sacked"]}


def wait_connected(socks: list[socket.socket], timeout: float) -> set[socket.socket]:
    """Clients whose connect() finished (writable) within `timeout`."""
    done: set[socket.socket] = set()
    deadline = time.monotonic() + timeout
    while True:
        pending = [s for s in socks if s not in done]
        left = deadline - time.monotonic()
        if not pending or left <= 0:
            return done
        _, writable, _ = select.select([], pending, [], left)
        done.update(writable)


def client_states(socks: list[socket.socket]) -> dict[str, int]:
    return dict(Counter(tcp_info(s).state for s in socks))


def server_rows(port: int, netns: str | None = None) -> dict[str, int]:
    """States of the server-side rows (children and requests) of a listener's port."""
    rows = connections_on_port(port, netns)
    return dict(Counter(e.state for e in rows if e.local[1] == port and e.state != "LISTEN"))


def syn_times(cap: Capture | None, port: int) -> list[float]:
    if cap is None:
        return []
    return [p.time for p in cap.tcp(port) if p.sport == port and p.flags == "S"]


def section(title: str, lines: list[str]) -> list[str]:
    """Trace lines under a title line, or nothing when nothing was captured."""
    return [f"-- {title} --", *lines] if lines else []


def deferring_listener(netns: str | None, host: str, backlog: int) -> socket.socket:
    """A listener that keeps a handshake in its SYN queue until the client sends data."""
    listener = listener_in(netns, host, backlog)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)
    return listener


# --- C15 step 1: the accept queue overflows ----------------------------------------


@dataclass
class Overflow:
    """listen(backlog) without accept(), and the clients that tried to connect."""

    backlog: int
    listener: socket.socket
    clients: list[socket.socket]
    give_up: socket.socket
    started: float

    @property
    def port(self) -> int:
        return address_of(self.listener)[1]


def connect_beyond_backlog(listener: socket.socket, backlog: int) -> Overflow:
    """backlog + EXTRA_CLIENTS non-blocking connects; the last one will give up early."""
    address = address_of(listener)
    started = time.monotonic()
    clients = [start_connect(None, address) for _ in range(backlog + EXTRA_CLIENTS - 1)]
    give_up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    clients.append(give_up)
    give_up.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, GIVE_UP_AFTER_MS)
    give_up.setblocking(False)
    give_up.connect_ex(address)  # last, so the queue is already full for it
    return Overflow(backlog, listener, clients, give_up, started)


def observe_give_up(overflow: Overflow) -> dict[str, Any]:
    """Wait for the TCP_USER_TIMEOUT client's connect() to fail (the event is writability)."""
    select.select([], [overflow.give_up], [], GIVE_UP_AFTER_MS / 1000 + 2.0)
    error = overflow.give_up.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return {
        "TCP_USER_TIMEOUT_ms": GIVE_UP_AFTER_MS,
        "connect_error": errno_name(error) if error else None,
        "after_ms": round((time.monotonic() - overflow.started) * 1000, 1),
        "syn_retransmits": tcp_info(overflow.give_up)["total_retrans"],
    }


def observe_retransmits(
    waiting: list[socket.socket], want: int, timeout: float, cap: Capture | None
) -> dict[str, Any]:
    """How the SYN_SENT clients retry: retransmissions, RTO, and SYN gaps when captured."""
    if not waiting:
        return {"clients": 0, "still_syn_sent": 0, "syn_retransmits_each": []}

    def retried() -> bool | None:
        return True if min(tcp_info(s)["total_retrans"] for s in waiting) >= want else None

    poll_until(retried, timeout)
    first = waiting[0]
    port = address_of(first)[1]
    if cap is not None:  # the capture thread may not have the last SYN yet
        cap.wait_for(lambda _: len(syn_times(cap, port)) > want, 0.5)
    return {
        "clients": len(waiting),
        "still_syn_sent": sum(tcp_info(s).state == "SYN_SENT" for s in waiting),
        "syn_retransmits_each": sorted({tcp_info(s)["total_retrans"] for s in waiting}),
        "rto_ms_now": tcp_info(first)["rto"] // 1000,
        "captured_syn_gaps_ms": gaps_ms(syn_times(cap, port)) or None,
        "rst_seen": None if cap is None else any(p.has("R") for p in cap.tcp()),
    }


def accept_queue_overflow(ctx: RunContext) -> tuple[dict[str, Any], list[str]]:
    backlog = 2 if ctx.quick else 4
    before = netstat_counters()
    listener = listener_in(None, LOOPBACK, backlog)
    opened = [listener]
    try:
        with maybe_capture(ctx.can_capture, [address_of(listener)[1]]) as cap:
            overflow = connect_beyond_backlog(listener, backlog)
            opened += overflow.clients
            completed = wait_connected(overflow.clients, HANDSHAKE_WAIT_S)
            queue = queue_of(listener)
            proc_listener = [e for e in connections_on_port(overflow.port) if e.state == "LISTEN"]
            children = server_rows(overflow.port)
            states = client_states(overflow.clients)
            waiting = [s for s in overflow.clients if s not in completed]
            give_up = observe_give_up(overflow)
            others = [s for s in waiting if s is not overflow.give_up]
            retries = observe_retransmits(others, 1 if ctx.quick else 2, 2.5, cap)
        observed = {
            "backlog": backlog,
            "clients": len(overflow.clients),
            "listener_tcp_info": {
                "tcpi_unacked (queue)": queue["length"],
                "tcpi_sacked (limit)": queue["limit"],
            },
            "listener_proc_rx_queue": proc_listener[0].rx_queue if proc_listener else None,
            "client_states": states,
            "server_side_rows": children,
            "established_on_client_only": states.get("ESTABLISHED", 0) - queue["length"],
            "dropped_clients_retry": retries,
            "give_up_client": give_up,
            "counters": selected_delta(before, netstat_counters(), QUEUE_COUNTERS),
        }
        trace = short_trace(cap, address_of(others[0])[1]) if others else []
        return observed, trace
    finally:
        close_all(opened)


def somaxconn_cap() -> dict[str, Any]:
    listener = listener_in(None, LOOPBACK, HUGE_BACKLOG)
    try:
        return {
            "listen_backlog": HUGE_BACKLOG,
            "queue_limit": queue_of(listener)["limit"],
            "net.core.somaxconn": sysctl("net.core.somaxconn"),
        }
    finally:
        listener.close()


# --- C15 step 2: an ACK that arrives when the queue is full -------------------------


def connect_and_send(netns: str | None, address: tuple[str, int]) -> socket.socket:
    """A client whose data completes its deferred handshake at once."""
    sock = start_connect(netns, address)
    wait_connected([sock], 1.0)
    sock.send(b"x")
    return sock


def ack_into_full_queue(netns: str | None, cap: Capture | None) -> dict[str, Any]:
    """Complete a handshake while the accept queue is full; then make room.

    Two clients fill the queue to the backlog, two more handshake while there
    is still room (held in SYN_RECV by TCP_DEFER_ACCEPT). The first of those
    sends data and fills the queue (backlog+1); the second then sends data:
    its completing segment meets a full queue.
    """
    backlog = 2
    listener = deferring_listener(netns, LOOPBACK, backlog)
    address = address_of(listener)
    if cap is not None:
        cap.add_port(address[1])
    opened = [listener]
    try:
        opened += [connect_and_send(netns, address) for _ in range(backlog)]
        poll_until(lambda: True if queue_of(listener)["length"] == backlog else None, 1.0)
        late = [start_connect(netns, address) for _ in range(2)]
        opened += late
        wait_connected(late, 1.0)
        late[0].send(b"x")
        poll_until(lambda: True if queue_of(listener)["length"] > backlog else None, 1.0)
        victim = late[1]
        victim_address = address_of(victim)
        before = netstat_counters(netns)
        victim.send(b"y")
        server_side = [
            e for e in connections_on_port(address[1], netns) if e.remote == victim_address
        ]
        after = netstat_counters(netns)
        observed: dict[str, Any] = {
            "abort_on_overflow": sysctl("net.ipv4.tcp_abort_on_overflow", netns),
            "queue": queue_of(listener),
            "client_state": tcp_info(victim).state,
            "client_unacked_segments": tcp_info(victim)["unacked"],
            "server_state": server_side[0].state if server_side else None,
            "counters": selected_delta(before, after, QUEUE_COUNTERS[:2]),
            "client_port": victim_address[1],
        }
        if observed["abort_on_overflow"] == "1":
            observed["client_recv"] = recv_outcome(victim, timeout=1.0)
            return observed
        listener.accept()[0].close()
        made_room = time.monotonic()
        joined = poll_until(lambda: True if tcp_info(victim)["unacked"] == 0 else None, 2.0)
        observed["after_one_accept"] = {
            "client_data_acked": bool(joined),
            "joined_after_ms": round((time.monotonic() - made_room) * 1000, 1),
            "queue": queue_of(listener),
        }
        return observed
    finally:
        close_all(opened)


def abort_on_overflow_in_namespace() -> tuple[dict[str, Any], list[str]]:
    with VethLink() as link:
        host = link.a
        host.set_sysctl("net.ipv4.tcp_abort_on_overflow", 1)
        with Capture("lo", ports=[0], netns=host.netns) as cap:
            observed = ack_into_full_queue(host.netns, cap)
            trace = short_trace(cap, observed["client_port"])
        observed["rst_to_client"] = any(
            p.has("R") and p.dport == observed["client_port"] for p in cap.tcp()
        )
        return observed, trace


def describe_c15(
    settings: dict[str, str | None],
    overflow: dict[str, Any],
    cap_check: dict[str, Any],
    late_ack: dict[str, Any],
) -> str:
    """One sentence of what the accept-queue steps showed."""
    backlog = overflow["backlog"]
    queued = overflow["listener_tcp_info"]["tcpi_unacked (queue)"]
    retry = overflow["dropped_clients_retry"]
    captured = retry.get("captured_syn_gaps_ms")
    joined = late_ack.get("after_one_accept", {})
    return (
        f"listen({backlog}) without accept(): {queued} of {overflow['clients']} connections"
        f" entered the accept queue (backlog{queued - backlog:+d}; listen({HUGE_BACKLOG}) is"
        f" capped at somaxconn={cap_check['queue_limit']}); {retry['clients'] + 1} stayed"
        f" SYN_SENT, their SYNs dropped without an answer and retransmitted"
        f" {'-'.join(map(str, retry['syn_retransmits_each']))} times so far"
        f" (RTO now {retry.get('rto_ms_now')} ms"
        + (f", SYNs {captured} ms apart" if captured else "")
        + f", tcp_syn_linear_timeouts={settings['net.ipv4.tcp_syn_linear_timeouts']});"
        f" a client with TCP_USER_TIMEOUT failed with"
        f" {overflow['give_up_client']['connect_error']}; a handshake completed into the"
        f" full queue left the client {late_ack['client_state']} and the server"
        f" {late_ack['server_state']}"
        + (
            f", until one accept() let it in {joined['joined_after_ms']} ms later"
            if joined.get("client_data_acked")
            else ""
        )
    )


def check_c15(ctx: RunContext) -> ClaimResult:
    settings = sysctls(SETTINGS)
    overflow, trace = accept_queue_overflow(ctx)
    cap_check = somaxconn_cap()
    # port 0 matches nothing: the capture keeps only the port the step adds
    with maybe_capture(ctx.can_capture, [0]) as cap:
        late_ack = ack_into_full_queue(None, cap)
    trace = [
        *section("accept queue full: a client's SYNs, dropped and retransmitted", trace[:8]),
        *section(
            "TCP_DEFER_ACCEPT: data completes the handshake into a full queue",
            short_trace(cap, late_ack["client_port"])[:10],
        ),
    ]
    observed: dict[str, Any] = {
        **settings,
        "accept_queue": overflow,
        "somaxconn_cap": cap_check,
        "ack_into_full_queue": late_ack,
    }
    if ctx.root:
        abort, abort_trace = abort_on_overflow_in_namespace()
        observed["tcp_abort_on_overflow=1 (namespace)"] = abort
        trace += section("namespace, tcp_abort_on_overflow=1: the same", abort_trace[:9])
    backlog = overflow["backlog"]
    somaxconn = int(settings["net.core.somaxconn"] or 0)
    queued = overflow["listener_tcp_info"]["tcpi_unacked (queue)"]
    retry = overflow["dropped_clients_retry"]
    silently_dropped = (
        retry["still_syn_sent"] == retry["clients"] > 0
        and min(retry["syn_retransmits_each"]) >= 1
        and overflow["give_up_client"]["connect_error"] == "ETIMEDOUT"
    )
    holds = (
        queued in (min(backlog, somaxconn), min(backlog, somaxconn) + 1)
        and silently_dropped
        and cap_check["queue_limit"] == min(HUGE_BACKLOG, somaxconn)
    )
    summary = describe_c15(settings, overflow, cap_check, late_ack)
    if ctx.root:
        summary += (
            f"; with tcp_abort_on_overflow=1 that client got {abort.get('client_recv')}"
            f" (RST seen: {abort['rst_to_client']})"
        )
    return judge(
        NAME,
        "C15",
        holds,
        observed,
        confirmed=summary,
        differs=f"not as claimed: {summary}",
        trace=trace,
    )


# --- C16: what bounds the SYN queue -----------------------------------------------


def fill_syn_queue(netns: str | None, backlog: int, clients: int) -> dict[str, Any]:
    """Handshakes held in the SYN queue by TCP_DEFER_ACCEPT: how many does it keep?"""
    listener = deferring_listener(netns, LOOPBACK, backlog)
    address = address_of(listener)
    opened = [listener]
    try:
        before = netstat_counters(netns)
        socks = [start_connect(netns, address) for _ in range(clients)]
        opened += socks
        wait_connected(socks, HANDSHAKE_WAIT_S)
        rows = server_rows(address[1], netns)
        return {
            "backlog": backlog,
            "clients": clients,
            "syn_queue (SYN_RECV rows)": rows.get("SYN_RECV", 0),
            "accept_queue": queue_of(listener)["length"],
            "client_states": client_states(socks),
            "counters": selected_delta(before, netstat_counters(netns), QUEUE_COUNTERS),
            **sysctls(
                ["net.ipv4.tcp_syncookies", "net.ipv4.tcp_max_syn_backlog", "net.core.somaxconn"],
                netns,
            ),
        }
    finally:
        close_all(opened)


def namespace_syn_queue(syncookies: int) -> dict[str, Any]:
    """A large backlog, a small tcp_max_syn_backlog: which one stops the SYNs?"""
    with VethLink() as link:
        host = link.a
        host.set_sysctl("net.ipv4.tcp_syncookies", syncookies)
        host.set_sysctl("net.ipv4.tcp_max_syn_backlog", SMALL_MAX_SYN_BACKLOG)
        return fill_syn_queue(host.netns, LARGE_BACKLOG, SYN_QUEUE_CLIENTS)


def half_open_lifetime_s(synack_retries: int) -> int:
    """1 + 2 + 4 + ... s: the SYN-ACK timer doubles for each of tcp_synack_retries."""
    return (1 << (synack_retries + 1)) - 1


def which_rules_apply(settings: dict[str, str | None]) -> dict[str, Any]:
    """The kernel's rules, instantiated with this machine's settings."""
    somaxconn = settings["net.core.somaxconn"]
    cookies = int(settings["net.ipv4.tcp_syncookies"] or 0)
    abort = int(settings["net.ipv4.tcp_abort_on_overflow"] or 0)
    max_syn = int(settings["net.ipv4.tcp_max_syn_backlog"] or 0)
    retries = int(settings["net.ipv4.tcp_synack_retries"] or 0)
    return {
        "syn_queue_limit": f"min(listen backlog, somaxconn={somaxconn})+1 per listener",
        "syn_queue_full": {0: "SYN dropped", 1: "SYN cookie instead of a queue entry"}.get(
            cookies, "SYN cookies for every SYN"
        ),
        "tcp_max_syn_backlog": (
            f"ignored (tcp_syncookies={cookies})"
            if cookies
            else f"unproven peers' SYNs dropped past 3/4 of {max_syn} entries"
        ),
        "accept_queue_full": (
            "new SYNs dropped; a completing ACK "
            + ("dropped, the client retransmits" if abort == 0 else "answered with RST")
        ),
        "half_open_lifetime_s": half_open_lifetime_s(retries),
    }


def check_c16(ctx: RunContext) -> ClaimResult:
    settings = sysctls(SETTINGS)
    backlog = 2 if ctx.quick else 4
    clients = backlog + 4
    host = fill_syn_queue(None, backlog, clients)
    observed: dict[str, Any] = {
        **settings,
        "which_applies": which_rules_apply(settings),
        "host_loopback": host,
    }
    syn_queue = host["syn_queue (SYN_RECV rows)"]
    # Had tcp_max_syn_backlog (far above `clients`) been the bound, every SYN would be queued.
    holds = syn_queue == clients
    cookies_sent = host["counters"]["TcpExt.SyncookiesSent"]
    detail = (
        f"listen({backlog}) kept {syn_queue} of {clients} handshakes in the SYN queue"
        f" (tcp_max_syn_backlog={settings['net.ipv4.tcp_max_syn_backlog']}); with"
        f" tcp_syncookies={settings['net.ipv4.tcp_syncookies']} the rest "
        + (f"got SYN cookies (SyncookiesSent +{cookies_sent})" if cookies_sent else "were dropped")
        + f" and {host['client_states'].get('ESTABLISHED', 0)} of {clients} clients connected"
    )
    if ctx.root:
        without, with_cookies = namespace_syn_queue(0), namespace_syn_queue(1)
        observed["namespace_syncookies=0"] = without
        observed["namespace_syncookies=1"] = with_cookies
        holds = holds and with_cookies["syn_queue (SYN_RECV rows)"] < SYN_QUEUE_CLIENTS
        detail += (
            f"; in a namespace with listen({LARGE_BACKLOG}) and tcp_max_syn_backlog="
            f"{SMALL_MAX_SYN_BACKLOG}: syncookies=0 kept"
            f" {without['syn_queue (SYN_RECV rows)']} of {SYN_QUEUE_CLIENTS} (the rest"
            f" SYN_SENT), syncookies=1 kept {with_cookies['syn_queue (SYN_RECV rows)']}:"
            " tcp_max_syn_backlog applies only with syncookies off"
        )
    return judge(
        NAME,
        "C16",
        holds,
        observed,
        confirmed=f"tcp_max_syn_backlog bounded the SYN queue: {detail}",
        differs=(
            f"the SYN queue is bounded by the listen backlog, not by tcp_max_syn_backlog:"
            f" {detail}. SYN cookies let connections complete without a queue entry;"
            f" tcp_synack_retries="
            f"{settings['net.ipv4.tcp_synack_retries']} keeps an unanswered half-open entry"
            f" about {half_open_lifetime_s(int(settings['net.ipv4.tcp_synack_retries'] or 0))} s"
            " (computed, not waited for)"
        ),
    )


def run(ctx: RunContext) -> list[ClaimResult]:
    return [check_c15(ctx), check_c16(ctx)]


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C15", "C16"),
    needs_root="partly",
    description=(
        "listen() backlog: the accept queue holds backlog+1, overflowing SYNs are dropped"
        " silently and retried; the SYN queue is bounded by the backlog, then SYN cookies"
    ),
    run=run,
)
