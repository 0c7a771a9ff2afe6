"""C40: unacknowledged data is retransmitted until the kernel gives up.

Two hosts in network namespaces joined by a veth pair; a connection from a
to b; b's address is removed, so every segment a sends still crosses the
link (the capture on a's interface sees it) but b drops it without a word,
like a peer that vanished; then a sends data. (Taking an interface down
would not do: a veth end loses its carrier with its peer, and a's segments
would never leave.) a retransmits with exponential back-off (TCP_INFO: retransmits,
backoff, rto, total_retrans; the capture on a's interface shows the same
segment again and again) until the limit. The kernel's own limit is
net.ipv4.tcp_retries2 (15 by default: about 15 minutes); TCP_USER_TIMEOUT
sets it per socket, here to USER_TIMEOUT_MS, so the experiment ends in
seconds. Then the connection is aborted: the socket leaves the table and
the application's next call fails. Which error it gets, and whether an RST
goes out, is the evidence: Linux drops the connection silently (no RST:
nothing would reach the peer anyway) and reports ETIMEDOUT.

Needs root (namespaces, capture); cleans up the namespaces on any failure.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

from framelab.experiments.capture import Capture
from framelab.experiments.context import RunContext
from framelab.experiments.netns import VethLink
from framelab.experiments.observe import (
    errno_name,
    netstat_counters,
    selected_delta,
    sysctls,
    tcp_info,
)
from framelab.experiments.pairs import gaps_ms, short_trace
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, judge, skipped

NAME = "retransmission"
PORT = 7040
USER_TIMEOUT_MS = 1500
#: how long to wait for the abort beyond the user timeout (retransmit timer granularity)
ABORT_GRACE_S = 5.0
PAYLOAD = b"x" * 1000
#: what made a resend: a tail loss probe (RFC 8985) or the retransmission timer
RESEND_COUNTERS = ("TcpExt.TCPLossProbes", "TcpExt.TCPTimeouts", "Tcp.RetransSegs")


def run(ctx: RunContext) -> list[ClaimResult]:
    if not ctx.root:
        return [skipped(NAME, "C40", "needs root: two hosts in network namespaces (veth)")]
    observed, trace = observe_abort()
    retransmitted = observed["total_retrans_before_abort"] > 0
    aborted = observed["error"] is not None and observed["state_after"] in (None, "CLOSE")
    holds = retransmitted and aborted
    rst = "sent an RST" if observed["rst_sent"] else "sent no RST"
    probes = observed["counters"]["TcpExt.TCPLossProbes"]
    how = "a tail loss probe first (TCPLossProbes +1), then " if probes == 1 else ""
    gaps = ", ".join(f"{gap:.0f}" for gap in observed["retransmit_gaps_ms"])
    return [
        judge(
            NAME,
            "C40",
            holds,
            observed,
            confirmed=(
                f"aborted after {observed['retransmissions_seen']} retransmissions, {how}"
                f"the retransmission timer doubling its wait (gaps of {gaps} ms), "
                f"{observed['abort_after_ms']:.0f} ms after the send "
                f"(TCP_USER_TIMEOUT {USER_TIMEOUT_MS} ms; "
                f"the default limit is tcp_retries2={observed['sysctl']['net.ipv4.tcp_retries2']}"
                f"): the application got {observed['error']}, and the kernel {rst}"
            ),
            differs=(
                f"not aborted as claimed: retransmitted {observed['total_retrans_before_abort']}"
                f" times, error {observed['error']}, state afterwards {observed['state_after']}"
            ),
            trace=trace,
        )
    ]


def observe_abort() -> tuple[dict[str, Any], list[str]]:
    with VethLink() as link:
        listener = link.b.socket()
        client = link.a.socket()
        try:
            listener.bind((link.b.address, PORT))
            listener.listen(1)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
            client.settimeout(2)
            client.connect((link.b.address, PORT))
            server, _ = listener.accept()
            with server, Capture(link.a.ifname, ports=[PORT], netns=link.a.netns) as cap:
                client.sendall(b"hello")  # one exchange that works
                server.recv(16)
                before = netstat_counters(link.a.netns)
                vanish(link)  # from now on, every segment a sends is lost
                sent_at = time.monotonic()
                client.send(PAYLOAD)
                samples = watch_retransmissions(client)
                error, abort_after = wait_for_abort(client, sent_at)
                cap.wait_for(lambda p: p.has("R"), timeout=0.2)
                cap.stop()
                counters = selected_delta(before, netstat_counters(link.a.netns), RESEND_COUNTERS)
                lost = [
                    p for p in cap.tcp(PORT) if p.sport != PORT and p.payload_len == len(PAYLOAD)
                ]
                observed = {
                    "user_timeout_ms": USER_TIMEOUT_MS,
                    "sysctl": sysctls(
                        ["net.ipv4.tcp_retries2", "net.ipv4.tcp_retries1"], link.a.netns
                    ),
                    "samples": samples,
                    "total_retrans_before_abort": max(
                        (s["total_retrans"] for s in samples), default=0
                    ),
                    "retransmissions_seen": max(len(lost) - 1, 0) if lost else None,
                    "retransmit_gaps_ms": gaps_ms([p.time for p in lost]),
                    "counters": counters,
                    "error": error,
                    "abort_after_ms": abort_after * 1000,
                    "state_after": state_or_none(client),
                    "rst_sent": any(p.has("R") for p in cap.tcp(PORT) if p.sport != PORT),
                }
                return observed, short_trace(cap, PORT)
        finally:
            client.close()
            listener.close()


def vanish(link: VethLink) -> None:
    """b stops owning its address: what reaches it is dropped, nothing answers."""
    link.b.run("ip", "addr", "del", f"{link.b.address}/24", "dev", link.b.ifname)


def watch_retransmissions(sock: socket.socket) -> list[dict[str, Any]]:
    """TCP_INFO while the data is unacknowledged: a sample per retransmission."""
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + USER_TIMEOUT_MS / 1000 + ABORT_GRACE_S
    last = -1
    while time.monotonic() < deadline:
        info = tcp_info(sock)
        if info.state != "ESTABLISHED":
            break
        if info["total_retrans"] != last:
            last = info["total_retrans"]
            samples.append(
                {
                    "total_retrans": info["total_retrans"],
                    "backoff": info["backoff"],
                    "rto_ms": info["rto"] / 1000,
                    "unacked": info["unacked"],
                }
            )
        if select.select([sock], [], [], 0.01)[0]:  # the abort makes it readable
            break
    return samples


def wait_for_abort(sock: socket.socket, sent_at: float) -> tuple[str | None, float]:
    """The error the application gets once the kernel gives up, and when."""
    sock.settimeout(USER_TIMEOUT_MS / 1000 + ABORT_GRACE_S)
    try:
        data = sock.recv(16)
    except OSError as exc:  # ETIMEDOUT is a TimeoutError too: tell it from our own timeout
        if exc.errno is None:
            return None, time.monotonic() - sent_at
        return errno_name(exc), time.monotonic() - sent_at
    return ("EOF" if not data else "data"), time.monotonic() - sent_at


def state_or_none(sock: socket.socket) -> str | None:
    try:
        return tcp_info(sock).state
    except OSError:
        return None


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C40",),
    needs_root="yes",
    description="every segment lost (the peer vanished): retransmissions back off, then the abort",
    run=run,
)
