"""The notes' open questions, answered by measurement (Q1-Q4), each judged like a claim.

Q1  "When a peer aborts, would a blocking read get an event too? Test it."
    A thread blocked in recv(), another in poll(), when the peer's RST comes:
    do they wake, how fast, with what (errno, revents)? Loopback, no root.
Q2  "When does 'connection reset by peer' happen?" For a client of an
    overloaded server (accept queue full) with the default settings and with
    tcp_abort_on_overflow=1, each in a fresh namespace (root).
Q3  "Why always the same delay of seconds?" connect() while the server drops
    SYNs (accept queue full), room made after ROOM_AFTER_S: the connect()
    completes only at the next SYN retransmission, so its latency falls on the
    SYN schedule: compared for tcp_syn_linear_timeouts 4 (1 s steps) and 0
    (1, 2, 4 s: doubling) in fresh namespaces (root).
Q4  The notes' first trace has the server send an ACK of its own right after
    the handshake ("congestion control adjusting the window?"): does Linux?
    A capture of a fresh connection on lo (root).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts, skipped
from framelab.lab.accept_queue import ack_into_full_queue, wait_connected
from framelab.lab.blocked import BlockedOnReset, blocked_reader_on_reset
from framelab.lab.capture import Capture
from framelab.lab.netns import VethLink, fresh_namespace
from framelab.lab.sockets import (
    LOOPBACK,
    address_of,
    close_all,
    connect_to,
    listening_socket,
    start_connect,
)

NAME = "questions"
#: when room is made in the accept queue, seconds after the connect() began
ROOM_AFTER_S = 1.3
#: how close a connect() must come to a SYN retransmission time (s)
SCHEDULE_TOLERANCE_S = 0.25


# --- Q1: a blocked reader when the RST arrives (the probe is lab/blocked.py) --------
def q1(seen: BlockedOnReset) -> list[Part]:
    if not seen.both_blocked_first:
        why = "the threads were not seen asleep in recv()/poll() before the RST"
        return [Part("a reader blocked in recv() wakes when the peer's RST arrives", None, why)]
    return [
        Part(
            "a reader blocked in recv() wakes when the peer's RST arrives",
            not seen.woken_by_shutdown and seen.recv is not None,
            f"recv() returned {seen.recv} {seen.recv_woke_ms} ms after the RST was sent"
            if not seen.woken_by_shutdown
            else "recv() was still asleep after the RST (ended with shutdown())",
        ),
        Part(
            "with an error: connection reset by peer",
            seen.recv == "ECONNRESET",
            f"recv() -> {seen.recv}; poll() waiting at the same time woke after "
            f"{seen.poll_woke_ms} ms with {' | '.join(seen.poll_revents) or 'nothing'}",
        ),
    ]


# --- Q2: reset by peer under load --------------------------------------------------
def overloaded_client(abort_on_overflow: int) -> dict[str, Any]:
    """A client whose handshake completes into a full accept queue, in a fresh namespace."""
    with fresh_namespace({"net.ipv4.tcp_abort_on_overflow": str(abort_on_overflow)}):
        seen = ack_into_full_queue(None, None)
        if abort_on_overflow == 0:
            seen["client_recv"] = seen.get("after_one_accept", {}).get("client_data_acked")
        return seen


def q2(default: dict[str, Any], aborting: dict[str, Any]) -> list[Part]:
    waited = default.get("after_one_accept", {})
    return [
        Part(
            "a client of an overloaded server sees 'connection reset by peer' (default settings)",
            default.get("client_recv") == "ECONNRESET",
            f"tcp_abort_on_overflow={default['abort_on_overflow']}: the client stayed"
            f" {default['client_state']} while the server was {default['server_state']}; its"
            f" data was {'acknowledged' if waited.get('client_data_acked') else 'not acknowledged'}"
            f" {waited.get('joined_after_ms')} ms after one accept() made room: no reset",
        ),
        Part(
            "it does with tcp_abort_on_overflow=1",
            aborting.get("client_recv") == "ECONNRESET",
            f"tcp_abort_on_overflow={aborting['abort_on_overflow']}: the client's recv() got"
            f" {aborting.get('client_recv')}",
        ),
    ]


# --- Q3: connect() latency on the SYN schedule --------------------------------------
def connect_latency(linear_timeouts: int, results: dict[int, dict[str, Any]]) -> None:
    """A connect() to a full accept queue; room made after ROOM_AFTER_S; when did it finish?"""
    with VethLink() as link:
        host = link.a
        host.set_sysctl("net.ipv4.tcp_syn_linear_timeouts", linear_timeouts)
        listener = listening_socket(LOOPBACK, 0, netns=host.netns)
        opened = [listener]
        try:
            address = address_of(listener)
            first = start_connect(host.netns, address)  # takes the one place (backlog 0 + 1)
            opened.append(first)
            wait_connected([first], 1.0)
            started = time.monotonic()
            late = start_connect(host.netns, address)
            opened.append(late)
            wait_connected([late], ROOM_AFTER_S)
            listener.settimeout(1.0)
            opened.append(listener.accept()[0])
            done = wait_connected([late], 10.0)
            results[linear_timeouts] = {
                "tcp_syn_linear_timeouts": linear_timeouts,
                "room_made_after_s": ROOM_AFTER_S,
                "connected": bool(done),
                "connect_latency_s": round(time.monotonic() - started, 2) if done else None,
            }
        finally:
            close_all(opened)


def syn_schedule_s(linear_timeouts: int, count: int = 6) -> list[float]:
    """Expected: when SYN retransmissions leave, s after the first SYN (initial RTO 1 s).

    The first `linear_timeouts` retransmissions wait 1 s each, later ones double.
    """
    times, now, wait = [], 0.0, 1.0
    for index in range(count):
        now += wait
        times.append(now)
        if index + 1 >= linear_timeouts:
            wait *= 2
    return times


def q3(runs: dict[int, dict[str, Any]]) -> list[Part]:
    def on_schedule(run: dict[str, Any]) -> bool:
        latency = run["connect_latency_s"]
        next_syn = min(
            t for t in syn_schedule_s(run["tcp_syn_linear_timeouts"]) if t > ROOM_AFTER_S
        )
        return latency is not None and abs(latency - next_syn) <= SCHEDULE_TOLERANCE_S

    linear, doubling = runs[4], runs[0]
    return [
        Part(
            "the delay is the SYN retransmission schedule: connect() finishes at the next"
            " retransmitted SYN after room is made",
            on_schedule(linear) and on_schedule(doubling),
            f"room made {ROOM_AFTER_S} s after connect(): it finished after"
            f" {linear['connect_latency_s']} s with tcp_syn_linear_timeouts=4 and"
            f" {doubling['connect_latency_s']} s with 0",
        )
    ]


# --- Q4: the extra ACK after the handshake -------------------------------------------
def acks_after_handshake() -> dict[str, Any]:
    with listening_socket() as listener:
        port = address_of(listener)[1]
        with Capture("lo", ports=[port]) as cap, connect_to(listener) as pair:
            pair.client.sendall(b"x")
            pair.server.recv(16)
            pair.server.sendall(b"y")
            pair.client.recv(16)
            cap.wait_for(lambda p: p.sport == port and p.payload_len == 1)
            client_port = pair.client_port
        segments = [p for p in cap.tcp(port) if client_port in (p.sport, p.dport)]
    first_data = next((i for i, p in enumerate(segments) if p.payload_len), len(segments))
    extra = [p for p in segments[3:first_data] if p.sport == port]
    return {
        "segments_before_data": [p.flags for p in segments[:first_data]],
        "server_acks_after_handshake": len(extra),
    }


def q4(seen: dict[str, Any]) -> list[Part]:
    return [
        Part(
            "the server sends an ACK of its own right after the handshake",
            seen["server_acks_after_handshake"] > 0,
            f"before the first data: {seen['segments_before_data']}; the server sent"
            f" {seen['server_acks_after_handshake']} more",
        )
    ]


def run(ctx: RunContext) -> list[ClaimResult]:
    reader = blocked_reader_on_reset()
    results = [judge_parts(NAME, "Q1", q1(reader), asdict(reader))]
    if not ctx.root:
        why = "needs root: fresh network namespaces and packet capture"
        return [*results, *(skipped(NAME, q, why) for q in ("Q2", "Q3", "Q4"))]
    default, aborting = overloaded_client(0), overloaded_client(1)
    results.append(
        judge_parts(NAME, "Q2", q2(default, aborting), {"default": default, "abort": aborting})
    )
    runs: dict[int, dict[str, Any]] = {}
    threads = [threading.Thread(target=connect_latency, args=(n, runs)) for n in (4, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15.0)
    expected = {f"SYN schedule, tcp_syn_linear_timeouts={n} (s)": syn_schedule_s(n) for n in (4, 0)}
    if len(runs) == 2:
        results.append(judge_parts(NAME, "Q3", q3(runs), {"runs": runs}, expected=expected))
    else:
        results.append(skipped(NAME, "Q3", f"a connect() run did not finish: {runs}"))
    extra = acks_after_handshake()
    results.append(judge_parts(NAME, "Q4", q4(extra), extra))
    return results


EXPERIMENT = Experiment(
    name=NAME,
    claims=("Q1", "Q2", "Q3", "Q4"),
    needs_root="partly",
    description=(
        "the notes' open questions: a blocked reader on RST, reset by peer under load,"
        " connect() delays on the SYN schedule, the extra ACK after the handshake"
    ),
    run=run,
)
