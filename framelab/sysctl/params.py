"""The kernel settings the notes and the experiments touch, explained.

One row per parameter: its kernel default, what it does and when to change
it (after Documentation/networking/ip-sysctl.rst and, for net.core and fs,
Documentation/admin-guide/sysctl/), which experiment shows its effect and
which of that claim's observed values is the measured figure. Data only:
reading live values and saved runs is `framelab.sysctl.lookup`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    """One kernel parameter.

    `measured`: paths into the claim's `observed` values in a saved run,
    '/' between nested keys, that show this setting at work; each one
    present is shown (observations change with the code: a missing path is
    simply left out).
    `removed_in`: the Linux version that removed it (the row stays, so the
    notes' advice about it gets an answer).
    """

    name: str
    default: str
    what: str
    experiment: str | None = None
    claim: str | None = None
    measured: tuple[str, ...] = ()
    removed_in: str | None = None

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def proc_path(self) -> str:
        return "/proc/sys/" + self.name.replace(".", "/")


_V4 = "net.ipv4."

PARAMS: tuple[Param, ...] = (
    # -- TIME_WAIT and closing ----------------------------------------------------------------
    Param(
        _V4 + "tcp_tw_reuse",
        "2 (loopback only; since 4.18)",
        "Lets connect() pick a local port whose 4-tuple is still in TIME_WAIT, when timestamps "
        "make it safe: 0 off, 1 everywhere, 2 loopback only. Only outgoing connections; it "
        "helps a client that runs out of ports to one server.",
        "time_wait",
        "C34",
        (
            "host_loopback/kernel_port_choice/connected_after_ms",
            "namespaces/tw_reuse=0/outcome",
            "namespaces/tw_reuse=1/outcome",
        ),
    ),
    Param(
        _V4 + "tcp_tw_reuse_delay",
        "1000 ms (a recent 6.x addition)",
        "How long a TIME_WAIT socket must have existed before tcp_tw_reuse may reuse it. Keep "
        "it at or above the peer's timestamp clock tick, or PAWS may drop the new connection.",
        "time_wait",
        "C34",
        (
            "host_loopback/net.ipv4.tcp_tw_reuse_delay",
            "host_loopback/kernel_port_choice/connected_after_ms",
        ),
    ),
    Param(
        _V4 + "tcp_tw_recycle",
        "-",
        "Used to expire TIME_WAIT quickly using per-host timestamps; it broke clients behind "
        "NAT (their timestamps are not monotonic across hosts) and was removed.",
        "time_wait",
        "C33",
        ("tcp_tw_recycle_exists",),
        removed_in="4.12",
    ),
    Param(
        _V4 + "tcp_max_tw_buckets",
        "computed at boot (from the hash table size)",
        "Most TIME_WAIT sockets the namespace holds; beyond it new ones are destroyed at once "
        "(TcpExt TCPTimeWaitOverflow). A DoS guard: raise it rather than lower it.",
        "time_wait",
        "C35",
        ("net.ipv4.tcp_max_tw_buckets", "time_wait_rows", "counters/TcpExt.TCPTimeWaitOverflow"),
    ),
    Param(
        _V4 + "tcp_fin_timeout",
        "60 s",
        "How long an orphaned connection (closed by the application) stays in FIN_WAIT2 "
        "waiting for the peer's FIN. It does not change TIME_WAIT, which Linux fixes at 60 s.",
        "time_wait",
        "C11",
        (
            "orphaned_fin_wait2/length_seconds",
            "namespace/net.ipv4.tcp_fin_timeout",
            "namespace/orphaned_fin_wait2/length_seconds",
            "time_wait/length_seconds",
        ),
    ),
    Param(
        _V4 + "tcp_timestamps",
        "1 (with a random offset per connection)",
        "RFC 7323 timestamps: better RTT estimates and PAWS; tcp_tw_reuse needs them. They cost "
        "12 bytes of options per segment (1448 instead of 1460 on a 1500 MTU). Leave them on.",
        "mss",
        "C12",
        ("timestamps_on/tcp_maxseg_after_connect", "timestamps_off/tcp_maxseg_after_connect"),
    ),
    Param(
        _V4 + "tcp_orphan_retries",
        "0, read as 8",
        "Retransmissions before an orphaned connection (closed locally, FIN or data unacked) is "
        "dropped. A loaded web server may lower it so orphans free memory sooner.",
    ),
    Param(
        _V4 + "tcp_max_orphans",
        "computed at boot (from memory)",
        "Most orphaned connections (no file descriptor left) the system keeps; beyond it they "
        "are reset at once. Each can pin about 64 KiB; raise it with memory, never lower it.",
    ),
    # -- listen queues and the handshake ------------------------------------------------------
    Param(
        "net.core.somaxconn",
        "4096 (128 before 5.4)",
        "Caps the backlog any listen() asks for; the accept queue then holds backlog+1 "
        "connections. Raise it (and the server's backlog) for bursts of connections.",
        "backlog",
        "C15",
        ("somaxconn_cap/listen_backlog", "somaxconn_cap/queue_limit"),
    ),
    Param(
        _V4 + "tcp_max_syn_backlog",
        "computed at boot (128 or more, with memory)",
        "Per-listener bound on half-open connections (SYN_RECV) while syncookies are off; with "
        "syncookies on the listen backlog bounds the SYN queue instead.",
        "backlog",
        "C16",
        (
            "namespace_syncookies=0/net.ipv4.tcp_max_syn_backlog",
            "namespace_syncookies=0/syn_queue (SYN_RECV rows)",
            "namespace_syncookies=0/clients",
        ),
    ),
    Param(
        _V4 + "tcp_syncookies",
        "1 (cookies when a SYN queue overflows)",
        "Answers SYNs beyond a full SYN queue with a cookie instead of an entry, so a SYN flood "
        "cannot lock clients out; 2 always sends them. A fallback, not capacity for real load.",
        "backlog",
        "C16",
        (
            "host_loopback/counters/TcpExt.SyncookiesSent",
            "namespace_syncookies=1/syn_queue (SYN_RECV rows)",
        ),
    ),
    Param(
        _V4 + "tcp_synack_retries",
        "5 (about 63 s until a half-open entry is dropped)",
        "How often an unanswered SYN+ACK is resent before the half-open connection is dropped. "
        "Lower it to shed half-open entries sooner under a SYN flood.",
        "backlog",
        "C16",
        ("which_applies/half_open_lifetime_s",),
    ),
    Param(
        _V4 + "tcp_syn_retries",
        "6 (about 131 s until connect() fails)",
        "How often connect() resends an unanswered SYN before failing with ETIMEDOUT. Lower it "
        "(or use TCP_USER_TIMEOUT per socket) for clients that must fail fast.",
        "backlog",
        "C15",
        (
            "accept_queue/dropped_clients_retry/syn_retransmits_each",
            "accept_queue/give_up_client/connect_error",
        ),
    ),
    Param(
        _V4 + "tcp_syn_linear_timeouts",
        "4 (a recent 6.x addition)",
        "The first N SYN retransmissions wait one initial RTO each (1 s) before exponential "
        "back-off starts. Has no effect on SYN+ACKs.",
        "backlog",
        "C15",
        ("accept_queue/dropped_clients_retry/captured_syn_gaps_ms",),
    ),
    Param(
        _V4 + "tcp_abort_on_overflow",
        "0",
        "When the accept queue is full, reset the client's completed handshake instead of "
        "dropping it (it would retry). Turn on only if the server can never accept faster.",
        "backlog",
        "C15",
        ("tcp_abort_on_overflow=1 (namespace)/client_recv", "ack_into_full_queue/client_state"),
    ),
    Param(
        _V4 + "tcp_migrate_req",
        "0",
        "With SO_REUSEPORT, moves connections queued on a listener that closes to another "
        "listener on the same port instead of resetting them: zero-downtime restarts.",
    ),
    # -- retransmission and liveness ----------------------------------------------------------
    Param(
        _V4 + "tcp_retries1",
        "3",
        "After this many unacknowledged retransmissions TCP asks the network layer to check the "
        "route (negative advice); the connection goes on.",
    ),
    Param(
        _V4 + "tcp_retries2",
        "15 (at least 924.6 s, about 15 minutes)",
        "Retransmissions before an established connection whose peer vanished is aborted with "
        "ETIMEDOUT. Lower it (or set TCP_USER_TIMEOUT) to detect dead peers in seconds.",
        "retransmission",
        "C40",
        ("retransmit_gaps_ms", "error", "abort_after_ms"),
    ),
    Param(
        _V4 + "tcp_keepalive_time",
        "7200 s",
        "Idle time before the first keepalive probe on sockets with SO_KEEPALIVE. Lower it (or "
        "TCP_KEEPIDLE) to find dead peers and keep NAT entries alive.",
    ),
    Param(
        _V4 + "tcp_keepalive_intvl",
        "75 s",
        "Time between unanswered keepalive probes (TCP_KEEPINTVL per socket).",
    ),
    Param(
        _V4 + "tcp_keepalive_probes",
        "9",
        "Unanswered keepalive probes before the connection is dropped; with the defaults a dead "
        "peer is found about 2 h 11 min after the last traffic.",
    ),
    # -- ports, buffers, queues ---------------------------------------------------------------
    Param(
        _V4 + "ip_local_port_range",
        "32768 60999",
        "The ports connect() and bind(port 0) choose from: about 28,000 connections to one "
        "server address and port. Widen it for clients that open many connections.",
    ),
    Param(
        _V4 + "tcp_rmem",
        "4096 131072, max by memory (at most 32 MiB)",
        "Receive buffer min, initial and auto-tuning max per TCP socket; SO_RCVBUF turns "
        "auto-tuning off. Raise the max for long fat paths.",
        "sticky",
        "C17",
        ("split/receiver_rcvbuf", "split/reads"),
    ),
    Param(
        _V4 + "tcp_wmem",
        "4096 16384, max by memory (64 KiB to 4 MiB)",
        "Send buffer min, initial and auto-tuning max per TCP socket; SO_SNDBUF turns "
        "auto-tuning off. Bounds how much send() accepts before it blocks.",
        "linger",
        "C29",
        ("linger_n_unsendable/queued_bytes_at_close",),
    ),
    Param(
        _V4 + "tcp_mem",
        "computed at boot (pages: min, pressure, max)",
        "System-wide TCP memory in pages: above 'pressure' TCP shrinks buffers, at 'max' it "
        "refuses memory. Raise only with RAM to spare.",
    ),
    Param(
        "net.core.netdev_max_backlog",
        "1000",
        "Packets queued per CPU when the interface receives faster than the kernel processes. "
        "Raise it on fast links that show drops in /proc/net/softnet_stat.",
    ),
    # -- MTU, MSS, fragments, ICMP ------------------------------------------------------------
    Param(
        _V4 + "tcp_mtu_probing",
        "0",
        "Packetization-layer path MTU discovery (RFC 4821): 0 off, 1 after an ICMP black hole "
        "is detected, 2 always (starting at tcp_base_mss). Use 1 on paths that drop ICMP.",
    ),
    Param(
        _V4 + "tcp_base_mss",
        "1024",
        "The MSS that MTU probing starts from (search_low), used when tcp_mtu_probing is on.",
    ),
    Param(
        _V4 + "ip_no_pmtu_disc",
        "0 (path MTU discovery on: DF set)",
        "1 turns path MTU discovery off (no DF bit; datagrams may be fragmented on the way); "
        "2 and 3 also ignore or restrict 'fragmentation needed' messages.",
        "link_mtu",
        "C07",
        ("ip_no_pmtu_disc", "df_set", "send_one_more"),
    ),
    Param(
        _V4 + "ipfrag_time",
        "30 s",
        "How long fragments of an incomplete datagram wait for the rest before they are "
        "dropped (ReasmFails, ICMP time exceeded).",
        "link_mtu",
        "C04",
        ("middle_fragment_lost/ipfrag_time", "middle_fragment_lost/counters_at_b/Ip.ReasmTimeout"),
    ),
    Param(
        _V4 + "icmp_echo_ignore_all",
        "0",
        "1 ignores every ICMP echo request: the host stops answering ping but still routes and "
        "sends other ICMP messages (a traceroute still works).",
        "icmp",
        "C05",
        ("ping/ms", "ping_with_icmp_echo_ignore_all"),
    ),
    # -- descriptors --------------------------------------------------------------------------
    Param(
        "fs.file-max",
        "computed at boot (about one per 10 KiB of memory)",
        "System-wide limit on open files; sockets count. Per-process limits (ulimit -n, "
        "RLIMIT_NOFILE) usually bite first.",
        "limits",
        "C37",
        ("fs.file-max",),
    ),
    Param(
        "fs.nr_open",
        "1048576",
        "The largest RLIMIT_NOFILE a process may set: raise it before raising ulimit -n above "
        "a million.",
        "limits",
        "C37",
        ("fs.nr_open", "nr_open_probe_as_root"),
    ),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS} | {p.short_name: p for p in PARAMS}
