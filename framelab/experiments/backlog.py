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
    listener = listening_socket(LOOPBACK, HUGE_BACKLOG)
    try:
        return {
            "listen_backlog": HUGE_BACKLOG,
            "queue_limit": queue_of(listener)["limit"],
            "net.core.somaxconn": sysctl("net.core.somaxconn"),
        }
    finally:
        listener.close()


# --- C15 step 2: an ACK that arrives when the queue is full -------------------------


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
    syn_queue = fill_syn_queue(None, overflow["backlog"], overflow["backlog"] + 4)
    observed["syn_queue"] = syn_queue
    parts = judge_c15(settings, overflow, cap_check, syn_queue)
    if ctx.root:
        parts[-1] = Part(
            parts[-1].part,
            parts[-1].holds,
            parts[-1].evidence
            + f"; with tcp_abort_on_overflow=1 (a namespace) a handshake completed into the full"
            f" queue got {abort.get('client_recv')} instead"
            f" ({'an RST was' if abort['rst_to_client'] else 'no RST'} captured)",
        )
    return judge_parts(
        NAME,
        "C15",
        parts,
        observed,
        trace=trace,
        context={
            "late ACK into the full queue": describe_c15(settings, overflow, cap_check, late_ack)
        },
    )


def judge_c15(
    settings: dict[str, str | None],
    overflow: dict[str, Any],
    cap_check: dict[str, Any],
    syn_queue: dict[str, Any],
) -> list[Part]:
    """The claim's three statements: a SYN queue, an accept queue of `backlog`, drops."""
    backlog = overflow["backlog"]
    somaxconn = int(settings["net.core.somaxconn"] or 0)
    limit = min(backlog, somaxconn)
    queued = overflow["listener_tcp_info"]["tcpi_unacked (queue)"]
    retry = overflow["dropped_clients_retry"]
    half_open = syn_queue["syn_queue (SYN_RECV rows)"]
    silently_dropped = (
        retry["still_syn_sent"] == retry["clients"] > 0
        and min(retry["syn_retransmits_each"], default=0) >= 1
        and overflow["give_up_client"]["connect_error"] == "ETIMEDOUT"
    )
    captured = retry.get("captured_syn_gaps_ms")
    return [
        Part(
            "half-open connections wait in a SYN queue (SYN_RECV)",
            half_open > 0,
            f"{half_open} SYN_RECV entries for {syn_queue['clients']} handshakes held by"
            f" TCP_DEFER_ACCEPT on listen({syn_queue['backlog']}) (tcp_syncookies="
            f"{syn_queue['net.ipv4.tcp_syncookies']}, SyncookiesSent"
            f" +{syn_queue['counters']['TcpExt.SyncookiesSent']})",
        ),
        Part(
            "completed connections wait in an accept queue as long as the listen() backlog",
            queued in (limit, limit + 1)
            and cap_check["queue_limit"] == min(HUGE_BACKLOG, somaxconn),
            f"listen({backlog}) without accept(): {queued} of {overflow['clients']} connections"
            f" queued (backlog{queued - backlog:+d}); listen({HUGE_BACKLOG}) got a limit of"
            f" {cap_check['queue_limit']} (somaxconn={somaxconn})",
        ),
        Part(
            "when it is full, new connections are dropped",
            silently_dropped,
            f"{retry['still_syn_sent']} of {retry['clients']} later clients stayed SYN_SENT, their"
            f" SYNs unanswered and retransmitted {retry['syn_retransmits_each']} times"
            + (f" ({captured} ms apart)" if captured else "")
            + f"; a client with TCP_USER_TIMEOUT failed with"
            f" {overflow['give_up_client']['connect_error']}",
        ),
    ]


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


def namespace_syn_queue(
    syncookies: int,
    max_syn_backlog: int,
    backlog: int = LARGE_BACKLOG,
    clients: int = SYN_QUEUE_CLIENTS,
) -> dict[str, Any]:
    """The SYN queue in a fresh namespace with these settings."""
    with VethLink() as link:
        host = link.a
        host.set_sysctl("net.ipv4.tcp_syncookies", syncookies)
        host.set_sysctl("net.ipv4.tcp_max_syn_backlog", max_syn_backlog)
        return fill_syn_queue(host.netns, backlog, clients)


def half_open_lifetime_s(synack_retries: int) -> int:
    """Expected: 1 + 2 + 4 + ... s, the SYN-ACK timer doubling for each of tcp_synack_retries."""
    return (1 << (synack_retries + 1)) - 1


def unanswered_synack(retries: int) -> dict[str, Any]:
    """A SYN that never gets its ACK, with tcp_synack_retries=`retries` at the server.

    The SYN comes raw from STRANGER (an address no namespace owns; b reaches
    it through a's MAC), so nobody answers b's SYN-ACKs and nobody resets
    them. Counted: the SYN-ACKs b sends and how long its SYN_RECV entry lives.
    """
    with VethLink() as link:
        link.b.set_sysctl("net.ipv4.tcp_synack_retries", retries)
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
        return {
            "net.ipv4.tcp_synack_retries": sysctl("net.ipv4.tcp_synack_retries", link.b.netns),
            "syn_acks_sent": len(synacks),
            "syn_ack_gaps_ms": gaps_ms(synacks),
            "half_open_lived_s": round(lifetime, 2),
        }


