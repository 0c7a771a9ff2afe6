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

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts
from framelab.lab.accept_queue import (
    OVERFLOW_COUNTERS,
    ack_into_full_queue,
    deferring_listener,
    queue_of,
    wait_connected,
)
from framelab.lab.capture import Capture
from framelab.lab.kernel import (
    connections_on_port,
    errno_name,
    netstat_counters,
    selected_delta,
    sysctl,
    sysctls,
    tcp_info,
)
from framelab.lab.netns import VethLink, socket_in
from framelab.lab.packets import SYN, ipv4_header, tcp_segment
from framelab.lab.sockets import (
    LOOPBACK,
    address_of,
    close_all,
    listening_socket,
    start_connect,
)
from framelab.lab.timing import gaps_ms
from framelab.lab.traces import maybe_capture, short_trace
from framelab.lab.waiting import poll_until

NAME = "backlog"
SOMAXCONN = "net.core.somaxconn"
MAX_SYN_BACKLOG = "net.ipv4.tcp_max_syn_backlog"
SYNCOOKIES = "net.ipv4.tcp_syncookies"
SYNACK_RETRIES = "net.ipv4.tcp_synack_retries"
ABORT_ON_OVERFLOW = "net.ipv4.tcp_abort_on_overflow"
SYN_LINEAR_TIMEOUTS = "net.ipv4.tcp_syn_linear_timeouts"
SETTINGS = [
    SOMAXCONN,
    MAX_SYN_BACKLOG,
    SYNCOOKIES,
    SYNACK_RETRIES,
    ABORT_ON_OVERFLOW,
    "net.ipv4.tcp_syn_retries",
    SYN_LINEAR_TIMEOUTS,
]
QUEUE_COUNTERS = [
    *OVERFLOW_COUNTERS,
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
#: a listen() backlog larger than any somaxconn default
HUGE_BACKLOG = 100_000
#: the namespace settings under which tcp_max_syn_backlog is compared
SMALL_MAX_SYN_BACKLOG = 8
LARGE_BACKLOG = 64
SYN_QUEUE_CLIENTS = 12
#: a source address on the veth's subnet that no namespace owns (answers go nowhere)
STRANGER = "10.231.0.3"
STRANGER_PORT = 40001


# --- observation helpers -----------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class GiveUpClient:
    """The client with TCP_USER_TIMEOUT: how its connect() into the full queue ended."""

    user_timeout_ms: int
    connect_error: str | None  # None: connect() reported no error
    after_ms: float
    syn_retransmits: int

    def observed(self) -> dict[str, Any]:
        return {
            "TCP_USER_TIMEOUT_ms": self.user_timeout_ms,
            "connect_error": self.connect_error,
            "after_ms": self.after_ms,
            "syn_retransmits": self.syn_retransmits,
        }


@dataclass(frozen=True, slots=True)
class SynRetries:
    """How the clients the full queue left in SYN_SENT retry (with none, only the counts)."""

    clients: int
    still_syn_sent: int
    syn_retransmits_each: list[int]
    rto_ms_now: int | None = None
    captured_syn_gaps_ms: list[float] | None = None  # None: nothing captured
    rst_seen: bool | None = None  # None: nothing captured

    def observed(self) -> dict[str, Any]:
        seen: dict[str, Any] = {
            "clients": self.clients,
            "still_syn_sent": self.still_syn_sent,
            "syn_retransmits_each": self.syn_retransmits_each,
        }
        if not self.clients:
            return seen
        return {
            **seen,
            "rto_ms_now": self.rto_ms_now,
            "captured_syn_gaps_ms": self.captured_syn_gaps_ms,
            "rst_seen": self.rst_seen,
        }


@dataclass(frozen=True, slots=True)
class OverflowRun:
    """listen(backlog) never accepting, backlog + EXTRA_CLIENTS clients: where each ended."""

    backlog: int
    clients: int
    queue_length: int  # tcpi_unacked of the listener
    queue_limit: int  # tcpi_sacked of the listener
    listener_proc_rx_queue: int | None
    client_states: dict[str, int]
    server_side_rows: dict[str, int]
    retries: SynRetries
    give_up: GiveUpClient
    counters: dict[str, int]

    def observed(self) -> dict[str, Any]:
        return {
            "backlog": self.backlog,
            "clients": self.clients,
            "listener_tcp_info": {
                "tcpi_unacked (queue)": self.queue_length,
                "tcpi_sacked (limit)": self.queue_limit,
            },
            "listener_proc_rx_queue": self.listener_proc_rx_queue,
            "client_states": self.client_states,
            "server_side_rows": self.server_side_rows,
            "established_on_client_only": established(self.client_states) - self.queue_length,
            "dropped_clients_retry": self.retries.observed(),
            "give_up_client": self.give_up.observed(),
            "counters": self.counters,
        }


@dataclass(frozen=True, slots=True)
class SomaxconnCap:
    """The queue limit a huge listen() backlog got, and the somaxconn that capped it."""

    listen_backlog: int
    queue_limit: int
    somaxconn: str | None

    def observed(self) -> dict[str, Any]:
        return {
            "listen_backlog": self.listen_backlog,
            "queue_limit": self.queue_limit,
            SOMAXCONN: self.somaxconn,
        }


@dataclass(frozen=True, slots=True)
class AbortOnOverflow:
    """A handshake completed into a full queue where tcp_abort_on_overflow=1."""

    handshake: dict[str, Any]  # what ack_into_full_queue saw
    rst_to_client: bool

    def observed(self) -> dict[str, Any]:
        return {**self.handshake, "rst_to_client": self.rst_to_client}


def established(states: dict[str, int]) -> int:
    return states.get("ESTABLISHED", 0)


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


def observe_give_up(overflow: Overflow) -> GiveUpClient:
    """Wait for the TCP_USER_TIMEOUT client's connect() to fail (the event is writability)."""
    select.select([], [overflow.give_up], [], GIVE_UP_AFTER_MS / 1000 + 2.0)
    error = overflow.give_up.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return GiveUpClient(
        user_timeout_ms=GIVE_UP_AFTER_MS,
        connect_error=errno_name(error) if error else None,
        after_ms=round((time.monotonic() - overflow.started) * 1000, 1),
        syn_retransmits=tcp_info(overflow.give_up)["total_retrans"],
    )


def observe_retransmits(
    waiting: list[socket.socket], want: int, timeout: float, cap: Capture | None
) -> SynRetries:
    """How the SYN_SENT clients retry: retransmissions, RTO, and SYN gaps when captured."""
    if not waiting:
        return SynRetries(clients=0, still_syn_sent=0, syn_retransmits_each=[])

    def retried() -> bool | None:
        return True if min(tcp_info(s)["total_retrans"] for s in waiting) >= want else None

    poll_until(retried, timeout)
    first = waiting[0]
    port = address_of(first)[1]
    if cap is not None:  # the capture thread may not have the last SYN yet
        cap.wait_for(lambda _: len(syn_times(cap, port)) > want, 0.5)
    return SynRetries(
        clients=len(waiting),
        still_syn_sent=sum(tcp_info(s).state == "SYN_SENT" for s in waiting),
        syn_retransmits_each=sorted({tcp_info(s)["total_retrans"] for s in waiting}),
        rto_ms_now=tcp_info(first)["rto"] // 1000,
        captured_syn_gaps_ms=gaps_ms(syn_times(cap, port)) or None,
        rst_seen=None if cap is None else any(p.has("R") for p in cap.tcp()),
    )


def accept_queue_overflow(ctx: RunContext) -> tuple[OverflowRun, list[str]]:
    backlog = 2 if ctx.quick else 4
    before = netstat_counters()
    listener = listening_socket(LOOPBACK, backlog)
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
        run = OverflowRun(
            backlog=backlog,
            clients=len(overflow.clients),
            queue_length=queue["length"],
            queue_limit=queue["limit"],
            listener_proc_rx_queue=proc_listener[0].rx_queue if proc_listener else None,
            client_states=states,
            server_side_rows=children,
            retries=retries,
            give_up=give_up,
            counters=selected_delta(before, netstat_counters(), QUEUE_COUNTERS),
        )
        trace = short_trace(cap, address_of(others[0])[1]) if others else []
        return run, trace
    finally:
        close_all(opened)


def somaxconn_cap() -> SomaxconnCap:
    listener = listening_socket(LOOPBACK, HUGE_BACKLOG)
    try:
        return SomaxconnCap(HUGE_BACKLOG, queue_of(listener)["limit"], sysctl(SOMAXCONN))
    finally:
        listener.close()


# --- C15 step 2: an ACK that arrives when the queue is full -------------------------


def abort_on_overflow_in_namespace() -> tuple[AbortOnOverflow, list[str]]:
    with VethLink() as link:
        host = link.a
        host.set_sysctl(ABORT_ON_OVERFLOW, 1)
        with Capture("lo", ports=[0], netns=host.netns) as cap:
            handshake = ack_into_full_queue(host.netns, cap)
            trace = short_trace(cap, handshake["client_port"])
        rst = any(p.has("R") and p.dport == handshake["client_port"] for p in cap.tcp())
        return AbortOnOverflow(handshake, rst), trace


def describe_c15(
    settings: dict[str, str | None],
    overflow: OverflowRun,
    cap_check: SomaxconnCap,
    late_ack: dict[str, Any],
) -> str:
    """One sentence of what the accept-queue steps showed."""
    backlog = overflow.backlog
    queued = overflow.queue_length
    retry = overflow.retries
    captured = retry.captured_syn_gaps_ms
    joined = late_ack.get("after_one_accept", {})
    return (
        f"listen({backlog}) without accept(): {queued} of {overflow.clients} connections"
        f" entered the accept queue (backlog{queued - backlog:+d}; listen({HUGE_BACKLOG}) is"
        f" capped at somaxconn={cap_check.queue_limit}); {retry.clients + 1} stayed"
        f" SYN_SENT, their SYNs dropped without an answer and retransmitted"
        f" {'-'.join(map(str, retry.syn_retransmits_each))} times so far"
        f" (RTO now {retry.rto_ms_now} ms"
        + (f", SYNs {captured} ms apart" if captured else "")
        + f", tcp_syn_linear_timeouts={settings[SYN_LINEAR_TIMEOUTS]});"
        f" a client with TCP_USER_TIMEOUT failed with"
        f" {overflow.give_up.connect_error}; a handshake completed into the"
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
        "accept_queue": overflow.observed(),
        "somaxconn_cap": cap_check.observed(),
        "ack_into_full_queue": late_ack,
    }
    abort: AbortOnOverflow | None = None
    if ctx.root:
        abort, abort_trace = abort_on_overflow_in_namespace()
        observed["tcp_abort_on_overflow=1 (namespace)"] = abort.observed()
        trace += section("namespace, tcp_abort_on_overflow=1: the same", abort_trace[:9])
    syn_queue = fill_syn_queue(None, overflow.backlog, overflow.backlog + 4)
    observed["syn_queue"] = syn_queue.observed()
    return judge_parts(
        NAME,
        "C15",
        judge_c15(overflow, cap_check, syn_queue, abort),
        observed,
        trace=trace,
        context={
            "late ACK into the full queue": describe_c15(settings, overflow, cap_check, late_ack)
        },
    )


def judge_c15(
    overflow: OverflowRun,
    cap_check: SomaxconnCap,
    syn_queue: SynQueueRun,
    abort: AbortOnOverflow | None,
) -> list[Part]:
    """The claim's three statements: a SYN queue, an accept queue of `backlog`, drops."""
    backlog = overflow.backlog
    somaxconn = int(cap_check.somaxconn or 0)
    limit = min(backlog, somaxconn)
    queued = overflow.queue_length
    retry = overflow.retries
    half_open = syn_queue.syn_recv_rows
    silently_dropped = (
        retry.still_syn_sent == retry.clients > 0
        and min(retry.syn_retransmits_each, default=0) >= 1
        and overflow.give_up.connect_error == "ETIMEDOUT"
    )
    captured = retry.captured_syn_gaps_ms
    dropped = (
        f"{retry.still_syn_sent} of {retry.clients} later clients stayed SYN_SENT, their"
        f" SYNs unanswered and retransmitted {retry.syn_retransmits_each} times"
        + (f" ({captured} ms apart)" if captured else "")
        + f"; a client with TCP_USER_TIMEOUT failed with {overflow.give_up.connect_error}"
    )
    if abort is not None:
        dropped += (
            f"; with tcp_abort_on_overflow=1 (a namespace) a handshake completed into the full"
            f" queue got {abort.handshake.get('client_recv')} instead"
            f" ({'an RST was' if abort.rst_to_client else 'no RST'} captured)"
        )
    return [
        Part(
            "half-open connections wait in a SYN queue (SYN_RECV)",
            half_open > 0,
            f"{half_open} SYN_RECV entries for {syn_queue.clients} handshakes held by"
            f" TCP_DEFER_ACCEPT on listen({syn_queue.backlog}) (tcp_syncookies="
            f"{syn_queue.syncookies}, SyncookiesSent"
            f" +{syn_queue.counters['TcpExt.SyncookiesSent']})",
        ),
        Part(
            "completed connections wait in an accept queue as long as the listen() backlog",
            queued in (limit, limit + 1) and cap_check.queue_limit == min(HUGE_BACKLOG, somaxconn),
            f"listen({backlog}) without accept(): {queued} of {overflow.clients} connections"
            f" queued (backlog{queued - backlog:+d}); listen({HUGE_BACKLOG}) got a limit of"
            f" {cap_check.queue_limit} (somaxconn={somaxconn})",
        ),
        Part("when it is full, new connections are dropped", silently_dropped, dropped),
    ]


# --- C16: what bounds the SYN queue -----------------------------------------------


@dataclass(frozen=True, slots=True)
class SynQueueRun:
    """Handshakes held in the SYN queue by TCP_DEFER_ACCEPT, and how many it kept."""

    backlog: int
    clients: int
    syn_recv_rows: int
    accept_queue: int
    client_states: dict[str, int]
    counters: dict[str, int]
    syncookies: str | None
    max_syn_backlog: str | None
    somaxconn: str | None

    def observed(self) -> dict[str, Any]:
        return {
            "backlog": self.backlog,
            "clients": self.clients,
            "syn_queue (SYN_RECV rows)": self.syn_recv_rows,
            "accept_queue": self.accept_queue,
            "client_states": self.client_states,
            "counters": self.counters,
            SYNCOOKIES: self.syncookies,
            MAX_SYN_BACKLOG: self.max_syn_backlog,
            SOMAXCONN: self.somaxconn,
        }


@dataclass(frozen=True, slots=True)
class UnansweredSynAck:
    """A half-open entry whose SYN-ACKs nobody answers: how often it resends, how long it lives."""

    synack_retries: str | None
    syn_acks_sent: int
    syn_ack_gaps_ms: list[float]
    half_open_lived_s: float

    def observed(self) -> dict[str, Any]:
        return {
            SYNACK_RETRIES: self.synack_retries,
            "syn_acks_sent": self.syn_acks_sent,
            "syn_ack_gaps_ms": self.syn_ack_gaps_ms,
            "half_open_lived_s": self.half_open_lived_s,
        }


@dataclass(frozen=True, slots=True)
class ControlledSynQueue:
    """Every setting C16 compares, each measured in its own fresh namespace."""

    no_cookies_small_max: SynQueueRun  # tcp_syncookies=0, tcp_max_syn_backlog small
    no_cookies_large_max: SynQueueRun
    cookies_small_max: SynQueueRun
    no_cookies_full: SynQueueRun  # listen(2) and more clients than it holds
    cookies_full: SynQueueRun
    no_synack_retries: UnansweredSynAck
    one_synack_retry: UnansweredSynAck

    def observed(self) -> dict[str, Any]:
        return {
            "cookies=0, small": self.no_cookies_small_max.observed(),
            "cookies=0, large": self.no_cookies_large_max.observed(),
            "cookies=1, small": self.cookies_small_max.observed(),
            "cookies=0, full": self.no_cookies_full.observed(),
            "cookies=1, full": self.cookies_full.observed(),
            "synack_retries=0": self.no_synack_retries.observed(),
            "synack_retries=1": self.one_synack_retry.observed(),
        }


def fill_syn_queue(netns: str | None, backlog: int, clients: int) -> SynQueueRun:
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
        return SynQueueRun(
            backlog=backlog,
            clients=clients,
            syn_recv_rows=rows.get("SYN_RECV", 0),
            accept_queue=queue_of(listener)["length"],
            client_states=client_states(socks),
            counters=selected_delta(before, netstat_counters(netns), QUEUE_COUNTERS),
            syncookies=sysctl(SYNCOOKIES, netns),
            max_syn_backlog=sysctl(MAX_SYN_BACKLOG, netns),
            somaxconn=sysctl(SOMAXCONN, netns),
        )
    finally:
        close_all(opened)


def namespace_syn_queue(
    syncookies: int,
    max_syn_backlog: int,
    backlog: int = LARGE_BACKLOG,
    clients: int = SYN_QUEUE_CLIENTS,
) -> SynQueueRun:
    """The SYN queue in a fresh namespace with these settings."""
    with VethLink() as link:
        host = link.a
        host.set_sysctl(SYNCOOKIES, syncookies)
        host.set_sysctl(MAX_SYN_BACKLOG, max_syn_backlog)
        return fill_syn_queue(host.netns, backlog, clients)


def half_open_lifetime_s(synack_retries: int) -> int:
    """Expected: 1 + 2 + 4 + ... s, the SYN-ACK timer doubling for each of tcp_synack_retries."""
    return (1 << (synack_retries + 1)) - 1


def unanswered_synack(retries: int) -> UnansweredSynAck:
    """A SYN that never gets its ACK, with tcp_synack_retries=`retries` at the server.

    The SYN comes raw from STRANGER (an address no namespace owns; b reaches
    it through a's MAC), so nobody answers b's SYN-ACKs and nobody resets
    them. Counted: the SYN-ACKs b sends and how long its SYN_RECV entry lives.
    """
    with VethLink() as link:
        link.b.set_sysctl(SYNACK_RETRIES, retries)
        mac = link.a.run("cat", f"/sys/class/net/{link.a.ifname}/address").stdout.strip()
        link.b.run("ip", "neigh", "replace", STRANGER, "lladdr", mac, "dev", link.b.ifname)
        listener = listening_socket(link.b.address, 8, netns=link.b.netns)
        raw = socket_in(link.a.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        port = address_of(listener)[1]
        with listener, raw, Capture(link.b.ifname, ports=[port], netns=link.b.netns) as cap:
            segment = tcp_segment((STRANGER, STRANGER_PORT), (link.b.address, port), 1000, 0, SYN)
            packet = ipv4_header(STRANGER, link.b.address, socket.IPPROTO_TCP, len(segment), 0, 0)
            sent_at = time.monotonic()
            raw.sendto(packet + segment, (link.b.address, 0))

            def gone() -> bool | None:
                rows = [e for e in connections_on_port(port, link.b.netns) if e.state == "SYN_RECV"]
                return True if not rows and time.monotonic() - sent_at > 0.2 else None

            poll_until(gone, half_open_lifetime_s(retries) + 2.0)
            lifetime = time.monotonic() - sent_at
            synacks = [p.time for p in cap.tcp(port) if p.sport == port and p.flags == "S."]
        return UnansweredSynAck(
            synack_retries=sysctl(SYNACK_RETRIES, link.b.netns),
            syn_acks_sent=len(synacks),
            syn_ack_gaps_ms=gaps_ms(synacks),
            half_open_lived_s=round(lifetime, 2),
        )


def which_rules_apply(settings: dict[str, str | None]) -> dict[str, Any]:
    """Expected, not observed: the kernel's rules, instantiated with these settings."""
    somaxconn = settings[SOMAXCONN]
    cookies = int(settings[SYNCOOKIES] or 0)
    abort = int(settings[ABORT_ON_OVERFLOW] or 0)
    max_syn = int(settings[MAX_SYN_BACKLOG] or 0)
    retries = int(settings[SYNACK_RETRIES] or 0)
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


def judge_c16(host: SynQueueRun, namespaces: ControlledSynQueue | None) -> list[Part]:
    """Each statement from runs the experiment made at the settings that matter."""
    names = (
        "tcp_max_syn_backlog bounds the SYN queue when tcp_syncookies=0",
        "tcp_max_syn_backlog bounds the SYN queue when tcp_syncookies=1 (the default)",
        "tcp_syncookies defends against a flood: connections complete with the SYN queue full",
        "fewer tcp_synack_retries shorten the life of a half-open entry",
    )
    if namespaces is None:
        context = (
            f"this host's loopback (context only): listen({host.backlog}) kept"
            f" {host.syn_recv_rows} of {host.clients} handshakes with"
            f" tcp_syncookies={host.syncookies}, tcp_max_syn_backlog={host.max_syn_backlog}"
        )
        why = f"not observable without root: it needs fresh namespaces at each setting; {context}"
        return [Part(name, None, why) for name in names]

    def kept(run: SynQueueRun) -> str:
        return (
            f"kept {run.syn_recv_rows} of {run.clients} half-open with"
            f" listen({run.backlog}), tcp_max_syn_backlog={run.max_syn_backlog}"
        )

    small0, large0 = namespaces.no_cookies_small_max, namespaces.no_cookies_large_max
    small1 = namespaces.cookies_small_max
    flood0, flood1 = namespaces.no_cookies_full, namespaces.cookies_full
    fast, slow = namespaces.no_synack_retries, namespaces.one_synack_retry
    return [
        Part(
            names[0],
            small0.syn_recv_rows < small0.clients and large0.syn_recv_rows == large0.clients,
            f"syncookies=0: {kept(small0)}; {kept(large0)}",
        ),
        Part(
            names[1],
            small1.syn_recv_rows < small1.clients,
            f"syncookies=1: {kept(small1)}: the listen backlog bounds it instead",
        ),
        Part(
            names[2],
            established(flood1.client_states) > established(flood0.client_states)
            and flood1.counters["TcpExt.SyncookiesSent"] > 0,
            f"listen({flood1.backlog}), {flood1.clients} clients: with syncookies=1"
            f" {established(flood1.client_states)} connected (SyncookiesSent"
            f" +{flood1.counters['TcpExt.SyncookiesSent']}), with syncookies=0"
            f" {established(flood0.client_states)} (the rest SYN_SENT)",
        ),
        Part(
            names[3],
            fast.half_open_lived_s < slow.half_open_lived_s
            and fast.syn_acks_sent < slow.syn_acks_sent,
            f"an unanswered SYN: tcp_synack_retries=0 -> {fast.syn_acks_sent} SYN-ACK(s), entry"
            f" gone after {fast.half_open_lived_s} s; 1 -> {slow.syn_acks_sent} SYN-ACKs"
            f" {slow.syn_ack_gaps_ms} ms apart, gone after {slow.half_open_lived_s} s",
        ),
    ]


def controlled_syn_queue() -> ControlledSynQueue:
    """Every setting C16 compares, each in its own fresh namespace."""
    small, large = SMALL_MAX_SYN_BACKLOG, 4 * LARGE_BACKLOG
    return ControlledSynQueue(
        no_cookies_small_max=namespace_syn_queue(0, small),
        no_cookies_large_max=namespace_syn_queue(0, large),
        cookies_small_max=namespace_syn_queue(1, small),
        no_cookies_full=namespace_syn_queue(0, large, backlog=2, clients=6),
        cookies_full=namespace_syn_queue(1, large, backlog=2, clients=6),
        no_synack_retries=unanswered_synack(0),
        one_synack_retry=unanswered_synack(1),
    )


def check_c16(ctx: RunContext) -> ClaimResult:
    settings = sysctls(SETTINGS)
    backlog = 2 if ctx.quick else 4
    host = fill_syn_queue(None, backlog, backlog + 4)
    namespaces = controlled_syn_queue() if ctx.root else None
    observed: dict[str, Any] = {"host_loopback": host.observed()}
    if namespaces is not None:
        observed["namespaces"] = namespaces.observed()
    return judge_parts(
        NAME,
        "C16",
        judge_c16(host, namespaces),
        observed,
        expected={
            **which_rules_apply(settings),
            "half_open_lifetime_s at each tcp_synack_retries 0/1/5": [
                half_open_lifetime_s(n) for n in (0, 1, 5)
            ],
        },
        context=settings,
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
