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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Chart, Drawing, Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts, skipped
from framelab.lab.capture import Capture
from framelab.lab.kernel import errno_name, netstat_counters, selected_delta, sysctls, tcp_info
from framelab.lab.netns import VethLink
from framelab.lab.sockets import SocketOptions, connect_to, listening_socket
from framelab.lab.timing import gaps_ms
from framelab.lab.traces import short_trace

NAME = "retransmission"
PORT = 7040
USER_TIMEOUT_MS = 1500
#: how long to wait for the abort beyond the user timeout (retransmit timer granularity)
ABORT_GRACE_S = 5.0
PAYLOAD = b"x" * 1000
#: what made a resend: a tail loss probe (RFC 8985) or the retransmission timer
RESEND_COUNTERS = ("TcpExt.TCPLossProbes", "TcpExt.TCPTimeouts", "Tcp.RetransSegs")


#: tcp_retries2 given to a's namespace for the run without TCP_USER_TIMEOUT
SMALL_RETRIES2 = 2
#: the kernel's floor and ceiling for the retransmission timeout (include/net/tcp.h)
RTO_MIN_MS = 200
RTO_MAX_MS = 120_000
#: how far a measured time may be from the kernel's model
MODEL_TOLERANCE = 0.25


def expected_abort_ms(retries2: int, rto_ms: float = RTO_MIN_MS) -> float:
    """tcp_model_timeout() (net/ipv4/tcp_timer.c): how long retransmitting may last.

    (2^(retries2+1) - 1) x TCP_RTO_MIN while the doubled RTO stays under
    TCP_RTO_MAX, then TCP_RTO_MAX per further retry; counted from the first
    timer retransmission. 15 retries: 924.6 s, the "about 15 minutes".
    """
    threshold = int(RTO_MAX_MS // rto_ms).bit_length() - 1  # ilog2
    if retries2 <= threshold:
        return float(((2 << retries2) - 1) * rto_ms)
    return float(((2 << threshold) - 1) * rto_ms + (retries2 - threshold) * RTO_MAX_MS)


def expected_schedule(rto_ms: float, retries2: int, probe_ms: float | None) -> dict[str, Any]:
    """When the kernel's model resends and aborts, in ms after the first transmission.

    The timer fires rto after the last send (the tail loss probe, if one went
    out), then doubles. The first timer retransmission stamps the start; the
    connection is aborted at the first expiry at least expected_abort_ms()
    after that stamp, instead of resending again.
    """
    now = (probe_ms or 0.0) + rto_ms
    stamp, resends, wait = now, [now], rto_ms
    limit = expected_abort_ms(retries2)
    while True:
        wait = min(wait * 2, RTO_MAX_MS)
        now += wait
        if now - stamp >= limit:
            return {"resends_ms": [round(t, 1) for t in resends], "abort_ms": round(now, 1)}
        resends.append(now)


def run(ctx: RunContext) -> list[ClaimResult]:
    if not ctx.root:
        return [skipped(NAME, "C40", "needs root: two hosts in network namespaces (veth)")]
    timed, trace = observe_abort(user_timeout_ms=USER_TIMEOUT_MS, mtu=ctx.mtu)
    limited, _ = observe_abort(retries2=SMALL_RETRIES2, mtu=ctx.mtu)
    return [judge_c40(timed, limited, trace)]


@dataclass(frozen=True)
class RetransSample:
    """TCP_INFO read when total_retrans changed: the back-off as the kernel keeps it."""

    total_retrans: int
    backoff: int
    rto_ms: float
    unacked: int


@dataclass(frozen=True)
class AbortRun:
    """One connection whose every segment after the first exchange was lost: what
    TCP_INFO, the capture and the counters saw until the kernel gave up."""

    user_timeout_ms: int | None  # None: no TCP_USER_TIMEOUT, tcp_retries2 decides
    sysctl: dict[str, str | None]  # tcp_retries2/tcp_retries1 in a's namespace
    samples: list[RetransSample]
    total_retrans_before_abort: int
    retransmissions_seen: int | None  # resends of the lost segment on the wire
    retransmit_gaps_ms: list[float]
    transmit_times_ms: list[float]  # after the first transmission
    counters: dict[str, int]  # RESEND_COUNTERS' deltas
    error: str | None  # what the application's recv() got
    abort_after_ms: float  # after send()
    abort_after_first_send_ms: float | None  # after the first captured transmission
    segments_after_abort: int
    state_after: str | None  # None: TCP_INFO failed
    rst_sent: bool

    def observed(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelCheck:
    """A tcp_retries2 run's timer resends and abort, next to the kernel's model."""

    measured_rto_ms: float
    timer_resends_ms: list[float]
    abort_ms: float | None
    resends_match_model: bool
    abort_matches_model: bool
    model: dict[str, Any]  # expected_schedule(): what the kernel's rules predict

    def observed(self) -> dict[str, Any]:
        """What was measured and how it compares: the model itself is `expected`."""
        return {
            "measured_rto_ms": self.measured_rto_ms,
            "timer_resends_ms": self.timer_resends_ms,
            "abort_ms": self.abort_ms,
            "resends_match_model": self.resends_match_model,
            "abort_matches_model": self.abort_matches_model,
        }


def model_check(run: AbortRun) -> ModelCheck:
    """The retries2 run against the kernel's model: every resend time and the abort."""
    times = run.transmit_times_ms
    retries2 = int(run.sysctl["net.ipv4.tcp_retries2"] or 0)
    probe = times[1] if run.counters["TcpExt.TCPLossProbes"] and len(times) > 1 else None
    timer = times[2:] if probe is not None else times[1:]
    rto = timer[0] - (probe or 0.0) if timer else float(RTO_MIN_MS)
    model = expected_schedule(rto, retries2, probe)
    abort = run.abort_after_first_send_ms

    def close(seen: float | None, want: float) -> bool:
        return seen is not None and abs(seen - want) <= MODEL_TOLERANCE * want

    matches = len(timer) == len(model["resends_ms"]) and all(
        close(seen, want) for seen, want in zip(timer, model["resends_ms"], strict=False)
    )
    return ModelCheck(
        measured_rto_ms=round(rto, 1),
        timer_resends_ms=timer,
        abort_ms=None if abort is None else round(abort, 1),
        resends_match_model=matches,
        abort_matches_model=close(abort, model["abort_ms"]),
        model=model,
    )


def judge_c40(timed: AbortRun, limited: AbortRun | None, trace: list[str]) -> ClaimResult:
    """C40 in three parts (four with the tcp_retries2 run): retransmitted, running out
    at the kernel's limit, then aborted, and (the notes say) with a reset."""
    runs = [timed, *([limited] if limited else [])]
    gaps = ", ".join(f"{gap:.0f}" for gap in timed.retransmit_gaps_ms)
    probes = timed.counters["TcpExt.TCPLossProbes"]
    how = f"a tail loss probe (TCPLossProbes +{probes}), then " if probes else ""
    retransmitted = Part(
        "unacknowledged data is retransmitted, the timer backing off",
        all(r.total_retrans_before_abort > 0 for r in runs),
        f"{how}{timed.retransmissions_seen} resends of the lost segment on the wire,"
        f" gaps {gaps} ms (TCP_USER_TIMEOUT {timed.user_timeout_ms} ms)",
    )
    parts = [retransmitted]
    observed = timed.observed()
    expected: dict[str, Any] = {}
    if limited:
        check = model_check(limited)
        observed["tcp_retries2_run"] = {**limited.observed(), "model": check.observed()}
        expected[f"tcp_retries2={SMALL_RETRIES2} run, kernel model (ms after first send)"] = (
            check.model
        )
        parts.append(
            Part(
                "the retransmissions run out at the kernel's limit (tcp_retries2)",
                check.resends_match_model and check.abort_matches_model,
                f"with tcp_retries2={limited.sysctl['net.ipv4.tcp_retries2']} in a namespace"
                f" and no TCP_USER_TIMEOUT: timer resends at {check.timer_resends_ms} ms"
                f" (RTO {check.measured_rto_ms} ms), aborted at {check.abort_ms} ms;"
                f" the kernel's model (expected): resends at"
                f" {check.model['resends_ms']} ms, abort at"
                f" {check.model['abort_ms']} ms",
            )
        )
    aborted = [r.error is not None and r.state_after in (None, "CLOSE") for r in runs]
    parts.append(
        Part(
            "then the connection is aborted",
            all(aborted),
            "; ".join(
                f"{label}: the application got {r.error}, socket state {r.state_after}"
                f" after {r.abort_after_ms:.0f} ms"
                for label, r in zip(("user timeout", "tcp_retries2"), runs, strict=False)
            ),
        )
    )
    reset = [r.rst_sent or r.error == "ECONNRESET" for r in runs]
    parts.append(
        Part(
            "aborted with a reset (RST)",
            all(reset),
            "; ".join(
                f"{'an RST' if r.rst_sent else 'no RST'} left a's interface"
                f" ({r.segments_after_abort} segments captured after the abort),"
                f" error {r.error}"
                for r in runs
            ),
        )
    )
    return judge_parts(NAME, "C40", parts, observed, trace=trace, expected=expected)


def observe_abort(
    user_timeout_ms: int | None = None, retries2: int | None = None, mtu: int | None = None
) -> tuple[AbortRun, list[str]]:
    """Lose every segment after one good exchange; watch the resends and the abort."""
    with VethLink(mtu=mtu or 1500) as link:
        if retries2 is not None:
            link.a.set_sysctl("net.ipv4.tcp_retries2", retries2)
        limit_s = (user_timeout_ms or expected_abort_ms(retries2 or 15)) / 1000
        options = SocketOptions(user_timeout_ms=user_timeout_ms)
        with listening_socket(link.b.address, 1, netns=link.b.netns, port=PORT) as listener:
            pair = connect_to(listener, netns=link.a.netns, client=options, io_timeout=2)
            client, server = pair.client, pair.server
            with pair, Capture(link.a.ifname, ports=[PORT], netns=link.a.netns) as cap:
                client.sendall(b"hello")  # one exchange that works
                server.recv(16)
                before = netstat_counters(link.a.netns)
                vanish(link)  # from now on, every segment a sends is lost
                sent_at = time.monotonic()
                client.send(PAYLOAD)
                samples = watch_retransmissions(client, limit_s)
                error, abort_after = wait_for_abort(client, sent_at, limit_s)
                aborted_at = time.monotonic()
                cap.wait_for(lambda p: p.has("R"), timeout=0.2)
                cap.stop()
                counters = selected_delta(before, netstat_counters(link.a.netns), RESEND_COUNTERS)
                lost = [
                    p for p in cap.tcp(PORT) if p.sport != PORT and p.payload_len == len(PAYLOAD)
                ]
                first_send = lost[0].time if lost else None
                seen = AbortRun(
                    user_timeout_ms=user_timeout_ms,
                    sysctl=sysctls(
                        ["net.ipv4.tcp_retries2", "net.ipv4.tcp_retries1"], link.a.netns
                    ),
                    samples=samples,
                    total_retrans_before_abort=max((s.total_retrans for s in samples), default=0),
                    retransmissions_seen=max(len(lost) - 1, 0) if lost else None,
                    retransmit_gaps_ms=gaps_ms([p.time for p in lost]),
                    transmit_times_ms=[round((p.time - lost[0].time) * 1000, 1) for p in lost],
                    counters=counters,
                    error=error,
                    abort_after_ms=abort_after * 1000,
                    abort_after_first_send_ms=(
                        (aborted_at - first_send) * 1000 if first_send is not None else None
                    ),
                    segments_after_abort=sum(
                        p.time > aborted_at - 0.05 for p in cap.tcp(PORT) if p.sport != PORT
                    ),
                    state_after=state_or_none(client),
                    rst_sent=any(p.has("R") for p in cap.tcp(PORT) if p.sport != PORT),
                )
                return seen, short_trace(cap, PORT)


def vanish(link: VethLink) -> None:
    """b stops owning its address: what reaches it is dropped, nothing answers."""
    link.b.run("ip", "addr", "del", f"{link.b.address}/24", "dev", link.b.ifname)


def watch_retransmissions(sock: socket.socket, limit_s: float) -> list[RetransSample]:
    """TCP_INFO while the data is unacknowledged: a sample per retransmission."""
    samples: list[RetransSample] = []
    deadline = time.monotonic() + limit_s + ABORT_GRACE_S
    last = -1
    while time.monotonic() < deadline:
        info = tcp_info(sock)
        if info.state != "ESTABLISHED":
            break
        if info["total_retrans"] != last:
            last = info["total_retrans"]
            samples.append(
                RetransSample(
                    total_retrans=info["total_retrans"],
                    backoff=info["backoff"],
                    rto_ms=info["rto"] / 1000,
                    unacked=info["unacked"],
                )
            )
        if select.select([sock], [], [], 0.01)[0]:  # the abort makes it readable
            break
    return samples


def wait_for_abort(sock: socket.socket, sent_at: float, limit_s: float) -> tuple[str | None, float]:
    """The error the application gets once the kernel gives up, and when."""
    sock.settimeout(limit_s + ABORT_GRACE_S)
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


# --- the chart -------------------------------------------------------------------------

ABORT_COLOUR, SEND_COLOUR = "#d62728", "#1f77b4"


def transmission_times(seen: dict[str, Any]) -> list[float]:
    """ms after the first transmission: 0, then one time per retransmission."""
    times = [0.0]
    for gap in seen["retransmit_gaps_ms"]:
        times.append(times[-1] + gap)
    return times


def timeline(results: Sequence[ClaimResult]) -> Drawing | None:
    """C40's transmissions on a time line: a probe, the timer doubling, the abort."""
    seen = next((r.observed for r in results if r.claim == "C40"), None)
    if not seen or not seen.get("retransmit_gaps_ms"):
        return None
    times = transmission_times(seen)
    gaps = seen["retransmit_gaps_ms"]
    abort = seen.get("abort_after_ms")

    def draw(ax: Any) -> None:
        ax.vlines(times, 0, 1, colors=SEND_COLOUR, linewidth=2)
        ax.plot(times, [1] * len(times), "o", color=SEND_COLOUR, label="segment sent")
        for start, gap in zip(times, gaps, strict=False):
            ax.annotate(
                "", xy=(start + gap, 0.5), xytext=(start, 0.5),
                arrowprops={"arrowstyle": "<->", "color": "grey"},
            )  # fmt: skip
            ax.text(start + gap / 2, 0.56, f"{gap:.0f} ms", ha="center", fontsize="small")
        probe = seen.get("counters", {}).get("TcpExt.TCPLossProbes") == 1
        for i, at in enumerate(times):
            why = "first send" if i == 0 else "probe" if probe and i == 1 else "timer"
            ax.text(at, 1.06, why, ha="center", fontsize="x-small")
        if abort is not None:
            label = f"{seen.get('error')} after {abort:.0f} ms"
            if seen.get("user_timeout_ms"):
                label += f" (TCP_USER_TIMEOUT {seen['user_timeout_ms']} ms)"
            ax.axvline(abort, color=ABORT_COLOUR, linestyle="--", label=label)
        ax.set_ylim(0, 1.3)
        ax.set_yticks([])
        ax.set_xlabel("ms after the first transmission")
        ax.set_title("every segment lost: a probe, the timer doubling, the abort (C40)")
        # below the axis, never over a stem: the last one sits near the abort line
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize="small",
            frameon=False,
        )  # fmt: skip

    return draw


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C40",),
    needs_root="yes",
    description="every segment lost (the peer vanished): retransmissions back off, then the abort",
    run=run,
    charts=(Chart("retransmission.png", timeline),),
)