def which_rules_apply(settings: dict[str, str | None]) -> dict[str, Any]:
    """Expected, not observed: the kernel's rules, instantiated with these settings."""
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


def judge_c16(
    host: dict[str, Any],
    namespaces: dict[str, dict[str, Any]] | None,
) -> list[Part]:
    """Each statement from runs the experiment made at the settings that matter."""
    names = (
        "tcp_max_syn_backlog bounds the SYN queue when tcp_syncookies=0",
        "tcp_max_syn_backlog bounds the SYN queue when tcp_syncookies=1 (the default)",
        "tcp_syncookies defends against a flood: connections complete with the SYN queue full",
        "fewer tcp_synack_retries shorten the life of a half-open entry",
    )
    if namespaces is None:
        context = (
            f"this host's loopback (context only): listen({host['backlog']}) kept"
            f" {host['syn_queue (SYN_RECV rows)']} of {host['clients']} handshakes with"
            f" tcp_syncookies={host['net.ipv4.tcp_syncookies']}, tcp_max_syn_backlog="
            f"{host['net.ipv4.tcp_max_syn_backlog']}"
        )
        why = f"not observable without root: it needs fresh namespaces at each setting; {context}"
        return [Part(name, None, why) for name in names]

    def kept(run: dict[str, Any]) -> str:
        return (
            f"kept {run['syn_queue (SYN_RECV rows)']} of {run['clients']} half-open with"
            f" listen({run['backlog']}), tcp_max_syn_backlog={run['net.ipv4.tcp_max_syn_backlog']}"
        )

    rows = {label: run.get("syn_queue (SYN_RECV rows)") for label, run in namespaces.items()}
    small0, large0 = namespaces["cookies=0, small"], namespaces["cookies=0, large"]
    small1 = namespaces["cookies=1, small"]
    flood1 = namespaces["cookies=1, full"]
    connected = {
        k: v["client_states"].get("ESTABLISHED", 0) for k, v in namespaces.items() if "clients" in v
    }
    fast, slow = namespaces["synack_retries=0"], namespaces["synack_retries=1"]
    return [
        Part(
            names[0],
            rows["cookies=0, small"] < small0["clients"]
            and rows["cookies=0, large"] == large0["clients"],
            f"syncookies=0: {kept(small0)}; {kept(large0)}",
        ),
        Part(
            names[1],
            rows["cookies=1, small"] < small1["clients"],
            f"syncookies=1: {kept(small1)}: the listen backlog bounds it instead",
        ),
        Part(
            names[2],
            connected["cookies=1, full"] > connected["cookies=0, full"]
            and flood1["counters"]["TcpExt.SyncookiesSent"] > 0,
            f"listen({flood1['backlog']}), {flood1['clients']} clients: with syncookies=1"
            f" {connected['cookies=1, full']} connected (SyncookiesSent"
            f" +{flood1['counters']['TcpExt.SyncookiesSent']}), with syncookies=0"
            f" {connected['cookies=0, full']} (the rest SYN_SENT)",
        ),
        Part(
            names[3],
            fast["half_open_lived_s"] < slow["half_open_lived_s"]
            and fast["syn_acks_sent"] < slow["syn_acks_sent"],
            f"an unanswered SYN: tcp_synack_retries=0 -> {fast['syn_acks_sent']} SYN-ACK(s), entry"
            f" gone after {fast['half_open_lived_s']} s; 1 -> {slow['syn_acks_sent']} SYN-ACKs"
            f" {slow['syn_ack_gaps_ms']} ms apart, gone after {slow['half_open_lived_s']} s",
        ),
    ]


def controlled_syn_queue() -> dict[str, dict[str, Any]]:
    """Every setting C16 compares, each in its own fresh namespace."""
    small, large = SMALL_MAX_SYN_BACKLOG, 4 * LARGE_BACKLOG
    return {
        "cookies=0, small": namespace_syn_queue(0, small),
        "cookies=0, large": namespace_syn_queue(0, large),
        "cookies=1, small": namespace_syn_queue(1, small),
        "cookies=0, full": namespace_syn_queue(0, large, backlog=2, clients=6),
        "cookies=1, full": namespace_syn_queue(1, large, backlog=2, clients=6),
        "synack_retries=0": unanswered_synack(0),
        "synack_retries=1": unanswered_synack(1),
    }


def check_c16(ctx: RunContext) -> ClaimResult:
    settings = sysctls(SETTINGS)
    backlog = 2 if ctx.quick else 4
    host = fill_syn_queue(None, backlog, backlog + 4)
    namespaces = controlled_syn_queue() if ctx.root else None
    observed: dict[str, Any] = {"host_loopback": host}
    if namespaces is not None:
        observed["namespaces"] = namespaces
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
